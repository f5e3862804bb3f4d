//! `hactl show FILE`: a saved plan, as `plan` printed it.

use std::path::Path;
use std::process::ExitCode;

use crate::outcome::StepResult;
use crate::report::{Format, Reporter};
use crate::saved_plan::{PlannedStep, SavedPlan};
use crate::secrets::Redactor;

/// `hactl show FILE`: a saved plan as `plan` printed it, or its document.
pub fn show_plan(file: &Path, output: Format) -> ExitCode {
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
