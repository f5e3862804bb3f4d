//! `rabbitmq_join`: this node is a member of the seed's RabbitMQ cluster. A member is left alone,
//! a node of another cluster is an error (in the plan already), a blank node joins (stop_app,
//! reset, join_cluster, start_app), and a member wiped by hand is forgotten and joins afresh; a
//! node that joined gets a replica of every quorum queue (`rabbitmq-queues grow`).
//! The plan says `would join rabbit@node2 to the cluster of rabbit@node1`.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::rabbitmq::{script, NodeStatus};
use super::{Change, Fact, ProbeLines, Resource};

/// The module's shell functions.
const SH: &str = include_str!("rabbitmq_join.sh");

/// Arguments of `rabbitmq_join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqJoin {
    /// This node's name, `rabbit@HOST`.
    pub node: String,
    /// The seed's node name, `rabbit@SEED`.
    pub seed: String,
}

impl Fact for NodeStatus {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        NodeStatus::parse(lines)
    }
}

impl RabbitmqJoin {
    fn vars(&self) -> [(&'static str, &str); 2] {
        [("HACTL_NODE", &self.node), ("HACTL_SEED", &self.seed)]
    }
}

impl Resource for RabbitmqJoin {
    type Fact = NodeStatus;

    fn probe(&self) -> String {
        script(SH, &self.vars(), "hactl_probe")
    }

    fn diff(&self, status: &NodeStatus) -> Result<Option<Change>> {
        let join = format!("join {} to the cluster of {}", self.node, self.seed);
        match status {
            NodeStatus::Down(why) => Ok(Some(Change::new(format!("{join} ({why})")))),
            NodeStatus::Up(s) if s.disk_nodes.contains(&self.seed) => Ok(None),
            NodeStatus::Up(s) if s.disk_nodes.iter().any(|n| *n != self.node) => Err(miette::miette!(
                "{} belongs to another cluster ({}): hactl will not reset it",
                self.node,
                s.disk_nodes.join(", ")
            )),
            NodeStatus::Up(_) => Ok(Some(Change::new(join))),
        }
    }

    fn apply(&self) -> String {
        script(SH, &self.vars(), "hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{diff_of, local_diff};

    fn join() -> RabbitmqJoin {
        RabbitmqJoin {
            node: "rabbit@node2".into(),
            seed: "rabbit@node1".into(),
        }
    }

    #[test]
    fn plans_a_join_only_for_non_members_and_refuses_a_foreign_cluster() {
        let member = r#"status {"disk_nodes":["rabbit@node1","rabbit@node2"],"running_nodes":["rabbit@node1"]}"#;
        assert_eq!(diff_of(&join(), member).unwrap(), None);
        let blank = r#"status {"disk_nodes":["rabbit@node2"]}"#;
        assert_eq!(
            diff_of(&join(), blank).unwrap().unwrap().summary,
            "join rabbit@node2 to the cluster of rabbit@node1"
        );
        let foreign = r#"status {"disk_nodes":["rabbit@node2","rabbit@other"]}"#;
        let err = diff_of(&join(), foreign).unwrap_err().to_string();
        assert!(err.contains("another cluster") && err.contains("rabbit@other"), "{err}");
        let down = "status -\nreason RabbitMQ is not installed yet\n";
        assert!(diff_of(&join(), down)
            .unwrap()
            .unwrap()
            .summary
            .ends_with("(RabbitMQ is not installed yet)"));
    }

    #[test]
    fn the_real_probe_parses_here() {
        let change = local_diff(&join()).expect("the probe's output parses");
        if which::which("rabbitmqctl").is_err() {
            assert!(change.unwrap().summary.contains("not installed"));
        }
    }
}
