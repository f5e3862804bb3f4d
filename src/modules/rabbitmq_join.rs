//! `rabbitmq_join`: this node is a member of its group's RabbitMQ cluster. A member is left
//! alone, a node of another cluster is an error (in the plan already), a blank node joins
//! (stop_app, reset, join_cluster, start_app) and a member wiped by hand is forgotten and joins
//! afresh; a node that joined gets a replica of every quorum queue (`rabbitmq-queues grow`).
//! The node joined (the seed) is the first of the group's other nodes that runs and holds the
//! cluster's vhost, else the group's first node (a new cluster, whose first node stays as it is):
//! a node added at the head of the group joins the running cluster, never the other way round.
//! The plan says `would join rabbit@node2 to the cluster of rabbit@node1`.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::rabbitmq::{script, NodeStatus};
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("rabbitmq_join.sh");

/// Arguments of `rabbitmq_join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqJoin {
    /// This node's name, `rabbit@HOST`.
    pub node: String,
    /// The group's node names in the inventory's order, this one included.
    pub nodes: Templated<Vec<String>>,
    /// The vhost that a provisioned cluster holds (how a running cluster is told from a blank node).
    pub vhost: String,
}

/// What the probe saw: the node's status and, for a node in no cluster of the group, the node it
/// would join (itself when it is the seed of a new cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinFact {
    /// The node's status.
    pub status: NodeStatus,
    /// The seed, when the node answered and belongs to no cluster of the group.
    pub seed: Option<String>,
}

impl Fact for JoinFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        Ok(JoinFact {
            status: NodeStatus::parse(lines)?,
            seed: lines.get("seed").map(str::to_string),
        })
    }
}

impl RabbitmqJoin {
    /// The module's script ending in `call`, its arguments in the environment.
    fn script(&self, call: &str) -> String {
        let nodes = self.nodes.or_default().join(",");
        let vars = [
            ("HACTL_NODE", self.node.as_str()),
            ("HACTL_NODES", &nodes),
            ("HACTL_VHOST", &self.vhost),
        ];
        script(SH, &vars, call)
    }

    /// The plan of a node that does not answer yet: the seed is known when the join runs.
    fn join_when_it_runs(&self, why: &str) -> Result<String> {
        let (node, vhost) = (&self.node, &self.vhost);
        let nodes = self.nodes.value("nodes")?;
        let others: Vec<&str> = nodes.iter().map(String::as_str).filter(|n| n != node).collect();
        let running = format!("the first of {} that runs with vhost {vhost}", others.join(", "));
        Ok(match nodes.first() {
            Some(first) if first != node => {
                format!("join {node} to the cluster of {running}, else of {first} ({why})")
            }
            _ => format!("join {node} to the cluster of {running}, else start the cluster ({why})"),
        })
    }
}

impl Resource for RabbitmqJoin {
    type Fact = JoinFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &JoinFact) -> Result<Option<Change>> {
        let node = &self.node;
        match (&fact.status, &fact.seed) {
            (NodeStatus::Down(why), _) => Ok(Some(Change::new(self.join_when_it_runs(why)?))),
            (NodeStatus::Up(_), None) => Ok(None),
            (NodeStatus::Up(s), Some(_)) if s.disk_nodes.iter().any(|n| n != node) => Err(miette::miette!(
                "{node} belongs to another cluster ({}): hactl will not reset it",
                s.disk_nodes.join(", ")
            )),
            (NodeStatus::Up(_), Some(seed)) if seed == node => Ok(None),
            (NodeStatus::Up(_), Some(seed)) => Ok(Some(Change::new(format!("join {node} to the cluster of {seed}")))),
        }
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{diff_of, local_diff, run_local};

    fn join(node: &str) -> RabbitmqJoin {
        RabbitmqJoin {
            node: node.into(),
            nodes: Templated::Value(vec![
                "rabbit@node1".into(),
                "rabbit@node2".into(),
                "rabbit@node3".into(),
            ]),
            vhost: "airflow".into(),
        }
    }

    #[test]
    fn plans_a_join_to_the_seed_only_for_non_members_and_refuses_a_foreign_cluster() {
        let member = r#"status {"disk_nodes":["rabbit@node1","rabbit@node2"],"running_nodes":["rabbit@node1"]}"#;
        assert_eq!(diff_of(&join("rabbit@node2"), member).unwrap(), None);
        let blank = "status {\"disk_nodes\":[\"rabbit@node2\"]}\nseed rabbit@node3\n";
        assert_eq!(
            diff_of(&join("rabbit@node2"), blank).unwrap().unwrap().summary,
            "join rabbit@node2 to the cluster of rabbit@node3"
        );
        let new_cluster = "status {\"disk_nodes\":[\"rabbit@node1\"]}\nseed rabbit@node1\n";
        assert_eq!(
            diff_of(&join("rabbit@node1"), new_cluster).unwrap(),
            None,
            "the seed stays"
        );
        let foreign = "status {\"disk_nodes\":[\"rabbit@node2\",\"rabbit@other\"]}\nseed rabbit@node1\n";
        let err = diff_of(&join("rabbit@node2"), foreign).unwrap_err().to_string();
        assert!(err.contains("another cluster") && err.contains("rabbit@other"), "{err}");
        let down = "status -\nreason RabbitMQ is not installed yet\n";
        assert_eq!(
            diff_of(&join("rabbit@node2"), down).unwrap().unwrap().summary,
            "join rabbit@node2 to the cluster of the first of rabbit@node1, rabbit@node3 that runs with vhost airflow, else of rabbit@node1 (RabbitMQ is not installed yet)"
        );
        assert!(diff_of(&join("rabbit@node1"), down)
            .unwrap()
            .unwrap()
            .summary
            .ends_with("else start the cluster (RabbitMQ is not installed yet)"));
    }

    /// The seed as the script finds it, with a fake `rabbitmqctl` under which the nodes in
    /// `running` hold the vhost and the others do not answer.
    fn seed_of(node: &str, running: &[&str]) -> String {
        let fake = format!(
            "rabbitmqctl() {{ while [ \"$1\" != -n ]; do shift; done; case \" {} \" in *\" $2 \"*) printf 'name\\n/\\nairflow\\n' ;; *) return 69 ;; esac; }}\n",
            running.join(" ")
        );
        let script = join(node).script("hactl_rabbitmq_seed");
        let out = run_local(&script.replacen("hactl_rabbitmq_seed\n", &format!("{fake}hactl_rabbitmq_seed\n"), 1));
        assert_eq!(out.rc, 0, "{}", out.stderr);
        out.stdout.trim().to_string()
    }

    #[test]
    fn the_seed_is_the_first_running_node_with_the_vhost_else_the_group_s_first() {
        assert_eq!(seed_of("rabbit@node2", &[]), "rabbit@node1", "a new cluster");
        assert_eq!(
            seed_of("rabbit@node1", &[]),
            "rabbit@node1",
            "a new cluster's first node"
        );
        assert_eq!(
            seed_of("rabbit@node1", &["rabbit@node2", "rabbit@node3"]),
            "rabbit@node2",
            "a node added at the head of the group joins the running cluster"
        );
        assert_eq!(seed_of("rabbit@node2", &["rabbit@node3"]), "rabbit@node3");
    }

    #[test]
    fn the_real_probe_parses_here() {
        let change = local_diff(&join("rabbit@node2")).expect("the probe's output parses");
        if which::which("rabbitmqctl").is_err() {
            assert!(change.unwrap().summary.contains("not installed"));
        }
    }
}
