//! `command`: a shell command, guarded by `creates`, `removes` or `unless` so that it runs only
//! when needed. The plan says "would run" with the guard's answer. Without a guard it always runs.
//! An `unless` command runs during plans too, so it must only read.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource};

/// Arguments of `command`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The command, run with `sh -c`.
    pub cmd: String,
    /// Skip when this path exists.
    pub creates: Option<String>,
    /// Skip when this path does not exist.
    pub removes: Option<String>,
    /// Skip when this (read-only) command succeeds.
    pub unless: Option<String>,
    /// Working directory.
    pub chdir: Option<String>,
    /// What running it does, for plans ("join rabbit@node2 to the cluster"); default: the command.
    pub describe: Option<String>,
    /// For a handler: the systemd unit whose running process it refreshes (a reload of its
    /// files): redundant where this run started that unit after the change that notified it.
    #[serde(default)]
    pub refreshes: Option<String>,
}

/// The module's shell functions.
const SH: &str = include_str!("command.sh");

/// What the guards say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The command must run (no guard, or none satisfied).
    Due,
    /// A guard says it need not run.
    Satisfied,
}

impl Fact for Guard {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("guard")? {
            "due" => Ok(Guard::Due),
            g if g.starts_with("satisfied-by-") => Ok(Guard::Satisfied),
            g => Err(miette::miette!("unknown guard answer `{g}` from the probe")),
        }
    }
}

impl Command {
    fn has_guard(&self) -> bool {
        self.creates.is_some() || self.removes.is_some() || self.unless.is_some()
    }

    fn script(&self, call: &str) -> String {
        let vars = [
            ("HACTL_CMD", self.cmd.as_str()),
            ("HACTL_CREATES", self.creates.as_deref().unwrap_or("")),
            ("HACTL_REMOVES", self.removes.as_deref().unwrap_or("")),
            ("HACTL_UNLESS", self.unless.as_deref().unwrap_or("")),
            ("HACTL_CHDIR", self.chdir.as_deref().unwrap_or("")),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for Command {
    type Fact = Guard;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, guard: &Guard) -> Result<Option<Change>> {
        if *guard == Guard::Satisfied {
            return Ok(None);
        }
        let why = match (&self.creates, &self.removes, &self.unless) {
            (Some(p), _, _) => format!(" (creates {p}: absent)"),
            (_, Some(p), _) => format!(" (removes {p}: present)"),
            (_, _, Some(_)) => " (unless: failed)".to_string(),
            _ => " (no guard: always runs)".to_string(),
        };
        Ok(Some(Change::new(match &self.describe {
            Some(what) => format!("{what}{why}"),
            None => format!("run `{}`{why}", self.cmd.lines().next().unwrap_or("")),
        })))
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }

    fn converges(&self) -> bool {
        self.has_guard()
    }

    fn refreshes(&self) -> Option<&str> {
        self.refreshes.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{local_apply, local_diff};

    #[test]
    fn creates_guard() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("done").display().to_string();
        let c = Command {
            cmd: format!("echo hi > {marker}"),
            creates: Some(marker.clone()),
            removes: None,
            unless: None,
            chdir: None,
            describe: None,
            refreshes: None,
        };
        let ch = local_diff(&c).unwrap().unwrap();
        assert!(
            ch.summary.starts_with("run `") && ch.summary.contains("absent"),
            "{}",
            ch.summary
        );
        assert_eq!(local_apply(&c).rc, 0);
        assert_eq!(local_diff(&c).unwrap(), None);
    }

    #[test]
    fn unless_guard_and_failure() {
        let c = Command {
            cmd: "exit 3".into(),
            creates: None,
            removes: None,
            unless: Some("false".into()),
            chdir: None,
            describe: Some("fail on purpose".into()),
            refreshes: None,
        };
        assert_eq!(
            local_diff(&c).unwrap().unwrap().summary,
            "fail on purpose (unless: failed)"
        );
        assert_eq!(local_apply(&c).rc, 3);
        let ok = Command {
            unless: Some("true".into()),
            ..c
        };
        assert_eq!(local_diff(&ok).unwrap(), None);
        assert_eq!(local_apply(&ok).rc, 0);
    }
}
