//! Saved plans: `hactl plan --out FILE` writes what a run would change (every host, stage and
//! step: its status, summary and diff as shown, secrets masked; the handlers it would run) with
//! the fingerprints of what it was computed from (the inventory, the playbook and its templates,
//! the secrets file), the order of each rolling restart (what the hosts' state decided: a
//! cluster's leader last) and a checksum over all of it. `hactl show FILE` prints it; `hactl
//! provision --plan FILE` plans again, refuses when anything differs (inputs or any host's
//! step), and otherwise applies only the steps and handlers the plan names.

use std::collections::BTreeMap;
use std::path::Path;

use miette::{miette, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::inputs::{file_sha256, rfc3339, Inputs};
use crate::outcome::{RollingOrder, Status, StepResult};
use crate::secrets::Redactor;

/// The plan file's format version.
const VERSION: u32 = 1;

/// One planned result, as shown (secrets masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The host.
    pub host: String,
    /// The stage.
    pub stage: String,
    /// The step or handler.
    pub step: String,
    /// `ok`, `changed`, `failed` or `skipped`.
    pub status: Status,
    /// What would change.
    pub summary: Option<String>,
    /// The diff, masked.
    pub diff: Option<String>,
    /// A handler rather than a step.
    #[serde(default)]
    pub handler: bool,
}

/// A saved plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPlan {
    /// The format version.
    pub hactl_plan: u32,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// The same, in seconds since the epoch (the age check reads it).
    pub created_unix: i64,
    /// Its inputs.
    pub inputs: Inputs,
    /// Every result, in the run's order.
    pub steps: Vec<PlannedStep>,
    /// The rolling restarts, in the run's order: each stage's hosts, first restarted first.
    pub rolling: Vec<RollingOrder>,
    /// sha256 of everything above, so that a hand edit is refused.
    pub checksum: String,
}

impl PlannedStep {
    /// A result as the plan keeps it: its summary and diff masked by `redactor`.
    pub fn from_result(r: &StepResult, redactor: &Redactor) -> Self {
        PlannedStep {
            host: r.host.clone(),
            stage: r.stage.clone(),
            step: r.step.clone(),
            status: r.status,
            summary: r.summary.as_deref().map(|s| redactor.redact(s)),
            diff: r.diff.as_deref().map(|d| redactor.redact_diff(d)),
            handler: r.handler,
        }
    }

    /// The result it was made from (as masked).
    pub fn to_result(&self) -> StepResult {
        StepResult {
            summary: self.summary.clone(),
            diff: self.diff.clone(),
            handler: self.handler,
            ..StepResult::new(&self.host, &self.stage, &self.step, self.status)
        }
    }

    /// `host: stage/step`.
    pub fn label(&self) -> String {
        format!("{}: {}/{}", self.host, self.stage, self.step)
    }
}

impl SavedPlan {
    /// A plan of `steps` and `rolling` restarts computed from `inputs`, sealed with its checksum.
    pub fn new(inputs: Inputs, steps: Vec<PlannedStep>, rolling: Vec<RollingOrder>) -> Self {
        Self::made_at(inputs, steps, rolling, time::OffsetDateTime::now_utc())
    }

    /// [`SavedPlan::new`] as if made at `now` (a plan's age is checked against it).
    pub fn made_at(
        inputs: Inputs,
        steps: Vec<PlannedStep>,
        rolling: Vec<RollingOrder>,
        now: time::OffsetDateTime,
    ) -> Self {
        let mut plan = SavedPlan {
            hactl_plan: VERSION,
            created: rfc3339(now),
            created_unix: now.unix_timestamp(),
            inputs,
            steps,
            rolling,
            checksum: String::new(),
        };
        plan.checksum = plan.compute_checksum();
        plan
    }

    fn compute_checksum(&self) -> String {
        let body = serde_json::to_vec(&(
            self.hactl_plan,
            &self.created,
            self.created_unix,
            &self.inputs,
            &self.steps,
            &self.rolling,
        ))
        .expect("a plan serialises");
        hex::encode(Sha256::digest(body))
    }

    /// Writes it (0600: it names the cluster's hosts and shows diffs, masked).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| miette!("cannot write the plan: {e}"))?;
        crate::fsutil::write_atomic(path, format!("{text}\n").as_bytes(), 0o600)
    }

    /// Reads a plan file, refusing what is not one or was edited since it was written.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| miette!("cannot read the plan {}: {e}", path.display()))?;
        let plan: SavedPlan = serde_json::from_str(&text).map_err(|e| {
            miette!(
                "{} is not a hactl plan ({e}): write one with `hactl plan INVENTORY --out FILE`",
                path.display()
            )
        })?;
        if plan.hactl_plan != VERSION {
            return Err(miette!(
                "{} is a plan of format {}; this hactl reads format {VERSION}",
                path.display(),
                plan.hactl_plan
            ));
        }
        if plan.compute_checksum() != plan.checksum {
            return Err(miette!(
                "{} was changed after hactl wrote it (its checksum does not match): plan again",
                path.display()
            ));
        }
        let i = &plan.inputs;
        for (name, sha) in [
            ("inventory_sha256", &i.inventory_sha256),
            ("playbook_sha256", &i.playbook_sha256),
            ("secrets_sha256", &i.secrets_sha256),
        ] {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(miette!(
                    "{} is not a hactl plan: its {name} is not 64 hex digits",
                    path.display()
                ));
            }
        }
        Ok(plan)
    }

    /// What would change, by host and stage (the results a plan shows as changed).
    pub fn changes(&self) -> impl Iterator<Item = &PlannedStep> {
        self.steps.iter().filter(|s| s.status == Status::Changed)
    }

    /// Its age in hours, now.
    pub fn age_hours(&self) -> f64 {
        (time::OffsetDateTime::now_utc()
            .unix_timestamp()
            .saturating_sub(self.created_unix)) as f64
            / 3600.0
    }

    /// The differences between this plan and `now` (a plan of the same selectors made just
    /// now): each fingerprint that moved, each step whose status, summary or diff differs, each step one of
    /// them lacks, each rolling restart whose order moved. Empty when the plan still holds.
    pub fn differences(&self, now: &SavedPlan) -> Vec<String> {
        let mut out = Vec::new();
        let (a, b) = (&self.inputs, &now.inputs);
        if a.inventory_sha256 != b.inventory_sha256 {
            out.push(format!("the inventory {} changed since the plan", b.inventory));
        }
        if a.playbook_sha256 != b.playbook_sha256 {
            out.push(format!(
                "the playbook {} or its templates changed since the plan",
                b.playbook
            ));
        }
        // A plan made before the secrets existed masked values this run has just made.
        if a.secrets_sha256 != b.secrets_sha256 && a.secrets_sha256 != file_sha256(Path::new("")) {
            out.push("the secrets file changed since the plan".to_string());
        }
        let (then, current) = (keyed(&self.steps), keyed(&now.steps));
        for (k, old) in &then {
            match current.get(k) {
                None => out.push(format!("{}: planned, now not part of the run", old.label())),
                Some(new) if new.status == old.status && new.summary == old.summary && new != old => out.push(format!(
                    "{}: {}, but its diff is not the one reviewed",
                    old.label(),
                    describe(new)
                )),
                Some(new) if new != old => out.push(format!(
                    "{}: planned {}, now {}",
                    old.label(),
                    describe(old),
                    describe(new)
                )),
                Some(_) => {}
            }
        }
        for (k, new) in &current {
            if !then.contains_key(k) {
                out.push(format!("{}: not in the plan, now {}", new.label(), describe(new)));
            }
        }
        for i in 0..self.rolling.len().max(now.rolling.len()) {
            match (self.rolling.get(i), now.rolling.get(i)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) if a.stage == b.stage => out.push(format!(
                    "{}: the rolling restarts moved: planned {}, now {}",
                    a.stage,
                    a.hosts.join(" → "),
                    b.hosts.join(" → ")
                )),
                (a, b) => out.push(format!(
                    "the rolling restarts moved: planned {}, now {}",
                    a.map_or("none".to_string(), ToString::to_string),
                    b.map_or("none".to_string(), ToString::to_string)
                )),
            }
        }
        out
    }

    /// The rolling restart lines `plan` printed for `stage`.
    pub fn rolling_lines(&self, stage: &str) -> String {
        self.rolling
            .iter()
            .filter(|o| o.stage == stage)
            .map(|o| o.line("would restart"))
            .collect()
    }
}

/// Steps by (host, stage, step, n): n tells apart steps of one name in one stage.
fn keyed(steps: &[PlannedStep]) -> BTreeMap<(String, String, String, usize), &PlannedStep> {
    let mut out = BTreeMap::new();
    for s in steps {
        let mut n = 0;
        while out.contains_key(&(s.host.clone(), s.stage.clone(), s.step.clone(), n)) {
            n += 1;
        }
        out.insert((s.host.clone(), s.stage.clone(), s.step.clone(), n), s);
    }
    out
}

/// A step's status and what it says, for a difference.
fn describe(s: &PlannedStep) -> String {
    let what = s.summary.as_deref().unwrap_or("");
    let diff = if s.diff.is_some() { " (with a diff)" } else { "" };
    match s.status {
        Status::Changed => format!("`{what}`{diff}"),
        Status::Ok | Status::Passed => "in sync".to_string(),
        Status::Skipped => format!(
            "skipped{}",
            if what.is_empty() {
                String::new()
            } else {
                format!(" ({what})")
            }
        ),
        Status::Failed => "failing".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            inventory: "inv.yml".into(),
            inventory_sha256: "a".repeat(64),
            playbook: "built-in".into(),
            playbook_sha256: "b".repeat(64),
            secrets_sha256: "c".repeat(64),
            stages: None,
            limit: None,
        }
    }

    fn step(host: &str, status: Status, summary: Option<&str>) -> PlannedStep {
        PlannedStep {
            host: host.into(),
            stage: "airflow".into(),
            step: "config".into(),
            status,
            summary: summary.map(str::to_string),
            diff: None,
            handler: false,
        }
    }

    #[test]
    fn saved_loaded_and_a_hand_edit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        let plan = SavedPlan::new(inputs(), vec![step("node1", Status::Changed, Some("update x"))], vec![]);
        plan.save(&path).unwrap();
        assert_eq!(SavedPlan::load(&path).unwrap(), plan);
        let edited = std::fs::read_to_string(&path).unwrap().replace("update x", "update y");
        std::fs::write(&path, edited).unwrap();
        let err = SavedPlan::load(&path).unwrap_err().to_string();
        assert!(err.contains("was changed after hactl wrote it"), "{err}");
        std::fs::write(&path, "hosts: []\n").unwrap();
        let err = SavedPlan::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a hactl plan"), "{err}");
    }

    #[test]
    fn differences_name_the_host_and_step_and_the_inputs() {
        let plan = SavedPlan::new(
            inputs(),
            vec![
                step("node1", Status::Ok, None),
                step("node2", Status::Changed, Some("update x")),
            ],
            vec![],
        );
        assert!(plan.differences(&plan).is_empty());
        let mut moved_inputs = inputs();
        moved_inputs.playbook_sha256 = "d".repeat(64);
        let now = SavedPlan::new(
            moved_inputs,
            vec![
                step("node1", Status::Changed, Some("update x")),
                step("node2", Status::Changed, Some("update x")),
            ],
            vec![],
        );
        let diffs = plan.differences(&now);
        assert_eq!(
            diffs,
            vec![
                "the playbook built-in or its templates changed since the plan".to_string(),
                "node1: airflow/config: planned in sync, now `update x`".to_string(),
            ]
        );
    }

    #[test]
    fn a_rolling_order_that_moved_is_a_difference() {
        let order = |hosts: &[&str]| RollingOrder {
            stage: "postgres".into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        };
        let steps = vec![step("node1", Status::Changed, Some("update x"))];
        let plan = SavedPlan::new(inputs(), steps.clone(), vec![order(&["node2", "node3", "node1"])]);
        assert!(plan.differences(&plan).is_empty());
        assert_eq!(
            plan.rolling_lines("postgres"),
            "postgres rolling: would restart one host at a time, gates between: node2 → node3 → node1\n"
        );
        let now = SavedPlan::new(inputs(), steps.clone(), vec![order(&["node1", "node3", "node2"])]);
        assert_eq!(
            plan.differences(&now),
            vec![
                "postgres: the rolling restarts moved: planned node2 → node3 → node1, now node1 → node3 → node2"
                    .to_string()
            ]
        );
        let none = SavedPlan::new(inputs(), steps, vec![]);
        assert_eq!(
            none.differences(&plan),
            vec!["the rolling restarts moved: planned none, now postgres: node2 → node3 → node1".to_string()]
        );
    }
}
