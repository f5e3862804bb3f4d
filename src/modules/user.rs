//! `user`: a local account (uid, primary group, supplementary groups, home, shell) or its removal.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, Presence, ProbeLines, Resource};

/// Arguments of `user`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric uid.
    pub uid: Option<u32>,
    /// Primary group (must exist).
    pub group: Option<String>,
    /// Supplementary groups (exactly these when given).
    pub groups: Option<Vec<String>>,
    /// Home directory.
    pub home: Option<String>,
    /// Login shell.
    pub shell: Option<String>,
    /// A system account.
    #[serde(default)]
    pub system: bool,
    /// present (default) or absent.
    #[serde(default)]
    pub state: Presence,
}

/// The module's shell functions.
const SH: &str = include_str!("user.sh");

/// An account as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// No such user.
    Absent,
    /// The user exists.
    Present {
        /// uid.
        uid: String,
        /// Home directory.
        home: String,
        /// Login shell.
        shell: String,
        /// Primary group's name.
        group: String,
        /// Supplementary groups, sorted.
        groups: Vec<String>,
    },
}

impl Fact for Account {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        let passwd = lines.require("passwd")?;
        if passwd == "-" {
            return Ok(Account::Absent);
        }
        let f: Vec<&str> = passwd.split(':').collect();
        if f.len() < 7 {
            return Err(miette::miette!("bad passwd entry from the probe: {passwd:?}"));
        }
        Ok(Account::Present {
            uid: f[2].into(),
            home: f[5].into(),
            shell: f[6].into(),
            group: lines.require("group")?.trim().into(),
            groups: lines
                .get("groups")
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect(),
        })
    }
}

impl Resource for User {
    type Fact = Account;

    fn probe(&self) -> String {
        script(SH, &[("HACTL_LOGIN", &self.name)], "hactl_probe")
    }

    fn diff(&self, fact: &Account) -> Result<Option<Change>> {
        let (uid, home, shell, group, groups) = match (self.state, fact) {
            (Presence::Absent, Account::Present { .. }) => {
                return Ok(Some(Change::new(format!("remove user {}", self.name))))
            }
            (Presence::Absent, Account::Absent) => return Ok(None),
            (Presence::Present, Account::Absent) => return Ok(Some(Change::new(format!("create user {}", self.name)))),
            (
                Presence::Present,
                Account::Present {
                    uid,
                    home,
                    shell,
                    group,
                    groups,
                },
            ) => (uid, home, shell, group, groups),
        };
        let mut parts = Vec::new();
        if let Some(want) = self.uid.filter(|u| u.to_string() != *uid) {
            parts.push(format!("uid {uid} → {want}"));
        }
        if let Some(g) = self.group.as_ref().filter(|g| *g != group) {
            parts.push(format!("group {group} → {g}"));
        }
        if let Some(want_groups) = &self.groups {
            let mut want: Vec<&str> = want_groups.iter().map(String::as_str).collect();
            want.sort_unstable();
            if want != groups.iter().map(String::as_str).collect::<Vec<_>>() {
                parts.push(format!("groups [{}] → [{}]", groups.join(","), want.join(",")));
            }
        }
        if let Some(h) = self.home.as_ref().filter(|h| *h != home) {
            parts.push(format!("home {home} → {h}"));
        }
        if let Some(s) = self.shell.as_ref().filter(|s| *s != shell) {
            parts.push(format!("shell {shell} → {s}"));
        }
        Ok((!parts.is_empty()).then(|| Change::new(format!("user {}: {}", self.name, parts.join(", ")))))
    }

    fn apply(&self) -> String {
        let uid = self.uid.map(|u| u.to_string()).unwrap_or_default();
        let groups = self.groups.as_ref().map(|g| g.join(",")).unwrap_or_default();
        let vars = [
            ("HACTL_LOGIN", self.name.as_str()),
            (
                "HACTL_STATE",
                if self.state == Presence::Absent {
                    "absent"
                } else {
                    "present"
                },
            ),
            ("HACTL_UID", &uid),
            ("HACTL_PRIMARY", self.group.as_deref().unwrap_or("")),
            ("HACTL_GROUPS", &groups),
            ("HACTL_HOME", self.home.as_deref().unwrap_or("")),
            ("HACTL_SHELL", self.shell.as_deref().unwrap_or("")),
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
    fn diff_fields() {
        let u = User {
            name: "airflow".into(),
            uid: Some(990),
            group: Some("airflow".into()),
            groups: Some(vec!["ssl-cert".into()]),
            home: Some("/opt/airflow".into()),
            shell: None,
            system: true,
            state: Presence::Present,
        };
        let same = "passwd airflow:x:990:990::/opt/airflow:/bin/sh\ngroup airflow\ngroups ssl-cert \n";
        assert_eq!(diff_of(&u, same).unwrap(), None);
        let other = "passwd airflow:x:991:990::/home/airflow:/bin/sh\ngroup airflow\ngroups \n";
        let s = diff_of(&u, other).unwrap().unwrap().summary;
        assert!(
            s.contains("uid 991 → 990") && s.contains("groups [] → [ssl-cert]") && s.contains("home"),
            "{s}"
        );
        assert_eq!(
            diff_of(&u, "passwd -\n").unwrap().unwrap().summary,
            "create user airflow"
        );
        assert!(
            diff_of(&u, "").is_err(),
            "no passwd line is an error, not an absent user"
        );
        let root = User {
            name: "root".into(),
            uid: Some(0),
            group: None,
            groups: None,
            home: None,
            shell: None,
            system: false,
            state: Presence::Present,
        };
        assert_eq!(
            crate::modules::local_diff(&root).unwrap(),
            None,
            "the real probe finds root"
        );
    }
}
