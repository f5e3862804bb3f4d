//! What a run comes to: each step's result and status, the run's summary and statistics, and
//! the order of its rolling restarts. The engine makes them; the reporter shows them, the
//! journal notes them and a saved plan keeps them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A result's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In sync.
    Ok,
    /// Changed (or, in a plan, would change).
    Changed,
    /// Failed.
    Failed,
    /// Not run (`when` false, or an earlier failure).
    Skipped,
    /// A verification gate passed.
    Passed,
}

impl Status {
    /// The word a progress line shows.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Passed => "passed",
        }
    }
}

/// One step (or gate, or handler) on one host.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Inventory host name.
    pub host: String,
    /// Stage name.
    pub stage: String,
    /// Step name.
    pub step: String,
    /// Outcome.
    pub status: Status,
    /// What changed or would change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// File diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether this is a handler's result, run or planned (the journal and saved plans tell
    /// handlers from steps).
    #[serde(skip)]
    pub handler: bool,
    /// Whether the host's connection was lost here (the run was cut short on it).
    #[serde(skip)]
    pub lost: bool,
}

impl StepResult {
    /// A result with no summary, diff or error yet.
    pub fn new(host: &str, stage: &str, step: &str, status: Status) -> Self {
        StepResult {
            host: host.into(),
            stage: stage.into(),
            step: step.into(),
            status,
            summary: None,
            diff: None,
            error: None,
            handler: false,
            lost: false,
        }
    }
}

/// The counts of a run.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Hosts targeted.
    pub hosts: usize,
    /// Steps in sync (and gates passed).
    pub ok: usize,
    /// Steps changed (or that would change).
    pub changed: usize,
    /// Steps failed.
    pub failed: usize,
    /// Hosts unreachable.
    pub unreachable: usize,
}

/// Per-run statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// SSH round trips (scripts run) per host.
    pub round_trips: BTreeMap<String, usize>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// The order in which a rolling stage restarts one batch of hosts, one at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollingOrder {
    /// The stage.
    pub stage: String,
    /// The hosts, first restarted first.
    pub hosts: Vec<String>,
}

impl RollingOrder {
    /// The line a run prints for it: `postgres rolling: VERB one host at a time, gates between:
    /// node2 → node3 → node1`.
    pub fn line(&self, verb: &str) -> String {
        format!(
            "{} rolling: {verb} one host at a time, gates between: {}\n",
            self.stage,
            self.hosts.join(" → ")
        )
    }
}

impl std::fmt::Display for RollingOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage, self.hosts.join(" → "))
    }
}

/// Counts results into the contract's summary.
pub fn summarize(hosts: usize, unreachable: usize, results: &[StepResult]) -> Summary {
    let count = |f: &dyn Fn(Status) -> bool| results.iter().filter(|r| f(r.status)).count();
    Summary {
        hosts,
        ok: count(&|s| matches!(s, Status::Ok | Status::Passed)),
        changed: count(&|s| s == Status::Changed),
        failed: count(&|s| s == Status::Failed),
        unreachable,
    }
}

impl Summary {
    /// The contract's closing line.
    pub fn line(&self) -> String {
        format!(
            "hosts={} ok={} changed={} failed={} unreachable={}",
            self.hosts, self.ok, self.changed, self.failed, self.unreachable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_format() {
        let r = |status| StepResult::new("h", "s", "x", status);
        let s = summarize(
            3,
            1,
            &[
                r(Status::Ok),
                r(Status::Changed),
                r(Status::Passed),
                r(Status::Failed),
                r(Status::Skipped),
            ],
        );
        assert_eq!(s.line(), "hosts=3 ok=2 changed=1 failed=1 unreachable=1");
    }
}
