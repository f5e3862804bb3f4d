//! `patroni_restart`: PostgreSQL restarted where Patroni reports a pending restart (a setting that
//! needs one changed), a leader after switching over, so the cluster keeps a writable primary;
//! or with `daemon: true` the Patroni daemon itself (what it reads only at start changed: its DCS
//! connection), the cluster paused meanwhile so that PostgreSQL keeps running. For rolling
//! handlers. The plan says what it would do on each member.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::patroni::script;
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("patroni_restart.sh");

/// Arguments of `patroni_restart`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatroniRestart {
    /// This member's name in the Patroni cluster.
    pub member: String,
    /// Patroni's REST API on this host: URLs asked in order (the first that answers), e.g. in
    /// both schemes, the one wanted first, where a reload may not have turned TLS on yet.
    #[serde(default = "local_api")]
    pub apis: Templated<Vec<String>>,
    /// Seconds Patroni may take to report a pending restart after a reload.
    #[serde(default = "ten")]
    pub settle: Templated<u64>,
    /// The user of Patroni's unsafe endpoints (restart, switchover); empty where they need none.
    #[serde(default)]
    pub user: String,
    /// Its password (to curl through its standard input, never on a command line).
    #[serde(default)]
    pub password: String,
    /// The CA that https:// APIs are verified against (empty: the system's store, which costs
    /// each request more CPU to load).
    #[serde(default)]
    pub cacert: String,
    /// Restart the Patroni daemon rather than PostgreSQL (a notified handler: always), with the
    /// cluster paused meanwhile (a paused Patroni neither stops nor fails over PostgreSQL).
    #[serde(default)]
    pub daemon: bool,
}

fn local_api() -> Templated<Vec<String>> {
    Templated::Value(vec!["http://127.0.0.1:8008".into()])
}
fn ten() -> Templated<u64> {
    Templated::Value(10)
}

/// This member as Patroni reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberFact {
    /// Patroni does not answer; whether its unit runs.
    Down {
        /// Whether systemd runs the unit (starting, or cut off from its API).
        active: bool,
    },
    /// Patroni answered.
    Up {
        /// Whether a setting waits for a restart.
        pending_restart: bool,
        /// Whether this member leads.
        leader: bool,
    },
}

#[derive(Deserialize)]
struct PatroniState {
    #[serde(default)]
    pending_restart: bool,
    #[serde(default)]
    role: String,
}

impl Fact for MemberFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("member")? {
            "-" => Ok(MemberFact::Down {
                active: lines.require("active")? == "yes",
            }),
            json => {
                let state: PatroniState =
                    serde_json::from_str(json).map_err(|e| miette!("unexpected answer from Patroni ({e}): {json}"))?;
                Ok(MemberFact::Up {
                    pending_restart: state.pending_restart,
                    // Patroni 3.0 says "master", 4.x "primary".
                    leader: matches!(state.role.as_str(), "master" | "primary"),
                })
            }
        }
    }
}

impl PatroniRestart {
    fn script(&self, call: &str) -> String {
        let settle = self.settle.or_default().to_string();
        let apis = self.apis.or_default().join("\n");
        let vars = [
            ("HACTL_APIS", apis.as_str()),
            ("HACTL_MEMBER", &self.member),
            ("HACTL_SETTLE", &settle),
            ("HACTL_API_USER", &self.user),
            ("HACTL_API_PASSWORD", &self.password),
            ("HACTL_CACERT", &self.cacert),
            ("HACTL_DAEMON", if self.daemon { "yes" } else { "no" }),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for PatroniRestart {
    type Fact = MemberFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &MemberFact) -> Result<Option<Change>> {
        self.settle.value("settle")?;
        if self.apis.value("apis")?.is_empty() {
            return Err(miette!("patroni_restart needs this member's REST API in `apis`"));
        }
        let member = &self.member;
        if self.daemon {
            let why = match fact {
                MemberFact::Up { .. } => "",
                MemberFact::Down { active: true } => " (its REST API does not answer now)",
                // It reads the new settings when it starts.
                MemberFact::Down { active: false } => return Ok(None),
            };
            return Ok(Some(Change::new(format!(
                "restart the Patroni daemon on {member}, the cluster paused meanwhile (PostgreSQL keeps running){why}"
            ))));
        }
        Ok(match fact {
            MemberFact::Up {
                pending_restart: true,
                leader: true,
            } => Some(Change::new(format!(
                "switch over from {} (the leader), then restart its PostgreSQL if still pending",
                self.member
            ))),
            MemberFact::Up {
                pending_restart: true,
                leader: false,
            } => Some(Change::new(format!(
                "restart PostgreSQL on {} (pending restart)",
                self.member
            ))),
            _ => None,
        })
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }

    /// A Patroni started by this run started PostgreSQL with the settings in place: nothing is
    /// pending (and waiting `settle` seconds to see so is time lost).
    fn refreshes(&self) -> Option<&str> {
        Some("patroni")
    }

    /// A daemon restart finds nothing to do only where Patroni does not run, and no handler
    /// before it starts Patroni.
    fn idle_when_in_sync(&self) -> bool {
        self.daemon
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    #[test]
    fn restarts_only_where_pending_and_switches_over_a_leader() {
        let m = PatroniRestart {
            member: "node1".into(),
            apis: local_api(),
            settle: Templated::Value(1),
            user: String::new(),
            password: String::new(),
            cacert: String::new(),
            daemon: false,
        };
        let leader = r#"member {"state":"running","role":"master","pending_restart":true}"#;
        assert!(diff_of(&m, leader)
            .unwrap()
            .unwrap()
            .summary
            .starts_with("switch over from node1"));
        let replica = r#"member {"state":"running","role":"replica","pending_restart":true}"#;
        assert_eq!(
            diff_of(&m, replica).unwrap().unwrap().summary,
            "restart PostgreSQL on node1 (pending restart)"
        );
        assert_eq!(diff_of(&m, r#"member {"role":"primary"}"#).unwrap(), None);
        assert_eq!(diff_of(&m, "active yes\nmember -\n").unwrap(), None);
    }

    #[test]
    fn a_daemon_restart_is_always_planned_with_the_cluster_paused() {
        let m = PatroniRestart {
            member: "node1".into(),
            apis: local_api(),
            settle: Templated::Value(1),
            user: "patroni".into(),
            password: "p'w".into(),
            cacert: String::new(),
            daemon: true,
        };
        let summary = |probe: &str| diff_of(&m, probe).unwrap().unwrap().summary;
        let planned = "restart the Patroni daemon on node1, the cluster paused meanwhile (PostgreSQL keeps running)";
        assert_eq!(summary(r#"member {"state":"running","role":"master"}"#), planned);
        assert_eq!(summary(r#"member {"state":"running","role":"replica"}"#), planned);
        assert!(summary("active yes\nmember -\n").ends_with("(its REST API does not answer now)"));
        assert_eq!(
            diff_of(&m, "active no\nmember -\n").unwrap(),
            None,
            "a stopped Patroni reads them at start"
        );
        let script = m.apply();
        assert!(script.contains("PATCH config '{\"pause\": true}'") && script.contains("systemctl restart patroni"));
        assert!(script.contains("hactl_unsafe() {"), "the shared helpers come first");
    }
}
