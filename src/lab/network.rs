//! The lab's network on the host: the bridge, IP forwarding and the NAT/forward rules, each
//! tagged with [`RULE_COMMENT`] and recorded in the state so that `down` removes exactly them.
//!
//! Forwarding is turned on per interface, never host-wide (`net.ipv4.ip_forward`): on the bridge
//! (the nodes' packets come in there) and on the host's default-route interfaces (the NATed
//! replies come in there: Linux checks the incoming interface's switch). An uplink whose
//! forwarding the lab turned on forwards only to the bridge (a tagged DROP rule for the rest), so
//! the host routes nothing else it did not route before.

use std::path::Path;
use std::process::{Command, Stdio};

use super::state::LabState;
use super::sys::{read_trimmed, run, write_sysctl};
use super::{Lab, Result, BRIDGE, RULE_COMMENT};

/// The host's IP forwarding switch (only restored, for a lab an older hactl made).
pub(super) const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// An interface's own IPv4 forwarding switch.
pub(super) fn forwarding_switch(iface: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{iface}/forwarding")
}

/// The interfaces of `ip -4 route show default`'s routes (each `dev NAME`), in order, once each.
fn route_devices(routes: &str) -> Vec<String> {
    let mut devices: Vec<String> = Vec::new();
    for line in routes.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let dev = words.windows(2).find(|w| w[0] == "dev").map(|w| w[1].to_string());
        if let Some(dev) = dev.filter(|d| !devices.contains(d)) {
            devices.push(dev);
        }
    }
    devices
}

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
        let uplinks = route_devices(&run("ip", &["-4", "route", "show", "default"])?);
        for iface in std::iter::once(BRIDGE.to_string()).chain(uplinks) {
            let switch = forwarding_switch(&iface);
            let before = read_trimmed(&switch);
            if before != "1" {
                if !state.forwarding_before.iter().any(|(i, _)| *i == iface) {
                    state.forwarding_before.push((iface.clone(), before));
                }
                write_sysctl(&switch, "1")?;
                changes.push(format!("enabled net.ipv4.conf.{iface}.forwarding"));
            }
        }
        let subnet = state.subnet.to_string();
        // An uplink the lab turned forwarding on for forwards to the bridge only.
        let uplink_drops = state
            .forwarding_before
            .iter()
            .filter(|(iface, _)| iface != BRIDGE)
            .map(|(iface, _)| vec!["filter", "FORWARD", "-i", iface, "!", "-o", BRIDGE, "-j", "DROP"]);
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
        .into_iter()
        .chain(uplink_drops)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_routes_devices_are_read_once_each() {
        let routes = "default via 192.168.1.1 dev eth0 proto dhcp src 192.168.1.5 metric 100\n\
                      default via 192.168.1.1 dev eth0 proto dhcp metric 200\n\
                      default dev wg0 scope link\n";
        assert_eq!(route_devices(routes), ["eth0", "wg0"]);
        assert!(route_devices("").is_empty());
        assert_eq!(forwarding_switch("hactl0"), "/proc/sys/net/ipv4/conf/hactl0/forwarding");
    }
}
