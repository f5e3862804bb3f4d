//! `patroni_leave`: a member whose host left group `postgres` does not lead the cluster. The
//! PostgreSQL LB sends writes to the group's members only, so a leader outside it would take
//! every write away: it switches over (Patroni waits for the candidate to catch up, unlike a
//! failover) to the group's first running replica, whether or not `provision --prune` stops its
//! Patroni afterwards (`decommission`). A leader with no such replica to take over is an error
//! naming the members. The plan says `switch the Patroni leader over from node1 (not in group
//! postgres) to node2`.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::patroni::script;
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("patroni_leave.sh");

/// Arguments of `patroni_leave`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatroniLeave {
    /// This member's name in the Patroni cluster.
    pub member: String,
    /// The group's names: the members that may lead.
    pub group: Templated<Vec<String>>,
    /// Patroni's REST API on this host: URLs asked in order (the first that answers).
    pub apis: Templated<Vec<String>>,
    /// The user of Patroni's unsafe endpoints (switchover); empty where they need none.
    #[serde(default)]
    pub user: String,
    /// Its password (to curl through its standard input, never on a command line).
    #[serde(default)]
    pub password: String,
    /// The CA that https:// APIs are verified against.
    #[serde(default)]
    pub cacert: String,
    /// Seconds the new leader may take.
    #[serde(default = "sixty")]
    pub timeout: u64,
}

fn sixty() -> u64 {
    60
}

/// A member as GET /cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterMember {
    /// Its name.
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, ...
    #[serde(default)]
    pub role: String,
    /// `running`, `streaming`, `starting`, ...
    #[serde(default)]
    pub state: String,
}

#[derive(Deserialize)]
struct Cluster {
    #[serde(default)]
    members: Vec<ClusterMember>,
}

/// The cluster as this host's Patroni reports it; `None` where Patroni does not answer here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFact(pub Option<Vec<ClusterMember>>);

impl Fact for ClusterFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("cluster")? {
            "-" => Ok(ClusterFact(None)),
            json => serde_json::from_str::<Cluster>(json)
                .map(|c| ClusterFact(Some(c.members)))
                .map_err(|e| miette!("Patroni's /cluster answer: {e}")),
        }
    }
}

impl PatroniLeave {
    fn script(&self, call: &str) -> String {
        let (group, apis) = (self.group.or_default().join("\n"), self.apis.or_default().join("\n"));
        let timeout = self.timeout.to_string();
        let vars = [
            ("HACTL_MEMBER", self.member.as_str()),
            ("HACTL_GROUP", &group),
            ("HACTL_APIS", &apis),
            ("HACTL_API_USER", &self.user),
            ("HACTL_API_PASSWORD", &self.password),
            ("HACTL_CACERT", &self.cacert),
            ("HACTL_TIMEOUT", &timeout),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for PatroniLeave {
    type Fact = ClusterFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &ClusterFact) -> Result<Option<Change>> {
        let group = self.group.value("group")?;
        self.apis.value("apis")?;
        let Some(members) = &fact.0 else {
            return Ok(None);
        };
        let me = &self.member;
        if !members.iter().any(|m| &m.name == me && m.role == "leader") {
            return Ok(None);
        }
        let candidate = members.iter().find(|m| {
            group.contains(&m.name)
                && matches!(m.role.as_str(), "replica" | "sync_standby")
                && matches!(m.state.as_str(), "running" | "streaming")
        });
        match candidate {
            Some(c) => Ok(Some(Change::new(format!(
                "switch the Patroni leader over from {me} (not in group postgres) to {}",
                c.name
            )))),
            None => {
                let states: Vec<String> = members
                    .iter()
                    .map(|m| format!("{} ({} {})", m.name, m.role, m.state))
                    .collect();
                Err(miette!(
                    "{me} leads the Patroni cluster and left group postgres, but no member of the group ({}) is a running replica to take over: {}; put {me} back in the group, or bring a replica of the group up first",
                    group.join(", "),
                    states.join(", ")
                ))
            }
        }
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn leave() -> PatroniLeave {
        PatroniLeave {
            member: "node1".into(),
            group: Templated::Value(vec!["node2".into(), "node3".into()]),
            apis: Templated::Value(vec!["https://node1:8008".into()]),
            user: "patroni".into(),
            password: "p'w".into(),
            cacert: String::new(),
            timeout: 60,
        }
    }

    fn cluster(members: &[(&str, &str, &str)]) -> String {
        let list: Vec<String> = members
            .iter()
            .map(|(n, r, s)| format!(r#"{{"name":"{n}","role":"{r}","state":"{s}"}}"#))
            .collect();
        format!("cluster {{\"members\":[{}]}}\n", list.join(","))
    }

    #[test]
    fn a_leader_outside_the_group_hands_over_to_a_running_replica_of_it() {
        let out = cluster(&[
            ("node1", "leader", "running"),
            ("node2", "replica", "starting"),
            ("node3", "replica", "streaming"),
        ]);
        assert_eq!(
            diff_of(&leave(), &out).unwrap().unwrap().summary,
            "switch the Patroni leader over from node1 (not in group postgres) to node3"
        );
        let replica = cluster(&[("node1", "replica", "streaming"), ("node2", "leader", "running")]);
        assert_eq!(
            diff_of(&leave(), &replica).unwrap(),
            None,
            "a replica has nothing to hand over"
        );
        assert_eq!(diff_of(&leave(), "cluster -\n").unwrap(), None, "no Patroni here");
    }

    #[test]
    fn a_leader_with_no_replica_of_the_group_to_take_over_is_an_error_naming_the_members() {
        let out = cluster(&[("node1", "leader", "running"), ("node2", "replica", "stopped")]);
        let error = diff_of(&leave(), &out).unwrap_err().to_string();
        assert!(
            error.contains("no member of the group (node2, node3) is a running replica")
                && error.contains("node2 (replica stopped)"),
            "{error}"
        );
    }

    /// The script's choice of candidate, from a /cluster answer (jq, as on the host).
    #[test]
    fn the_script_picks_the_group_s_first_running_replica() {
        let answer = r#"{"members":[{"name":"node1","role":"leader","state":"running"},{"name":"node4","role":"replica","state":"streaming"},{"name":"node3","role":"sync_standby","state":"streaming"}]}"#;
        let script = leave().script(&format!("printf '%s' {} | hactl_candidate", crate::quote::q(answer)));
        let out = crate::modules::run_local(&script);
        assert_eq!((out.rc, out.stdout.as_str()), (0, "node3\n"), "{out:?}");
    }

    #[test]
    fn values_reach_the_script_only_as_variables() {
        let body: Vec<String> = leave()
            .apply()
            .lines()
            .filter(|l| !l.starts_with("HACTL_"))
            .map(str::to_string)
            .collect();
        assert!(
            !body.join("\n").contains("p'w"),
            "the password leaked into the script text"
        );
    }
}
