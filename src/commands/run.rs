//! `provision`, `plan`, `check` and `verify`: one engine run over the selected stages and hosts,
//! with its journal (provision), its saved plan (`plan --out`) or the reviewed plan it applies
//! (`provision --plan`), and the contract's exit code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::engine::{self, Engine, Mode, Options, Outcome};
use crate::inputs::{self, Inputs};
use crate::journal::Journal;
use crate::outcome::{Stats, Status, StepResult, Summary};
use crate::render::TemplateSource;
use crate::report::{Format, Reporter};
use crate::saved_plan::{PlannedStep, SavedPlan};
use crate::secrets::{Missing, Redactor};
use crate::ssh::HostKeyPolicy;
use crate::workspace::Workspace;

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

/// `provision`: applies the stages (or, `dry_run`, plans them); with `plan`, applies exactly
/// that reviewed plan when it still holds and is at most `plan_max_age` hours old.
/// `rotate`: the secrets generated anew (allowed to differ from the nodes' record); refused with
/// `plan` (a plan saved with `--rotate` kept the rotated values when it was saved).
pub fn provision(
    args: RunArgs,
    dry_run: bool,
    plan: Option<PathBuf>,
    plan_max_age: u64,
    rotate: Vec<String>,
    prune: bool,
) -> ExitCode {
    if plan.is_some() && !rotate.is_empty() {
        eprintln!(
            "error: --rotate with --plan: a plan saved with --rotate already holds the rotated values \
             (`plan --out` saved them); apply it without --rotate. Nothing changed"
        );
        return ExitCode::FAILURE;
    }
    let reviewed = Reviewed {
        apply: plan,
        max_age_hours: plan_max_age,
        rotate: rotate.into_iter().collect(),
        prune,
        ..Reviewed::default()
    };
    run(args, if dry_run { Mode::Plan } else { Mode::Apply }, reviewed)
}

/// `plan`: what provision would change; with `out`, saved there for review; `rotate` as for
/// provision (nothing written).
pub fn plan(args: RunArgs, out: Option<PathBuf>, rotate: Vec<String>) -> ExitCode {
    let reviewed = Reviewed {
        save: out,
        rotate: rotate.into_iter().collect(),
        ..Reviewed::default()
    };
    run(args, Mode::Plan, reviewed)
}

/// `check`: the drift check (a plan that saves nothing).
pub fn check(args: RunArgs) -> ExitCode {
    run(args, Mode::Plan, Reviewed::default())
}

/// `verify`: the stages' verification gates only.
pub fn verify(args: RunArgs) -> ExitCode {
    run(args, Mode::Verify, Reviewed::default())
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
    /// The secrets to rotate (`--rotate`).
    rotate: BTreeSet<String>,
    /// Whether members the inventory no longer has are removed (`provision --prune`).
    prune: bool,
}

/// Runs the engine and maps the outcome to the contract's exit codes: 1 on any failure or
/// unreachable host; 2 for plan/check (plan mode) with pending changes.
fn run(args: RunArgs, mode: Mode, reviewed: Reviewed) -> ExitCode {
    let mut reporter = Reporter::new(args.output, Redactor::default(), args.verbose);
    let missing = match mode {
        // `plan --out`: the secrets and certificates the saved plan was computed with (masked) are
        // the ones `provision --plan` must find, so they are made and kept now, as provision
        // would make them (beside the inventory; nothing changes on the nodes).
        Mode::Apply => Missing::Generate,
        Mode::Plan if reviewed.save.is_some() => Missing::Generate,
        Mode::Plan => Missing::Preview,
        Mode::Verify => Missing::Refuse,
    };
    let loaded = match engine::load_rotating(
        &args.inventory,
        args.playbook.as_deref(),
        missing,
        &reviewed.rotate,
        &engine::FactSource::Assumed,
    ) {
        Ok(l) => l,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    reporter.set_redactor(loaded.redactor.clone());
    // The step a provision does (a plan shows it); verify checks the nodes as they are.
    let rotation = loaded.ca_rotation().cloned().filter(|_| mode != Mode::Verify);
    if let Some(step) = &rotation {
        reporter.log(&format!("note: {}", step.note));
    }
    let inputs = match inputs_of(&args, &loaded) {
        Ok(inputs) => inputs,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    let only = match (&reviewed.apply, mode) {
        (Some(file), Mode::Apply) => match reviewed_changes(file, &args, &inputs, &reviewed) {
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
        Arc::new(Journal::start(&inputs, plan, loaded.redactor.clone()))
    });
    if mode != Mode::Verify {
        for warning in &loaded.warnings {
            reporter.log(&format!("warning: {warning}"));
        }
    }
    let reporter = Arc::new(reporter);
    let options = options(&args, mode, only, reviewed.prune);
    let engine = match Engine::new(loaded, options, Arc::clone(&reporter), journal.clone()) {
        Ok(engine) => engine,
        Err(e) => {
            reporter.log(&format!("error: {e:?}"));
            return ExitCode::FAILURE;
        }
    };
    let Some(outcome) = run_to_the_end(&engine, &reporter, journal.as_deref()) else {
        return ExitCode::FAILURE;
    };
    if let (Some(step), Mode::Apply) = (&rotation, mode) {
        finish_rotation(&reporter, step, &args, &outcome);
    }
    if let Some(path) = &reviewed.save {
        if let Err(e) = save_plan(&reporter, path, &args, &inputs, &outcome) {
            reporter.log(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    }
    if args.stats {
        log_stats(&reporter, &outcome.stats);
    }
    match reporter.format() {
        Format::Json => reporter.json(&outcome.summary, &outcome.results, &outcome.stats),
        Format::Text => reporter.out(&format!("{}\n", outcome.summary.line())),
    }
    exit_code(mode, &outcome)
}

/// Runs the engine until it ends or Ctrl-C stops it where it is, then appends the journal's
/// record (which says which, and what the run had applied). `None` when the run did not end with
/// an outcome (said on stderr).
fn run_to_the_end(engine: &Arc<Engine>, reporter: &Reporter, journal: Option<&Journal>) -> Option<Outcome> {
    let interrupted = engine::block_on(async {
        tokio::select! {
            outcome = engine.run() => Some(outcome),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match interrupted {
        Some(Ok(outcome)) => {
            if let Some(journal) = journal {
                finish_journal(reporter, journal, Some(&outcome.summary));
            }
            Some(outcome)
        }
        Some(Err(e)) => {
            reporter.log(&format!("error: {e:?}"));
            None
        }
        None => {
            reporter.finish();
            reporter.log("interrupted: the run stopped where it was");
            if let Some(journal) = journal {
                finish_journal(reporter, journal, None);
            }
            None
        }
    }
}

/// After a provision doing step 1 or 2 of a CA rotation: records the step done when the run
/// covered every host and stage and nothing failed or was unreachable (the next provision then
/// does the next step); else says what holds it back (the next provision repeats the step).
fn finish_rotation(reporter: &Reporter, step: &crate::pki::RotationStep, args: &RunArgs, outcome: &Outcome) {
    let Some(finish) = &step.finish else {
        return;
    };
    let n = step.number;
    let failed: BTreeSet<&str> = outcome
        .results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .map(|r| r.host.as_str())
        .collect();
    let held = if args.limit.is_some() || args.stages.is_some() {
        Some("this run did not cover every host and stage (--limit, --stages)".to_string())
    } else if !failed.is_empty() || outcome.summary.unreachable > 0 {
        let names: Vec<&str> = failed.into_iter().collect();
        Some(format!(
            "{} failed, {} unreachable",
            if names.is_empty() {
                "no host".to_string()
            } else {
                names.join(", ")
            },
            outcome.summary.unreachable
        ))
    } else {
        None
    };
    let Some(why) = held else {
        match finish.commit() {
            Ok(()) => reporter.log(&format!(
                "note: CA rotation step {n} of 3 done on every node: the next provision does step {}",
                n + 1
            )),
            Err(e) => reporter.log(&format!("error: CA rotation step {n}: cannot record it done: {e}")),
        }
        return;
    };
    reporter.log(&format!(
        "note: CA rotation step {n} of 3 is not done on every node ({why}): the next provision repeats it"
    ));
}

/// `plan --out PATH`: saves the plan a run made, and says how to review and apply it; refused
/// when the plan failed on some host.
fn save_plan(
    reporter: &Reporter,
    path: &Path,
    args: &RunArgs,
    inputs: &Inputs,
    outcome: &Outcome,
) -> miette::Result<()> {
    if outcome.summary.failed > 0 || outcome.summary.unreachable > 0 {
        return Err(miette::miette!(
            "the plan failed on some host: not saved to {}",
            path.display()
        ));
    }
    // The secrets file as this plan left it (what it generated or rotated is kept now).
    let inputs = Inputs {
        secrets_sha256: inputs::file_sha256(&secrets_file(&args.inventory)),
        ..inputs.clone()
    };
    let plan = SavedPlan::new(
        inputs,
        planned_steps(&outcome.results, reporter.redactor()),
        outcome.rolling.clone(),
    );
    plan.save(path)?;
    reporter.log(&format!(
        "plan saved to {} ({} changes): review it (`hactl show {}`), then `hactl provision {} --plan {}`",
        path.display(),
        plan.changes().count(),
        path.display(),
        args.inventory.display(),
        path.display()
    ));
    Ok(())
}

/// `--stats`: the run's wall time and SSH round trips per host, on stderr.
fn log_stats(reporter: &Reporter, stats: &Stats) {
    let trips: Vec<String> = stats.round_trips.iter().map(|(h, n)| format!("{h}={n}")).collect();
    reporter.log(&format!("stats: {:.3}s round_trips {}", stats.seconds, trips.join(" ")));
}

/// The contract's exit code for a run's outcome: 1 on any failure or unreachable host; 2 for a
/// plan with pending changes; else 0.
fn exit_code(mode: Mode, outcome: &Outcome) -> ExitCode {
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
        secrets_sha256: inputs::file_sha256(&secrets_file(&args.inventory)),
        stages: args.stages.clone(),
        limit: args.limit.clone(),
    })
}

/// The inventory's secrets file as it is kept: sealed (`.age`) when that exists, else plain.
fn secrets_file(inventory: &Path) -> PathBuf {
    let plain = Workspace::of(inventory).secrets();
    let sealed = crate::secrets::sealed_path(&plain);
    if sealed.exists() {
        sealed
    } else {
        plain
    }
}

/// A run's results as a saved plan keeps them: masked.
fn planned_steps(results: &[StepResult], redactor: &Redactor) -> Vec<PlannedStep> {
    results.iter().map(|r| PlannedStep::from_result(r, redactor)).collect()
}

/// The engine's options for a run of `args` in `mode`.
fn options(args: &RunArgs, mode: Mode, only: Option<engine::Reviewed>, prune: bool) -> Options {
    Options {
        mode,
        stages: args.stages.clone(),
        limit: args.limit.clone(),
        forks: args.forks,
        host_key_policy: args.host_key_policy,
        connect_timeout: std::time::Duration::from_secs(args.connect_timeout),
        only,
        prune,
    }
}

/// `provision --plan FILE`: the reviewed plan, checked against a plan made now from the same
/// selectors (inputs, every host's step, the rolling orders); what it allows when it holds,
/// else every difference, and nothing changed.
fn reviewed_changes(
    file: &Path,
    args: &RunArgs,
    inputs: &Inputs,
    reviewed: &Reviewed,
) -> miette::Result<engine::Reviewed> {
    let max_age_hours = reviewed.max_age_hours;
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
    // No rotation here: a plan saved with --rotate kept its values, and the nodes still holding
    // the old ones are behind (the secrets' history says so).
    let loaded = engine::load(
        &args.inventory,
        args.playbook.as_deref(),
        Missing::Preview,
        &engine::FactSource::Assumed,
    )?;
    let redactor = loaded.redactor.clone();
    let quiet = Arc::new(Reporter::silent(redactor.clone()));
    let engine = Engine::new(loaded, options(args, Mode::Plan, None, false), quiet, None)?;
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

/// Appends the run's record; a journal that cannot be written is said, not fatal (the run
/// itself is over).
fn finish_journal(reporter: &Reporter, journal: &Journal, summary: Option<&Summary>) {
    if let Err(e) = journal.finish(summary) {
        reporter.log(&format!("warning: {e}"));
    }
}
