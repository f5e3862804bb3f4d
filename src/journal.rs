//! The run journal: one JSON line per `provision` in `.hactl/runs.jsonl` beside the inventory
//! (0600). A record says when the run started, who ran it (the local user), the fingerprints of
//! the inventory and the playbook it ran, its selectors, how it ended (`ok`, `failed` or
//! `interrupted`) and, per host, the steps it changed, the steps that failed and the handlers it
//! ran: names only, through the redactor, never a diff or a value. A run cut short (Ctrl-C, or
//! a host's SSH connection lost mid-run) still leaves its record, saying so, with what it had
//! applied by then.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use crate::inputs::{rfc3339, Inputs};
use crate::outcome::{Status, StepResult, Summary};
use crate::secrets::Redactor;
use crate::workspace::Workspace;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    /// Every host converged.
    Ok,
    /// A step failed or a host was unreachable.
    Failed,
    /// Cut short: stopped by Ctrl-C, or a host's connection was lost mid-run.
    Interrupted,
}

impl Ending {
    /// The word the journal's listing shows.
    pub fn word(self) -> &'static str {
        match self {
            Ending::Ok => "ok",
            Ending::Failed => "failed",
            Ending::Interrupted => "interrupted",
        }
    }
}

/// What a run did on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// `stage/step` of every step it changed.
    pub changed: Vec<String>,
    /// `stage/step` of every step that failed.
    pub failed: Vec<String>,
    /// `stage/handler` of every handler it ran.
    pub handlers: Vec<String>,
    /// `stage/step` during which its connection was lost, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

/// One run's record (one line of the journal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When it started (RFC 3339, UTC).
    pub started: String,
    /// The local user who ran it.
    pub user: String,
    /// Its inputs' fingerprints and its selectors.
    #[serde(flatten)]
    pub inputs: Inputs,
    /// The reviewed plan it applied (`provision --plan`), if any.
    #[serde(default)]
    pub plan: Option<String>,
    /// How it ended.
    pub ending: Ending,
    /// Why it was interrupted, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Steps changed in all.
    pub changed: usize,
    /// Steps failed in all.
    pub failed: usize,
    /// Hosts unreachable.
    pub unreachable: usize,
    /// What it did, by host.
    pub hosts: BTreeMap<String, HostRecord>,
}

/// The journal of one run under way: it notes results as the run records them and appends the
/// record when the run ends.
pub struct Journal {
    path: PathBuf,
    redactor: Redactor,
    record: Mutex<RunRecord>,
    started: std::time::Instant,
}

impl Journal {
    /// A journal for a run from `inputs`, applying the saved plan `plan` if any.
    pub fn start(inputs: &Inputs, plan: Option<String>, redactor: Redactor) -> Self {
        let record = RunRecord {
            started: now_rfc3339(),
            user: local_user(),
            inputs: inputs.clone(),
            plan,
            ending: Ending::Ok,
            cause: None,
            seconds: 0.0,
            changed: 0,
            failed: 0,
            unreachable: 0,
            hosts: BTreeMap::new(),
        };
        Journal {
            path: Workspace::of(Path::new(&inputs.inventory)).journal(),
            redactor,
            record: Mutex::new(record),
            started: std::time::Instant::now(),
        }
    }

    /// Notes a result: a changed step, a failed one or a handler that ran.
    pub fn note(&self, r: &StepResult) {
        let name = self.redactor.redact(&format!("{}/{}", r.stage, r.step));
        let mut record = self.record.lock().expect("lock");
        let host = record.hosts.entry(r.host.clone()).or_default();
        match r.status {
            Status::Changed if r.handler => host.handlers.push(name),
            Status::Changed => host.changed.push(name),
            Status::Failed => {
                if r.lost {
                    host.lost = Some(name.clone());
                }
                host.failed.push(name);
            }
            Status::Ok | Status::Passed | Status::Skipped => {}
        }
    }

    /// Appends the record: the run ended (`summary`) or was stopped by Ctrl-C (`None`). A run
    /// that ended after losing a host's connection was interrupted too.
    pub fn finish(&self, summary: Option<&Summary>) -> Result<()> {
        let mut record = self.record.lock().expect("lock").clone();
        record.seconds = (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        record.changed = record.hosts.values().map(|h| h.changed.len()).sum();
        record.failed = record.hosts.values().map(|h| h.failed.len()).sum();
        let lost: Vec<String> = record
            .hosts
            .iter()
            .filter_map(|(host, h)| h.lost.as_ref().map(|at| format!("{host} during {at}")))
            .collect();
        record.ending = match summary {
            None => {
                record.cause = Some("stopped by Ctrl-C".to_string());
                Ending::Interrupted
            }
            Some(s) if !lost.is_empty() => {
                record.unreachable = s.unreachable;
                record.cause = Some(format!("the connection was lost: {}", lost.join(", ")));
                Ending::Interrupted
            }
            Some(s) => {
                record.unreachable = s.unreachable;
                if s.failed > 0 || s.unreachable > 0 || record.failed > 0 {
                    Ending::Failed
                } else {
                    Ending::Ok
                }
            }
        };
        let line = serde_json::to_string(&record).map_err(|e| miette!("cannot write the run record: {e}"))?;
        append_line(&self.path, &line)
    }
}

/// Appends one line to the journal, creating it (and `.hactl/`) 0600 when absent.
fn append_line(path: &Path, line: &str) -> Result<()> {
    let fail = |e: std::io::Error| miette!("cannot append to the run journal {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.write_all(format!("{line}\n").as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Every record of an inventory's journal, oldest first (none when it has no journal yet); a
/// line that is not a record is an error naming the file and line.
pub fn read(workspace: &Workspace) -> Result<Vec<RunRecord>> {
    let path = workspace.journal();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(miette!("cannot read the run journal {}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| miette!("{}:{}: not a run record: {e}", path.display(), i + 1))
        })
        .collect()
}

/// One line per run: number, start, user, ending, time, counts, selectors, fingerprints.
pub fn list_line(n: usize, r: &RunRecord) -> String {
    let mut line = format!(
        "#{n} {} {} {} {:.1}s changed={} failed={} unreachable={}",
        r.started,
        r.user,
        r.ending.word(),
        r.seconds,
        r.changed,
        r.failed,
        r.unreachable
    );
    if let Some(stages) = &r.inputs.stages {
        line.push_str(&format!(" stages={}", stages.join(",")));
    }
    if let Some(limit) = &r.inputs.limit {
        line.push_str(&format!(" limit={limit}"));
    }
    if let Some(plan) = &r.plan {
        line.push_str(&format!(" plan={plan}"));
    }
    line.push_str(&format!(
        " playbook={} ({}) inventory {}",
        r.inputs.playbook,
        &r.inputs.playbook_sha256[..12.min(r.inputs.playbook_sha256.len())],
        &r.inputs.inventory_sha256[..12.min(r.inputs.inventory_sha256.len())]
    ));
    line
}

/// A run in detail: its line, then each host's changed steps, failures and handlers.
pub fn details(n: usize, r: &RunRecord) -> String {
    let mut out = format!("{}\n", list_line(n, r));
    if r.ending == Ending::Interrupted {
        out.push_str(&format!(
            "interrupted ({}): what follows is what it had applied by then\n",
            r.cause.as_deref().unwrap_or("stopped")
        ));
    }
    for (host, h) in &r.hosts {
        out.push_str(&format!(
            "{host}: {} changed, {} failed, {} handlers\n",
            h.changed.len(),
            h.failed.len(),
            h.handlers.len()
        ));
        for (mark, names) in [("~", &h.changed), ("!", &h.failed), ("*", &h.handlers)] {
            for name in names {
                out.push_str(&format!("  {mark} {name}\n"));
            }
        }
    }
    out
}

/// The local user: $USER, else $LOGNAME, else the name /etc/passwd gives this process's uid,
/// else `uid N`.
fn local_user() -> String {
    use std::os::unix::fs::MetadataExt;
    if let Some(user) = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty())
    {
        return user;
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid.to_string())
        .map_or_else(|| format!("uid {uid}"), |f| f[0].to_string())
}

/// Now, RFC 3339 in UTC to the second.
fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::inventory_fingerprint;

    /// The inputs of a run of the built-in playbook on `inv`.
    fn inputs_of(inv: &Path) -> Inputs {
        Inputs {
            inventory: inv.display().to_string(),
            inventory_sha256: inventory_fingerprint(inv).unwrap(),
            playbook: "built-in".into(),
            playbook_sha256: "ab".repeat(32),
            secrets_sha256: String::new(),
            stages: None,
            limit: None,
        }
    }

    fn result(host: &str, step: &str, status: Status, handler: bool) -> StepResult {
        StepResult {
            handler,
            ..StepResult::new(host, "airflow", step, status)
        }
    }

    #[test]
    fn a_run_appends_one_record_with_names_only_and_the_journal_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.yml");
        std::fs::write(&inv, "all: {}\n").unwrap();
        let redactor = Redactor::new(["s3cret"]);
        for ending in [Some(Summary::default()), None] {
            let j = Journal::start(&inputs_of(&inv), None, redactor.clone());
            j.note(&result("node1", "config with s3cret", Status::Changed, false));
            j.note(&result("node1", "restart scheduler", Status::Changed, true));
            j.note(&result("node2", "pip", Status::Failed, false));
            j.note(&result("node2", "unit", Status::Ok, false));
            j.finish(ending.as_ref()).unwrap();
        }
        let path = Workspace::of(&inv).journal();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let runs = read(&Workspace::of(&inv)).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].ending, Ending::Failed, "a failed step fails the run");
        assert_eq!(runs[1].ending, Ending::Interrupted);
        assert_eq!(runs[0].hosts["node1"].changed, vec!["airflow/config with ********"]);
        assert_eq!(runs[0].hosts["node1"].handlers, vec!["airflow/restart scheduler"]);
        assert_eq!(runs[0].hosts["node2"].failed, vec!["airflow/pip"]);
        assert_eq!((runs[0].changed, runs[0].failed), (1, 1));
        let shown = details(2, &runs[1]);
        assert!(shown.starts_with("#2 ") && shown.contains(" interrupted "), "{shown}");
        assert!(shown.contains("  * airflow/restart scheduler"), "{shown}");
        assert!(shown.contains("interrupted (stopped by Ctrl-C)"), "{shown}");
    }

    #[test]
    fn a_run_that_lost_a_host_is_recorded_interrupted_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.yml");
        std::fs::write(&inv, "all: {}\n").unwrap();
        let j = Journal::start(&inputs_of(&inv), None, Redactor::default());
        j.note(&result("node3", "config", Status::Changed, false));
        j.note(&StepResult {
            lost: true,
            ..result("node3", "verify", Status::Failed, false)
        });
        let summary = Summary {
            unreachable: 1,
            failed: 1,
            ..Summary::default()
        };
        j.finish(Some(&summary)).unwrap();
        let run = &read(&Workspace::of(&inv)).unwrap()[0];
        assert_eq!(run.ending, Ending::Interrupted);
        assert_eq!(run.hosts["node3"].lost.as_deref(), Some("airflow/verify"));
        assert_eq!(run.unreachable, 1);
        let shown = details(1, run);
        assert!(
            shown.contains("interrupted (the connection was lost: node3 during airflow/verify)")
                && shown.contains("  ~ airflow/config"),
            "{shown}"
        );
    }

    #[test]
    fn a_line_that_is_not_a_record_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.yml");
        append_line(&Workspace::of(&inv).journal(), "{\"not\": \"a record\"}").unwrap();
        let err = read(&Workspace::of(&inv)).unwrap_err().to_string();
        assert!(err.contains("runs.jsonl:1: not a run record"), "{err}");
    }
}
