//! The command line: argument parsing and dispatch (docs/cli.md is its reference). What each
//! command does is in [`crate::commands`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{self, lab, RunArgs};
use crate::lab::{Release, DEFAULT_SUBNET};
use crate::report::Format;
use crate::ssh::HostKeyPolicy;

/// Provisions highly-available Apache Airflow clusters over SSH.
#[derive(Debug, Parser)]
#[command(name = "hactl", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Commands,
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
        #[arg(long, conflicts_with = "plan")]
        dry_run: bool,
        /// Apply exactly this reviewed plan (`plan --out`), or refuse when anything moved.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        /// Refuse a reviewed plan older than this many hours.
        #[arg(long, default_value_t = 24, value_name = "HOURS")]
        plan_max_age: u64,
        /// Generate this secret anew and roll it out (repeatable); the nodes' record of it may
        /// differ. `NAME_previous` drops a rotated Fernet key's previous value. `ca` starts a
        /// rotation of the cluster CA (step 1 of 3; the next provisions do steps 2 and 3).
        #[arg(long, value_name = "NAME")]
        rotate: Vec<String>,
        /// Also remove the cluster members that are no longer in their inventory group (etcd
        /// members, RabbitMQ nodes); without it they are left, and the report names them.
        #[arg(long)]
        prune: bool,
    },
    /// Show what provision would change; change nothing (exit 2 when changes are pending).
    Plan {
        /// Selectors.
        #[command(flatten)]
        args: RunArgs,
        /// Also save the plan here (no secret in it), to review and apply with `provision --plan`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Show what rotating this secret (or `ca`, the cluster CA) would change (repeatable;
        /// nothing written).
        #[arg(long, value_name = "NAME")]
        rotate: Vec<String>,
    },
    /// Print a saved plan as `plan` printed it.
    Show {
        /// The plan file.
        file: PathBuf,
        /// Output format (json: the plan document).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
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
    /// The run journal (`.hactl/runs.jsonl` beside the inventory): one line per provision.
    Log {
        /// The inventory.
        inventory: PathBuf,
        /// Show the last run's changes, failures and handlers by host.
        #[arg(long)]
        last: bool,
        /// Output format (json: the records).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// The inventory's secrets file.
    Secrets {
        /// What to do with it.
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Local Debian 12 or 13 test nodes under systemd-nspawn.
    Lab {
        /// What to do with the lab.
        #[command(subcommand)]
        action: LabAction,
    },
}

/// `hactl secrets` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Rebuild a lost secrets file from the nodes (the copy on a `postgres` host, checked against
    /// every node's digests); never overwrites one, never prints a value.
    Recover {
        /// The inventory.
        inventory: PathBuf,
        /// How unknown host keys are treated.
        #[arg(long, value_enum, default_value_t = HostKeyPolicy::Strict)]
        host_key_policy: HostKeyPolicy,
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
        /// The Debian release of a new lab (default: trixie, `hactl lab status` says which);
        /// a lab that is up keeps its own.
        #[arg(long, value_enum)]
        release: Option<Release>,
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
    commands::set_up_diagnostics();
    match cli.command {
        Commands::Lab { action } => dispatch_lab(action),
        Commands::Secrets {
            action: SecretsAction::Recover {
                inventory,
                host_key_policy,
            },
        } => commands::secrets::recover(&inventory, host_key_policy),
        Commands::Provision {
            args,
            dry_run,
            plan,
            plan_max_age,
            rotate,
            prune,
        } => commands::provision(args, dry_run, plan, plan_max_age, rotate, prune),
        Commands::Plan { args, out, rotate } => commands::plan(args, out, rotate),
        Commands::Check { args } => commands::check(args),
        Commands::Verify { args } => commands::verify(args),
        Commands::Show { file, output } => commands::show_plan(&file, output),
        Commands::Log {
            inventory,
            last,
            output,
        } => commands::show_log(&inventory, last, output),
        Commands::Init { dir, force } => commands::init(&dir, force),
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

/// Runs a `hactl lab` subcommand.
fn dispatch_lab(action: LabAction) -> ExitCode {
    match action {
        LabAction::Up {
            nodes,
            release,
            inventory,
            subnet,
        } => lab::up(nodes, release, inventory, &subnet),
        LabAction::Down => lab::down(),
        LabAction::Status => lab::status(),
        LabAction::Stop { node } => lab::stop(&node),
        LabAction::Kill { node } => lab::kill(&node),
        LabAction::Link { node, state } => lab::link(&node, matches!(state, LinkState::Up)),
    }
}
