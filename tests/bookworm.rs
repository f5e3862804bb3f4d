//! Debian 12 keeps working now that Debian 13 is the default: on a fresh Debian 12 (bookworm) lab
//! the whole stack provisions with Debian 12's versions (PostgreSQL 15, Patroni 3, RabbitMQ 3.10),
//! its gates pass (every stage's, the smoke DAG through the LB on at least two workers among
//! them) and a re-run changes nothing. And, run once by hand (`--ignored`, with the previous main's
//! binary in HACTL_PREVIOUS): a Debian 12 cluster built by the previous main is left unchanged by
//! this one. The lab is taken down after each, so that the tests after them boot the default
//! release.

#[macro_use]
mod common;

use common::*;

/// Takes the lab down when dropped (the test passed or panicked): a `lab up` after it makes a lab
/// of the default release, never this Debian 12 one.
struct LabDownAfter;

impl Drop for LabDownAfter {
    fn drop(&mut self) {
        let _ = discard_lab();
    }
}

/// A fresh 3-node Debian 12 lab and its inventory in a new temporary directory.
fn fresh_bookworm_lab() -> (tempfile::TempDir, std::path::PathBuf) {
    let down = discard_lab();
    assert!(down.status.success(), "lab down: {}", stderr(&down));
    let up = run(&["lab", "up", "--nodes", "3", "--release", "bookworm"]);
    assert!(
        up.status.success(),
        "a Debian 12 lab could not come up: {}",
        stderr(&up)
    );
    let status = run(&["lab", "status"]);
    assert!(status.status.success());
    assert!(stdout(&status).contains("bookworm (Debian 12)"), "{}", stdout(&status));
    let dir = tempfile::tempdir().expect("temporary directory");
    let inventory = inventory_in(dir.path());
    (dir, inventory)
}

/// Every node runs Debian 12's versions: PostgreSQL 15 alone (no 17 beside it), Patroni 3,
/// RabbitMQ 3.
fn assert_debian_12_versions() {
    for n in 1..=3 {
        let versions = ssh_ok(
            n,
            "cat /etc/debian_version; ls /usr/lib/postgresql; patroni --version; dpkg-query -W -f '${Version}\\n' rabbitmq-server",
        );
        let lines: Vec<&str> = versions.lines().collect();
        assert!(lines[0].starts_with("12."), "node{n} runs Debian 12: {versions}");
        assert_eq!(lines[1], "15", "node{n} has PostgreSQL 15 alone: {versions}");
        assert!(lines[2].starts_with("patroni 3."), "node{n}: {versions}");
        assert!(lines[3].starts_with("3."), "node{n} runs RabbitMQ 3: {versions}");
    }
}

/// The number of hosts the smoke DAG's tasks ran on, from the provision's gate line.
fn smoke_workers(doc: &serde_json::Value) -> usize {
    let smoke = gate_report(doc, "hactl_smoke triggered through the LB");
    measured!("Debian 12: smoke DAG (first provision gate): {smoke}");
    smoke
        .split(" ran on ")
        .nth(1)
        .expect("hosts listed")
        .split(", ")
        .count()
}

#[test]
fn debian_12_provisions_the_whole_stack_runs_the_smoke_dag_and_reruns_unchanged() {
    let _lab = lab_lock();
    let _down = LabDownAfter;
    let (_dir, inv_path) = fresh_bookworm_lab();
    let inv = inv_path.to_str().unwrap();

    let (code, doc, secs) = provision(inv, None);
    measured!("Debian 12: first provision of the whole stack: {secs:.1} s");
    assert_eq!(code, Some(0), "{:?}", failures(&doc));
    assert!(
        smoke_workers(&doc) >= 2,
        "the smoke DAG's tasks ran on at least two workers"
    );
    assert_debian_12_versions();

    let (code, doc, secs) = provision(inv, None);
    measured!("Debian 12: no-op re-run of the whole stack: {secs:.1} s");
    assert_eq!(code, Some(0), "{:?}", failures(&doc));
    assert_eq!(changed_steps(&doc), Vec::<String>::new(), "a re-run changes nothing");
}

#[test]
#[ignore = "run once by hand: HACTL_PREVIOUS=PATH (the previous main's hactl) cargo test --test bookworm -- --ignored"]
fn a_debian_12_cluster_built_by_the_previous_main_reruns_unchanged() {
    let previous = std::env::var("HACTL_PREVIOUS")
        .expect("HACTL_PREVIOUS names the previous main's hactl binary (this test compares with it)");
    let _lab = lab_lock();
    let _down = LabDownAfter;
    let (_dir, inv_path) = fresh_bookworm_lab();
    let inv = inv_path.to_str().unwrap();

    let started = std::time::Instant::now();
    let built = std::process::Command::new(&previous)
        .args(["provision", inv, "--output", "json"])
        .output()
        .expect("the previous hactl runs");
    measured!(
        "Debian 12: the previous main's first provision: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        built.status.code(),
        Some(0),
        "the previous main provisions: {}",
        stderr(&built)
    );

    let (code, doc, secs) = provision(inv, None);
    measured!("Debian 12: this hactl over the previous main's cluster: {secs:.1} s");
    assert_eq!(code, Some(0), "{:?}", failures(&doc));
    assert_eq!(
        changed_steps(&doc),
        Vec::<String>::new(),
        "this hactl changes nothing on a cluster the previous main built"
    );
    assert_debian_12_versions();
    let verify = run(&["verify", inv]);
    assert_eq!(verify.status.code(), Some(0), "verify: {}", stdout(&verify));
}
