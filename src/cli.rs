//! The command line: argument parsing and dispatch (see ../shared/CONTRACT.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::engine::{self, Mode, Options};
use crate::lab::{Lab, Subnet, UpOptions, DEFAULT_SUBNET};
use crate::report::{Format, Reporter, Status};
use crate::secrets::{Missing, Redactor};
use crate::ssh::HostKeyPolicy;

/// Provisions highly-available Apache Airflow clusters over SSH.
#[derive(Debug, Parser)]
#[command(name = "hactl", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Commands,
}

/// Selectors shared by provision, plan and check.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The inventory (Ansible YAML shape).
    pub inventory: PathBuf,
    /// The playbook (default: the whole HA stack, playbooks/site.yml, built into hactl; a playbook
    /// on disk renders the nearest templates/ at or above its directory).
    #[arg(short = 'p', long)]
    pub playbook: Option<PathBuf>,
    /// Only these stages (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub stages: Option<Vec<String>>,
    /// Only hosts matching this pattern.
    #[arg(long)]
    pub limit: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Hosts handled at once.
    #[arg(long, default_value_t = 20)]
    pub forks: usize,
    /// How unknown host keys are treated.
    #[arg(long, value_enum, default_value_t = HostKeyPolicy::Strict)]
    pub host_key_policy: HostKeyPolicy,
    /// Seconds to keep trying a host that refuses connections or logins (a machine still
    /// booting); the inventory's `hactl_connect_timeout` overrides it per host.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Print SSH round trips per host and the wall time on stderr.
    #[arg(long)]
    pub stats: bool,
    /// A progress line for every step (by default only changes and failures; the per-stage
    /// summaries on stdout count the rest).
    #[arg(short, long)]
    pub verbose: bool,
}

/// hactl's commands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Apply the playbook's stages to the inventory's hosts.
    Provision {
        /// Selectors.
        #[command(flatten)]
        args: RunArgs,
        /// Only show what would change (= plan).
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what provision would change; change nothing (exit 2 when changes are pending).
    Plan {
        /// Selectors.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Drift check: exit 0 in sync, 2 drift found, 1 error.
    Check {
        /// Selectors.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Run the stages' verification gates only.
    Verify {
        /// Selectors.
        #[command(flatten)]
        args: RunArgs,
    },
    /// Write the built-in playbooks, templates and example inventories into DIR, to change them
    /// (then provision with `-p DIR/playbooks/site.yml`).
    Init {
        /// Where to write them (created if missing).
        dir: PathBuf,
        /// Overwrite files that differ from the built-in ones.
        #[arg(long)]
        force: bool,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Local Debian 12 test nodes under systemd-nspawn.
    Lab {
        /// What to do with the lab.
        #[command(subcommand)]
        action: LabAction,
    },
}

/// `hactl lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabAction {
    /// Boot (or repair) the lab and write its inventory.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Where to write the inventory (default: /var/lib/hactl/lab/inventory.yml).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// The bridge's IPv4 subnet.
        #[arg(long, default_value = DEFAULT_SUBNET)]
        subnet: String,
    },
    /// Remove everything `up` made.
    Down,
    /// Show the nodes and whether they answer SSH.
    Status,
    /// Stop one node's machine (for failover tests); `lab up` starts it again.
    Stop {
        /// The node, e.g. node2.
        node: String,
    },
    /// Crash one node's machine: every process killed at once, its link gone (failover tests
    /// the way machines fail); `lab up` starts it again.
    Kill {
        /// The node, e.g. node1.
        node: String,
    },
    /// Cut a node's network link, or restore it: the node keeps running, cut off (failover
    /// tests of a partition).
    Link {
        /// The node, e.g. node1.
        node: String,
        /// `down` cuts it, `up` restores it.
        state: LinkState,
    },
}

/// A lab node's link state (`hactl lab link NODE up|down`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LinkState {
    /// Restored.
    Up,
    /// Cut.
    Down,
}

/// Parses the arguments, runs the command and maps the outcome to the contract's exit codes. Bad
/// usage (an unknown flag, a missing argument) is bad input: exit 1, not clap's 2, which the
/// contract keeps for drift and pending changes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HACTL_LOG"))
        .with_writer(std::io::stderr)
        .init();
    // An error is one line however long: scripts grep it, and a wrap would split its words.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    match cli.command {
        Commands::Lab { action } => run_lab(action),
        Commands::Provision { args, dry_run } => run(args, if dry_run { Mode::Plan } else { Mode::Apply }),
        Commands::Plan { args } => run(args, Mode::Plan),
        Commands::Check { args } => run(args, Mode::Plan),
        Commands::Verify { args } => run(args, Mode::Verify),
        Commands::Init { dir, force } => match crate::stack::init(&dir, force) {
            Ok(written) => {
                for path in &written {
                    println!("wrote {}", dir.join(path).display());
                }
                println!(
                    "init: {} files written under {}; provision with -p {}",
                    written.len(),
                    dir.display(),
                    dir.join(crate::stack::SITE).display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Commands::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "hactl",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

/// Runs the engine and maps the outcome to the contract's exit codes: 1 on any failure or
/// unreachable host; 2 for plan/check (plan mode) with pending changes.
fn run(args: RunArgs, mode: Mode) -> ExitCode {
    let mut reporter = Reporter::new(args.output, Redactor::default(), args.verbose);
    let missing = match mode {
        Mode::Apply => Missing::Generate,
        Mode::Plan => Missing::Preview,
        Mode::Verify => Missing::Refuse,
    };
    let loaded = match engine::load(&args.inventory, args.playbook.as_deref(), missing) {
        Ok(l) => l,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    reporter.set_redactor(loaded.redactor.clone());
    if mode != Mode::Verify {
        for warning in &loaded.warnings {
            reporter.log(&format!("warning: {warning}"));
        }
    }
    let reporter = std::sync::Arc::new(reporter);
    let options = Options {
        mode,
        stages: args.stages.clone(),
        limit: args.limit.clone(),
        forks: args.forks,
        host_key_policy: args.host_key_policy,
        connect_timeout: std::time::Duration::from_secs(args.connect_timeout),
    };
    let engine = match engine::Engine::new(loaded, options, std::sync::Arc::clone(&reporter)) {
        Ok(engine) => engine,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    let outcome = match engine::block_on(engine.run()) {
        Ok(o) => o,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    if args.stats {
        let trips: Vec<String> = outcome
            .stats
            .round_trips
            .iter()
            .map(|(h, n)| format!("{h}={n}"))
            .collect();
        reporter.log(&format!(
            "stats: {:.3}s round_trips {}",
            outcome.stats.seconds,
            trips.join(" ")
        ));
    }
    match reporter.format() {
        Format::Json => reporter.json(&outcome.summary, &outcome.results, &outcome.stats),
        Format::Text => reporter.out(&format!("{}\n", outcome.summary.line())),
    }
    let failed = outcome.summary.failed > 0 || outcome.summary.unreachable > 0;
    let pending = outcome.results.iter().any(|r| r.status == Status::Changed);
    if failed {
        ExitCode::FAILURE
    } else if mode == Mode::Plan && pending {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_lab(action: LabAction) -> ExitCode {
    let lab = Lab::new();
    let mut log = |line: &str| eprintln!("lab: {line}");
    let outcome = match action {
        LabAction::Up {
            nodes,
            inventory,
            subnet,
        } => Subnet::parse(&subnet, nodes).and_then(|subnet| {
            let inventory = inventory.unwrap_or_else(|| lab.default_inventory());
            let changes = lab.up(
                &UpOptions {
                    nodes,
                    inventory: inventory.clone(),
                    subnet,
                },
                &mut log,
            )?;
            for change in &changes {
                println!("{change}");
            }
            println!(
                "lab up: {nodes} nodes, {} changes, inventory {}",
                changes.len(),
                inventory.display()
            );
            Ok(())
        }),
        LabAction::Down => lab.down().map(|done| {
            for line in &done {
                println!("{line}");
            }
            println!("lab down: {} actions", done.len());
        }),
        LabAction::Status => lab.status().map(|lines| lines.iter().for_each(|l| println!("{l}"))),
        LabAction::Stop { node } => lab.stop_node(&node).map(|stopped| {
            println!("{node}: {}", if stopped { "stopped" } else { "was not running" });
        }),
        LabAction::Kill { node } => lab.kill_node(&node).map(|killed| {
            println!(
                "{node}: {}",
                if killed {
                    "crashed (every process killed at once)"
                } else {
                    "was not running"
                }
            );
        }),
        LabAction::Link { node, state } => {
            let up = matches!(state, LinkState::Up);
            lab.set_link(&node, up)
                .map(|()| println!("{node}: link {}", if up { "up" } else { "cut" }))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
