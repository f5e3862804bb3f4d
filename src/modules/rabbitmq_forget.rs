//! `rabbitmq_forget`: the RabbitMQ cluster has no node outside its group. A node whose host left
//! the group (or died for good) stays a disk node, and its quorum queue replicas count towards
//! each queue's majority, until the cluster forgets it. Forgetting is a prune (`provision
//! --prune`; without it the node is left and the report says so), done by one node of the group:
//! the first of its nodes, in order, that runs; on the others this module has nothing to do, so a
//! plan names each node once. Its replicas leave the quorum queues first (`rabbitmq-queues
//! shrink`), then `forget_cluster_node`. A removal that would leave fewer than a majority of the
//! remaining nodes running is refused by `provision --prune`, naming them, and so is one of a node
//! that still runs on a host outside the inventory (a host still in it, outside group rabbitmq,
//! has its RabbitMQ stopped first by the run: stage part departed); without --prune it is left
//! like any other. With `check_only` (the run's first stage, before anything changes), only such
//! refused removals; without it, only the others. The plan says `forget rabbit@node3, down and not in group
//! rabbitmq, and shrink its quorum queue replicas`.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::rabbitmq::{script, ClusterStatus, NodeStatus};
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("rabbitmq_forget.sh");

/// Arguments of `rabbitmq_forget`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqForget {
    /// This node, `rabbit@HOST` (the one that forgets, when it is the group's first running node).
    pub node: String,
    /// The group's nodes, `rabbit@HOST`: every other disk node is forgotten.
    pub nodes: Templated<Vec<String>>,
    /// The inventory's hosts outside the group, `rabbit@HOST`: a node among them may still run
    /// (the run stops its RabbitMQ first, stage part departed, with `provision --prune`).
    #[serde(default = "no_nodes")]
    pub departing: Templated<Vec<String>>,
    /// Only refuse what could not be forgotten (a run's first check, before anything changes):
    /// never a change.
    #[serde(default)]
    pub check_only: bool,
}

fn no_nodes() -> Templated<Vec<String>> {
    Templated::Value(Vec::new())
}

/// The node's view of its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetFact(pub NodeStatus);

impl Fact for ForgetFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        NodeStatus::parse(lines).map(ForgetFact)
    }
}

/// Why forgetting `leaving` is refused, or `None` when a majority of the disk nodes that remain
/// runs.
pub fn below_majority(status: &ClusterStatus, leaving: &[&str]) -> Option<String> {
    let remaining: Vec<&str> = status
        .disk_nodes
        .iter()
        .map(String::as_str)
        .filter(|n| !leaving.contains(n))
        .collect();
    let running = |n: &str| status.running_nodes.iter().any(|r| r == n);
    let needed = remaining.len() / 2 + 1;
    if !remaining.is_empty() && remaining.iter().filter(|n| running(n)).count() >= needed {
        return None;
    }
    let state: Vec<String> = remaining
        .iter()
        .map(|n| format!("{n} ({})", if running(n) { "running" } else { "down" }))
        .collect();
    Some(format!(
        "forgetting {} would leave RabbitMQ without a majority: {} would remain, and {} nodes need {needed} running; start the nodes that are down first, or remove fewer at once",
        leaving.join(", "),
        if state.is_empty() { "no node".to_string() } else { state.join(", ") },
        remaining.len()
    ))
}

/// Why `provision --prune` must not forget `leaving`: a node that still runs on a host outside
/// the inventory (hactl cannot stop it), a majority of the current disk nodes not running while
/// the departing hosts' RabbitMQ stops before it is forgotten (`pause_minority` would pause the
/// rest), or a majority of the remaining nodes not running (see [`below_majority`]).
/// `departing`: the inventory's hosts outside the group, `rabbit@HOST`, whose RabbitMQ the run
/// stops first (stage part departed).
fn refusal(status: &ClusterStatus, leaving: &[&str], departing: &[String]) -> Option<String> {
    let runs = |n: &str| status.running_nodes.iter().any(|r| r == n);
    let running: Vec<&str> = leaving.iter().copied().filter(|n| runs(n)).collect();
    let unreachable: Vec<&str> = running
        .iter()
        .copied()
        .filter(|n| !departing.iter().any(|d| d == n))
        .collect();
    if !unreachable.is_empty() {
        return Some(format!(
            "{} left group rabbitmq and the inventory but still {}: hactl stops the services of a host that is still in the inventory (outside the groups it left), and forgets the nodes of machines that are gone for good; put the host back among the inventory's hosts, or stop rabbitmq-server (and the rest of the stack) there, then run provision --prune again",
            unreachable.join(", "),
            if unreachable.len() == 1 { "runs" } else { "run" }
        ));
    }
    let up = status
        .disk_nodes
        .iter()
        .filter(|n| runs(n) && !running.contains(&n.as_str()))
        .count();
    let needed = status.disk_nodes.len() / 2 + 1;
    if !running.is_empty() && up < needed {
        return Some(format!(
            "stopping RabbitMQ on {} before forgetting {} would leave {up} of {} disk nodes running meanwhile, and they need {needed}; add nodes first, or remove fewer at once",
            running.join(", "),
            if running.len() == 1 { "it" } else { "them" },
            status.disk_nodes.len()
        ));
    }
    below_majority(status, leaving)
}

impl Resource for RabbitmqForget {
    type Fact = ForgetFact;

    fn probe(&self) -> String {
        script(SH, &[], "hactl_probe")
    }

    fn diff(&self, fact: &ForgetFact) -> Result<Option<Change>> {
        let wanted = self.nodes.value("nodes")?;
        let NodeStatus::Up(status) = &fact.0 else {
            return Ok(None);
        };
        let runs = |n: &String| status.running_nodes.contains(n);
        if wanted.iter().find(|n| runs(n)) != Some(&self.node) {
            return Ok(None);
        }
        let leaving: Vec<&str> = status
            .disk_nodes
            .iter()
            .filter(|n| !wanted.contains(n))
            .map(String::as_str)
            .collect();
        if leaving.is_empty() {
            return Ok(None);
        }
        let names = leaving.join(", ");
        let state = if leaving.iter().any(|n| runs(&n.to_string())) {
            "not in group rabbitmq (where RabbitMQ still runs, it stops first)"
        } else {
            "down and not in group rabbitmq"
        };
        Ok(Change::membership(
            self.check_only,
            refusal(status, &leaving, &self.departing.or_default()),
            format!("forget {names}, not in group rabbitmq"),
            format!(
                "forget {names}, {state}, and shrink {} quorum queue replicas",
                if leaving.len() == 1 { "its" } else { "their" }
            ),
        ))
    }

    fn apply(&self) -> String {
        script(
            SH,
            &[("HACTL_NODES", &self.nodes.or_default().join("\n"))],
            "hactl_apply",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn on(node: &str) -> RabbitmqForget {
        RabbitmqForget {
            node: node.into(),
            nodes: Templated::Value(vec![
                "rabbit@node1".into(),
                "rabbit@node3".into(),
                "rabbit@node4".into(),
            ]),
            departing: Templated::Value(Vec::new()),
            check_only: false,
        }
    }

    fn status(disk: &[&str], running: &[&str]) -> String {
        let list = |l: &[&str]| {
            l.iter()
                .map(|n| format!("\"rabbit@{n}\""))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "status {{\"disk_nodes\":[{}],\"running_nodes\":[{}]}}\n",
            list(disk),
            list(running)
        )
    }

    #[test]
    fn a_node_outside_the_group_is_forgotten_by_the_first_running_node_only() {
        let seen = status(&["node1", "node2", "node3", "node4"], &["node1", "node3", "node4"]);
        let change = diff_of(&on("rabbit@node1"), &seen).unwrap().unwrap();
        assert_eq!(
            change.summary,
            "forget rabbit@node2, down and not in group rabbitmq, and shrink its quorum queue replicas"
        );
        assert!(change.prune);
        assert_eq!(diff_of(&on("rabbit@node3"), &seen).unwrap(), None, "node1 forgets it");
        assert_eq!(
            diff_of(&on("rabbit@node4"), "status -\nreason RabbitMQ is not installed yet\n").unwrap(),
            None
        );
        let synced = status(&["node1", "node3", "node4"], &["node1", "node3", "node4"]);
        assert_eq!(diff_of(&on("rabbit@node1"), &synced).unwrap(), None);
    }

    #[test]
    fn forgetting_below_a_majority_or_a_running_node_is_the_check_s_refused_removal() {
        let module = RabbitmqForget {
            nodes: Templated::Value(vec!["rabbit@node1".into(), "rabbit@node3".into()]),
            ..on("rabbit@node1")
        };
        let check = RabbitmqForget {
            check_only: true,
            ..module.clone()
        };
        let seen = status(&["node1", "node2", "node3"], &["node1"]);
        let refused = diff_of(&check, &seen).unwrap().unwrap();
        assert_eq!(refused.summary, "forget rabbit@node2, not in group rabbitmq");
        assert_eq!(
            refused.refusal.as_deref(),
            Some("forgetting rabbit@node2 would leave RabbitMQ without a majority: rabbit@node1 (running), rabbit@node3 (down) would remain, and 2 nodes need 2 running; start the nodes that are down first, or remove fewer at once")
        );
        assert_eq!(diff_of(&module, &seen).unwrap(), None, "the check reports it, once");
        let running = diff_of(
            &check,
            &status(&["node1", "node2", "node3"], &["node1", "node2", "node3"]),
        )
        .unwrap()
        .unwrap();
        assert!(
            running
                .refusal
                .as_deref()
                .unwrap_or_default()
                .starts_with("rabbit@node2 left group rabbitmq and the inventory but still runs:"),
            "{running:?}"
        );
        // node2's host still in the inventory: the run stops its RabbitMQ first, then forgets it.
        let departing = |m: &RabbitmqForget| RabbitmqForget {
            departing: Templated::Value(vec!["rabbit@node2".into()]),
            ..m.clone()
        };
        let all_up = status(&["node1", "node2", "node3"], &["node1", "node2", "node3"]);
        assert_eq!(diff_of(&departing(&check), &all_up).unwrap(), None, "nothing refused");
        assert_eq!(
            diff_of(&departing(&module), &all_up).unwrap().unwrap().summary,
            "forget rabbit@node2, not in group rabbitmq (where RabbitMQ still runs, it stops first), and shrink its quorum queue replicas"
        );
        let node3_down = status(&["node1", "node2", "node3"], &["node1", "node2"]);
        assert!(diff_of(&departing(&check), &node3_down)
            .unwrap()
            .unwrap()
            .refusal
            .unwrap_or_default()
            .starts_with(
                "stopping RabbitMQ on rabbit@node2 before forgetting it would leave 1 of 3 disk nodes running"
            ));
        let down = status(&["node1", "node2", "node3", "node4"], &["node1", "node3", "node4"]);
        let check = RabbitmqForget {
            check_only: true,
            ..on("rabbit@node1")
        };
        assert_eq!(diff_of(&check, &down).unwrap(), None, "nothing to refuse");
    }

    /// The apply against fake rabbitmqctl and rabbitmq-queues (the latter printing `shrunk`), node2
    /// down and outside the group: its exit status, stderr and the tools' calls.
    fn apply_with(shrunk: &str) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        for (tool, prints) in [("rabbitmqctl", ""), ("rabbitmq-queues", shrunk)] {
            let path = dir.path().join(tool);
            let body = format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\nprintf '%s' {}\n",
                log.display(),
                crate::quote::q(prints)
            );
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let fake = format!(
            "PATH={}:$PATH\nhactl_rabbitmq_cluster_json() {{ echo '{{\"disk_nodes\":[\"rabbit@node1\",\"rabbit@node2\",\"rabbit@node3\",\"rabbit@node4\"],\"running_nodes\":[\"rabbit@node1\",\"rabbit@node3\",\"rabbit@node4\"]}}'; }}\n",
            dir.path().display()
        );
        let script = on("rabbit@node1")
            .apply()
            .replacen("hactl_apply", &format!("{fake}hactl_apply"), 1);
        let out = crate::modules::run_local(&script);
        (out.rc, out.stderr, std::fs::read_to_string(&log).unwrap_or_default())
    }

    #[test]
    fn replicas_leave_the_queues_before_the_cluster_forgets_the_node() {
        let (rc, stderr, calls) = apply_with("");
        assert_eq!(rc, 0, "{stderr}{calls}");
        assert_eq!(
            calls,
            "rabbitmq-queues -q shrink rabbit@node2 --errors-only\nrabbitmqctl -q forget_cluster_node rabbit@node2\n"
        );
        let (rc, stderr, calls) =
            apply_with("vhost\tname\tsize\tresult\nairflow\tdefault\t3\terror: the operation timed out and may not have been completed\n");
        assert_ne!(rc, 0, "{calls}");
        assert!(stderr.contains("failed for some queues (not forgotten)"), "{stderr}");
        assert!(!calls.contains("forget_cluster_node"), "not forgotten: {calls}");
    }
}
