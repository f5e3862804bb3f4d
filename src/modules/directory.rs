//! `directory`: a directory with owner, group and mode (or its removal).

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Attrs, Change, PathFact, PathKind, Presence, Resource};

/// The module's shell functions.
const SH: &str = include_str!("directory.sh");

/// Arguments of `directory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// Absolute path.
    pub path: String,
    /// Owner user name.
    pub owner: Option<String>,
    /// Owner group name.
    pub group: Option<String>,
    /// Octal mode, quoted (e.g. "0755").
    pub mode: Option<String>,
    /// present (default) or absent (removed recursively).
    #[serde(default)]
    pub state: Presence,
}

impl Directory {
    fn attrs(&self) -> Attrs {
        Attrs {
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode: self.mode.clone(),
        }
    }
}

impl Resource for Directory {
    type Fact = PathFact;

    fn probe(&self) -> String {
        script(SH, &[("HACTL_PATH", &self.path)], "hactl_probe")
    }

    fn diff(&self, fact: &PathFact) -> Result<Option<Change>> {
        match (fact.kind, self.state) {
            (PathKind::File | PathKind::Other, _) => {
                Err(miette::miette!("{} exists but is not a directory", self.path))
            }
            (PathKind::Directory, Presence::Absent) => Ok(Some(Change::new(format!("remove directory {}", self.path)))),
            (PathKind::Absent, Presence::Absent) => Ok(None),
            (PathKind::Absent, Presence::Present) => Ok(Some(Change::new(format!("create directory {}", self.path)))),
            (PathKind::Directory, Presence::Present) => {
                let parts = self
                    .attrs()
                    .diff(fact.ownership.as_ref().expect("an existing directory has attrs"))?;
                Ok((!parts.is_empty()).then(|| Change::new(format!("{}: {}", self.path, parts.join(", ")))))
            }
        }
    }

    fn apply(&self) -> String {
        let state = if self.state == Presence::Absent {
            "absent"
        } else {
            "present"
        };
        let attrs = self.attrs();
        let [owner, group, mode] = attrs.vars();
        script(
            SH,
            &[("HACTL_PATH", &self.path), ("HACTL_STATE", state), owner, group, mode],
            "hactl_apply",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{local_apply, local_diff};

    #[test]
    fn creates_then_in_sync() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory {
            path: dir.path().join("a/b").display().to_string(),
            owner: None,
            group: None,
            mode: Some("0750".into()),
            state: Presence::Present,
        };
        assert!(local_diff(&d).unwrap().is_some());
        assert_eq!(local_apply(&d).rc, 0);
        assert_eq!(local_diff(&d).unwrap(), None);
    }
}
