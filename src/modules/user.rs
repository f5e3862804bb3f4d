//! `user`: a local account (uid, primary group, supplementary groups, home, shell) or its removal.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{q, Change, Module, Observed, Presence};

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

impl Module for User {
    fn probe(&self) -> String {
        let n = q(&self.name);
        format!("if getent passwd {n}; then echo \"group $(id -gn {n})\"; echo \"groups $(id -Gn {n} | cut -s -d' ' -f2- | tr ' ' '\\n' | sort | tr '\\n' ' ')\"; else echo absent; fi\n")
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let out = &observed.stdout;
        let exists = !out.lines().any(|l| l == "absent");
        match (self.state, exists) {
            (Presence::Absent, true) => return Ok(Some(Change::new(format!("remove user {}", self.name)))),
            (Presence::Absent, false) => return Ok(None),
            (Presence::Present, false) => return Ok(Some(Change::new(format!("create user {}", self.name)))),
            _ => {}
        }
        let passwd: Vec<&str> = out.lines().next().unwrap_or("").split(':').collect();
        let field = |i: usize| passwd.get(i).copied().unwrap_or("");
        let value = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let mut parts = Vec::new();
        if let Some(uid) = self.uid.filter(|u| u.to_string() != field(2)) {
            parts.push(format!("uid {} → {uid}", field(2)));
        }
        if let Some(g) = self.group.as_ref().filter(|g| **g != value("group ")) {
            parts.push(format!("group {} → {g}", value("group ")));
        }
        if let Some(groups) = &self.groups {
            let mut want: Vec<&str> = groups.iter().map(String::as_str).collect();
            want.sort_unstable();
            let have_text = value("groups ");
            let have: Vec<&str> = have_text.split_whitespace().collect();
            if want != have {
                parts.push(format!("groups [{}] → [{}]", have.join(","), want.join(",")));
            }
        }
        if let Some(h) = self.home.as_ref().filter(|h| h.as_str() != field(5)) {
            parts.push(format!("home {} → {h}", field(5)));
        }
        if let Some(s) = self.shell.as_ref().filter(|s| s.as_str() != field(6)) {
            parts.push(format!("shell {} → {s}", field(6)));
        }
        Ok((!parts.is_empty()).then(|| Change::new(format!("user {}: {}", self.name, parts.join(", ")))))
    }

    fn apply(&self) -> String {
        let n = q(&self.name);
        if self.state == Presence::Absent {
            return format!("userdel {n}\n");
        }
        let mut opts = String::new();
        if let Some(uid) = self.uid {
            opts.push_str(&format!(" -u {uid}"));
        }
        if let Some(g) = &self.group {
            opts.push_str(&format!(" -g {}", q(g)));
        }
        if let Some(gs) = &self.groups {
            opts.push_str(&format!(" -G {}", q(&gs.join(","))));
        }
        if let Some(h) = &self.home {
            opts.push_str(&format!(" -d {}", q(h)));
        }
        if let Some(s) = &self.shell {
            opts.push_str(&format!(" -s {}", q(s)));
        }
        let create_extra = if self.system { " --system" } else { " --create-home" };
        format!("if getent passwd {n} >/dev/null; then usermod{opts} {n}; else useradd{create_extra}{opts} {n}; fi\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let same = Observed {
            stdout: "airflow:x:990:990::/opt/airflow:/bin/sh\ngroup airflow\ngroups ssl-cert \n".into(),
            rc: 0,
        };
        assert_eq!(u.diff(&same).unwrap(), None);
        let other = Observed {
            stdout: "airflow:x:991:990::/home/airflow:/bin/sh\ngroup airflow\ngroups \n".into(),
            rc: 0,
        };
        let s = u.diff(&other).unwrap().unwrap().summary;
        assert!(
            s.contains("uid 991 → 990") && s.contains("groups [] → [ssl-cert]") && s.contains("home"),
            "{s}"
        );
        let absent = Observed {
            stdout: "absent\n".into(),
            rc: 0,
        };
        assert_eq!(u.diff(&absent).unwrap().unwrap().summary, "create user airflow");
    }
}
