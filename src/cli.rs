//! The command line: argument parsing and dispatch (see ../shared/CONTRACT.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::engine::{self, Mode, Options};
use crate::inputs::{self, Inputs};
use crate::journal::{self, Journal};
use crate::lab::{Lab, Subnet, UpOptions, DEFAULT_SUBNET};
use crate::outcome::{Status, StepResult, Summary};
use crate::render::TemplateSource;
use crate::report::{Format, Reporter};
use crate::saved_plan::{PlannedStep, SavedPlan};
use crate::secrets::{Missing, Redactor};
use crate::ssh::HostKeyPolicy;
use crate::workspace::Workspace;

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
        #[arg(long, conflicts_with = "plan")]
        dry_run: bool,
        /// Apply exactly this reviewed plan (`plan --out`), or refuse when anything moved.
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        /// Refuse a reviewed plan older than this many hours.
        #[arg(long, default_value_t = 24, value_name = "HOURS")]
        plan_max_age: u64,
    },
    /// Show what provision would change; change nothing (exit 2 when changes are pending).
    Plan {
        /// Selectors.
        #[command(flatten)]
        args: RunArgs,
        /// Also save the plan here (no secret in it), to review and apply with `provision --plan`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
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
        Commands::Provision {
            args,
            dry_run,
            plan,
            plan_max_age,
        } => {
            let reviewed = Reviewed {
                apply: plan,
                max_age_hours: plan_max_age,
                ..Reviewed::default()
            };
            run(args, if dry_run { Mode::Plan } else { Mode::Apply }, reviewed)
        }
        Commands::Plan { args, out } => {
            let reviewed = Reviewed {
                save: out,
                ..Reviewed::default()
            };
            run(args, Mode::Plan, reviewed)
        }
        Commands::Check { args } => run(args, Mode::Plan, Reviewed::default()),
        Commands::Verify { args } => run(args, Mode::Verify, Reviewed::default()),
        Commands::Show { file, output } => show_plan(&file, output),
        Commands::Log {
            inventory,
            last,
            output,
        } => show_log(&inventory, last, output),
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

/// What a run saves (`plan --out`) or applies (`provision --plan`).
#[derive(Debug, Clone, Default)]
struct Reviewed {
    /// Where `plan --out` saves the plan.
    save: Option<PathBuf>,
    /// The reviewed plan `provision --plan` applies.
    apply: Option<PathBuf>,
    /// The oldest reviewed plan accepted, in hours.
    max_age_hours: u64,
}

/// Runs the engine and maps the outcome to the contract's exit codes: 1 on any failure or
/// unreachable host; 2 for plan/check (plan mode) with pending changes.
fn run(args: RunArgs, mode: Mode, reviewed: Reviewed) -> ExitCode {
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
    let inputs = match inputs_of(&args, &loaded) {
        Ok(inputs) => inputs,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    let only = match (&reviewed.apply, mode) {
        (Some(file), Mode::Apply) => match reviewed_changes(file, &args, &inputs, reviewed.max_age_hours) {
            Ok(only) => Some(only),
            Err(e) => {
                reporter.log(&format!("error: {e}"));
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let journal = (mode == Mode::Apply).then(|| {
        let plan = reviewed.apply.as_ref().map(|p| p.display().to_string());
        std::sync::Arc::new(Journal::start(&inputs, plan, loaded.redactor.clone()))
    });
    if mode != Mode::Verify {
        for warning in &loaded.warnings {
            reporter.log(&format!("warning: {warning}"));
        }
    }
    let reporter = std::sync::Arc::new(reporter);
    let options = options(&args, mode, only);
    let engine = match engine::Engine::new(loaded, options, std::sync::Arc::clone(&reporter), journal.clone()) {
        Ok(engine) => engine,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C ends the run where it is; its journal record says so and what it had applied.
    let interrupted = engine::block_on(async {
        tokio::select! {
            outcome = engine.run() => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let outcome = match interrupted {
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
        None => {
            reporter.finish();
            reporter.log("interrupted: the run stopped where it was");
            if let Some(journal) = &journal {
                finish_journal(&reporter, journal, None);
            }
            return ExitCode::FAILURE;
        }
    };
    if let Some(journal) = &journal {
        finish_journal(&reporter, journal, Some(&outcome.summary));
    }
    if let Some(path) = &reviewed.save {
        if outcome.summary.failed > 0 || outcome.summary.unreachable > 0 {
            reporter.log(&format!(
                "error: the plan failed on some host: not saved to {}",
                path.display()
            ));
            return ExitCode::FAILURE;
        }
        let plan = SavedPlan::new(
            inputs.clone(),
            planned_steps(&outcome.results, reporter.redactor()),
            outcome.rolling.clone(),
        );
        if let Err(e) = plan.save(path) {
            reporter.log(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
        reporter.log(&format!(
            "plan saved to {} ({} changes): review it (`hactl show {}`), then `hactl provision {} --plan {}`",
            path.display(),
            plan.changes().count(),
            path.display(),
            args.inventory.display(),
            path.display()
        ));
    }
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

/// The fingerprints and selectors of a run: what a journal record and a saved plan name.
fn inputs_of(args: &RunArgs, loaded: &engine::Loaded) -> miette::Result<Inputs> {
    let (playbook, playbook_sha256) = match &args.playbook {
        Some(path) => {
            let templates = match &loaded.playbook.templates {
                TemplateSource::Dir(dir) => Some(dir.as_path()),
                TemplateSource::BuiltIn => None,
            };
            (path.display().to_string(), inputs::disk_fingerprint(path, templates)?)
        }
        None => (
            "built-in".to_string(),
            inputs::fingerprint(
                crate::stack::files()
                    .into_iter()
                    .map(|(p, b)| (p.display().to_string(), b)),
            ),
        ),
    };
    Ok(Inputs {
        inventory: args.inventory.display().to_string(),
        inventory_sha256: inputs::inventory_fingerprint(&args.inventory)?,
        playbook,
        playbook_sha256,
        secrets_sha256: inputs::file_sha256(&Workspace::of(&args.inventory).secrets()),
        stages: args.stages.clone(),
        limit: args.limit.clone(),
    })
}

/// A run's results as a saved plan keeps them: masked.
fn planned_steps(results: &[StepResult], redactor: &Redactor) -> Vec<PlannedStep> {
    results.iter().map(|r| PlannedStep::from_result(r, redactor)).collect()
}

/// The engine's options for a run of `args` in `mode`.
fn options(args: &RunArgs, mode: Mode, only: Option<engine::Reviewed>) -> Options {
    Options {
        mode,
        stages: args.stages.clone(),
        limit: args.limit.clone(),
        forks: args.forks,
        host_key_policy: args.host_key_policy,
        connect_timeout: std::time::Duration::from_secs(args.connect_timeout),
        only,
    }
}

/// `provision --plan FILE`: the reviewed plan, checked against a plan made now from the same
/// selectors (inputs, every host's step, the rolling orders); what it allows when it holds,
/// else every difference, and nothing changed.
fn reviewed_changes(
    file: &std::path::Path,
    args: &RunArgs,
    inputs: &Inputs,
    max_age_hours: u64,
) -> miette::Result<engine::Reviewed> {
    let saved = SavedPlan::load(file)?;
    if saved.inputs.inventory_sha256 != inputs.inventory_sha256 && saved.inputs.inventory != inputs.inventory {
        return Err(miette::miette!(
            "{} is a plan for the inventory {}, not {}: nothing changed",
            file.display(),
            saved.inputs.inventory,
            inputs.inventory
        ));
    }
    if saved.inputs.selectors() != inputs.selectors() {
        return Err(miette::miette!(
            "{} is a plan for {}, and this run selects {}: run it with the plan's selectors; nothing changed",
            file.display(),
            saved.inputs.selectors(),
            inputs.selectors()
        ));
    }
    let age = saved.age_hours();
    if age > max_age_hours as f64 {
        return Err(miette::miette!(
            "{} was made {age:.1} h ago ({}), more than --plan-max-age {max_age_hours} h: plan again; nothing changed",
            file.display(),
            saved.created
        ));
    }
    let loaded = engine::load(&args.inventory, args.playbook.as_deref(), Missing::Preview)?;
    let redactor = loaded.redactor.clone();
    let quiet = std::sync::Arc::new(Reporter::silent(redactor.clone()));
    let engine = engine::Engine::new(loaded, options(args, Mode::Plan, None), quiet, None)?;
    let outcome = engine::block_on(engine.run())?;
    let now = SavedPlan::new(
        inputs.clone(),
        planned_steps(&outcome.results, &redactor),
        outcome.rolling,
    );
    let differences = saved.differences(&now);
    if !differences.is_empty() {
        return Err(miette::miette!(
            "the reviewed plan {} no longer holds; nothing changed:\n  {}",
            file.display(),
            differences.join("\n  ")
        ));
    }
    Ok(engine::Reviewed {
        changes: saved
            .changes()
            .map(|s| (s.host.clone(), s.stage.clone(), s.step.clone()))
            .collect(),
        rolling: saved.rolling,
    })
}

/// `hactl show FILE`: a saved plan as `plan` printed it, or its document.
fn show_plan(file: &std::path::Path, output: Format) -> ExitCode {
    let plan = match SavedPlan::load(file) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if output == Format::Json {
        println!("{}", serde_json::to_string_pretty(&plan).expect("json serialises"));
        return ExitCode::SUCCESS;
    }
    let i = &plan.inputs;
    println!(
        "plan made {}: inventory {} ({}), playbook {} ({}){}{}",
        plan.created,
        i.inventory,
        &i.inventory_sha256[..12],
        i.playbook,
        &i.playbook_sha256[..12],
        i.stages
            .as_ref()
            .map_or(String::new(), |s| format!(", --stages {}", s.join(","))),
        i.limit.as_ref().map_or(String::new(), |l| format!(", --limit {l}"))
    );
    let results: Vec<StepResult> = plan.steps.iter().map(PlannedStep::to_result).collect();
    let reporter = Reporter::new(Format::Text, Redactor::default(), false);
    let mut stages: Vec<&str> = Vec::new();
    for r in &results {
        if !stages.contains(&r.stage.as_str()) {
            stages.push(&r.stage);
        }
    }
    for stage in stages {
        print!("{}", plan.rolling_lines(stage));
        print!("{}", reporter.stage_text(stage, &results, true));
    }
    let hosts: std::collections::BTreeSet<&str> = plan.steps.iter().map(|s| s.host.as_str()).collect();
    println!("plan: {} changes on {} hosts", plan.changes().count(), hosts.len());
    ExitCode::SUCCESS
}

/// Appends the run's record; a journal that cannot be written is said, not fatal (the run
/// itself is over).
fn finish_journal(reporter: &Reporter, journal: &Journal, summary: Option<&Summary>) {
    if let Err(e) = journal.finish(summary) {
        reporter.log(&format!("warning: {e}"));
    }
}

/// `hactl log`: the runs, one line each, or the last one in detail.
fn show_log(inventory: &std::path::Path, last: bool, output: Format) -> ExitCode {
    let workspace = Workspace::of(inventory);
    let runs = match journal::read(&workspace) {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if runs.is_empty() {
        eprintln!(
            "error: no run recorded for {} (no {})",
            inventory.display(),
            workspace.journal().display()
        );
        return ExitCode::FAILURE;
    }
    let shown: Vec<(usize, &journal::RunRecord)> = if last {
        vec![(runs.len(), &runs[runs.len() - 1])]
    } else {
        runs.iter().enumerate().map(|(i, r)| (i + 1, r)).collect()
    };
    match output {
        Format::Json => {
            let records: Vec<&journal::RunRecord> = shown.iter().map(|(_, r)| *r).collect();
            println!("{}", serde_json::to_string_pretty(&records).expect("json serialises"));
        }
        Format::Text if last => print!("{}", journal::details(shown[0].0, shown[0].1)),
        Format::Text => {
            for (n, r) in shown {
                println!("{}", journal::list_line(n, r));
            }
        }
    }
    ExitCode::SUCCESS
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
