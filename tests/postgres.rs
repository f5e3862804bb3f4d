//! Stages base, etcd, postgres and pg-lb on three lab nodes: the cluster forms, re-runs change
//! nothing, it survives losing its leader's whole machine, the old leader rejoins as a replica,
//! and hand edits are repaired without losing writes through the load balancer.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

const STAGES: &str = "base,etcd,postgres,pg-lb";

fn provision(inv: &str) -> serde_json::Value {
    let o = run(&["provision", inv, "--stages", STAGES, "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "provision failed");
    let doc = json(&o);
    for r in doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "changed")
    {
        eprintln!("CHANGED {} {}/{}: {}", r["host"], r["stage"], r["step"], r["summary"]);
    }
    doc["summary"].clone()
}

/// The Patroni members as (name, role, state) from a node that answers.
fn members(from: usize) -> Vec<(String, String, String)> {
    let (rc, out) = ssh(from, "patronictl -c /etc/patroni/config.yml list -f json");
    assert_eq!(rc, 0, "patronictl on node{from}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("patronictl json");
    list.iter()
        .map(|m| {
            (
                m["Member"].as_str().unwrap().into(),
                m["Role"].as_str().unwrap().into(),
                m["State"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// A write through the LB's primary port on `node`.
fn write_through_lb(node: usize, password: &str) -> bool {
    let cmd = format!(
        "PGPASSWORD={password} timeout 5 psql -h 127.0.0.1 -p 5000 -U airflow -d airflow -tAc \"create table if not exists t(at timestamptz); insert into t values (now())\""
    );
    ssh(node, &cmd).0 == 0
}

#[test]
fn patroni_cluster_forms_fails_over_rejoins_and_repairs_drift() {
    let _lab = lab_lock();
    let (dir, inv_path) = fresh_lab_inventory();
    let inv = inv_path.to_str().unwrap();

    let started = Instant::now();
    let first = provision(inv);
    measured!("first provision: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        first["changed"].as_u64().unwrap() > 0 && first["failed"] == 0,
        "{first}"
    );
    let started = Instant::now();
    assert_eq!(provision(inv)["changed"], 0, "second run changed something");
    measured!("no-op re-run: {:.2} s", started.elapsed().as_secs_f64());
    let verify = run(&["verify", inv, "--stages", "etcd,postgres,pg-lb"]);
    assert_eq!(verify.status.code(), Some(0), "verify alone passes");

    // Failover: stop the leader's whole machine.
    let password = secret(dir.path(), "airflow_db_password");
    let roster = members(1);
    let leader = roster.iter().find(|m| m.1 == "Leader").expect("a leader").0.clone();
    let leader_n: usize = leader.trim_start_matches("node").parse().unwrap();
    let survivor = if leader_n == 1 { 2 } else { 1 };
    assert!(write_through_lb(survivor, &password));
    assert!(stdout(&run(&["lab", "stop", &leader])).contains("stopped"));
    let stopped = Instant::now();
    let mut failover = None;
    while stopped.elapsed() < Duration::from_secs(60) {
        if write_through_lb(survivor, &password) {
            failover = Some(stopped.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let failover = failover.expect("no write succeeded through the LB within 60 s of losing the leader");
    measured!(
        "failover (leader machine stopped -> write through LB 5000): {:.1} s",
        failover.as_secs_f64()
    );
    assert!(failover < Duration::from_secs(30), "failover took {failover:?}");
    let new_leader = members(survivor)
        .into_iter()
        .find(|m| m.1 == "Leader")
        .expect("a new leader")
        .0;
    assert_ne!(new_leader, leader);

    // The old leader's machine comes back and rejoins as a replica.
    let back = Instant::now();
    assert!(run(&["lab", "up", "--nodes", "3"]).status.success());
    let verify = run(&["verify", inv, "--stages", "etcd,postgres,pg-lb"]);
    assert_eq!(verify.status.code(), Some(0), "verify after rejoin");
    measured!(
        "rejoin (machine started -> verify passes): {:.1} s",
        back.elapsed().as_secs_f64()
    );
    let old = members(survivor)
        .into_iter()
        .find(|m| m.0 == leader)
        .expect("old leader listed");
    assert_eq!(old.1, "Replica", "old leader rejoined as {old:?}");
    assert_eq!(provision(inv)["changed"], 0, "provision after rejoin changed something");

    // Drift: hand edits on one node, repaired with reloads only while a writer keeps writing.
    let edited = survivor;
    let starts = postmaster_starts();
    assert_eq!(ssh(edited, "sed -i 's/loop_wait: 5/loop_wait: 9/' /etc/patroni/config.yml && echo '# hand edit' >> /etc/haproxy/conf.d/10-postgres.cfg").0, 0);
    assert_eq!(
        run(&["check", inv, "--stages", STAGES]).status.code(),
        Some(2),
        "check finds the drift"
    );
    let writer = format!(
        "systemd-run --unit=hactl-writer --collect sh -c 'for i in $(seq 40); do if PGPASSWORD={password} timeout 3 psql -h 127.0.0.1 -p 5000 -U airflow -d airflow -tAc \"insert into t values (now())\" >/dev/null 2>&1; then echo ok; else echo fail; fi; sleep 0.5; done > /root/writer.log'"
    );
    assert_eq!(ssh(edited, &writer).0, 0);
    std::thread::sleep(Duration::from_secs(2));
    let repair = run(&["provision", inv, "--stages", STAGES]);
    assert_eq!(repair.status.code(), Some(0));
    let text = stdout(&repair);
    assert!(
        text.contains("handler `reload patroni` ran") && text.contains("handler `reload haproxy` ran"),
        "{text}"
    );
    assert!(
        !text.contains("handler `restart haproxy` ran"),
        "repair restarted HAProxy: {text}"
    );
    assert_eq!(postmaster_starts(), starts, "repair restarted PostgreSQL");
    assert!(!ssh_ok(edited, "cat /etc/patroni/config.yml").contains("loop_wait: 9"));
    assert_eq!(run(&["check", inv, "--stages", STAGES]).status.code(), Some(0));
    let mut log = String::new();
    for _ in 0..40 {
        log = ssh_ok(edited, "cat /root/writer.log");
        if log.lines().count() >= 40 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let failures = log.lines().filter(|l| *l == "fail").count();
    measured!(
        "writer during drift repair: {} of {} writes failed",
        failures,
        log.lines().count()
    );
    assert!(failures <= 6, "writes failed during repair: {failures}\n{log}");

    // Rolling change: settings that need restarts, one member at a time with the gates between;
    // replicas first, the Patroni leader last after a switchover.
    let old_leader = members(1).into_iter().find(|m| m.1 == "Leader").unwrap().0;
    let text = std::fs::read_to_string(&inv_path).unwrap();
    let text = text.replacen(
        "  vars:\n",
        "  vars:\n    pg_shared_buffers: 192MB\n    etcd_election_timeout: 6000\n",
        1,
    );
    std::fs::write(&inv_path, text).unwrap();
    let plan = run(&["plan", inv, "--stages", STAGES]);
    assert_eq!(plan.status.code(), Some(2));
    let plan_text = stdout(&plan);
    let order_line = plan_text
        .lines()
        .find(|l| l.starts_with("postgres rolling: would restart"))
        .expect("plan names the order");
    assert!(order_line.ends_with(&old_leader), "leader must come last: {order_line}");
    assert!(
        plan_text.contains("etcd rolling: would restart one host at a time"),
        "{plan_text}"
    );
    let writer2 = writer
        .replace("hactl-writer", "hactl-writer2")
        .replace("seq 40", "seq 150")
        .replace("writer.log", "writer2.log");
    assert_eq!(ssh(1, &writer2).0, 0);
    let started = Instant::now();
    let rolled = run(&["provision", inv, "--stages", STAGES]);
    assert_eq!(rolled.status.code(), Some(0), "rolling provision");
    measured!(
        "rolling change (etcd + PostgreSQL restarts): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for n in 1..=3 {
        let sb = ssh_ok(n, "su postgres -c \"psql -tAc 'show shared_buffers'\"");
        assert_eq!(sb.trim(), "192MB", "node{n} not restarted with the new setting");
    }
    let new_leader = members(1).into_iter().find(|m| m.1 == "Leader").unwrap().0;
    assert_ne!(
        new_leader, old_leader,
        "the leader should have switched over before its restart"
    );
    assert_eq!(
        run(&["verify", inv, "--stages", "etcd,postgres,pg-lb"]).status.code(),
        Some(0)
    );
    assert_eq!(provision(inv)["changed"], 0, "after the rolling change");
    let _ = ssh(1, "systemctl stop hactl-writer2 2>/dev/null; true");
    let log = ssh_ok(1, "cat /root/writer2.log");
    let failures = log.lines().filter(|l| *l == "fail").count();
    measured!(
        "writer during rolling change: {} of {} writes failed",
        failures,
        log.lines().count()
    );
    assert!(
        failures <= 20,
        "too many failed writes during the rolling change: {failures}\n{log}"
    );
}

/// Each node's PostgreSQL start time (changes when PostgreSQL restarts).
fn postmaster_starts() -> Vec<String> {
    (1..=3)
        .map(|n| ssh(n, "su postgres -c \"psql -tAc 'select pg_postmaster_start_time()'\"").1)
        .collect()
}
