//! The guard's supervisor on its own: its Python tests (tests/guard/test_hactl_guard.py) run
//! with Debian 12's python3 against a real etcd 3.4 (Debian's etcd-server package, unpacked under
//! target/) on loopback. The lab end-to-end test (tests/airflow.rs) covers it on real nodes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's etcd binary, fetched with apt-get and unpacked once under target/.
fn etcd_binary() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("etcd-server");
    let binary = dir.join("usr/bin/etcd");
    if binary.exists() {
        return binary;
    }
    std::fs::create_dir_all(&dir).expect("target/tmp/etcd-server");
    let download = Command::new("apt-get")
        .args(["download", "etcd-server"])
        .current_dir(&dir)
        .status()
        .expect("apt-get runs");
    assert!(
        download.success(),
        "apt-get download etcd-server failed: the guard's tests need it"
    );
    let deb = std::fs::read_dir(&dir)
        .expect("read target/tmp/etcd-server")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("the etcd-server .deb");
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&dir)
        .status()
        .expect("dpkg-deb runs");
    assert!(
        unpacked.success() && binary.exists(),
        "unpacking {} failed",
        deb.display()
    );
    binary
}

#[test]
fn the_supervisor_keeps_one_holder_fences_in_time_and_hands_over() {
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "unittest", "-v", "tests/guard/test_hactl_guard.py"])
        .env("ETCD_BIN", etcd_binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("Debian's python3 runs");
    let report = String::from_utf8_lossy(&out.stderr);
    eprintln!("{report}");
    assert!(out.status.success(), "the supervisor's tests failed");
    let ran: usize = report
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split_whitespace().next()?.parse().ok())
        .expect("unittest says how many tests ran");
    assert!(ran >= 10, "only {ran} of the supervisor's tests ran");
    assert!(report.lines().any(|l| l.trim() == "OK"), "unittest did not report OK");
}
