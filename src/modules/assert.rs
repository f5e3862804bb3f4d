//! `assert`: a read-only check of a host that must hold before the stage changes anything
//! there (e.g. that a unit the stage relies on exists). When it does not hold, the plan and the
//! run stop with its message, in one line. With `after`, it is checked only once that path
//! exists (on a fresh host an earlier stage of the same run creates what it checks).

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource};

/// Arguments of `assert`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assert {
    /// Read-only shell code; exit 0 when the condition holds. Its last output line explains a
    /// failure (unless `msg` is given).
    pub check: String,
    /// The message when it does not hold.
    pub msg: Option<String>,
    /// Check only once this path exists.
    pub after: Option<String>,
}

/// The module's shell functions.
const SH: &str = include_str!("assert.sh");

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// The condition holds.
    Yes,
    /// It does not; why (the check's last output line).
    No(String),
    /// Not checked yet: the `after` path does not exist.
    Later,
}

impl Fact for Holds {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("holds")? {
            "yes" => Ok(Holds::Yes),
            "later" => Ok(Holds::Later),
            "no" => Ok(Holds::No(lines.get("why").unwrap_or("").to_string())),
            other => Err(miette!("unknown answer `{other}` from the check")),
        }
    }
}

impl Assert {
    fn script(&self, call: &str) -> String {
        let vars = [
            ("HACTL_CHECK", self.check.as_str()),
            ("HACTL_AFTER", self.after.as_deref().unwrap_or("")),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for Assert {
    type Fact = Holds;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &Holds) -> Result<Option<Change>> {
        match fact {
            Holds::Yes => Ok(None),
            Holds::Later => Ok(Some(Change::not_counted(format!(
                "checked once {} exists",
                self.after.as_deref().unwrap_or("")
            )))),
            Holds::No(why) => Err(miette!(
                "{}",
                self.msg
                    .clone()
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| if why.is_empty() {
                        "the check failed".to_string()
                    } else {
                        why.clone()
                    })
            )),
        }
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }

    fn converges(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{run_local, Module, Observed};

    fn outcome(check: &str, after: Option<&str>) -> Result<Option<Change>> {
        let a = Assert {
            check: check.into(),
            msg: None,
            after: after.map(String::from),
        };
        let out = run_local(&Module::probe(&a));
        assert_eq!(out.rc, 0, "the probe itself never fails: {}", out.stderr);
        Module::diff(
            &a,
            &Observed {
                stdout: out.stdout,
                ..Default::default()
            },
        )
    }

    #[test]
    fn holds_fails_with_the_last_line_or_waits_for_its_path() {
        assert_eq!(outcome("true", None).unwrap(), None);
        let err = outcome("echo first; echo \"unit x does not exist\"; exit 1", None).unwrap_err();
        assert_eq!(err.to_string(), "unit x does not exist");
        let later = outcome("false", Some("/nonexistent/hactl")).unwrap().unwrap();
        assert!(
            !later.counts && later.summary.contains("/nonexistent/hactl"),
            "{later:?}"
        );
        assert!(outcome("false", Some("/")).is_err());
    }
}
