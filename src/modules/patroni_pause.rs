//! `patroni_pause`: a Patroni cluster paused (maintenance mode: Patroni neither stops, demotes
//! nor fails over PostgreSQL, even cut off from its DCS) or running normally (failover on),
//! through the first member's REST API that answers. A change that cuts Patroni off from its DCS
//! for a while (etcd turning TLS on) pauses it first; the run resumes it once Patroni reaches the
//! DCS again. The plan says `pause the Patroni cluster` or `resume the Patroni cluster`.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::patroni::script;
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("patroni_pause.sh");

/// Arguments of `patroni_pause`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatroniPause {
    /// The pause wanted.
    pub paused: bool,
    /// The members' REST API URLs, asked in order (the first that answers): each member's in
    /// both schemes, the one wanted first, where its API may still speak the other.
    pub apis: Templated<Vec<String>>,
    /// The user of Patroni's unsafe endpoints (PATCH /config); empty where they need none.
    #[serde(default)]
    pub user: String,
    /// Its password (to curl through its standard input, never on a command line).
    #[serde(default)]
    pub password: String,
    /// The CA that https:// APIs are verified against (empty: the system's store, which costs
    /// each request more CPU to load).
    #[serde(default)]
    pub cacert: String,
}

/// The cluster's pause as a member reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseFact {
    /// No member's REST API answers (no Patroni yet, on a first run).
    NoMember,
    /// A member answered.
    Member {
        /// Its API.
        api: String,
        /// Whether the cluster is paused.
        paused: bool,
    },
}

#[derive(Deserialize)]
struct PatroniState {
    #[serde(default)]
    pause: bool,
}

impl Fact for PauseFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("member")? {
            "-" => Ok(PauseFact::NoMember),
            json => {
                let state: PatroniState =
                    serde_json::from_str(json).map_err(|e| miette!("unexpected answer from Patroni ({e}): {json}"))?;
                Ok(PauseFact::Member {
                    api: lines.require("api")?.to_string(),
                    paused: state.pause,
                })
            }
        }
    }
}

impl PatroniPause {
    fn script(&self, call: &str) -> String {
        let apis = self.apis.or_default().join("\n");
        let vars = [
            ("HACTL_APIS", apis.as_str()),
            ("HACTL_PAUSED", if self.paused { "yes" } else { "no" }),
            ("HACTL_API_USER", &self.user),
            ("HACTL_API_PASSWORD", &self.password),
            ("HACTL_CACERT", &self.cacert),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for PatroniPause {
    type Fact = PauseFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &PauseFact) -> Result<Option<Change>> {
        if self.apis.value("apis")?.is_empty() {
            return Err(miette!("patroni_pause needs at least one member's REST API in `apis`"));
        }
        Ok(match fact {
            // Nothing runs that could fail over, or be resumed.
            PauseFact::NoMember => None,
            PauseFact::Member { paused, .. } if *paused == self.paused => None,
            PauseFact::Member { api, .. } if self.paused => Some(Change::new(format!(
                "pause the Patroni cluster (maintenance mode: no failover) through {api}"
            ))),
            PauseFact::Member { api, .. } => Some(Change::new(format!(
                "resume the Patroni cluster (failover on) through {api}"
            ))),
        })
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }

    /// In sync (paused, or no Patroni answering), a handler that pauses has nothing to do.
    fn idle_when_in_sync(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn pause(paused: bool) -> PatroniPause {
        PatroniPause {
            paused,
            apis: Templated::Value(vec!["https://10.0.0.1:8008".into(), "http://10.0.0.1:8008".into()]),
            user: "patroni".into(),
            password: "p'w\"x".into(),
            cacert: "/etc/hactl/tls/ca.crt".into(),
        }
    }

    #[test]
    fn pauses_or_resumes_only_what_differs() {
        let running = "api https://10.0.0.2:8008\nmember {\"state\":\"running\",\"role\":\"replica\"}\n";
        let paused = "api http://10.0.0.1:8008\nmember {\"state\":\"running\",\"pause\":true}\n";
        let summary = |m: &PatroniPause, probe: &str| diff_of(m, probe).unwrap().map(|c| c.summary);
        assert_eq!(
            summary(&pause(true), running).as_deref(),
            Some("pause the Patroni cluster (maintenance mode: no failover) through https://10.0.0.2:8008")
        );
        assert_eq!(summary(&pause(true), paused), None);
        assert_eq!(
            summary(&pause(false), paused).as_deref(),
            Some("resume the Patroni cluster (failover on) through http://10.0.0.1:8008")
        );
        assert_eq!(summary(&pause(false), running), None);
        assert_eq!(
            summary(&pause(true), "member -\n"),
            None,
            "no Patroni: nothing fails over"
        );
    }

    #[test]
    fn the_script_has_the_shared_helpers_and_each_value_in_one_shell_word() {
        let script = pause(true).apply();
        assert!(script.contains("hactl_unsafe() {") && script.ends_with("hactl_apply\n"));
        assert!(script.contains(&format!("HACTL_API_PASSWORD={}; export", crate::quote::q("p'w\"x"))));
    }
}
