//! `package`: Debian packages present (optionally pinned to a version) or absent, with apt-get.

use miette::Result;
use serde::{Deserialize, Serialize};

use std::collections::HashMap;

use super::{script, Change, Fact, OneOrMany, Presence, ProbeLines, Resource};

/// Arguments of `package`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Package name(s); `name=version` pins one.
    pub name: OneOrMany,
    /// present (default) or absent.
    #[serde(default)]
    pub state: Presence,
    /// Also install recommended packages.
    #[serde(default)]
    pub install_recommends: bool,
    /// Keep the packages' services from starting at install (policy-rc.d), for services that must
    /// be configured before their first start.
    #[serde(default)]
    pub no_start: bool,
}

impl Package {
    fn wanted(&self) -> Vec<(String, Option<String>)> {
        self.name
            .to_vec()
            .into_iter()
            .map(|n| match n.split_once('=') {
                Some((name, version)) => (name.to_string(), Some(version.to_string())),
                None => (n, None),
            })
            .collect()
    }
}

/// The module's shell functions.
const SH: &str = include_str!("package.sh");

/// What dpkg knows of the packages asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Name → (fully installed, version).
    pub packages: HashMap<String, (bool, String)>,
    /// An interrupted install left hactl's policy-rc.d or dpkg's work half done.
    pub leftover: bool,
}

impl Fact for Installed {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        let mut packages = HashMap::new();
        for line in lines.all("pkg") {
            // dpkg prints no version for a package it knows but has not installed.
            let f: Vec<&str> = line.split_whitespace().collect();
            let (name, status, version) = match f[..] {
                [name, status, version] => (name, status, version),
                [name, status] => (name, status, "-"),
                _ => return Err(miette::miette!("bad package line from the probe: {line:?}")),
            };
            packages.insert(name.to_string(), (status == "ii", version.to_string()));
        }
        Ok(Installed {
            packages,
            leftover: lines.get("leftover") == Some("yes"),
        })
    }
}

impl Resource for Package {
    type Fact = Installed;

    fn probe(&self) -> String {
        let names: Vec<String> = self.wanted().into_iter().map(|(n, _)| n).collect();
        script(SH, &[("HACTL_NAMES", &names.join("\n"))], "hactl_probe")
    }

    fn diff(&self, fact: &Installed) -> Result<Option<Change>> {
        let mut actions = Vec::new();
        if fact.leftover {
            actions
                .push("repair what an interrupted install left (hactl's policy-rc.d, dpkg's pending work)".to_string());
        }
        for (name, version) in self.wanted() {
            let (is_in, have) = fact
                .packages
                .get(&name)
                .map(|(i, v)| (*i, v.as_str()))
                .unwrap_or((false, "-"));
            match (self.state, is_in, version) {
                (Presence::Absent, true, _) => actions.push(format!("remove {name}")),
                (Presence::Present, false, Some(v)) => actions.push(format!("install {name}={v}")),
                (Presence::Present, false, None) => actions.push(format!("install {name}")),
                (Presence::Present, true, Some(v)) if v != have => actions.push(format!("change {name} {have} → {v}")),
                _ => {}
            }
        }
        Ok((!actions.is_empty()).then(|| Change::new(actions.join(", "))))
    }

    fn apply(&self) -> String {
        let names: Vec<String> = self.wanted().into_iter().map(|(n, _)| n).collect();
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let vars = [
            ("HACTL_NAMES", names.join("\n")),
            ("HACTL_PACKAGES", self.name.to_vec().join("\n")),
            (
                "HACTL_STATE",
                if self.state == Presence::Absent {
                    "absent"
                } else {
                    "present"
                }
                .to_string(),
            ),
            ("HACTL_RECOMMENDS", yes_no(self.install_recommends).to_string()),
            ("HACTL_NO_START", yes_no(self.no_start).to_string()),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        script(SH, &vars, "hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{diff_of, local_diff};

    fn pkg(names: &[&str], state: Presence) -> Package {
        Package {
            name: OneOrMany::Many(names.iter().map(|s| s.to_string()).collect()),
            state,
            install_recommends: false,
            no_start: false,
        }
    }

    #[test]
    fn diff_install_pin_remove() {
        let out = "pkg curl ii 7.88\npkg vim un -\npkg less ii 590-2\n";
        let ch = diff_of(&pkg(&["curl", "vim", "less=600-1"], Presence::Present), out)
            .unwrap()
            .unwrap();
        assert_eq!(ch.summary, "install vim, change less 590-2 → 600-1");
        let ch = diff_of(&pkg(&["curl", "vim"], Presence::Absent), out).unwrap().unwrap();
        assert_eq!(ch.summary, "remove curl");
        assert!(diff_of(&pkg(&["curl"], Presence::Present), out).unwrap().is_none());
        let leftover = diff_of(&pkg(&["curl"], Presence::Present), "pkg curl ii 7.88\nleftover yes\n").unwrap();
        assert!(leftover
            .unwrap()
            .summary
            .starts_with("repair what an interrupted install left"));
        let known_not_installed = diff_of(&pkg(&["vim"], Presence::Present), "pkg vim un\n").unwrap();
        assert_eq!(known_not_installed.unwrap().summary, "install vim");
        assert!(
            diff_of(&pkg(&["curl"], Presence::Present), "pkg curl\n").is_err(),
            "a malformed line is an error"
        );
    }

    #[test]
    fn probe_reads_dpkg_status() {
        let installed = local_diff(&pkg(&["dpkg"], Presence::Present)).unwrap();
        assert_eq!(installed, None, "dpkg is installed here");
        let missing = local_diff(&pkg(&["dpkg", "hactl-no-such-package"], Presence::Present)).unwrap();
        assert_eq!(missing.unwrap().summary, "install hactl-no-such-package");
    }
}
