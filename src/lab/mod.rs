//! `hactl lab`: local Debian 12 or 13 test nodes booted with systemd under systemd-nspawn.
//!
//! The lab owns exactly these things, all recorded in its state file so that `down` removes them
//! and nothing else: one bridge, the NAT/forward rules tagged with [`RULE_COMMENT`], one overlay
//! mount, one `systemd-nspawn` process and one cgroup per node, and the per-node directories. The
//! base image and the shared apt/pip caches are kept between labs (they are caches, rebuilt when
//! the recipe changes).
//!
//! Where things are: [`image`] (the base images and key), [`release`] (the Debian releases), [`network`] (bridge, forwarding, NAT),
//! [`node`] (booting, finding and stopping nodes), [`state`], [`subnet`], [`inventory`] (the file
//! `up` writes), [`cgroup`] (each node's own cgroup), [`sys`] (host tools and files). This file
//! has the commands.

mod cgroup;
mod image;
mod inventory;
mod network;
mod node;
pub mod release;
pub mod state;
pub mod subnet;
mod sys;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use release::{Release, DEFAULT_RELEASE};
pub use state::{LabState, NodeState};
pub use subnet::Subnet;

use inventory::{inventory_yaml, is_ours_or_missing};
use network::{forwarding_switch, iptables_args, iptables_has, link_exists, IP_FORWARD};
use node::{port_open, terminate, terminate_all};
use subnet::check_subnet_free;
use sys::{io_err, preflight, preflight_root, read_trimmed, run, write_if_changed, write_sysctl};

/// Name of the bridge the lab nodes are attached to.
pub const BRIDGE: &str = "hactl0";
/// Comment that tags every iptables rule the lab adds.
pub const RULE_COMMENT: &str = "hactl-lab";
/// Default subnet of the lab bridge.
pub const DEFAULT_SUBNET: &str = "10.213.0.0/24";
/// Non-root user with passwordless sudo created on every node (for `become` tests).
pub const SUDO_USER: &str = "hactl";
/// Role groups of the contract; the lab inventory puts every node in each.
pub const ROLE_GROUPS: [&str; 6] = [
    "etcd",
    "postgres",
    "rabbitmq",
    "airflow_masters",
    "airflow_workers",
    "loadbalancers",
];

/// Errors of the lab, each one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab needs root (namespaces, mounts, bridges).
    #[error("hactl lab must run as root (it creates bridges, mounts and containers)")]
    NotRoot,
    /// A system tool is missing.
    #[error("`{tool}` not found: install it with `apt-get install -y {package}`")]
    MissingTool {
        /// The missing executable.
        tool: &'static str,
        /// The Debian package providing it.
        package: &'static str,
    },
    /// The requested subnet overlaps an address or route already on the host.
    #[error("subnet {subnet} is taken on this host ({by}): choose another with --subnet")]
    SubnetTaken {
        /// The subnet asked for.
        subnet: String,
        /// What already uses it.
        by: String,
    },
    /// A node that is not running was asked for.
    #[error("{0} is not running (see `hactl lab status`)")]
    NodeNotRunning(String),
    /// A malformed or unusable subnet.
    #[error("bad --subnet {0}: expected an IPv4 CIDR with room for the nodes, e.g. 10.213.0.0/24")]
    BadSubnet(String),
    /// A running lab was made with other settings.
    #[error("a lab is already up on {0}: run `hactl lab down` first to change its subnet")]
    OtherLabUp(String),
    /// A running lab boots another release than the one asked for.
    #[error("the lab that is up boots {up}, not {asked}: run `hactl lab down` first to change its release")]
    OtherRelease {
        /// The release of the lab that is up.
        up: Release,
        /// The release asked for.
        asked: Release,
    },
    /// A system command failed.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// A node did not come up in time.
    #[error("node {node} did not finish booting within {secs} s (last: {last}; console log: {log})")]
    BootTimeout {
        /// The node name.
        node: String,
        /// Seconds waited.
        secs: u64,
        /// What it was still waiting for at the end.
        last: String,
        /// Path of its console log.
        log: String,
    },
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path inside a node is not what the lab writes through.
    #[error("{path} in a lab node is a symlink or special file where the lab needs a plain directory or file (it could point at the host's files): run `hactl lab down` and up again")]
    UnsafeNodePath {
        /// The path.
        path: String,
    },
    /// The file given to `--inventory` is not one the lab wrote.
    #[error("{0} exists and was not written by `hactl lab up` (its first line is not the lab's mark): pass another --inventory, or move that file away")]
    ForeignInventory(String),
    /// The state file is unreadable.
    #[error("lab state {path} is corrupt: {detail}")]
    State {
        /// The state file.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

/// The lab's results.
type Result<T> = std::result::Result<T, LabError>;

/// Options of `hactl lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Where to write the inventory.
    pub inventory: PathBuf,
    /// The bridge subnet.
    pub subnet: Subnet,
    /// The Debian release (none: the running lab's, or [`DEFAULT_RELEASE`] for a new one).
    pub release: Option<Release>,
}

/// The lab's directories, rooted at `HACTL_LAB_DIR` or /var/lib/hactl/lab.
#[derive(Debug, Clone)]
pub struct Lab {
    root: PathBuf,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    /// The lab at its standard place.
    pub fn new() -> Self {
        let root = std::env::var_os("HACTL_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/hactl/lab"));
        Lab { root }
    }

    /// Default inventory path written by `up`.
    pub fn default_inventory(&self) -> PathBuf {
        self.root.join("inventory.yml")
    }

    /// The lab's private SSH key.
    pub fn key_path(&self) -> PathBuf {
        self.root.join("ssh/id_ed25519")
    }

    /// The known_hosts file listing every node's host key.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.root.join("ssh/known_hosts")
    }

    pub(super) fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub(super) fn node_dir(&self, name: &str) -> PathBuf {
        self.root.join("nodes").join(name)
    }

    /// Brings the lab up (idempotent), returning what changed, one line per action.
    pub fn up(&self, opts: &UpOptions, log: &mut dyn FnMut(&str)) -> Result<Vec<String>> {
        preflight()?;
        if !is_ours_or_missing(&opts.inventory)? {
            return Err(LabError::ForeignInventory(opts.inventory.display().to_string()));
        }
        let mut changes = Vec::new();
        let mut state = match self.state()? {
            Some(s) if s.subnet != opts.subnet => return Err(LabError::OtherLabUp(s.subnet.to_string())),
            Some(s) => {
                check_release(s.release, opts.release)?;
                s
            }
            None => {
                check_subnet_free(&opts.subnet)?;
                LabState {
                    subnet: opts.subnet,
                    release: opts.release.unwrap_or(DEFAULT_RELEASE),
                    nodes: Vec::new(),
                    ip_forward_before: None,
                    forwarding_before: Vec::new(),
                    rules: Vec::new(),
                    inventory: opts.inventory.clone(),
                }
            }
        };
        state.inventory = opts.inventory.clone();
        self.save_state(&state)?;
        let image = self.ensure_image(state.release, log, &mut changes)?;
        self.ensure_key(&mut changes)?;
        self.ensure_network(&mut state, &mut changes)?;
        self.save_state(&state)?;
        for index in 1..=opts.nodes {
            let name = format!("node{index}");
            let address = opts.subnet.node(index);
            if !state.nodes.iter().any(|n| n.name == name) {
                state.nodes.push(NodeState {
                    name: name.clone(),
                    address,
                    pid: None,
                    cgroups: Vec::new(),
                });
            }
            let node = state.nodes.iter_mut().find(|n| n.name == name).expect("just added");
            if node.pid.is_some_and(|pid| self.is_node_process(pid, &name)) {
                continue;
            }
            log(&format!("starting {name} at {address}"));
            let (pid, cgroups) = self.start_node(&image, &name, address, &opts.subnet)?;
            node.pid = Some(pid);
            node.cgroups = cgroups;
            changes.push(format!("started {name} ({address})"));
            self.save_state(&state)?;
        }
        self.write_known_hosts(&state)?;
        for node in &state.nodes {
            self.wait_for_boot(node)?;
        }
        for node in &state.nodes {
            self.check_sudo_user(node)?;
        }
        if write_if_changed(&opts.inventory, inventory_yaml(self, &state).as_bytes(), 0o644)? {
            changes.push(format!("wrote inventory {}", opts.inventory.display()));
        }
        Ok(changes)
    }

    /// Stops one node's machine (its nspawn process), keeping its disk; `up` starts it again.
    pub fn stop_node(&self, name: &str) -> Result<bool> {
        self.end_node(name, terminate)
    }

    /// Crashes one node's machine: its init is SIGKILLed, so the kernel kills every process in
    /// it at once and its network link disappears (peers see silence, not a clean shutdown).
    /// Its disk is kept; `up` starts it again.
    pub fn kill_node(&self, name: &str) -> Result<bool> {
        self.end_node(name, node::crash)
    }

    /// Cuts a running node's network link (the host side of its veth down) or restores it: the
    /// node keeps running but no packet reaches it or leaves it (failover tests of a partition).
    pub fn set_link(&self, name: &str, up: bool) -> Result<()> {
        preflight_root()?;
        let running = self.state()?.is_some_and(|s| {
            s.nodes
                .iter()
                .any(|n| n.name == name && n.pid.is_some_and(|p| self.is_node_process(p, name)))
        });
        if !running {
            return Err(LabError::NodeNotRunning(name.to_string()));
        }
        let state = if up { "up" } else { "down" };
        run("ip", &["link", "set", &node::veth_of(name), state]).map(drop)
    }

    /// Ends a running node's machine with `how` (given its nspawn process), unmounts its disk and
    /// forgets the process; false when it was not running.
    fn end_node(&self, name: &str, how: fn(u32)) -> Result<bool> {
        let Some(mut state) = self.state()? else {
            return Ok(false);
        };
        let Some(node) = state.nodes.iter_mut().find(|n| n.name == name) else {
            return Ok(false);
        };
        let ended = match node.pid.take() {
            Some(pid) if self.is_node_process(pid, name) => {
                how(pid);
                true
            }
            _ => false,
        };
        self.unmount_node(name)?;
        node.cgroups.retain(|dir| !cgroup::remove_cgroup_tree(dir));
        self.save_state(&state)?;
        Ok(ended)
    }

    /// Removes everything `up` made, returning one line per action.
    pub fn down(&self) -> Result<Vec<String>> {
        preflight_root()?;
        let mut done = Vec::new();
        let state = self.state()?;
        let pids = self.lab_nspawn_pids();
        terminate_all(&pids);
        done.extend(pids.iter().map(|pid| format!("stopped nspawn process {pid}")));
        for mount in self.lab_mounts() {
            // A lazy unmount also detaches the mount's copies propagated to its peers, listed
            // apart in mountinfo: what has gone with an earlier one is skipped.
            if !node::is_mounted(Path::new(&mount)) {
                continue;
            }
            // One gone meanwhile (detached with an earlier one's peers) is no failure.
            if let Err(e) = run("umount", &["-l", &mount]) {
                if node::is_mounted(Path::new(&mount)) {
                    return Err(e);
                }
                continue;
            }
            done.push(format!("unmounted {mount}"));
        }
        for dir in state.iter().flat_map(|s| &s.nodes).flat_map(|n| &n.cgroups) {
            if dir.exists() && cgroup::remove_cgroup_tree(dir) {
                done.push(format!("removed cgroup {}", dir.display()));
            }
        }
        if link_exists(BRIDGE) {
            run("ip", &["link", "del", BRIDGE])?;
            done.push(format!("removed bridge {BRIDGE}"));
        }
        if let Some(state) = &state {
            for rule in &state.rules {
                if iptables_has(rule) {
                    let args = iptables_args("-D", rule);
                    run("iptables", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
                    done.push(format!("removed iptables rule {}", rule.join(" ")));
                }
            }
            for (iface, before) in &state.forwarding_before {
                let switch = forwarding_switch(iface);
                // The bridge's went with it.
                if Path::new(&switch).exists() && read_trimmed(&switch) != *before {
                    write_sysctl(&switch, before)?;
                    done.push(format!("restored net.ipv4.conf.{iface}.forwarding={before}"));
                }
            }
            if let Some(before) = state
                .ip_forward_before
                .as_ref()
                .filter(|b| read_trimmed(IP_FORWARD) != **b)
            {
                write_sysctl(IP_FORWARD, before)?;
                done.push(format!("restored net.ipv4.ip_forward={before}"));
            }
            // Another inventory's file (and the restarts its hosts owe) is not the lab's to remove.
            let ours = is_ours_or_missing(&state.inventory)?;
            if !ours {
                done.push(format!("kept {} (not written by the lab)", state.inventory.display()));
            } else if state.inventory.exists() {
                fs::remove_file(&state.inventory).map_err(|e| io_err(&state.inventory, e))?;
                done.push(format!("removed inventory {}", state.inventory.display()));
            }
            // Restarts owed on the nodes just removed: a new lab's nodes owe none of them.
            let pending = crate::workspace::Workspace::of(&state.inventory).pending_handlers();
            if ours && pending.exists() {
                fs::remove_file(&pending).map_err(|e| io_err(&pending, e))?;
                done.push(format!("removed {}", pending.display()));
            }
        }
        let nodes = self.root.join("nodes");
        if nodes.exists() {
            fs::remove_dir_all(&nodes).map_err(|e| io_err(&nodes, e))?;
            done.push("removed node state".into());
        }
        for path in [self.state_path(), self.known_hosts_path()] {
            if path.exists() {
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(done)
    }

    /// The release line (`release trixie (Debian 13)`), then one line per node: name, address,
    /// whether its machine runs and answers SSH.
    pub fn status(&self) -> Result<Vec<String>> {
        let Some(state) = self.state()? else {
            return Ok(vec!["no lab is up".into()]);
        };
        let release = format!("release {}", state.release);
        Ok(std::iter::once(release)
            .chain(state.nodes.iter().map(|n| self.node_status(n)))
            .collect())
    }

    /// One node's status line.
    fn node_status(&self, n: &NodeState) -> String {
        let running = n.pid.is_some_and(|pid| self.is_node_process(pid, &n.name));
        let ssh = running && port_open(n.address, 22, Duration::from_millis(500));
        format!(
            "{} {} {} pid={} ssh={}",
            n.name,
            n.address,
            if running { "running" } else { "stopped" },
            n.pid.map_or("-".into(), |p| p.to_string()),
            if ssh { "up" } else { "down" }
        )
    }
}

/// Refuses `lab up --release X` on a lab that is up with another release (without `--release`,
/// the running lab's release goes on).
fn check_release(up: Release, asked: Option<Release>) -> Result<()> {
    match asked {
        Some(asked) if asked != up => Err(LabError::OtherRelease { up, asked }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_lab_keeps_its_release() {
        assert!(check_release(Release::Bookworm, None).is_ok());
        assert!(check_release(Release::Trixie, Some(Release::Trixie)).is_ok());
        let err = check_release(Release::Bookworm, Some(Release::Trixie)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the lab that is up boots bookworm (Debian 12), not trixie (Debian 13): run `hactl lab down` first to change its release"
        );
    }
}
