//! `service`: a systemd unit started/stopped/restarted, enabled or not, with daemon-reload when
//! unit files changed on disk.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource};

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
    /// Restarted where it runs, left stopped where it does not (handlers of units that another
    /// program starts on one node only, such as the guard's).
    #[serde(rename = "try-restarted")]
    TryRestarted,
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

/// The module's shell functions.
const SH: &str = include_str!("service.sh");

/// A unit as systemd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFact {
    /// `loaded`, `not-found`…
    pub load_state: String,
    /// `active`, `inactive`, `activating`…
    pub active_state: String,
    /// `enabled`, `disabled`, `static`… (empty when unknown).
    pub unit_file_state: String,
    /// Whether its unit files or drop-ins changed on disk since systemd read them.
    pub need_daemon_reload: bool,
}

impl Fact for UnitFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        Ok(UnitFact {
            load_state: lines.require("LoadState")?.to_string(),
            active_state: lines.require("ActiveState")?.to_string(),
            unit_file_state: lines.get("UnitFileState").unwrap_or("").to_string(),
            need_daemon_reload: lines.get("NeedDaemonReload") == Some("yes"),
        })
    }
}

impl Resource for Service {
    type Fact = UnitFact;

    fn probe(&self) -> String {
        script(SH, &[("HACTL_UNIT", &self.name)], "hactl_probe")
    }

    fn diff(&self, fact: &UnitFact) -> Result<Option<Change>> {
        let loaded = fact.load_state != "not-found";
        let active = matches!(fact.active_state.as_str(), "active" | "activating" | "reloading");
        // A static or generated unit cannot be enabled or disabled: it is as enabled as it gets,
        // and as disabled (nothing but a dependency starts it).
        let state = fact.unit_file_state.as_str();
        let enabled = matches!(state, "enabled" | "enabled-runtime" | "alias" | "indirect");
        let fixed = matches!(state, "static" | "generated");
        let mut actions = Vec::new();
        if loaded && fact.need_daemon_reload {
            actions.push("daemon-reload".to_string());
        }
        match self.enabled {
            Some(true) if !enabled && !fixed => actions.push(format!("enable {}", self.name)),
            Some(false) if enabled && loaded => actions.push(format!("disable {}", self.name)),
            _ => {}
        }
        let starts = self.state == Some(RunState::Started) && !active;
        match self.state {
            Some(RunState::Started) if !active => actions.push(format!("start {}", self.name)),
            Some(RunState::Stopped) if active => actions.push(format!("stop {}", self.name)),
            Some(RunState::Restarted) => actions.push(format!("restart {}", self.name)),
            Some(RunState::Reloaded) => actions.push(format!("reload {}", self.name)),
            Some(RunState::TryRestarted) if active => actions.push(format!("restart {}", self.name)),
            _ => {}
        }
        if !loaded && self.state != Some(RunState::Stopped) && !actions.is_empty() {
            actions.push("(unit not installed yet)".into());
        }
        Ok((!actions.is_empty()).then(|| Change {
            starts: starts.then(|| self.name.clone()),
            ..Change::new(actions.join(", "))
        }))
    }

    fn apply(&self) -> String {
        let state = match self.state {
            Some(RunState::Started) => "started",
            Some(RunState::Stopped) => "stopped",
            Some(RunState::Restarted) => "restarted",
            Some(RunState::Reloaded) => "reloaded",
            Some(RunState::TryRestarted) => "try-restarted",
            None => "",
        };
        let enabled = match self.enabled {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        };
        let no_block = if self.no_block { "yes" } else { "no" };
        let vars = [
            ("HACTL_UNIT", self.name.as_str()),
            ("HACTL_STATE", state),
            ("HACTL_ENABLED", enabled),
            ("HACTL_NO_BLOCK", no_block),
        ];
        script(SH, &vars, "hactl_apply")
    }

    fn converges(&self) -> bool {
        !matches!(
            self.state,
            Some(RunState::Restarted | RunState::Reloaded | RunState::TryRestarted)
        )
    }

    fn idle_when_in_sync(&self) -> bool {
        self.state == Some(RunState::TryRestarted)
    }

    fn refreshes(&self) -> Option<&str> {
        matches!(
            self.state,
            Some(RunState::Restarted | RunState::Reloaded | RunState::TryRestarted)
        )
        .then_some(self.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

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
        let running = "LoadState loaded\nActiveState active\nUnitFileState enabled\nNeedDaemonReload no\n";
        assert_eq!(
            diff_of(&svc(Some(RunState::Started), Some(true)), running).unwrap(),
            None
        );
        let stopped = "LoadState loaded\nActiveState inactive\nUnitFileState disabled\nNeedDaemonReload yes\n";
        let change = diff_of(&svc(Some(RunState::Started), Some(true)), stopped)
            .unwrap()
            .unwrap();
        assert_eq!(change.summary, "daemon-reload, enable etcd, start etcd");
        let missing = "LoadState not-found\nActiveState inactive\nUnitFileState \nNeedDaemonReload no\n";
        let change = diff_of(&svc(Some(RunState::Started), None), missing).unwrap().unwrap();
        assert!(change.summary.contains("not installed yet"));
        assert!(diff_of(&svc(Some(RunState::Restarted), None), running)
            .unwrap()
            .is_some());
        let try_restart = svc(Some(RunState::TryRestarted), None);
        assert_eq!(diff_of(&try_restart, running).unwrap().unwrap().summary, "restart etcd");
        assert_eq!(
            diff_of(&try_restart, stopped).unwrap().unwrap().summary,
            "daemon-reload"
        );
        let static_stopped = "LoadState loaded\nActiveState inactive\nUnitFileState static\nNeedDaemonReload no\n";
        assert_eq!(diff_of(&svc(None, Some(false)), static_stopped).unwrap(), None);
        assert_eq!(diff_of(&svc(None, Some(true)), static_stopped).unwrap(), None);
    }

    /// A unit that fails to start: the apply's output (what hactl reports) carries, after
    /// systemctl's message, how the unit's process ended and its own last journal lines. Real
    /// scripts against stand-ins for systemctl and journalctl (first on PATH).
    #[test]
    fn a_failed_start_reports_the_units_own_journal_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let stub = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub(
            "systemctl",
            r#"case "$1" in
  show) case "$*" in
      *Result*) printf 'Result=exit-code\nExecMainCode=1\nExecMainStatus=1\n' ;;
      *) printf 'NeedDaemonReload=no\nDropInPaths=\n' ;;
    esac ;;
  is-active) exit 3 ;;
  start) echo "Job for hactl-firewall.service failed because the control process exited with error code." >&2; exit 1 ;;
  *) exit 0 ;;
esac
"#,
        );
        stub(
            "journalctl",
            r#"[ "$1" = --sync ] && exit 0
echo "journalctl $*"
echo "/etc/hactl/firewall.nft:9:1-2: Error: Could not process rule: Cannot allocate memory"
"#,
        );
        let start = Service {
            name: "hactl-firewall".into(),
            state: Some(RunState::Started),
            enabled: None,
            no_block: false,
        };
        let script = format!(
            "PATH={}:$PATH; export PATH\n{}",
            crate::modules::q(&dir.path().display().to_string()),
            start.apply()
        );
        let out = crate::modules::run_local(&script);
        assert_eq!(out.rc, 1, "{out:?}");
        let report = format!("{}{}", out.stdout, out.stderr);
        for wanted in [
            "the control process exited with error code",
            "hactl-firewall: Result=exit-code ExecMainCode=1 ExecMainStatus=1",
            "hactl-firewall's last journal lines:",
            "journalctl -u hactl-firewall -n 15 --no-pager -o cat",
            "Error: Could not process rule: Cannot allocate memory",
        ] {
            assert!(report.contains(wanted), "no {wanted:?} in {report}");
        }
        // A start that works prints nothing more.
        stub(
            "systemctl",
            "[ \"$1\" = show ] && printf 'NeedDaemonReload=no\\n'; [ \"$1\" != is-active ]\n",
        );
        let out = crate::modules::run_local(&script);
        assert_eq!((out.rc, out.stdout.as_str(), out.stderr.as_str()), (0, "", ""));
    }

    #[test]
    fn empty_probe_output_is_an_error_not_a_stopped_unit() {
        let err = diff_of(&svc(Some(RunState::Started), None), "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("LoadState"), "{err}");
    }
}
