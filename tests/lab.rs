//! The lab end to end: three real Debian 12 nodes under systemd-nspawn (needs root).

mod common;

use common::*;

#[test]
fn lab_up_is_real_idempotent_and_down_leaves_nothing() {
    let _lab = lab_lock();
    fresh_lab(3);
    for n in 1..=3 {
        let (rc, out) = ssh(
            n,
            "hostname; ip -4 -o addr show host0 | awk '{print $4}'; ps -p 1 -o comm=",
        );
        assert_eq!(rc, 0);
        assert_eq!(
            out,
            format!("node{n}\n10.213.0.{}/24\nsystemd\n", 10 + n),
            "node{n} identity"
        );
        let other = if n == 3 { 1 } else { n + 1 };
        let (rc, _) = ssh(n, &format!("timeout 3 bash -c '</dev/tcp/10.213.0.{}/22'", 10 + other));
        assert_eq!(rc, 0, "node{n} cannot reach node{other}");
    }
    // `lab up` reported the nodes up only once non-root logins were open and this user's login
    // and sudo worked: one attempt, SSH's own message kept if it fails.
    let sudo = ssh_as_output("hactl", 1, "sudo -n id -u");
    assert_eq!(
        (sudo.status.code(), String::from_utf8_lossy(&sudo.stdout).trim()),
        (Some(0), "0"),
        "non-root user with passwordless sudo: {}",
        String::from_utf8_lossy(&sudo.stderr).trim()
    );

    let (rc, _) = ssh(1, "apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -q -y install --no-install-recommends python3-venv >/dev/null");
    assert_eq!(rc, 0, "apt-get works inside a node");
    let (rc, out) = ssh(
        1,
        "python3 -m venv /tmp/v && /tmp/v/bin/pip download -q --no-deps -d /tmp/dl six==1.16.0 && ls /tmp/dl",
    );
    assert_eq!(rc, 0, "pip download works inside a node");
    assert!(out.contains("six-1.16.0"), "{out}");
    let pool = ssh_ok(1, "ls /var/cache/hactl-apt-pool | grep -c 'python3.*venv'");
    assert_ne!(pool.trim(), "0", "downloaded packages reach the shared pool");

    let status_before = stdout(&run(&["lab", "status"]));
    let again = run(&["lab", "up", "--nodes", "3"]);
    assert!(again.status.success());
    assert!(
        stdout(&again).contains("0 changes"),
        "second up changed something: {}",
        stdout(&again)
    );
    assert_eq!(stdout(&run(&["lab", "status"])), status_before, "nodes were restarted");

    let stopped = run(&["lab", "stop", "node2"]);
    assert!(stdout(&stopped).contains("stopped"));
    assert_ne!(ssh(2, "true").0, 0, "node2 still answers after stop");
    let repaired = run(&["lab", "up", "--nodes", "3"]);
    assert!(stdout(&repaired).contains("started node2"), "{}", stdout(&repaired));
    assert_eq!(ssh_ok(2, "hostname"), "node2\n");

    let down = run(&["lab", "down"]);
    assert!(down.status.success());
    // Zombies (already dead, waiting for PID 1 to reap them) hold nothing; anything else is a leak.
    let procs = std::process::Command::new("ps")
        .args(["-eo", "stat=,comm="])
        .output()
        .unwrap();
    let live: Vec<String> = stdout(&procs)
        .lines()
        .filter(|l| l.contains("systemd-nspawn") && !l.trim_start().starts_with('Z'))
        .map(String::from)
        .collect();
    assert!(live.is_empty(), "nspawn processes left: {live:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/var/lib/hactl/lab/nodes"), "mounts left");
    assert!(!std::path::Path::new("/sys/class/net/hactl0").exists(), "bridge left");
    let nat = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(!stdout(&nat).contains("hactl-lab"), "NAT rule left");
    let fwd = std::process::Command::new("iptables")
        .args(["-S", "FORWARD"])
        .output()
        .unwrap();
    assert!(!stdout(&fwd).contains("hactl-lab"), "FORWARD rule left");
}

#[test]
fn lab_refuses_clearly() {
    let _lab = lab_lock();
    run(&["lab", "down"]);
    let taken = run(&["lab", "up", "--subnet", "127.0.0.0/24"]);
    assert_eq!(taken.status.code(), Some(1));
    let err = stderr(&taken);
    assert!(err.contains("--subnet"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let nobody = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_hactl"),
            "lab",
            "up",
        ])
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(1));
    assert!(stderr(&nobody).contains("must run as root"), "{}", stderr(&nobody));
}
