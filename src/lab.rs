//! `hactl lab`: local Debian 12 test nodes booted with systemd under systemd-nspawn.
//!
//! The lab owns exactly these things, all recorded in its state file so that `down` removes them
//! and nothing else: one bridge, the NAT/forward rules tagged with [`RULE_COMMENT`], one overlay
//! mount and one `systemd-nspawn` process per node, and the per-node directories. The base image
//! and the shared apt/pip caches are kept between labs (they are caches, rebuilt when the recipe
//! changes).

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
/// Packages of the base image, on top of debootstrap's minbase.
const BASE_PACKAGES: [&str; 9] = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "ca-certificates",
    "sudo",
    "procps",
];
/// Bumped whenever the image customisation below changes, so the cached image is rebuilt.
const IMAGE_RECIPE_VERSION: &str = "4";
/// Where each node sees the shared apt package pool. Sharing /var/cache/apt/archives itself
/// would make parallel apt runs fail on its lock, so apt hooks copy packages in and out instead.
const APT_POOL: &str = "/var/cache/hactl-apt-pool";
/// apt configuration of the image: pull pooled packages after `update`, push new ones after dpkg.
const APT_POOL_CONF: &str = "APT::Update::Post-Invoke { \"cp -n /var/cache/hactl-apt-pool/*.deb /var/cache/apt/archives/ 2>/dev/null || true\"; };\n\
DPkg::Post-Invoke { \"cp -n /var/cache/apt/archives/*.deb /var/cache/hactl-apt-pool/ 2>/dev/null || true\"; };\n";
/// Host directory with extra CA certificates copied into the image.
const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

/// Errors of the lab, each one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab needs root (namespaces, mounts, bridges).
    #[error("hactl lab must run as root (it creates bridges, mounts and containers): run it with sudo")]
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
    /// A malformed or unusable subnet.
    #[error("bad --subnet {0}: expected an IPv4 CIDR with room for the nodes, e.g. 10.213.0.0/24")]
    BadSubnet(String),
    /// A running lab was made with other settings.
    #[error("a lab is already up on {0}: run `hactl lab down` first to change its subnet")]
    OtherLabUp(String),
    /// A system command failed.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// A node did not come up in time.
    #[error("node {node} did not answer SSH within {secs} s (console log: {log})")]
    BootTimeout {
        /// The node name.
        node: String,
        /// Seconds waited.
        secs: u64,
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
    /// The state file is unreadable.
    #[error("lab state {path} is corrupt: {detail}")]
    State {
        /// The state file.
        path: String,
        /// What was wrong.
        detail: String,
    },
}

type Result<T> = std::result::Result<T, LabError>;

/// An IPv4 subnet with the lab's address plan: bridge at .1, node i at .(10+i).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N`, requiring room for `nodes` nodes.
    pub fn parse(text: &str, nodes: usize) -> Result<Self> {
        let bad = || LabError::BadSubnet(text.to_string());
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=28).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        let subnet = Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        };
        let hosts = (1u64 << (32 - prefix)) - 2;
        if (10 + nodes as u64) >= hosts {
            return Err(bad());
        }
        Ok(subnet)
    }

    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + n)
    }

    /// The bridge's (gateway's) address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// Address of node `index` (1-based).
    pub fn node(&self, index: usize) -> Ipv4Addr {
        self.nth(10 + index as u32)
    }

    /// Whether `other/other_prefix` overlaps this subnet.
    pub fn overlaps(&self, other: Ipv4Addr, other_prefix: u8) -> bool {
        let p = self.prefix.min(other_prefix);
        let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        (u32::from(self.network) & mask) == (u32::from(other) & mask)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// One node as recorded in the state file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Hostname, node1..nodeN.
    pub name: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
    /// PID of its systemd-nspawn process, when started.
    pub pid: Option<u32>,
}

/// What `up` made, so that `down` removes exactly that.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// The bridge's subnet.
    pub subnet: Subnet,
    /// Nodes, in order.
    pub nodes: Vec<NodeState>,
    /// The host's net.ipv4.ip_forward before `up` set it, restored by `down`.
    pub ip_forward_before: String,
    /// iptables rules added (each as `-t TABLE` + rule spec), removed by `down`.
    pub rules: Vec<Vec<String>>,
    /// Inventory written by `up`.
    pub inventory: PathBuf,
}

/// Options of `hactl lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Where to write the inventory.
    pub inventory: PathBuf,
    /// The bridge subnet.
    pub subnet: Subnet,
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

    fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.root.join("nodes").join(name)
    }

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

    fn save_state(&self, state: &LabState) -> Result<()> {
        let text = serde_json::to_string_pretty(state).expect("lab state serialises");
        write_file(&self.state_path(), text.as_bytes(), 0o644)
    }

    /// Brings the lab up (idempotent), returning what changed, one line per action.
    pub fn up(&self, opts: &UpOptions, log: &mut dyn FnMut(&str)) -> Result<Vec<String>> {
        preflight()?;
        let mut changes = Vec::new();
        let mut state = match self.state()? {
            Some(s) if s.subnet != opts.subnet => return Err(LabError::OtherLabUp(s.subnet.to_string())),
            Some(s) => s,
            None => {
                check_subnet_free(&opts.subnet)?;
                LabState {
                    subnet: opts.subnet,
                    nodes: Vec::new(),
                    ip_forward_before: read_trimmed("/proc/sys/net/ipv4/ip_forward"),
                    rules: Vec::new(),
                    inventory: opts.inventory.clone(),
                }
            }
        };
        state.inventory = opts.inventory.clone();
        self.save_state(&state)?;
        let image = self.ensure_image(log, &mut changes)?;
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
                });
            }
            let node = state.nodes.iter_mut().find(|n| n.name == name).expect("just added");
            if node.pid.is_some_and(|pid| self.is_node_process(pid, &name)) {
                continue;
            }
            log(&format!("starting {name} at {address}"));
            node.pid = Some(self.start_node(&image, &name, address, &opts.subnet)?);
            changes.push(format!("started {name} ({address})"));
            self.save_state(&state)?;
        }
        self.write_known_hosts(&state)?;
        for node in &state.nodes {
            self.wait_for_ssh(node)?;
        }
        if write_if_changed(&opts.inventory, inventory_yaml(self, &state).as_bytes(), 0o644)? {
            changes.push(format!("wrote inventory {}", opts.inventory.display()));
        }
        Ok(changes)
    }

    /// Stops one node's machine (its nspawn process), keeping its disk; `up` starts it again.
    pub fn stop_node(&self, name: &str) -> Result<bool> {
        let Some(mut state) = self.state()? else {
            return Ok(false);
        };
        let Some(node) = state.nodes.iter_mut().find(|n| n.name == name) else {
            return Ok(false);
        };
        let stopped = match node.pid.take() {
            Some(pid) if self.is_node_process(pid, name) => {
                terminate(pid);
                true
            }
            _ => false,
        };
        self.unmount_node(name)?;
        self.save_state(&state)?;
        Ok(stopped)
    }

    /// Removes everything `up` made, returning one line per action.
    pub fn down(&self) -> Result<Vec<String>> {
        preflight_root()?;
        let mut done = Vec::new();
        let state = self.state()?;
        for pid in self.lab_nspawn_pids() {
            terminate(pid);
            done.push(format!("stopped nspawn process {pid}"));
        }
        for mount in self.lab_mounts() {
            run("umount", &["-l", &mount])?;
            done.push(format!("unmounted {mount}"));
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
            if read_trimmed("/proc/sys/net/ipv4/ip_forward") != state.ip_forward_before {
                write_file(
                    Path::new("/proc/sys/net/ipv4/ip_forward"),
                    state.ip_forward_before.as_bytes(),
                    0o644,
                )?;
                done.push(format!("restored net.ipv4.ip_forward={}", state.ip_forward_before));
            }
            if state.inventory.exists() {
                fs::remove_file(&state.inventory).map_err(|e| io_err(&state.inventory, e))?;
                done.push(format!("removed inventory {}", state.inventory.display()));
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

    /// One line per node: name, address, whether its machine runs and answers SSH.
    pub fn status(&self) -> Result<Vec<String>> {
        let Some(state) = self.state()? else {
            return Ok(vec!["no lab is up".into()]);
        };
        Ok(state
            .nodes
            .iter()
            .map(|n| {
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
            })
            .collect())
    }

    // ----- the base image -----

    fn ensure_image(&self, log: &mut dyn FnMut(&str), changes: &mut Vec<String>) -> Result<PathBuf> {
        let hash = image_recipe_hash()?;
        let images = self.root.join("images");
        let image = images.join(&hash);
        if image.join("etc/debian_version").exists() {
            return Ok(image);
        }
        fs::create_dir_all(&images).map_err(|e| io_err(&images, e))?;
        let building = images.join(format!("{hash}.building"));
        if building.exists() {
            fs::remove_dir_all(&building).map_err(|e| io_err(&building, e))?;
        }
        log("building the Debian 12 base image with debootstrap (about a minute, once)");
        let mirror = std::env::var("HACTL_LAB_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let include = format!("--include={}", BASE_PACKAGES.join(","));
        run(
            "debootstrap",
            &["--variant=minbase", &include, "bookworm", path_str(&building), &mirror],
        )?;
        customise_image(&building)?;
        fs::rename(&building, &image).map_err(|e| io_err(&image, e))?;
        self.remove_stale_images(&hash)?;
        changes.push(format!("built base image {hash}"));
        Ok(image)
    }

    fn remove_stale_images(&self, keep: &str) -> Result<()> {
        let images = self.root.join("images");
        let entries = fs::read_dir(&images).map_err(|e| io_err(&images, e))?;
        for entry in entries.flatten() {
            if entry.file_name() != keep {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(())
    }

    fn ensure_key(&self, changes: &mut Vec<String>) -> Result<()> {
        let key = self.key_path();
        if key.exists() {
            return Ok(());
        }
        let dir = key.parent().expect("key has a parent");
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", "hactl-lab", "-f", path_str(&key)],
        )?;
        changes.push(format!("generated lab key {}", key.display()));
        Ok(())
    }

    // ----- network -----

    fn ensure_network(&self, state: &mut LabState, changes: &mut Vec<String>) -> Result<()> {
        let cidr = format!("{}/{}", state.subnet.gateway(), state.subnet.prefix);
        if !link_exists(BRIDGE) {
            run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
            run("ip", &["addr", "add", &cidr, "dev", BRIDGE])?;
            changes.push(format!("created bridge {BRIDGE} {cidr}"));
        }
        run("ip", &["link", "set", BRIDGE, "up"])?;
        if read_trimmed("/proc/sys/net/ipv4/ip_forward") != "1" {
            write_file(Path::new("/proc/sys/net/ipv4/ip_forward"), b"1", 0o644)?;
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

    // ----- nodes -----

    fn start_node(&self, image: &Path, name: &str, address: Ipv4Addr, subnet: &Subnet) -> Result<u32> {
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
        let log_path = dir.join("console.log");
        let log = fs::File::create(&log_path).map_err(|e| io_err(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| io_err(&log_path, e))?;
        let child = Command::new("systemd-nspawn")
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
        Ok(child.id())
    }

    fn write_node_files(&self, root: &Path, name: &str, address: Ipv4Addr, subnet: &Subnet) -> Result<()> {
        let dns = host_nameservers();
        let network = format!(
            "[Match]\nName=host0\n\n[Network]\nAddress={address}/{}\nGateway={}\n{}",
            subnet.prefix,
            subnet.gateway(),
            dns.iter().map(|d| format!("DNS={d}\n")).collect::<String>()
        );
        write_file(
            &root.join("etc/systemd/network/10-host0.network"),
            network.as_bytes(),
            0o644,
        )?;
        let resolv: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
        let resolv_path = root.join("etc/resolv.conf");
        if resolv_path.is_symlink() {
            fs::remove_file(&resolv_path).map_err(|e| io_err(&resolv_path, e))?;
        }
        write_file(&resolv_path, resolv.as_bytes(), 0o644)?;
        write_file(&root.join("etc/hostname"), format!("{name}\n").as_bytes(), 0o644)?;
        let pubkey = fs::read(self.key_path().with_extension("pub")).map_err(|e| io_err(&self.key_path(), e))?;
        write_file(&root.join("root/.ssh/authorized_keys"), &pubkey, 0o600)?;
        let user_keys = root.join(format!("home/{SUDO_USER}/.ssh/authorized_keys"));
        write_file(&user_keys, &pubkey, 0o600)?;
        // uid/gid 1000 is the sudo user created in the image.
        std::os::unix::fs::chown(user_keys.parent().expect("has parent"), Some(1000), Some(1000))
            .and_then(|_| std::os::unix::fs::chown(&user_keys, Some(1000), Some(1000)))
            .map_err(|e| io_err(&user_keys, e))?;
        let host_key = root.join("etc/ssh/ssh_host_ed25519_key");
        if !host_key.exists() {
            // First boot only: a restarted machine keeps what was done to it.
            run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path_str(&host_key)],
            )?;
            // As the Debian installer writes it (the `base` stage must fix the 127.0.1.1 line).
            let hosts = format!("127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
            write_file(&root.join("etc/hosts"), hosts.as_bytes(), 0o644)?;
        }
        Ok(())
    }

    fn write_known_hosts(&self, state: &LabState) -> Result<()> {
        let mut text = String::new();
        for node in &state.nodes {
            let pubkey = self.node_dir(&node.name).join("upper/etc/ssh/ssh_host_ed25519_key.pub");
            let key = fs::read_to_string(&pubkey).map_err(|e| io_err(&pubkey, e))?;
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

    fn wait_for_ssh(&self, node: &NodeState) -> Result<()> {
        let secs = 90;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if port_open(node.address, 22, Duration::from_millis(500)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(LabError::BootTimeout {
            node: node.name.clone(),
            secs,
            log: self.node_dir(&node.name).join("console.log").display().to_string(),
        })
    }

    fn is_node_process(&self, pid: u32, name: &str) -> bool {
        nspawn_cmdline(pid).is_some_and(|c| c.contains(&format!("--machine={name}\0")))
    }

    /// PIDs of every systemd-nspawn whose root is inside this lab (found even if state is lost).
    fn lab_nspawn_pids(&self) -> Vec<u32> {
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
    fn lab_mounts(&self) -> Vec<String> {
        let prefix = format!("{}/", self.root.join("nodes").display());
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(unescape_mount))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        mounts.dedup();
        mounts
    }

    fn unmount_node(&self, name: &str) -> Result<()> {
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

/// The NUL-separated command line of `pid` when it is a systemd-nspawn process.
fn nspawn_cmdline(pid: u32) -> Option<String> {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
    cmdline.starts_with("systemd-nspawn").then_some(cmdline)
}

/// Writes the image customisation: no shared host keys, networkd, the sudo user, the host's CAs.
fn customise_image(root: &Path) -> Result<()> {
    let ssh = root.join("etc/ssh");
    for entry in fs::read_dir(&ssh).map_err(|e| io_err(&ssh, e))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
        }
    }
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).map_err(|e| io_err(&wants, e))?;
    let link = wants.join("systemd-networkd.service");
    if !link.exists() {
        std::os::unix::fs::symlink("/lib/systemd/system/systemd-networkd.service", &link)
            .map_err(|e| io_err(&link, e))?;
    }
    write_file(
        &root.join("etc/ssh/sshd_config.d/hactl-lab.conf"),
        b"UseDNS no\nPermitRootLogin prohibit-password\nMaxSessions 10\n",
        0o644,
    )?;
    write_file(
        &root.join("etc/apt/apt.conf.d/90hactl-lab-pool"),
        APT_POOL_CONF.as_bytes(),
        0o644,
    )?;
    fs::create_dir_all(root.join(&APT_POOL[1..])).map_err(|e| io_err(root, e))?;
    write_file(
        &root.join(format!("etc/sudoers.d/{SUDO_USER}")),
        format!("{SUDO_USER} ALL=(ALL) NOPASSWD:ALL\n").as_bytes(),
        0o440,
    )?;
    for cert in host_ca_files() {
        let dest = root
            .join("usr/local/share/ca-certificates")
            .join(cert.file_name().expect("file"));
        let bytes = fs::read(&cert).map_err(|e| io_err(&cert, e))?;
        write_file(&dest, &bytes, 0o644)?;
    }
    let setup = format!(
        "useradd --create-home --uid 1000 --shell /bin/bash {SUDO_USER} && update-ca-certificates >/dev/null && \
         apt-get clean && rm -f /etc/machine-id && touch /etc/machine-id"
    );
    run("chroot", &[path_str(root), "/bin/sh", "-c", &setup]).map(|_| ())
}

/// Sha256 over everything the image is built from, first 16 hex digits.
fn image_recipe_hash() -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(IMAGE_RECIPE_VERSION);
    hash.update(BASE_PACKAGES.join(","));
    for cert in host_ca_files() {
        hash.update(cert.file_name().expect("file").as_encoded_bytes());
        hash.update(fs::read(&cert).map_err(|e| io_err(&cert, e))?);
    }
    Ok(hex::encode(hash.finalize())[..16].to_string())
}

fn host_ca_files() -> Vec<PathBuf> {
    let mut certs: Vec<PathBuf> = fs::read_dir(HOST_CA_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect()
        })
        .unwrap_or_default();
    certs.sort();
    certs
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

/// The Ansible-shaped inventory naming every node in every role group.
fn inventory_yaml(lab: &Lab, state: &LabState) -> String {
    let mut y = String::from("# Written by `hactl lab up`: every lab node in every role group.\nall:\n  vars:\n");
    y.push_str("    ansible_user: root\n");
    y.push_str(&format!(
        "    ansible_ssh_private_key_file: {}\n",
        lab.key_path().display()
    ));
    y.push_str(&format!(
        "    hactl_known_hosts_file: {}\n",
        lab.known_hosts_path().display()
    ));
    y.push_str(&format!("    lab_sudo_user: {SUDO_USER}\n"));
    y.push_str("  hosts:\n");
    for n in &state.nodes {
        y.push_str(&format!("    {}:\n      ansible_host: {}\n", n.name, n.address));
    }
    y.push_str("  children:\n");
    for group in ROLE_GROUPS {
        y.push_str(&format!("    {group}:\n      hosts:\n"));
        for n in &state.nodes {
            y.push_str(&format!("        {}: {{}}\n", n.name));
        }
    }
    y
}

fn preflight_root() -> Result<()> {
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if uid != 0 {
        return Err(LabError::NotRoot);
    }
    Ok(())
}

fn preflight() -> Result<()> {
    preflight_root()?;
    let tools: [(&str, &str); 6] = [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("iptables", "iptables"),
        ("ip", "iproute2"),
        ("ssh-keygen", "openssh-client"),
        ("ssh", "openssh-client"),
    ];
    for (tool, package) in tools {
        if which::which(tool).is_err() {
            return Err(LabError::MissingTool {
                tool,
                package: if tool == "systemd-nspawn" {
                    "systemd-container debootstrap iptables"
                } else {
                    package
                },
            });
        }
    }
    Ok(())
}

/// Refuses a subnet that overlaps an address or a route already on the host.
fn check_subnet_free(subnet: &Subnet) -> Result<()> {
    let taken = |by: String| LabError::SubnetTaken {
        subnet: subnet.to_string(),
        by,
    };
    let routes = run("ip", &["-4", "-o", "route", "show", "table", "all"])?;
    for line in routes.lines() {
        let dest = line.split_whitespace().next().unwrap_or("");
        if dest == "default" || dest == "broadcast" || dest == "local" {
            continue;
        }
        if let Some((addr, prefix)) = parse_cidr(dest) {
            if prefix > 0 && subnet.overlaps(addr, prefix) {
                return Err(taken(format!("route {}", line.trim())));
            }
        }
    }
    let addrs = run("ip", &["-4", "-o", "addr", "show"])?;
    for line in addrs.lines() {
        let mut fields = line.split_whitespace();
        let dev = fields.nth(1).unwrap_or("?").to_string();
        if let Some(cidr) = fields.skip_while(|f| *f != "inet").nth(1) {
            if let Some((addr, _)) = parse_cidr(cidr) {
                if subnet.overlaps(addr, 32) {
                    return Err(taken(format!("address {cidr} on {dev}")));
                }
            }
        }
    }
    Ok(())
}

fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    match text.split_once('/') {
        Some((a, p)) => Some((a.parse().ok()?, p.parse().ok()?)),
        None => Some((text.parse().ok()?, 32)),
    }
}

fn iptables_args(op: &str, rule: &[String]) -> Vec<String> {
    let mut args = vec!["-w".to_string(), "-t".into(), rule[0].clone(), op.into()];
    args.extend(rule[1..].iter().cloned());
    args.extend(["-m", "comment", "--comment", RULE_COMMENT].map(String::from));
    args
}

fn iptables_has(rule: &[String]) -> bool {
    let args = iptables_args("-C", rule);
    Command::new("iptables")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).map(unescape_mount).as_deref() == Some(target.as_str()))
}

fn unescape_mount(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn port_open(addr: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((addr, port)), timeout).is_ok()
}

/// SIGTERM (nspawn then powers the container off), SIGKILL after 15 s.
fn terminate(pid: u32) {
    let alive = || Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive() {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        std::thread::sleep(Duration::from_millis(300));
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

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

fn io_err(path: &Path, source: std::io::Error) -> LabError {
    LabError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Runs a system command, returning its stdout, or an error with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: cmd.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(LabError::Command {
            cmd,
            detail: format!("{} {detail}", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let mut file = fs::File::create(path).map_err(|e| io_err(path, e))?;
    file.write_all(bytes).map_err(|e| io_err(path, e))?;
    if !path.starts_with("/proc") {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_err(path, e))?;
    }
    Ok(())
}

/// Writes the file only when its bytes differ; returns whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_file(path, bytes, mode)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_address_plan() {
        let s = Subnet::parse("10.213.0.77/24", 3).unwrap();
        assert_eq!(s.to_string(), "10.213.0.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(s.node(3), Ipv4Addr::new(10, 213, 0, 13));
    }

    #[test]
    fn subnet_rejects_bad_input() {
        assert!(Subnet::parse("10.0.0.0", 3).is_err());
        assert!(Subnet::parse("10.0.0.0/30", 3).is_err());
        assert!(Subnet::parse("300.0.0.0/24", 3).is_err());
    }

    #[test]
    fn overlap_detection() {
        let s = Subnet::parse("10.213.0.0/24", 3).unwrap();
        assert!(s.overlaps(Ipv4Addr::new(10, 213, 0, 5), 32));
        assert!(s.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(!s.overlaps(Ipv4Addr::new(10, 214, 0, 0), 24));
    }

    #[test]
    fn inventory_names_every_node_in_every_group() {
        let lab = Lab {
            root: PathBuf::from("/x"),
        };
        let subnet = Subnet::parse(DEFAULT_SUBNET, 2).unwrap();
        let state = LabState {
            subnet,
            nodes: (1..=2)
                .map(|i| NodeState {
                    name: format!("node{i}"),
                    address: subnet.node(i),
                    pid: None,
                })
                .collect(),
            ip_forward_before: "0".into(),
            rules: vec![],
            inventory: PathBuf::from("/x/inventory.yml"),
        };
        let y = inventory_yaml(&lab, &state);
        for group in ROLE_GROUPS {
            assert!(y.contains(&format!(
                "    {group}:\n      hosts:\n        node1: {{}}\n        node2: {{}}\n"
            )));
        }
        assert!(y.contains("ansible_host: 10.213.0.12"));
        assert!(y.contains("ansible_ssh_private_key_file: /x/ssh/id_ed25519"));
    }
}
