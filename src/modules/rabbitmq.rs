//! What the `rabbitmq_*` modules share: the node's cluster status as a typed fact, and the
//! shell helper that prints it (`rabbitmq.sh`, prepended to each module's script).

use miette::{miette, Result};
use serde::Deserialize;

use super::ProbeLines;

/// The helper every `rabbitmq_*` script starts with.
pub const SH: &str = include_str!("rabbitmq.sh");

/// `rabbitmqctl cluster_status` as the modules need it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClusterStatus {
    /// Disk nodes of the node's cluster (itself included).
    pub disk_nodes: Vec<String>,
    /// Nodes running now.
    #[serde(default)]
    pub running_nodes: Vec<String>,
}

/// Whether the node answered, and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStatus {
    /// RabbitMQ is not installed or not running (a plan on fresh nodes): why.
    Down(String),
    /// The node answered.
    Up(ClusterStatus),
}

impl NodeStatus {
    /// Parses the `status` (and `reason`) lines of `hactl_rabbitmq_status`.
    pub fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("status")? {
            "-" => Ok(NodeStatus::Down(lines.get("reason").unwrap_or("no answer").to_string())),
            json => serde_json::from_str(json)
                .map(NodeStatus::Up)
                .map_err(|e| miette!("unexpected cluster_status from rabbitmqctl ({e}): {json}")),
        }
    }
}

/// Parses a JSON line a probe printed under `key`, if it printed one.
pub fn json_line<T: serde::de::DeserializeOwned>(lines: &ProbeLines, key: &str) -> Result<Option<T>> {
    lines
        .get(key)
        .map(|json| {
            serde_json::from_str(json).map_err(|e| miette!("unexpected `{key}` from rabbitmqctl ({e}): {json}"))
        })
        .transpose()
}

/// The script of a `rabbitmq_*` module: the shared helper, then its own functions.
pub fn script(module_sh: &str, vars: &[(&str, &str)], call: &str) -> String {
    super::script(&format!("{SH}\n{module_sh}"), vars, call)
}
