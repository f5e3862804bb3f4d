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
                .map_err(|e| miette!("unexpected cluster status ({e}): {json}")),
        }
    }
}

/// Parses a JSON line a probe printed under `key`, if it printed one.
pub fn json_line<T: serde::de::DeserializeOwned>(lines: &ProbeLines, key: &str) -> Result<Option<T>> {
    lines
        .get(key)
        .map(|json| serde_json::from_str(json).map_err(|e| miette!("unexpected `{key}` from RabbitMQ ({e}): {json}")))
        .transpose()
}

/// The script of a `rabbitmq_*` module: the shared helper, then its own functions.
pub fn script(module_sh: &str, vars: &[(&str, &str)], call: &str) -> String {
    super::script(&format!("{SH}\n{module_sh}"), vars, call)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::{Digest, Sha256};

    /// Runs `call` after the shared helper, with the management API answering `answer` (exit 0)
    /// or failing with `code`: the shell's output and exit status.
    fn run(answer: &str, code: u8, password: &str, call: &str) -> (String, i32) {
        let fake_api = format!(
            "hactl_rabbitmq_api() {{ [ {code} = 0 ] || return {code}; printf '%s\\n' '{answer}'; }}\n\
             rabbitmqctl() {{ echo rabbitmqctl-asked >&2; return 1; }}\n"
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{}\n{fake_api}{call}", super::SH))
            .env("HACTL_PASSWORD", password)
            .output()
            .expect("sh");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            out.status.code().unwrap_or(-1),
        )
    }

    #[test]
    fn names_are_percent_encoded_byte_by_byte_as_python_quotes_them() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{}\nhactl_uri \"$1\"", super::SH))
            .args(["sh", "a b/é%~_.-Z9+'\""])
            .env("LC_ALL", "C")
            .output()
            .expect("sh");
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a%20b%2F%C3%A9%25~_.-Z9%2B%27%22");
    }

    /// A user as the API shows it, with RabbitMQ's salted SHA-256 of `password`.
    fn user_with(password: &str) -> String {
        let salt = [0x00u8, 0x9f, 0x27, 0x0a];
        let digest = Sha256::new().chain_update(salt).chain_update(password).finalize();
        let hash = base64::engine::general_purpose::STANDARD.encode([&salt[..], &digest[..]].concat());
        format!(
            r#"{{"name":"airflow","password_hash":"{hash}","hashing_algorithm":"rabbit_password_hashing_sha256","tags":[]}}"#
        )
    }

    #[test]
    fn the_password_is_checked_against_the_stored_hash() {
        let tricky = "p'w \"$x\\n";
        let stored = user_with(tricky).replace('\'', "'\\''");
        assert_eq!(run(&stored, 0, tricky, "hactl_rabbitmq_password_ok airflow").1, 0);
        assert_eq!(run(&stored, 0, "other", "hactl_rabbitmq_password_ok airflow").1, 1);
        assert_eq!(
            run("", 4, tricky, "hactl_rabbitmq_password_ok airflow").1,
            1,
            "no such user"
        );
        assert_eq!(
            run("", 1, tricky, "hactl_rabbitmq_password_ok airflow").1,
            1,
            "no API: rabbitmqctl asked (and here it fails)"
        );
        let definitions = format!(
            "rabbitmqctl() {{ [ \"$*\" = '-q export_definitions - --format json' ] && printf '%s' '{{\"users\":[{stored}]}}'; }}\n"
        );
        let from_definitions = |password| {
            run(
                "",
                1,
                password,
                &format!("{definitions}hactl_rabbitmq_password_ok airflow"),
            )
            .1
        };
        assert_eq!(
            from_definitions(tricky),
            0,
            "no API: the hash from rabbitmqctl's definitions"
        );
        assert_eq!(from_definitions("other"), 1);
    }

    #[test]
    fn the_node_list_becomes_cluster_status() {
        let nodes = r#"[{"name":"rabbit@a","type":"disc","running":true,"partitions":[],"mem_alarm":false,"disk_free_alarm":false},{"name":"rabbit@b","type":"disc","running":false}]"#;
        let (out, code) = run(nodes, 0, "", "hactl_rabbitmq_cluster_json");
        assert_eq!(code, 0);
        let status: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            status,
            serde_json::json!({"running_nodes": ["rabbit@a"], "disk_nodes": ["rabbit@a", "rabbit@b"],
                "partitions": [], "alarms": []})
        );
        let parsed: super::ClusterStatus = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed.running_nodes, ["rabbit@a"]);
    }
}
