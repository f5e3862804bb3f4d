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

/// A `hactl` command.
pub fn hactl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
}

/// Runs hactl with args, returning its output.
pub fn run(args: &[&str]) -> Output {
    let out = hactl()
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hactl runs");
    eprintln!(
        "$ hactl {}\n-> {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The stdout of an output.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of an output.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Brings a fresh lab of `n` nodes up (after taking down any lab), panicking with the reason when
/// it cannot: these tests never skip.
pub fn fresh_lab(n: usize) {
    let down = run(&["lab", "down"]);
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
    let out = Command::new("ssh")
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
        .expect("ssh runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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
