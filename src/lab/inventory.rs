//! The inventory `lab up` writes: Ansible's YAML shape, every node in every role group, the lab's
//! key and known_hosts file. Serialised from a typed document, never pasted together.

use indexmap::IndexMap;
use serde::Serialize;

use std::path::Path;

use super::state::LabState;
use super::sys::io_err;
use super::{Lab, Result, ROLE_GROUPS, SUDO_USER};

/// The first line's start of every inventory `up` writes: a file without it is not the lab's,
/// and `up` never overwrites it nor `down` removes it.
const MARK: &str = "# Written by `hactl lab up`";

/// Whether `path` may take the lab's inventory: missing, or written by the lab (its first line
/// starts with [`MARK`]).
pub(super) fn is_ours_or_missing(path: &Path) -> Result<bool> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes.starts_with(MARK.as_bytes())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The file: `all:` with vars, hosts and one child group per role.
#[derive(Serialize)]
struct Document {
    all: All,
}

#[derive(Serialize)]
struct All {
    vars: IndexMap<&'static str, String>,
    hosts: IndexMap<String, HostVars>,
    children: IndexMap<&'static str, Members>,
}

#[derive(Serialize)]
struct HostVars {
    ansible_host: String,
}

#[derive(Serialize)]
struct Members {
    hosts: IndexMap<String, IndexMap<String, String>>,
}

/// The inventory's text.
pub(super) fn inventory_yaml(lab: &Lab, state: &LabState) -> String {
    let vars = IndexMap::from([
        ("ansible_user", "root".to_string()),
        ("ansible_ssh_private_key_file", lab.key_path().display().to_string()),
        ("hactl_known_hosts_file", lab.known_hosts_path().display().to_string()),
        ("lab_sudo_user", SUDO_USER.to_string()),
        // The web LB's VIP (keepalived) on the lab nodes' interface (systemd-nspawn's veth).
        ("web_lb_vip", state.subnet.vip().to_string()),
        ("web_lb_vip_prefix", state.subnet.prefix.to_string()),
        ("web_lb_vip_interface", "host0".to_string()),
    ]);
    let hosts = state
        .nodes
        .iter()
        .map(|n| {
            let vars = HostVars {
                ansible_host: n.address.to_string(),
            };
            (n.name.clone(), vars)
        })
        .collect();
    let members = || Members {
        hosts: state.nodes.iter().map(|n| (n.name.clone(), IndexMap::new())).collect(),
    };
    let children = ROLE_GROUPS.iter().map(|g| (*g, members())).collect();
    let doc = Document {
        all: All { vars, hosts, children },
    };
    let yaml = serde_saphyr::to_string(&doc).expect("the lab inventory serialises");
    format!("{MARK}: every lab node in every role group.\n{yaml}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::NodeState;
    use crate::lab::subnet::Subnet;
    use crate::lab::DEFAULT_SUBNET;
    use std::path::PathBuf;

    #[test]
    fn names_every_node_in_every_group_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let lab = Lab {
            root: PathBuf::from("/x"),
        };
        let subnet = Subnet::parse(DEFAULT_SUBNET, 2).unwrap();
        let state = LabState {
            subnet,
            release: crate::lab::Release::Bookworm,
            nodes: (1..=2)
                .map(|i| NodeState {
                    name: format!("node{i}"),
                    address: subnet.node(i),
                    pid: None,
                    cgroups: Vec::new(),
                })
                .collect(),
            ip_forward_before: None,
            forwarding_before: Vec::new(),
            rules: vec![],
            inventory: PathBuf::from("/x/inventory.yml"),
        };
        let path = dir.path().join("inventory.yml");
        std::fs::write(&path, inventory_yaml(&lab, &state)).unwrap();
        let inv = crate::inventory::Inventory::load(&path).unwrap();
        for group in ROLE_GROUPS {
            assert_eq!(inv.groups[group], ["node1", "node2"], "{group}");
        }
        assert_eq!(inv.hosts["node2"].conn.address, "10.213.0.12");
        assert_eq!(inv.hosts["node1"].conn.key, Some(PathBuf::from("/x/ssh/id_ed25519")));
        assert_eq!(inv.hosts["node1"].conn.user.as_deref(), Some("root"));
        // The built-in stack takes it as it is (its checks on the VIP pass), writing nothing.
        crate::engine::load(
            &path,
            None,
            crate::secrets::Missing::Preview,
            &crate::engine::FactSource::every("12", "bookworm"),
        )
        .unwrap();
        assert!(!dir.path().join("inventory.pki").exists());
        // The lab's own file is its to overwrite; another one, or one without the mark, is not.
        assert!(is_ours_or_missing(&path).unwrap());
        assert!(is_ours_or_missing(&dir.path().join("missing.yml")).unwrap());
        let foreign = dir.path().join("prod.yml");
        std::fs::write(&foreign, "all:\n  hosts: {}\n").unwrap();
        assert!(!is_ours_or_missing(&foreign).unwrap());
        std::fs::write(&foreign, "\n# Written by `hactl lab up`\n").unwrap();
        assert!(!is_ours_or_missing(&foreign).unwrap());
    }
}
