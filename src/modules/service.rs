//! `service`: a systemd unit started/stopped/restarted, enabled or not, with daemon-reload when
//! unit files changed on disk.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{fields, q, Change, Module, Observed};

/// Wanted run state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Running.
    Started,
    /// Not running.
    Stopped,
    /// Restarted every time (for handlers).
    Restarted,
    /// Reloaded (or restarted when it cannot reload) every time (for handlers).
    Reloaded,
}

/// Arguments of `service`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unit name.
    pub name: String,
    /// Wanted run state (unset: leave it).
    pub state: Option<RunState>,
    /// Enabled at boot (unset: leave it).
    pub enabled: Option<bool>,
    /// Start without waiting for the unit to be ready (Type=notify units that need a quorum).
    #[serde(default)]
    pub no_block: bool,
}

impl Module for Service {
    fn probe(&self) -> String {
        format!(
            "systemctl show -p LoadState -p ActiveState -p UnitFileState -p NeedDaemonReload {} | sed 's/=/ /'\n",
            q(&self.name)
        )
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let f = fields(&observed.stdout);
        let loaded = f.get("LoadState").is_some_and(|s| *s != "not-found");
        let active = f
            .get("ActiveState")
            .is_some_and(|s| *s == "active" || *s == "activating" || *s == "reloading");
        let enabled = f.get("UnitFileState").is_some_and(|s| {
            matches!(
                *s,
                "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
            )
        });
        let mut actions = Vec::new();
        if loaded && f.get("NeedDaemonReload") == Some(&"yes") {
            actions.push("daemon-reload".to_string());
        }
        match self.enabled {
            Some(true) if !enabled => actions.push(format!("enable {}", self.name)),
            Some(false) if enabled && loaded => actions.push(format!("disable {}", self.name)),
            _ => {}
        }
        match self.state {
            Some(RunState::Started) if !active => actions.push(format!("start {}", self.name)),
            Some(RunState::Stopped) if active => actions.push(format!("stop {}", self.name)),
            Some(RunState::Restarted) => actions.push(format!("restart {}", self.name)),
            Some(RunState::Reloaded) => actions.push(format!("reload {}", self.name)),
            _ => {}
        }
        if !loaded && self.state != Some(RunState::Stopped) && !actions.is_empty() {
            actions.push("(unit not installed yet)".into());
        }
        Ok((!actions.is_empty()).then(|| Change::new(actions.join(", "))))
    }

    fn apply(&self) -> String {
        let n = q(&self.name);
        let nb = if self.no_block { " --no-block" } else { "" };
        let mut s = format!(
            "[ \"$(systemctl show -p NeedDaemonReload --value {n})\" = yes ] && {{ systemctl daemon-reload || exit 1; }}\n"
        );
        match self.enabled {
            Some(true) => s.push_str(&format!("systemctl enable --quiet {n} || exit 1\n")),
            Some(false) => s.push_str(&format!("systemctl disable --quiet {n} || exit 1\n")),
            None => {}
        }
        match self.state {
            Some(RunState::Started) => s.push_str(&format!(
                "systemctl is-active --quiet {n} || systemctl start{nb} {n} || exit 1\n"
            )),
            Some(RunState::Stopped) => s.push_str(&format!("systemctl stop {n} || exit 1\n")),
            Some(RunState::Restarted) => s.push_str(&format!("systemctl restart{nb} {n} || exit 1\n")),
            Some(RunState::Reloaded) => s.push_str(&format!("systemctl reload-or-restart{nb} {n} || exit 1\n")),
            None => {}
        }
        s.push_str("exit 0\n");
        s
    }

    fn converges(&self) -> bool {
        !matches!(self.state, Some(RunState::Restarted | RunState::Reloaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(state: Option<RunState>, enabled: Option<bool>) -> Service {
        Service {
            name: "etcd".into(),
            state,
            enabled,
            no_block: false,
        }
    }

    #[test]
    fn diffs() {
        let obs = |s: &str| Observed {
            stdout: s.into(),
            rc: 0,
        };
        let running = obs("LoadState loaded\nActiveState active\nUnitFileState enabled\nNeedDaemonReload no\n");
        assert_eq!(svc(Some(RunState::Started), Some(true)).diff(&running).unwrap(), None);
        let stopped = obs("LoadState loaded\nActiveState inactive\nUnitFileState disabled\nNeedDaemonReload yes\n");
        assert_eq!(
            svc(Some(RunState::Started), Some(true))
                .diff(&stopped)
                .unwrap()
                .unwrap()
                .summary,
            "daemon-reload, enable etcd, start etcd"
        );
        let missing = obs("LoadState not-found\nActiveState inactive\nUnitFileState \nNeedDaemonReload no\n");
        assert!(svc(Some(RunState::Started), None)
            .diff(&missing)
            .unwrap()
            .unwrap()
            .summary
            .contains("not installed yet"));
        assert!(svc(Some(RunState::Restarted), None).diff(&running).unwrap().is_some());
    }
}
