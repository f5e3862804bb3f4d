//! Each node's own control group, so that the nodes' systemds never share one.
//!
//! With `--keep-unit` (the lab's hosts need not run systemd, so there is no unit to ask for),
//! systemd-nspawn puts the container's payload in `<its own cgroup>/payload` and itself in
//! `<its own cgroup>/supervisor` (nspawn-cgroup.c, create_subcgroup), in the name=systemd
//! hierarchy and the cgroup2 one. Started straight from `hactl lab up`, every node's nspawn ran in
//! `up`'s own cgroup, so every node's systemd got the same `/payload` tree: node2's
//! `/payload/system.slice/hactl-firewall.service` was node1's too (`cat
//! /sys/fs/cgroup/systemd/payload/system.slice/ssh.service/cgroup.procs` on a 6-node lab listed the
//! sshd of all six PID namespaces). A node's systemd then removes a unit's cgroup when its own
//! process has left it, while another node's systemd is putting a fresh process of the same unit
//! there (a oneshot such as hactl-firewall.service, started on every node at once, fails with
//! status 219/CGROUP: "the control process exited with error code"), and its stop jobs log
//! "Failed to kill control group ...: Input/output error" (PID 0 in cgroup.procs: the other
//! nodes' processes, invisible in its PID namespace). Each nspawn now starts in its own
//! `<up's cgroup>/hactl-lab-NODE` in both hierarchies, so its payload is the node's alone.

use std::fs;
use std::path::{Path, PathBuf};

/// The directories of a node's own cgroup (`hactl-lab-NODE` under this process's cgroup) in the
/// hierarchies nspawn places containers by: name=systemd (cgroup v1) and the cgroup2 one, as
/// mounted here. Empty when neither is mounted.
pub(super) fn node_cgroup_dirs(node: &str) -> Vec<PathBuf> {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    own_cgroup_dirs(&own, &mounts)
        .into_iter()
        .map(|dir| dir.join(format!("hactl-lab-{node}")))
        .collect()
}

/// This process's cgroup directory in the name=systemd and the cgroup2 hierarchy, from
/// /proc/self/cgroup and /proc/self/mountinfo (the first mount of each hierarchy).
fn own_cgroup_dirs(proc_cgroup: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (wanted, is_v2) in [("name=systemd", false), ("", true)] {
        let Some(path) = proc_cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let matches = if is_v2 {
                id == "0" && controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == wanted)
            };
            matches.then_some(path)
        }) else {
            continue;
        };
        let mount = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            let (root, point) = (*fields.get(3)?, *fields.get(4)?);
            let (fstype, options) = (*rfields.first()?, rfields.get(2).copied().unwrap_or(""));
            let hit = if is_v2 {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && options.split(',').any(|o| o == wanted)
            };
            hit.then_some((root, point))
        });
        let Some((root, point)) = mount else { continue };
        // The path is from the hierarchy's root; the mount may show only a subtree of it.
        let Some(rel) = Path::new(path).strip_prefix(root).ok() else {
            continue;
        };
        dirs.push(Path::new(point).join(rel));
    }
    dirs
}

/// Removes a node's cgroup directory and what nspawn and the node's systemd left in it (empty
/// directories once the node's processes are gone), deepest first; best effort (a cgroup that
/// still holds a process stays). Whether it is gone.
pub(super) fn remove_cgroup_tree(dir: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
    !dir.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_systemd_and_cgroup2_hierarchies_as_mounted() {
        let proc_cgroup = "9:name=systemd:/\n4:memory:/process_api/1c70\n1:cpu:/\n0::/\n";
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dirs(proc_cgroup, mountinfo),
            [
                PathBuf::from("/sys/fs/cgroup/systemd/"),
                PathBuf::from("/sys/fs/cgroup/unified/")
            ]
        );
        // A cgroup2-only host, inside a session scope; a hierarchy mounted from a subtree.
        let proc_cgroup = "0::/user.slice/user-0.slice/session-3.scope\n";
        let mountinfo = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            own_cgroup_dirs(proc_cgroup, mountinfo),
            [PathBuf::from("/sys/fs/cgroup/user.slice/user-0.slice/session-3.scope")]
        );
        let mountinfo = "30 24 0:26 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            own_cgroup_dirs(proc_cgroup, mountinfo),
            [PathBuf::from("/sys/fs/cgroup/user-0.slice/session-3.scope")]
        );
        assert!(own_cgroup_dirs("", "").is_empty());
    }
}
