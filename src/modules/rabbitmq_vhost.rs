//! `rabbitmq_vhost`: a RabbitMQ virtual host, created with a default queue type when asked (it is
//! not changed on an existing vhost). The plan says `would create vhost airflow (default queue
//! type quorum)`.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::rabbitmq::{json_line, script, NodeStatus};
use super::{Change, Fact, ProbeLines, Resource};

/// The module's shell functions.
const SH: &str = include_str!("rabbitmq_vhost.sh");

/// Arguments of `rabbitmq_vhost`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqVhost {
    /// The vhost's name.
    pub name: String,
    /// Its default queue type on creation (`quorum`, `classic`, `stream`).
    pub default_queue_type: Option<String>,
}

/// The node's vhosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VhostsFact {
    /// The node does not answer: why.
    Down(String),
    /// Every vhost's name.
    Known(Vec<String>),
}

#[derive(Deserialize)]
struct ListedVhost {
    name: String,
}

impl Fact for VhostsFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        if let NodeStatus::Down(why) = NodeStatus::parse(lines)? {
            return Ok(VhostsFact::Down(why));
        }
        match json_line::<Vec<ListedVhost>>(lines, "vhosts")? {
            Some(v) => Ok(VhostsFact::Known(v.into_iter().map(|v| v.name).collect())),
            None => Ok(VhostsFact::Down("list_vhosts did not answer".into())),
        }
    }
}

impl RabbitmqVhost {
    fn script(&self, call: &str) -> String {
        let vars = [
            ("HACTL_VHOST", self.name.as_str()),
            ("HACTL_QUEUE_TYPE", self.default_queue_type.as_deref().unwrap_or("")),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for RabbitmqVhost {
    type Fact = VhostsFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &VhostsFact) -> Result<Option<Change>> {
        let mut what = format!("create vhost {}", self.name);
        if let Some(t) = &self.default_queue_type {
            what.push_str(&format!(" (default queue type {t})"));
        }
        Ok(match fact {
            VhostsFact::Known(names) if names.contains(&self.name) => None,
            VhostsFact::Known(_) => Some(Change::new(what)),
            VhostsFact::Down(why) => Some(Change::new(format!("{what} ({why})"))),
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

    #[test]
    fn creates_only_a_missing_vhost() {
        let v = RabbitmqVhost {
            name: "airflow".into(),
            default_queue_type: Some("quorum".into()),
        };
        let up = r#"status {"disk_nodes":["rabbit@node1"]}"#;
        let without = format!("{up}\nvhosts [{{\"name\":\"/\"}}]\n");
        assert_eq!(
            diff_of(&v, &without).unwrap().unwrap().summary,
            "create vhost airflow (default queue type quorum)"
        );
        let with = format!("{up}\nvhosts [{{\"name\":\"/\"}},{{\"name\":\"airflow\"}}]\n");
        assert_eq!(diff_of(&v, &with).unwrap(), None);
    }
}
