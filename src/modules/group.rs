//! `group`: a local group (with an optional gid) or its removal.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{q, Change, Module, Observed, Presence};

/// Arguments of `group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Numeric gid.
    pub gid: Option<u32>,
    /// A system group.
    #[serde(default)]
    pub system: bool,
    /// present (default) or absent.
    #[serde(default)]
    pub state: Presence,
}

impl Module for Group {
    fn probe(&self) -> String {
        format!("getent group {} || echo absent\n", q(&self.name))
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let exists = !observed.stdout.lines().any(|l| l == "absent");
        let gid = observed
            .stdout
            .lines()
            .next()
            .and_then(|l| l.split(':').nth(2))
            .unwrap_or("");
        Ok(match (self.state, exists) {
            (Presence::Absent, true) => Some(Change::new(format!("remove group {}", self.name))),
            (Presence::Present, false) => Some(Change::new(format!("create group {}", self.name))),
            (Presence::Present, true) => self
                .gid
                .filter(|g| g.to_string() != gid)
                .map(|g| Change::new(format!("group {}: gid {gid} → {g}", self.name))),
            (Presence::Absent, false) => None,
        })
    }

    fn apply(&self) -> String {
        let n = q(&self.name);
        if self.state == Presence::Absent {
            return format!("groupdel {n}\n");
        }
        let gid = self.gid.map(|g| format!(" -g {g}")).unwrap_or_default();
        let system = if self.system { " --system" } else { "" };
        format!("if getent group {n} >/dev/null; then groupmod{gid} {n}; else groupadd{system}{gid} {n}; fi\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs() {
        let g = Group {
            name: "etcd".into(),
            gid: Some(120),
            system: true,
            state: Presence::Present,
        };
        let obs = |s: &str| Observed {
            stdout: s.into(),
            rc: 0,
        };
        assert_eq!(g.diff(&obs("etcd:x:120:\n")).unwrap(), None);
        assert!(g
            .diff(&obs("etcd:x:121:\n"))
            .unwrap()
            .unwrap()
            .summary
            .contains("121 → 120"));
        assert!(g.diff(&obs("absent\n")).unwrap().is_some());
    }
}
