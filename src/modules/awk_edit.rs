//! The shared machinery of modules that transform a file with an awk program (`lineinfile`,
//! `hosts`): values reach the program through the environment, never its text; the probe runs it
//! to compare; the apply writes atomically, keeping owner and mode, and only when something
//! changes.

use miette::{miette, Result};

use super::file::unified_diff;
use super::{script, Change, Fact, ProbeLines};

/// The shell functions.
const SH: &str = include_str!("awk_edit.sh");

/// What the program would make of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditFact {
    /// The file is missing; the program on empty input gives `new`.
    Absent {
        /// The content it would be created with.
        new: Vec<u8>,
    },
    /// The program leaves the file as it is.
    Same,
    /// The program changes the file.
    Differs {
        /// The content now.
        old: Vec<u8>,
        /// The content after the edit.
        new: Vec<u8>,
    },
}

impl Fact for EditFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        use base64::Engine;
        let decode = |key: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(lines.require(key)?)
                .map_err(|e| miette!("bad `{key}` content from the probe: {e}"))
        };
        match lines.require("state")? {
            "same" => Ok(EditFact::Same),
            "absent" => Ok(EditFact::Absent { new: decode("new")? }),
            "differs" => Ok(EditFact::Differs {
                old: decode("old")?,
                new: decode("new")?,
            }),
            other => Err(miette!("unknown edit state `{other}` from the probe")),
        }
    }
}

/// A file edited in place by an awk program (values passed through the environment, never
/// interpolated): the probe runs the program to stdout and compares; the apply writes atomically
/// keeping owner and mode.
#[derive(Debug, Clone)]
pub struct AwkEdit {
    /// The file.
    pub path: String,
    /// The awk program.
    pub program: String,
    /// Environment for the program (`HACTL_*` names, read with ENVIRON).
    pub env: Vec<(&'static str, String)>,
    /// Create the file (empty) when missing.
    pub create: bool,
    /// What the edit ensures, for the summary.
    pub what: String,
}

impl AwkEdit {
    fn script(&self, call: &str) -> String {
        let mut vars: Vec<(&str, &str)> = vec![("HACTL_PATH", &self.path), ("HACTL_AWK", &self.program)];
        vars.extend(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        script(SH, &vars, call)
    }

    /// The read-only probe.
    pub fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    /// The change, from the fact.
    pub fn diff(&self, fact: &EditFact) -> Result<Option<Change>> {
        match fact {
            EditFact::Same => Ok(None),
            EditFact::Absent { .. } if !self.create => {
                Err(miette!("{} does not exist (set create: true to create it)", self.path))
            }
            EditFact::Absent { new } => Ok(Some(Change::with_diff(
                format!("create {} with {}", self.path, self.what),
                Some(unified_diff(&self.path, b"", new)),
            ))),
            EditFact::Differs { old, new } => Ok(Some(Change::with_diff(
                format!("edit {}: {}", self.path, self.what),
                Some(unified_diff(&self.path, old, new)),
            ))),
        }
    }

    /// The converging script.
    pub fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}
