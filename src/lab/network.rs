//! The lab's network on the host: the bridge, IP forwarding and the NAT/forward rules, each
//! tagged with [`RULE_COMMENT`] and recorded in the state so that `down` removes exactly them.

use std::path::Path;
use std::process::{Command, Stdio};

use super::state::LabState;
use super::sys::{read_trimmed, run, write_sysctl};
use super::{Lab, Result, BRIDGE, RULE_COMMENT};

/// The host's IP forwarding switch.
pub(super) const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

impl Lab {
    /// The bridge with its address, IP forwarding and the tagged NAT/forward rules.
    pub(super) fn ensure_network(&self, state: &mut LabState, changes: &mut Vec<String>) -> Result<()> {
        let cidr = format!("{}/{}", state.subnet.gateway(), state.subnet.prefix);
        if !link_exists(BRIDGE) {
            run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
            run("ip", &["addr", "add", &cidr, "dev", BRIDGE])?;
            changes.push(format!("created bridge {BRIDGE} {cidr}"));
        }
        run("ip", &["link", "set", BRIDGE, "up"])?;
        if read_trimmed(IP_FORWARD) != "1" {
            write_sysctl(IP_FORWARD, "1")?;
            changes.push("enabled net.ipv4.ip_forward".into());
        }
        let subnet = state.subnet.to_string();
        let wanted: Vec<Vec<String>> = [
            vec![
                "nat",
                "POSTROUTING",
                "-s",
                &subnet,
                "!",
                "-o",
                BRIDGE,
                "-j",
                "MASQUERADE",
            ],
            vec!["filter", "FORWARD", "-i", BRIDGE, "-j", "ACCEPT"],
            vec!["filter", "FORWARD", "-o", BRIDGE, "-j", "ACCEPT"],
        ]
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
        for rule in wanted {
            if !state.rules.contains(&rule) {
                state.rules.push(rule.clone());
            }
            if !iptables_has(&rule) {
                let args = iptables_args("-I", &rule);
                run("iptables", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
                changes.push(format!("added iptables rule {}", rule.join(" ")));
            }
        }
        Ok(())
    }
}

/// iptables arguments for `op` (-I, -C, -D) on a recorded rule, tagged with the lab's comment.
pub(super) fn iptables_args(op: &str, rule: &[String]) -> Vec<String> {
    let mut args = vec!["-w".to_string(), "-t".into(), rule[0].clone(), op.into()];
    args.extend(rule[1..].iter().cloned());
    args.extend(["-m", "comment", "--comment", RULE_COMMENT].map(String::from));
    args
}

/// Whether the rule is in place.
pub(super) fn iptables_has(rule: &[String]) -> bool {
    let args = iptables_args("-C", rule);
    Command::new("iptables")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a network interface exists.
pub(super) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}
