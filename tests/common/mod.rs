//! Helpers for the end-to-end tests: they need root and the lab, and fail loudly without them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Prints a measured figure (`MEASURED …`) and appends it to `target/tmp/measured.txt`, which
/// `scripts/test.sh` prints at the end: libtest hides what a passing test printed.
#[allow(unused_macros)]
macro_rules! measured {
    ($($arg:tt)*) => {
        $crate::common::record_measured(&format!($($arg)*))
    };
}

/// See [`measured!`].
pub fn record_measured(line: &str) {
    use std::io::Write;
    eprintln!("MEASURED {line}");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("measured.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

/// The lab's directory (as hactl uses it).
pub const LAB: &str = "/var/lib/hactl/lab";

/// etcdctl on a lab node as root's etcd clients run it (v3, the node's client certificate:
/// with etcd_tls, etcd admits only TLS clients that present one); endpoints https://ADDRESS:2379.
pub const ETCDCTL: &str = "ETCDCTL_API=3 ETCDCTL_CACERT=/etc/hactl/tls/ca.crt \
    ETCDCTL_CERT=/etc/hactl/tls/etcd-client.crt ETCDCTL_KEY=/etc/hactl/tls/etcd-client.key etcdctl";

/// A `hactl` command.
pub fn hactl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
}

/// Starts hactl with `args` and waits until its progress (stderr) shows a line containing
/// `needle`: the running process and the rest of its stderr, line by line.
pub fn spawn_until(args: &[&str], needle: &str) -> (std::process::Child, impl Iterator<Item = String>) {
    use std::io::BufRead;
    let mut child = hactl()
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hactl starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = std::io::BufReader::new(stderr).lines().map_while(Result::ok);
    assert!(
        lines.by_ref().any(|l| l.contains(needle)),
        "hactl {} ended without printing `{needle}`",
        args.join(" ")
    );
    (child, lines)
}

/// Runs hactl with args, returning its output. Prints one line, the command and its exit code;
/// the whole output goes to `target/tmp/logs/TEST.log`, so that a failing test's report stays
/// short enough to show its panic message.
pub fn run(args: &[&str]) -> Output {
    let out = hactl()
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hactl runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    append_log(&format!(
        "$ hactl {}\n-> {:?}\n{stdout}{stderr}\n",
        args.join(" "),
        out.status.code()
    ));
    eprintln!("$ hactl {} -> {:?}", args.join(" "), out.status.code());
    if !matches!(out.status.code(), Some(0 | 2)) {
        for line in why_it_failed(&out) {
            eprintln!("  {line}");
        }
    }
    out
}

/// The lines that say why a run failed, short enough for a CI report (the log has the rest):
/// the failed and unreachable results of a JSON report, else the last lines of stderr.
pub fn why_it_failed(out: &Output) -> Vec<String> {
    let (stdout, stderr) = (self::stdout(out), self::stderr(out));
    let failed: Vec<String> = serde_json::from_str::<serde_json::Value>(&stdout)
        .ok()
        .and_then(|doc| doc["results"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|r| r["status"] == "failed" || r["status"] == "unreachable")
        .map(|r| {
            format!(
                "{} {} {}/{}: {}",
                r["status"], r["host"], r["stage"], r["step"], r["error"]
            )
        })
        .collect();
    if !failed.is_empty() {
        return failed;
    }
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(12)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Appends `line` to this test's log file only (a test's report keeps to what failed).
pub fn log_line(line: &str) {
    append_log(&format!("{line}\n"));
}

/// Appends `text` to this test's log file.
fn append_log(text: &str) {
    use std::io::Write;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("logs");
    let _ = std::fs::create_dir_all(&dir);
    let name = std::thread::current().name().unwrap_or("main").replace("::", "-");
    let path = dir.join(format!("{name}.log"));
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// The stdout of an output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of an output.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Takes down the lab a test left, whose nodes are thrown away: each node crashed first (`lab
/// kill`), so that `lab down` does not wait for their services to stop. `lab down`'s output.
pub fn discard_lab() -> Output {
    let state: serde_json::Value = std::fs::read_to_string(Path::new(LAB).join("state.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    for name in state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str())
    {
        let _ = hactl().args(["lab", "kill", name]).output();
    }
    run(&["lab", "down"])
}

/// Brings a fresh lab of `n` nodes up (after discarding any lab), panicking with the reason when
/// it cannot: these tests never skip.
pub fn fresh_lab(n: usize) {
    let down = discard_lab();
    assert!(down.status.success(), "lab down failed: {}", stderr(&down));
    let up = run(&["lab", "up", "--nodes", &n.to_string()]);
    assert!(
        up.status.success(),
        "the lab could not come up (tests need root, debootstrap, systemd-nspawn): {}",
        stderr(&up)
    );
}

/// A fresh 3-node lab and its inventory copied into a new temporary directory (kept alive by the
/// returned guard), where the run's secrets and pending state will live.
pub fn fresh_lab_inventory() -> (tempfile::TempDir, PathBuf) {
    fresh_lab(3);
    let dir = tempfile::tempdir().expect("temporary directory");
    let inventory = inventory_in(dir.path());
    (dir, inventory)
}

/// Copies the lab inventory into `dir` (so secrets and pending state live in the test's dir).
pub fn inventory_in(dir: &Path) -> PathBuf {
    let dest = dir.join("inventory.yml");
    std::fs::copy(format!("{LAB}/inventory.yml"), &dest).expect("lab inventory exists");
    dest
}

/// Puts lab node `n` (10.213.0.1N) into the inventory at `inv` beside node `n - 1`: among its
/// hosts and in every group that has node `n - 1` (the lab inventory's shape), keeping the rest
/// of the file (the test's own variables) as it is.
pub fn add_lab_node(inv: &Path, n: usize) {
    let text = std::fs::read_to_string(inv).expect("the inventory");
    let (before, host) = (format!("node{}", n - 1), format!("node{n}"));
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        out.push(line.to_string());
        if line == format!("    {before}:") {
            if let Some(address) = lines.next_if(|l| l.trim_start().starts_with("ansible_host:")) {
                out.push(address.to_string());
                out.push(format!("    {host}:"));
                out.push(format!("      ansible_host: \"10.213.0.1{n}\""));
            }
        } else if line == format!("        {before}: {{}}") {
            out.push(format!("        {host}: {{}}"));
        }
    }
    assert!(
        out.iter().any(|l| l == &format!("    {host}:")),
        "{before} is not among the hosts of {}",
        inv.display()
    );
    std::fs::write(inv, out.join("\n") + "\n").expect("the inventory written");
}

/// Takes lab node `n` out of the inventory at `inv`: its host entry and its line in every group,
/// keeping the rest of the file as it is.
pub fn remove_lab_node(inv: &Path, n: usize) {
    let text = std::fs::read_to_string(inv).expect("the inventory");
    let host = format!("node{n}");
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == format!("    {host}:") {
            lines.next_if(|l| l.trim_start().starts_with("ansible_host:"));
        } else if line != format!("        {host}: {{}}") {
            out.push(line.to_string());
        }
    }
    assert!(
        !out.iter().any(|l| l.contains(&host)),
        "{host} is still named in {}",
        inv.display()
    );
    std::fs::write(inv, out.join("\n") + "\n").expect("the inventory written");
}

/// Takes lab node `n` out of every group of the inventory at `inv`, keeping it among the hosts
/// (a host whose roles hactl stops: stage part departed).
pub fn ungroup_lab_node(inv: &Path, n: usize) {
    let text = std::fs::read_to_string(inv).expect("the inventory");
    let member = format!("        node{n}: {{}}");
    assert!(
        text.lines().any(|l| l == member),
        "node{n} is in no group of {}",
        inv.display()
    );
    let out: Vec<&str> = text.lines().filter(|l| *l != member).collect();
    std::fs::write(inv, out.join("\n") + "\n").expect("the inventory written");
}

/// Runs a command on a lab node as root, returning (exit code, stdout).
pub fn ssh(node: usize, cmd: &str) -> (i32, String) {
    ssh_as("root", node, cmd)
}

/// Runs a command on a lab node as root that must succeed; its stdout. (Checking the exit status
/// first: the empty output of a failed SSH call must never pass a `!contains` check.)
pub fn ssh_ok(node: usize, cmd: &str) -> String {
    let (rc, out) = ssh(node, cmd);
    assert_eq!(rc, 0, "on node{node}: `{cmd}` failed: {out}");
    out
}

/// Runs a command on a lab node as `user`.
pub fn ssh_as(user: &str, node: usize, cmd: &str) -> (i32, String) {
    let out = ssh_as_output(user, node, cmd);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs a command on a lab node as `user`: its whole output, stderr (SSH's own errors) included.
pub fn ssh_as_output(user: &str, node: usize, cmd: &str) -> Output {
    Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={LAB}/ssh/known_hosts"),
            "-i",
            &format!("{LAB}/ssh/id_ed25519"),
            &format!("{user}@10.213.0.{}", 10 + node),
            cmd,
        ])
        .output()
        .expect("ssh runs")
}

/// A fingerprint of every file's path, size, mtime, mode and owner under the directories a
/// playbook could touch: equal fingerprints mean nothing was written.
pub fn fingerprint(node: usize) -> String {
    let (rc, out) = ssh(
        node,
        "find /etc /srv /opt /usr /home /var/lib/dpkg /var/lib/hactl-demo -xdev -printf '%p %s %T@ %m %u\\n' 2>/dev/null | sort | sha256sum",
    );
    assert_eq!(rc, 0, "fingerprint failed on node{node}");
    out
}

/// Parses hactl's JSON output.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Serialises the tests of one binary that use the (single) lab.
pub fn lab_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A generated secret's value, from the secrets file beside the inventory in `dir`.
pub fn secret(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join("inventory.secrets.yml")).expect("secrets file");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .expect("secret present");
    line.split_once(": ")
        .expect("key: value")
        .1
        .trim_matches('"')
        .to_string()
}

/// The `host:step` of every changed result in a JSON run document.
pub fn changed_steps(doc: &serde_json::Value) -> Vec<String> {
    doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["status"] == "changed")
        .map(|r| format!("{}:{}", r["host"].as_str().unwrap(), r["step"].as_str().unwrap()))
        .collect()
}

/// The lab nodes running a process whose command line contains `needle`, read from the host's
/// /proc by each process's PID namespace: it sees a node whose link is cut, and a crashed node
/// runs nothing. (An SSH call could not tell "cut off" from "not running".)
pub fn nodes_running(needle: &str) -> std::collections::BTreeSet<String> {
    let state: serde_json::Value = std::fs::read_to_string(Path::new(LAB).join("state.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let mut nodes = std::collections::HashMap::new();
    for node in state["nodes"].as_array().into_iter().flatten() {
        let (Some(name), Some(pid)) = (node["name"].as_str(), node["pid"].as_u64()) else {
            continue;
        };
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(ns) = children.split_whitespace().next().and_then(namespace) {
            nodes.insert(ns, name.to_string());
        }
    }
    let mut running = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some(node) = namespace(&pid).and_then(|ns| nodes.get(&ns)) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
            running.insert(node.clone());
        }
    }
    running
}

/// Samples [`nodes_running`] once a second in a thread until stopped.
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Sample>>>,
}

/// One sample: when, and the nodes that ran the process then.
pub type Sample = (std::time::Instant, std::collections::BTreeSet<String>);

impl Sampler {
    /// Starts sampling the nodes for `needle`.
    pub fn start(needle: &str) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, needle) = (stop.clone(), needle.to_string());
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((std::time::Instant::now(), nodes_running(&needle)));
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            samples
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling and returns the samples.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("running").join().expect("the sampler")
    }
}

/// The summary line a passed gate reported (`report: true`), by its name's start.
pub fn gate_report(doc: &serde_json::Value, gate: &str) -> String {
    doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| {
            r["step"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("verify: {gate}")))
        })
        .and_then(|r| r["summary"].as_str())
        .unwrap_or_else(|| panic!("no report from gate `{gate}`"))
        .to_string()
}

/// The named scenarios of one end-to-end test on a shared lab. Each runs until it ends or its
/// first failed assertion; a failed one is reported and the later ones still run (a caller skips
/// those that need it by what `run` returned), and [`Scenarios::finish`] fails the test naming
/// every scenario that failed, so that one failure hides none of the others.
#[derive(Default)]
pub struct Scenarios {
    failed: Vec<String>,
}

impl Scenarios {
    /// Runs scenario `name`; whether it passed.
    /// A developer may run some scenarios only: `HACTL_SCENARIOS` lists parts of their names,
    /// comma-separated (the others are reported as not run and count as passed).
    pub fn run(&mut self, name: &str, scenario: impl FnOnce()) -> bool {
        if let Ok(only) = std::env::var("HACTL_SCENARIOS") {
            if !only.split(',').any(|part| name.contains(part.trim())) {
                eprintln!("=== scenario not run: {name} (not in HACTL_SCENARIOS)");
                return true;
            }
        }
        let started = std::time::Instant::now();
        log_line(&format!("=== scenario: {name}"));
        eprintln!("=== scenario: {name}");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario));
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                eprintln!("=== scenario passed ({seconds:.1} s): {name}");
                true
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into());
                eprintln!("=== scenario FAILED ({seconds:.1} s): {name}");
                self.failed.push(format!("{name}: {why}"));
                false
            }
        }
    }

    /// Records that scenario `name` did not run because `needed` failed.
    pub fn skip(&mut self, name: &str, needed: &str) {
        eprintln!("=== scenario not run: {name} (needs: {needed})");
        self.failed
            .push(format!("{name}: not run, it needs `{needed}`, which failed"));
    }

    /// Fails the test when any scenario failed, naming each with its reason.
    pub fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} scenario(s) failed:\n{}",
            self.failed.len(),
            self.failed.join("\n")
        );
    }
}

/// One `hactl provision INVENTORY [--stages STAGES] --output json`: its exit code, its JSON
/// document and its time in seconds. Each changed step goes to this test's log.
pub fn provision(inv: &str, stages: Option<&str>) -> (Option<i32>, serde_json::Value, f64) {
    let mut args = vec!["provision", inv, "--output", "json"];
    if let Some(stages) = stages {
        args.extend(["--stages", stages]);
    }
    let started = std::time::Instant::now();
    let o = run(&args);
    let seconds = started.elapsed().as_secs_f64();
    let doc = json(&o);
    for r in doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "changed")
    {
        log_line(&format!(
            "CHANGED {} {}/{}: {}",
            r["host"], r["stage"], r["step"], r["summary"]
        ));
    }
    (o.status.code(), doc, seconds)
}

/// A [`provision`] that must succeed: its JSON document.
pub fn provision_ok(inv: &str, stages: Option<&str>) -> serde_json::Value {
    let (code, doc, _) = provision(inv, stages);
    assert_eq!(code, Some(0), "provision failed: {:?}", failures(&doc));
    doc
}

/// The failed and unreachable results of a run document, for an assertion's message.
pub fn failures(doc: &serde_json::Value) -> Vec<String> {
    doc["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == "failed" || r["status"] == "unreachable")
        .map(|r| format!("{} {}/{}: {}", r["host"], r["stage"], r["step"], r["error"]))
        .collect()
}
