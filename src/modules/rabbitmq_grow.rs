//! `rabbitmq_grow`: every quorum queue has a replica on this node. A node that joins a running
//! cluster gets no replica of the queues declared before it (RabbitMQ's membership
//! reconciliation is off by default), so a majority of the old members stays what every queue
//! waits for: `rabbitmq-queues grow` adds this node to each. Read from the management API (from
//! rabbitmqctl where it does not answer yet). The
//! plan says `grow 12 quorum queues to rabbit@node4 (airflow/default, …)`.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::rabbitmq::script;
use super::{Change, Fact, ProbeLines, Resource};

/// The module's shell functions.
const SH: &str = include_str!("rabbitmq_grow.sh");

/// Arguments of `rabbitmq_grow`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqGrow {
    /// This node's name, `rabbit@HOST`.
    pub node: String,
    /// Seconds the apply waits for the API to list the new replicas.
    #[serde(default = "thirty")]
    pub timeout: u64,
}

fn thirty() -> u64 {
    30
}

/// The quorum queues without a replica here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingFact {
    /// The API did not answer: why.
    Unknown(String),
    /// How many, and the first few (`vhost/name`).
    Missing(usize, String),
}

impl Fact for MissingFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("missing")? {
            "-" => Ok(MissingFact::Unknown(
                lines.get("reason").unwrap_or("no answer").to_string(),
            )),
            n => Ok(MissingFact::Missing(
                n.parse().map_err(|_| miette!("unexpected `missing {n}`"))?,
                lines.get("queues").unwrap_or("").to_string(),
            )),
        }
    }
}

impl RabbitmqGrow {
    fn script(&self, call: &str) -> String {
        let timeout = self.timeout.to_string();
        script(SH, &[("HACTL_NODE", &self.node), ("HACTL_TIMEOUT", &timeout)], call)
    }
}

impl Resource for RabbitmqGrow {
    type Fact = MissingFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &MissingFact) -> Result<Option<Change>> {
        let node = &self.node;
        Ok(match fact {
            MissingFact::Missing(0, _) => None,
            MissingFact::Missing(n, first) => {
                let more = if *n > 5 { ", …" } else { "" };
                let queues = if *n == 1 { "queue" } else { "queues" };
                Some(Change::new(format!(
                    "grow {n} quorum {queues} to {node} ({}{more})",
                    first.split(' ').collect::<Vec<_>>().join(", ")
                )))
            }
            // A node that cannot be asked yet (a new one): grown, if any, after it joins.
            MissingFact::Unknown(why) => Some(Change::new(format!(
                "grow the quorum queues without a replica on {node} to it, if any ({why})"
            ))),
        })
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn grow() -> RabbitmqGrow {
        RabbitmqGrow {
            node: "rabbit@node4".into(),
            timeout: 30,
        }
    }

    /// The probe's output with the management API answering `queues` (a JSON array).
    fn probe_with(queues: &str) -> String {
        let fake = format!(
            "rabbitmqctl() {{ return 1; }}\nhactl_rabbitmq_api() {{ printf '%s\\n' {}; }}\n",
            crate::quote::q(queues)
        );
        let script = grow().probe().replacen("hactl_probe", &format!("{fake}hactl_probe"), 1);
        let out = crate::modules::run_local(&script);
        assert_eq!(out.rc, 0, "{out:?}");
        out.stdout
    }

    #[test]
    fn quorum_queues_without_a_replica_here_are_grown_and_others_left() {
        let queues = r#"[
          {"name":"default","vhost":"airflow","type":"quorum","members":["rabbit@node1","rabbit@node2","rabbit@node3"]},
          {"name":"done","vhost":"airflow","type":"quorum","members":["rabbit@node1","rabbit@node4"]},
          {"name":"classic","vhost":"airflow","type":"classic"}]"#;
        let out = probe_with(queues);
        assert_eq!(
            diff_of(&grow(), &out).unwrap().unwrap().summary,
            "grow 1 quorum queue to rabbit@node4 (airflow/default)"
        );
        let grown = queues.replace(r#""rabbit@node3"]"#, r#""rabbit@node3","rabbit@node4"]"#);
        assert_eq!(diff_of(&grow(), &probe_with(&grown)).unwrap(), None);
        assert_eq!(diff_of(&grow(), &probe_with("[]")).unwrap(), None, "no queue yet");
    }

    #[test]
    fn without_the_api_the_queues_are_read_from_rabbitmqctl() {
        let fake = "hactl_rabbitmq_api() { return 1; }\n\
            rabbitmqctl() { case \"$*\" in *list_vhosts*) echo '[{\"name\":\"/\"},{\"name\":\"airflow\"}]';; \
            *'-p airflow'*) echo '[{\"name\":\"default\",\"type\":\"quorum\",\"members\":[\"rabbit@node1\"]}]';; \
            *) echo '[]';; esac; }\n";
        let script = grow().probe().replacen("hactl_probe", &format!("{fake}hactl_probe"), 1);
        let out = crate::modules::run_local(&script);
        assert_eq!(out.rc, 0, "{out:?}");
        assert_eq!(
            diff_of(&grow(), &out.stdout).unwrap().unwrap().summary,
            "grow 1 quorum queue to rabbit@node4 (airflow/default)"
        );
    }

    #[test]
    fn a_node_where_neither_the_api_nor_rabbitmqctl_answers_is_not_taken_as_grown() {
        let fake = "hactl_rabbitmq_api() { return 1; }\nrabbitmqctl() { return 69; }\n";
        let script = grow().probe().replacen("hactl_probe", &format!("{fake}hactl_probe"), 1);
        let out = crate::modules::run_local(&script);
        assert_eq!(out.rc, 0, "{out:?}");
        assert!(out.stdout.contains("missing -"), "{out:?}");
    }

    #[test]
    fn a_node_whose_api_does_not_answer_yet_plans_the_grow() {
        let down = "missing -\nreason the management API does not answer here yet\n";
        assert!(diff_of(&grow(), down)
            .unwrap()
            .unwrap()
            .summary
            .ends_with("(the management API does not answer here yet)"));
    }
}
