//! Lab nodes: each an overlay of the base image booted with systemd-nspawn in its own network
//! namespace on the bridge, found again by its nspawn command line, stopped by signals.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cgroup::node_cgroup_dirs;
use super::image::APT_POOL;
use super::state::{LabState, NodeState};
use super::subnet::Subnet;
use super::sys::{io_err, node_dirs, node_path, path_str, run, write_file, write_if_changed};
use super::{Lab, LabError, Result, BRIDGE, SUDO_USER};

impl Lab {
    /// Mounts the node's overlay and boots it with systemd-nspawn in the node's own cgroup (see
    /// [`super::cgroup`]); returns the nspawn PID and that cgroup's directories.
    pub(super) fn start_node(
        &self,
        image: &Path,
        name: &str,
        address: Ipv4Addr,
        subnet: &Subnet,
    ) -> Result<(u32, Vec<PathBuf>)> {
        let dir = self.node_dir(name);
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("root"));
        for d in [&upper, &work, &merged] {
            fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
        }
        if !is_mounted(&merged) {
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                image.display(),
                upper.display(),
                work.display()
            );
            run("mount", &["-t", "overlay", "overlay", "-o", &opts, path_str(&merged)])?;
        }
        self.write_node_files(&merged, name, address, subnet)?;
        let caches = self.root.join("cache");
        let apt_cache = caches.join("apt-archives");
        let pip_cache = caches.join("pip");
        for d in [&apt_cache, &pip_cache] {
            fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
        }
        clear_stale_veth(name)?;
        let log_path = dir.join("console.log");
        let log = fs::File::create(&log_path).map_err(|e| io_err(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| io_err(&log_path, e))?;
        let cgroups = node_cgroup_dirs(name);
        for dir in &cgroups {
            fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        // A shell that moves itself into the node's cgroup, then becomes nspawn (same PID).
        let child = Command::new("sh")
            .args([
                "-c",
                "while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 1; shift; done; shift; exec \"$@\"",
                "sh",
            ])
            .args(cgroups.iter().map(|d| d.join("cgroup.procs")))
            .args(["--", "systemd-nspawn"])
            .args(["--quiet", "--register=no", "--keep-unit", "--boot", "--console=passive"])
            .arg(format!("--directory={}", merged.display()))
            .arg(format!("--machine={name}"))
            .arg(format!("--hostname={name}"))
            .arg(format!("--network-bridge={BRIDGE}"))
            .arg(format!("--bind={}:{APT_POOL}", apt_cache.display()))
            .arg(format!("--bind={}:/root/.cache/pip", pip_cache.display()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| LabError::Command {
                cmd: "systemd-nspawn".into(),
                detail: e.to_string(),
            })?;
        Ok((child.id(), cgroups))
    }

    /// The node's own files: address, resolver, hostname, authorized keys, host key. Each written
    /// through [`node_path`] (the node is not running; its root may have made any of them a
    /// symlink to the host's files).
    fn write_node_files(&self, root: &Path, name: &str, address: Ipv4Addr, subnet: &Subnet) -> Result<()> {
        let dns = host_nameservers();
        let network = format!(
            "[Match]\nName=host0\n\n[Network]\nAddress={address}/{}\nGateway={}\n{}",
            subnet.prefix,
            subnet.gateway(),
            dns.iter().map(|d| format!("DNS={d}\n")).collect::<String>()
        );
        write_file(
            &node_path(root, "etc/systemd/network/10-host0.network")?,
            network.as_bytes(),
            0o644,
        )?;
        let resolv: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        write_file(&node_path(root, "etc/resolv.conf")?, resolv.as_bytes(), 0o644)?;
        write_file(&node_path(root, "etc/hostname")?, format!("{name}\n").as_bytes(), 0o644)?;
        let pubkey = fs::read(self.key_path().with_extension("pub")).map_err(|e| io_err(&self.key_path(), e))?;
        write_file(&node_path(root, "root/.ssh/authorized_keys")?, &pubkey, 0o600)?;
        let user_keys = node_path(root, &format!("home/{SUDO_USER}/.ssh/authorized_keys"))?;
        write_file(&user_keys, &pubkey, 0o600)?;
        // uid/gid 1000 is the sudo user created in the image; lchown never follows a link (and
        // node_path made sure neither is one).
        std::os::unix::fs::lchown(user_keys.parent().expect("has parent"), Some(1000), Some(1000))
            .and_then(|_| std::os::unix::fs::lchown(&user_keys, Some(1000), Some(1000)))
            .map_err(|e| io_err(&user_keys, e))?;
        let host_key = node_path(root, "etc/ssh/ssh_host_ed25519_key")?;
        if !host_key.is_file() {
            // First boot only: a restarted machine keeps what was done to it.
            node_path(root, "etc/ssh/ssh_host_ed25519_key.pub")?;
            run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path_str(&host_key)],
            )?;
            // As the Debian installer writes it (the `base` stage must fix the 127.0.1.1 line).
            let hosts = format!("127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
            write_file(&node_path(root, "etc/hosts")?, hosts.as_bytes(), 0o644)?;
        }
        Ok(())
    }

    /// One known_hosts file with every node's own host key.
    pub(super) fn write_known_hosts(&self, state: &LabState) -> Result<()> {
        let mut text = String::new();
        for node in &state.nodes {
            // Never through a link: it could show a host file's text in known_hosts.
            let pubkey = node_dirs(
                &self.node_dir(&node.name),
                "upper/etc/ssh/ssh_host_ed25519_key.pub",
                false,
            )?;
            let key = read_no_follow(&pubkey).map_err(|e| io_err(&pubkey, e))?;
            let mut fields = key.split_whitespace();
            let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
                return Err(LabError::State {
                    path: pubkey.display().to_string(),
                    detail: "bad host key".into(),
                });
            };
            text.push_str(&format!("{} {kind} {blob}\n", node.address));
        }
        write_if_changed(&self.known_hosts_path(), text.as_bytes(), 0o644).map(|_| ())
    }

    /// Waits until the node answers SSH, systemd reports its boot finished (running or degraded)
    /// and non-root logins are open (see [`LOGINS_OPEN`]).
    pub(super) fn wait_for_boot(&self, node: &NodeState) -> Result<()> {
        let secs = 120;
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut ssh_up = false;
        let mut last = "no SSH on port 22".to_string();
        while Instant::now() < deadline {
            ssh_up = ssh_up || port_open(node.address, 22, Duration::from_millis(500));
            if ssh_up {
                match self.logins_open(node) {
                    Ok(()) => return Ok(()),
                    Err(why) => last = why,
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(LabError::BootTimeout {
            node: node.name.clone(),
            secs,
            last,
            log: self.node_dir(&node.name).join("console.log").display().to_string(),
        })
    }

    /// Whether the node's boot is over and it lets non-root users in ([`LOGINS_OPEN`] as root);
    /// else what it is still waiting for.
    fn logins_open(&self, node: &NodeState) -> std::result::Result<(), String> {
        let out = self
            .ssh("root", node)
            .arg(LOGINS_OPEN)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("ssh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && stdout.trim() == "ready" {
            return Ok(());
        }
        let said = format!("{} {}", stdout.trim(), String::from_utf8_lossy(&out.stderr).trim());
        Err(format!("{}: {}", out.status, said.trim()))
    }

    /// Checks what `up` promises of the sudo user (its login and passwordless sudo) on a node
    /// whose logins are open: one attempt, whose failure carries SSH's own message (a refusal
    /// by PAM prints /run/nologin's text as a banner, at SSH's default log level).
    pub(super) fn check_sudo_user(&self, node: &NodeState) -> Result<()> {
        let cmd = format!("ssh {SUDO_USER}@{} sudo -n true", node.address);
        let out = self
            .ssh(SUDO_USER, node)
            .args(["sudo", "-n", "true"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| LabError::Command {
                cmd: cmd.clone(),
                detail: e.to_string(),
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(LabError::Command {
            cmd,
            detail: format!(
                "{} on {}: {}",
                out.status,
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }

    /// `ssh` to `user` on the node with the lab's key and known hosts, never prompting.
    fn ssh(&self, user: &str, node: &NodeState) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", self.known_hosts_path().display()))
        .arg("-i")
        .arg(self.key_path())
        .arg(format!("{user}@{}", node.address));
        ssh
    }

    /// Whether `pid` is the nspawn process of node `name`.
    pub(super) fn is_node_process(&self, pid: u32, name: &str) -> bool {
        nspawn_cmdline(pid).is_some_and(|c| c.contains(&format!("--machine={name}\0")))
    }

    /// PIDs of every systemd-nspawn whose root is inside this lab (found even if state is lost).
    pub(super) fn lab_nspawn_pids(&self) -> Vec<u32> {
        let marker = format!("--directory={}/", self.root.join("nodes").display());
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| nspawn_cmdline(*pid).is_some_and(|c| c.contains(&marker)))
            .collect()
    }

    /// Mount points under the lab's node directories, deepest first.
    pub(super) fn lab_mounts(&self) -> Vec<String> {
        let prefix = format!("{}/", self.root.join("nodes").display());
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mount))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        // Deepest first; equal paths side by side, so that dedup sees them.
        mounts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        mounts.dedup();
        mounts
    }

    /// Unmounts the node's overlay (retrying while its processes exit).
    pub(super) fn unmount_node(&self, name: &str) -> Result<()> {
        let root = self.node_dir(name).join("root");
        for _ in 0..50 {
            if !is_mounted(&root) {
                return Ok(());
            }
            if run("umount", &[path_str(&root)]).is_ok() {
                continue;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        run("umount", &["-l", path_str(&root)]).map(|_| ())
    }
}

/// Run as root on a node: prints `ready` once its boot is over (`systemctl is-system-running
/// --wait` says running or degraded) and non-root users may log in, else what is missing. A
/// booting Debian refuses them: systemd-tmpfiles creates /run/nologin at boot
/// (tmpfiles.d/systemd-nologin.conf), pam_nologin (account, /etc/pam.d/sshd) refuses every user
/// but root while it or /etc/nologin exists, and only systemd-user-sessions.service removes it.
/// Degraded is a finished boot too, but one in which that unit may have failed: it is checked
/// itself, and the files too.
const LOGINS_OPEN: &str = "state=$(timeout 60 systemctl is-system-running --wait)
case $state in running|degraded) ;; *) echo \"booting ($state)\"; exit 1 ;; esac
systemctl -q is-active systemd-user-sessions.service || { echo 'systemd-user-sessions.service is not active'; exit 1; }
for f in /run/nologin /etc/nologin; do
  [ ! -e $f ] || { echo \"$f exists (pam_nologin refuses non-root logins)\"; exit 1; }
done
echo ready";

/// A file's text, refusing a symlink in its last component (O_NOFOLLOW).
fn read_no_follow(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text = String::new();
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The NUL-separated command line of `pid` when it is a systemd-nspawn process.
fn nspawn_cmdline(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
    cmdline.starts_with("systemd-nspawn").then_some(cmdline)
}

/// The host's nameservers (what the nodes use through NAT).
fn host_nameservers() -> Vec<String> {
    let servers: Vec<String> = fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| s.parse::<Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .collect();
    if servers.is_empty() {
        vec!["1.1.1.1".into()]
    } else {
        servers
    }
}

/// Whether something is mounted at `path`.
pub(super) fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).map(unescape_mount).as_deref() == Some(target.as_str()))
}

/// A mountinfo path field with its octal escapes undone.
fn unescape_mount(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Whether a TCP port accepts connections.
pub(super) fn port_open(addr: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((addr, port)), timeout).is_ok()
}

/// The host side of a node's veth, as nspawn names it: `vb-NAME` cut to 15 bytes.
pub(super) fn veth_of(node: &str) -> String {
    format!("vb-{node}").chars().take(15).collect()
}

/// The host side of a node's veth (`vb-NAME`, as nspawn names it, cut to 15 bytes) left by a
/// machine that just died: the kernel tears a network namespace down asynchronously, and nspawn
/// refuses to start while the name exists. Waits for it to go, then removes it.
fn clear_stale_veth(node: &str) -> Result<()> {
    let link = veth_of(node);
    let deadline = Instant::now() + Duration::from_secs(10);
    while super::network::link_exists(&link) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if super::network::link_exists(&link) {
        super::sys::run("ip", &["link", "del", &link])?;
    }
    Ok(())
}

/// SIGTERM to every container at once (nspawn then powers each off); after 15 s, a crash of
/// those still running (see [`crash`]): a container's init must not outlive nspawn (a unit with a
/// long stop timeout, such as a Celery worker finishing its tasks, would otherwise keep the
/// machine and its veth alive). The machines power off side by side: one deadline for all.
pub(super) fn terminate_all(pids: &[u32]) {
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &pid in pids.iter().filter(|&&pid| alive(pid)) {
        crash(pid);
    }
}

/// [`terminate_all`] of one container.
pub(super) fn terminate(pid: u32) {
    terminate_all(&[pid]);
}

/// SIGKILL to the container's init (the nspawn process's child): the kernel then kills every
/// process of its PID namespace at once, like a machine losing power. Waits for nspawn to exit.
pub(super) fn crash(nspawn_pid: u32) {
    let children = fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    let alive = || Path::new(&format!("/proc/{nspawn_pid}")).exists() && !is_zombie(nspawn_pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive() {
        let _ = kill(Pid::from_raw(nspawn_pid as i32), Signal::SIGKILL);
    }
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
