//! `package`: Debian packages present (optionally pinned to a version) or absent, with apt-get.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{q, Change, Module, Observed, OneOrMany, Presence};

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

impl Module for Package {
    fn probe(&self) -> String {
        let names: Vec<String> = self.wanted().into_iter().map(|(n, _)| q(&n)).collect();
        format!(
            "for p in {}; do dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}} ${{Version}}\\n' \"$p\" 2>/dev/null | head -n1 | grep . || echo \"$p un -\"; done\n",
            names.join(" ")
        )
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let installed: std::collections::HashMap<&str, (bool, &str)> = observed
            .stdout
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (name, status, version) = (f.next()?, f.next()?, f.next().unwrap_or("-"));
                Some((name, (status == "ii", version)))
            })
            .collect();
        let mut actions = Vec::new();
        for (name, version) in self.wanted() {
            let (is_in, have) = installed.get(name.as_str()).copied().unwrap_or((false, "-"));
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
        let names: Vec<String> = self.name.to_vec().iter().map(|n| q(n)).collect();
        let apt = "apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
        if self.state == Presence::Absent {
            let bare: Vec<String> = self.wanted().iter().map(|(n, _)| q(n)).collect();
            return format!(
                "export DEBIAN_FRONTEND=noninteractive\n{apt} remove {}\n",
                bare.join(" ")
            );
        }
        let recommends = if self.install_recommends {
            ""
        } else {
            " --no-install-recommends"
        };
        let mut s = String::from(
            "export DEBIAN_FRONTEND=noninteractive\n\
             if [ -z \"$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -360 2>/dev/null | head -n1)\" ]; then\n\
             apt-get -q -o DPkg::Lock::Timeout=300 update || exit 1; fi\n",
        );
        if self.no_start {
            s.push_str(
                "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d\n\
                 trap 'rm -f /usr/sbin/policy-rc.d' EXIT\n",
            );
        }
        s.push_str(&format!("{apt}{recommends} install {} || exit 1\n", names.join(" ")));
        if self.no_start {
            s.push_str("rm -f /usr/sbin/policy-rc.d; trap - EXIT\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = Observed {
            stdout: "curl ii 7.88\nvim un -\nless ii 590-2\n".into(),
            rc: 0,
        };
        let ch = pkg(&["curl", "vim", "less=600-1"], Presence::Present)
            .diff(&out)
            .unwrap()
            .unwrap();
        assert_eq!(ch.summary, "install vim, change less 590-2 → 600-1");
        let ch = pkg(&["curl", "vim"], Presence::Absent).diff(&out).unwrap().unwrap();
        assert_eq!(ch.summary, "remove curl");
        assert!(pkg(&["curl"], Presence::Present).diff(&out).unwrap().is_none());
    }

    #[test]
    fn probe_reads_dpkg_status() {
        let out = crate::modules::run_local(&pkg(&["dpkg", "hactl-no-such-package"], Presence::Present).probe());
        assert!(
            out.stdout.lines().next().unwrap().starts_with("dpkg ii "),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("hactl-no-such-package un -"));
    }
}
