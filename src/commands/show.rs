//! `hactl show FILE`: a saved plan, as `plan` printed it.

use std::path::Path;
use std::process::ExitCode;

use crate::outcome::StepResult;
use crate::report::{Format, Reporter};
use crate::saved_plan::{PlannedStep, SavedPlan};
use crate::secrets::Redactor;

/// `hactl show FILE`: a saved plan as `plan` printed it, or its document; a file that is not a
/// plan (malformed, truncated, edited) is an error, exit 1.
pub fn show_plan(file: &Path, output: Format) -> ExitCode {
    match SavedPlan::load(file) {
        Ok(plan) => {
            print_plan(&plan, output);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a loaded plan.
fn print_plan(plan: &SavedPlan, output: Format) {
    if output == Format::Json {
        println!("{}", serde_json::to_string_pretty(plan).expect("json serialises"));
        return;
    }
    let i = &plan.inputs;
    let short = |sha: &str| sha.chars().take(12).collect::<String>();
    println!(
        "plan made {}: inventory {} ({}), playbook {} ({}){}{}",
        plan.created,
        i.inventory,
        short(&i.inventory_sha256),
        i.playbook,
        short(&i.playbook_sha256),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::Inputs;
    use crate::outcome::Status;

    fn inputs(sha: &str) -> Inputs {
        Inputs {
            inventory: "inv.yml".into(),
            inventory_sha256: sha.into(),
            playbook: "built-in".into(),
            playbook_sha256: "b".repeat(64),
            secrets_sha256: "c".repeat(64),
            stages: Some(vec!["base".into()]),
            limit: Some("node1".into()),
        }
    }

    fn valid() -> SavedPlan {
        let step = PlannedStep {
            host: "node1".into(),
            stage: "base".into(),
            step: "x".into(),
            status: Status::Changed,
            summary: Some("update x".into()),
            diff: Some("-a\n+b\n".into()),
            handler: false,
        };
        SavedPlan::new(inputs(&"a".repeat(64)), vec![step], vec![])
    }

    /// Malformed plans of every shape: an error (exit 1), never a panic.
    #[test]
    fn a_malformed_plan_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        let good = serde_json::to_value(valid()).unwrap();
        let text = serde_json::to_string_pretty(&good).unwrap();
        let mut shapes: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"\xff\xfe not utf-8".to_vec(),
            b"[]".to_vec(),
            b"null".to_vec(),
            b"{}".to_vec(),
            text.as_bytes()[..text.len() / 2].to_vec(),
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        ];
        let edits: [(&str, serde_json::Value); 7] = [
            ("steps", serde_json::json!("not a list")),
            ("steps", serde_json::json!([{"host": 1}])),
            ("inputs", serde_json::json!(null)),
            ("created_unix", serde_json::json!("yesterday")),
            ("hactl_plan", serde_json::json!(-1)),
            ("rolling", serde_json::json!([{"stage": "x"}])),
            ("checksum", serde_json::json!(42)),
        ];
        for (key, value) in edits {
            let mut doc = good.clone();
            doc[key] = value;
            shapes.push(serde_json::to_vec(&doc).unwrap());
            doc.as_object_mut().unwrap().remove(key);
            shapes.push(serde_json::to_vec(&doc).unwrap());
        }
        for shape in shapes {
            std::fs::write(&path, &shape).unwrap();
            for output in [Format::Text, Format::Json] {
                assert_eq!(
                    show_plan(&path, output),
                    ExitCode::FAILURE,
                    "{}",
                    String::from_utf8_lossy(&shape)
                );
            }
        }
        // Sealed with a valid checksum, yet fingerprints too short to print: refused.
        for sha in ["", "ab", "é".repeat(32).as_str()] {
            SavedPlan::new(inputs(sha), vec![], vec![]).save(&path).unwrap();
            assert_eq!(show_plan(&path, Format::Text), ExitCode::FAILURE, "{sha:?}");
        }
        assert_eq!(
            show_plan(&dir.path().join("missing.json"), Format::Text),
            ExitCode::FAILURE
        );
        valid().save(&path).unwrap();
        assert_eq!(show_plan(&path, Format::Text), ExitCode::SUCCESS);
    }
}
