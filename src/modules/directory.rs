//! `directory`: a directory with owner, group and mode (or its removal).

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{fields, q, Attrs, Change, Module, Observed, Presence};

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

impl Module for Directory {
    fn probe(&self) -> String {
        format!(
            "p={}\nif [ -d \"$p\" ]; then {}; elif [ -e \"$p\" ]; then echo notdir; else echo absent; fi\n",
            q(&self.path),
            Attrs::probe_line()
        )
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let f = fields(&observed.stdout);
        if f.contains_key("notdir") {
            return Err(miette::miette!("{} exists but is not a directory", self.path));
        }
        let exists = !f.contains_key("absent");
        match (self.state, exists) {
            (Presence::Absent, true) => Ok(Some(Change::new(format!("remove directory {}", self.path)))),
            (Presence::Absent, false) => Ok(None),
            (Presence::Present, false) => Ok(Some(Change::new(format!("create directory {}", self.path)))),
            (Presence::Present, true) => {
                let parts = self.attrs().diff(f.get("attrs").copied().unwrap_or(""))?;
                Ok((!parts.is_empty()).then(|| Change::new(format!("{}: {}", self.path, parts.join(", ")))))
            }
        }
    }

    fn apply(&self) -> String {
        let p = q(&self.path);
        if self.state == Presence::Absent {
            return format!("rm -rf {p}\n");
        }
        // The directory exists once mkdir ran, so the attribute lines keep what is not given.
        format!(
            "p={p}; mkdir -p \"$p\" || exit 1; target=\"$p\"\n{}",
            self.attrs().apply_lines("0755")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::run_local;

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
        assert!(d.diff(&run_local(&d.probe())).unwrap().is_some());
        assert_eq!(run_local(&d.apply()).rc, 0);
        assert_eq!(d.diff(&run_local(&d.probe())).unwrap(), None);
    }
}
