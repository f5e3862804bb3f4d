//! `command`: a shell command, guarded by `creates`, `removes` or `unless` so that it runs only
//! when needed. The plan says "would run" with the guard's answer. Without a guard it always runs.
//! An `unless` command runs during plans too, so it must only read.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{q, Change, Module, Observed};

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
}

impl Command {
    /// Shell that prints `satisfied` when a guard says the command need not run.
    fn guard_check(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.creates {
            s.push_str(&format!("[ -e {} ] && echo 'satisfied creates'\n", q(p)));
        }
        if let Some(p) = &self.removes {
            s.push_str(&format!("[ -e {} ] || echo 'satisfied removes'\n", q(p)));
        }
        if let Some(c) = &self.unless {
            s.push_str(&format!(
                "( {c}\n ) >/dev/null 2>&1 </dev/null && echo 'satisfied unless'\n"
            ));
        }
        s
    }

    fn has_guard(&self) -> bool {
        self.creates.is_some() || self.removes.is_some() || self.unless.is_some()
    }
}

impl Module for Command {
    fn probe(&self) -> String {
        format!("{}:\n", self.guard_check())
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        if observed.stdout.contains("satisfied") {
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
        let cd = self
            .chdir
            .as_ref()
            .map(|d| format!("cd {} || exit 1\n", q(d)))
            .unwrap_or_default();
        let guard = if self.has_guard() {
            format!(
                "hactl_guard() {{\n{}:\n}}\nif [ -n \"$(hactl_guard)\" ]; then exit 0; fi\n",
                self.guard_check()
            )
        } else {
            String::new()
        };
        format!("{guard}{cd}sh -c {} </dev/null\n", q(&self.cmd))
    }

    fn converges(&self) -> bool {
        self.has_guard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::run_local;

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
        };
        let ch = c.diff(&run_local(&c.probe())).unwrap().unwrap();
        assert!(
            ch.summary.starts_with("run `") && ch.summary.contains("absent"),
            "{}",
            ch.summary
        );
        assert_eq!(run_local(&c.apply()).rc, 0);
        assert_eq!(c.diff(&run_local(&c.probe())).unwrap(), None);
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
        };
        assert_eq!(
            c.diff(&run_local(&c.probe())).unwrap().unwrap().summary,
            "fail on purpose (unless: failed)"
        );
        assert_eq!(run_local(&c.apply()).rc, 3);
        let ok = Command {
            unless: Some("true".into()),
            ..c
        };
        assert_eq!(ok.diff(&run_local(&ok.probe())).unwrap(), None);
        assert_eq!(run_local(&ok.apply()).rc, 0);
    }
}
