//! What `up` made, recorded in the lab's state file so that `down` removes exactly that. The file
//! is replaced atomically; one that cannot be read is an error, never "no lab".

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::release::Release;
use super::subnet::Subnet;
use super::sys::{io_err, write_file};
use super::{Lab, LabError, Result};

/// One node as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Hostname, node1..nodeN.
    pub name: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
    /// PID of its systemd-nspawn process, when started.
    pub pid: Option<u32>,
    /// Its own cgroup's directories (one per hierarchy), removed when it stops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<PathBuf>,
}

/// What `up` made, so that `down` removes exactly that.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// The bridge's subnet.
    pub subnet: Subnet,
    /// The Debian release its nodes boot (Debian 12 for a state written before labs had a choice).
    #[serde(default = "Release::before_releases")]
    pub release: Release,
    /// Nodes, in order.
    pub nodes: Vec<NodeState>,
    /// The host's net.ipv4.ip_forward before a lab of an older hactl set it, restored by `down`
    /// (labs now turn forwarding on per interface, [`LabState::forwarding_before`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_forward_before: Option<String>,
    /// Interfaces whose net.ipv4.conf.IFACE.forwarding `up` turned on, with the value before,
    /// restored by `down`.
    #[serde(default)]
    pub forwarding_before: Vec<(String, String)>,
    /// iptables rules added (each as `-t TABLE` + rule spec), removed by `down`.
    pub rules: Vec<Vec<String>>,
    /// Inventory written by `up`.
    pub inventory: PathBuf,
}

impl Lab {
    /// Reads the state file, if a lab is up.
    pub fn state(&self) -> Result<Option<LabState>> {
        let path = self.state_path();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| LabError::State {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Saves the state file.
    pub(super) fn save_state(&self, state: &LabState) -> Result<()> {
        let text = serde_json::to_string_pretty(state).expect("lab state serialises");
        write_file(&self.state_path(), text.as_bytes(), 0o644)
    }
}
