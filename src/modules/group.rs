//! `group`: a local group (with an optional gid) or its removal.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, Presence, ProbeLines, Resource};

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

/// The module's shell functions.
const SH: &str = include_str!("group.sh");

/// A group as found: `None` when absent, else its gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFact {
    /// The gid, when the group exists.
    pub gid: Option<String>,
}

impl Fact for GroupFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        let entry = lines.require("group")?;
        if entry == "-" {
            return Ok(GroupFact { gid: None });
        }
        let gid = entry
            .split(':')
            .nth(2)
            .ok_or_else(|| miette::miette!("bad group entry from the probe: {entry:?}"))?;
        Ok(GroupFact { gid: Some(gid.into()) })
    }
}

impl Resource for Group {
    type Fact = GroupFact;

    fn probe(&self) -> String {
        script(SH, &[("HACTL_NAME", &self.name)], "hactl_probe")
    }

    fn diff(&self, fact: &GroupFact) -> Result<Option<Change>> {
        Ok(match (self.state, &fact.gid) {
            (Presence::Absent, Some(_)) => Some(Change::new(format!("remove group {}", self.name))),
            (Presence::Present, None) => Some(Change::new(format!("create group {}", self.name))),
            (Presence::Present, Some(gid)) => self
                .gid
                .filter(|g| g.to_string() != *gid)
                .map(|g| Change::new(format!("group {}: gid {gid} → {g}", self.name))),
            (Presence::Absent, None) => None,
        })
    }

    fn apply(&self) -> String {
        let gid = self.gid.map(|g| g.to_string()).unwrap_or_default();
        let vars = [
            ("HACTL_NAME", self.name.as_str()),
            (
                "HACTL_STATE",
                if self.state == Presence::Absent {
                    "absent"
                } else {
                    "present"
                },
            ),
            ("HACTL_GID", &gid),
            ("HACTL_SYSTEM", if self.system { "yes" } else { "no" }),
        ];
        script(SH, &vars, "hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    #[test]
    fn diffs() {
        let g = Group {
            name: "etcd".into(),
            gid: Some(120),
            system: true,
            state: Presence::Present,
        };
        assert_eq!(diff_of(&g, "group etcd:x:120:\n").unwrap(), None);
        assert!(diff_of(&g, "group etcd:x:121:\n")
            .unwrap()
            .unwrap()
            .summary
            .contains("121 → 120"));
        assert!(diff_of(&g, "group -\n").unwrap().is_some());
        let root = Group {
            name: "root".into(),
            gid: Some(0),
            system: true,
            state: Presence::Present,
        };
        assert_eq!(
            crate::modules::local_diff(&root).unwrap(),
            None,
            "the real probe finds root"
        );
    }
}
