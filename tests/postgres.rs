//! Stages base, etcd, postgres and pg-lb on three lab nodes: the cluster forms, re-runs change
//! nothing, it survives losing its leader's whole machine, the old leader rejoins as a replica,
//! and hand edits are repaired without losing writes through the load balancer.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

const STAGES: &str = "base,etcd,postgres,pg-lb";

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

/// Starts writes through the LB's primary port on `node`, one every 0.5 s, in the background as
/// unit `unit` until [`writer_result`] stops it: one line each in /root/UNIT.log, `ok` or
/// `fail: ` and psql's error.
fn start_writer(node: usize, unit: &str, password: &str) {
    let cmd = format!(
        "rm -f /root/{unit}.stop; systemd-run --unit={unit} --collect sh -c 'until [ -e /root/{unit}.stop ]; do \
         if e=$(PGPASSWORD={password} timeout 3 psql -h 127.0.0.1 -p 5000 -U airflow -d airflow -tAc \"insert into t values (now())\" 2>&1); \
         then echo ok; else echo \"fail: $e\" | tr \"\\n\" \" \"; echo; fi; sleep 0.5; done > /root/{unit}.log'"
    );
    assert_eq!(ssh(node, &cmd).0, 0, "a writer on node{node}");
}

/// Stops the writer `unit` on `node` once its write in flight ends: how many of its writes
/// failed, how many it made (at least 10, or the watched operation was too short to judge), and
/// its log.
fn writer_result(node: usize, unit: &str) -> (usize, usize, String) {
    let log = ssh_ok(
        node,
        &format!(
            "touch /root/{unit}.stop; timeout 15 sh -c 'while systemctl is-active -q {unit}; do sleep 0.2; done'; cat /root/{unit}.log"
        ),
    );
    let total = log.lines().count();
    assert!(total >= 10, "the writer {unit} made {total} writes:\n{log}");
    (log.lines().filter(|l| l.starts_with("fail")).count(), total, log)
}

#[test]
fn patroni_cluster_forms_fails_over_rejoins_and_repairs_drift() {
    let _lab = lab_lock();
    let (dir, inv_path) = fresh_lab_inventory();
    let inv = inv_path.to_str().unwrap();

    let started = Instant::now();
    let first = provision_ok(inv, Some(STAGES))["summary"].clone();
    measured!("first provision: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        first["changed"].as_u64().unwrap() > 0 && first["failed"] == 0,
        "{first}"
    );
    let started = Instant::now();
    assert_eq!(
        provision_ok(inv, Some(STAGES))["summary"]["changed"],
        0,
        "second run changed something"
    );
    measured!("no-op re-run: {:.2} s", started.elapsed().as_secs_f64());
    let verify = run(&["verify", inv, "--stages", "etcd,postgres,pg-lb"]);
    assert_eq!(verify.status.code(), Some(0), "verify alone passes");

    // Failover: the leader's whole machine crashes (every process killed at once).
    let password = secret(dir.path(), "airflow_db_password");
    let roster = members(1);
    let leader = roster.iter().find(|m| m.1 == "Leader").expect("a leader").0.clone();
    let leader_n: usize = leader.trim_start_matches("node").parse().unwrap();
    let survivor = if leader_n == 1 { 2 } else { 1 };
    assert!(write_through_lb(survivor, &password));
    assert!(stdout(&run(&["lab", "kill", &leader])).contains("crashed"));
    let stopped = Instant::now();
    let mut failover = None;
    while stopped.elapsed() < Duration::from_secs(60) {
        if write_through_lb(survivor, &password) {
            failover = Some(stopped.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let failover = failover.expect("no write succeeded through the LB within 60 s of the leader's crash");
    measured!(
        "failover (leader machine crashed -> write through LB 5000): {:.1} s",
        failover.as_secs_f64()
    );
    // Bounded by Patroni's leader TTL (15 s), which etcd renews in full when its own leader died
    // too, plus HAProxy's checks: a hard crash costs far more than a clean stop.
    assert!(failover < Duration::from_secs(45), "failover took {failover:?}");
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
    assert_eq!(
        provision_ok(inv, Some(STAGES))["summary"]["changed"],
        0,
        "provision after rejoin changed something"
    );

    // Drift: hand edits on one node, repaired with reloads only while a writer keeps writing.
    let edited = survivor;
    let starts = postmaster_starts();
    assert_eq!(ssh(edited, HAND_EDIT).0, 0);
    assert_eq!(
        run(&["check", inv, "--stages", STAGES]).status.code(),
        Some(2),
        "check finds the drift"
    );
    start_writer(edited, "hactl-writer", &password);
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
    let (failures, total, log) = writer_result(edited, "hactl-writer");
    measured!("writer during drift repair: {failures} of {total} writes failed");
    assert_eq!(failures, 0, "writes failed during a repair of reloads only:\n{log}");

    // Each HAProxy reload (a configuration change) keeps the servers' checked states: the new
    // process does not take the replicas for the primary before its first check.
    start_writer(edited, "hactl-writer-reloads", &password);
    for _ in 0..6 {
        assert_eq!(ssh(edited, "systemctl reload haproxy").0, 0, "reload haproxy");
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (failures, total, log) = writer_result(edited, "hactl-writer-reloads");
    measured!("writer during 6 HAProxy reloads: {failures} of {total} writes failed");
    assert_eq!(failures, 0, "writes failed across HAProxy reloads:\n{log}");

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
    let file = dir.path().join("rolling.json");
    let file = file.to_str().unwrap();
    let order_line = reviewed_rolling_plan(inv, file, &old_leader);
    assert!(
        stdout(&run(&["show", file])).contains(&order_line),
        "show prints the rolling order"
    );

    // The leader moves after the review: applying the plan refuses, naming the order it
    // reviewed and the order now; nothing restarts.
    let candidate = members(1).into_iter().find(|m| m.1 == "Replica").unwrap().0;
    ssh_ok(
        1,
        &format!(
            "patronictl -c /etc/patroni/config.yml switchover --leader {old_leader} --candidate {candidate} --force"
        ),
    );
    let moved = Instant::now();
    while members(1).iter().find(|m| m.1 == "Leader").map(|m| &m.0) != Some(&candidate) {
        assert!(
            moved.elapsed() < Duration::from_secs(60),
            "no switchover to {candidate}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let refused = run(&["provision", inv, "--stages", STAGES, "--plan", file]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let why = stderr(&refused);
    assert!(
        why.contains("no longer holds; nothing changed")
            && why.contains("the rolling restarts moved: planned ")
            && why.contains(&format!("{old_leader}, now ")),
        "{why}"
    );
    for n in 1..=3 {
        let sb = ssh_ok(n, "su postgres -c \"psql -tAc 'show shared_buffers'\"");
        assert_eq!(sb.trim(), "128MB", "node{n} restarted by a refused plan");
    }
    let old_leader = candidate;
    reviewed_rolling_plan(inv, file, &old_leader);
    start_writer(1, "hactl-writer2", &password);
    let started = Instant::now();
    let rolled = run(&["provision", inv, "--stages", STAGES, "--plan", file]);
    assert_eq!(rolled.status.code(), Some(0), "rolling provision of the reviewed plan");
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
    assert_eq!(
        provision_ok(inv, Some(STAGES))["summary"]["changed"],
        0,
        "after the rolling change"
    );
    let (failures, total, log) = writer_result(1, "hactl-writer2");
    measured!("writer during rolling change: {failures} of {total} writes failed");
    assert!(
        failures <= 20,
        "too many failed writes during the rolling change: {failures}\n{log}"
    );

    ssh_cut_mid_run(inv);
    patroni_passwords_rotate_under_a_writer(dir.path(), inv, &password);
    a_fourth_node_joins_under_a_writer(dir.path(), inv, &password);
    a_dead_member_is_left_then_pruned(dir.path(), inv);
}

/// Scenario "a dead member, left then pruned": node4 crashes for good and leaves the inventory. A
/// provision without `--prune` leaves its etcd member (a `left:` result, the gates pass on the
/// three); `plan` names the removal; `provision --prune` removes it; Patroni forgets it by itself
/// (its key expires); a re-run changes nothing.
fn a_dead_member_is_left_then_pruned(dir: &std::path::Path, inv: &str) {
    assert!(stdout(&run(&["lab", "kill", "node4"])).contains("crashed"));
    remove_lab_node(&dir.join("inventory.yml"), 4);
    let left = provision_ok(inv, Some(STAGES));
    let skipped: Vec<String> = left["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "skipped")
        .filter_map(|r| r["summary"].as_str().map(str::to_string))
        .filter(|s| s.starts_with("left: "))
        .collect();
    assert_eq!(
        skipped,
        ["left: remove etcd member node4, down and not in group etcd (provision --prune does it)"],
        "{left}"
    );
    assert_eq!(etcd_members(1).len(), 4, "left as it was");
    let plan = run(&["plan", inv, "--stages", STAGES]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("would remove etcd member node4, down and not in group etcd"),
        "{}",
        stdout(&plan)
    );
    let started = Instant::now();
    let pruned = run(&["provision", inv, "--stages", STAGES, "--prune", "--output", "json"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stdout(&pruned));
    measured!(
        "a dead member removed by provision --prune: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut etcd: Vec<String> = etcd_members(1).into_iter().map(|m| m.0).collect();
    etcd.sort();
    assert_eq!(etcd, ["node1", "node2", "node3"], "etcd members after the removal");
    let patroni: Vec<String> = members(1).into_iter().map(|m| m.0).collect();
    assert!(!patroni.iter().any(|m| m == "node4"), "{patroni:?}");
    assert_eq!(
        provision_ok(inv, Some(STAGES))["summary"]["changed"],
        0,
        "a re-run after the removal"
    );
}

/// The etcd members as (name, is learner, started), listed through node `from`.
fn etcd_members(from: usize) -> Vec<(String, bool, bool)> {
    let out = ssh_ok(
        from,
        &format!(
            "ETCDCTL_API=3 etcdctl --endpoints=https://10.213.0.1{from}:2379 --cacert=/etc/hactl/tls/ca.crt \
         --cert=/etc/hactl/tls/etcd-client.crt --key=/etc/hactl/tls/etcd-client.key member list -w json"
        ),
    );
    let list: serde_json::Value = serde_json::from_str(&out).expect("member list json");
    list["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
                m["clientURLs"].as_array().is_some_and(|urls| !urls.is_empty()),
            )
        })
        .collect()
}

/// Scenario "a fourth node joins": node4 put in every group of the running cluster joins etcd
/// (a learner, then promoted: the others restart nothing) and Patroni (a streaming replica) in
/// one provision, under a writer through the LB; `plan` named the join first; a re-run changes
/// nothing and `verify` passes on the four.
fn a_fourth_node_joins_under_a_writer(dir: &std::path::Path, inv: &str, password: &str) {
    assert!(run(&["lab", "up", "--nodes", "4"]).status.success());
    add_lab_node(&dir.join("inventory.yml"), 4);
    let plan = run(&["plan", inv, "--stages", STAGES]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    let text = stdout(&plan);
    assert!(
        text.contains(
            "add etcd member node4 (https://10.213.0.14:2380) to the cluster of node1, node2, node3 as a learner"
        ),
        "the plan names node4's etcd join:\n{text}"
    );
    let etcd_before = ssh_ok(1, "systemctl show -p MainPID --value etcd");
    start_writer(1, "hactl-writer-join", password);
    let started = Instant::now();
    let out = run(&["provision", inv, "--stages", STAGES, "--output", "json"]);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let changed = changed_steps(&json(&out));
    assert!(
        changed
            .iter()
            .any(|s| s.starts_with("node4:") && s.contains("this member in the etcd cluster")),
        "{changed:?}"
    );
    let (failures, total, log) = writer_result(1, "hactl-writer-join");
    measured!("a fourth node joins etcd and Patroni in one provision: {secs:.1} s; writer through 5000: {failures} of {total} writes failed");
    assert!(failures <= 2, "writes failed while node4 joined:\n{log}");
    let etcd = etcd_members(1);
    assert_eq!(etcd.len(), 4, "{etcd:?}");
    assert!(
        etcd.iter()
            .all(|(name, learner, started)| !name.is_empty() && !learner && *started),
        "four started voters: {etcd:?}"
    );
    assert_eq!(
        ssh_ok(1, "systemctl show -p MainPID --value etcd"),
        etcd_before,
        "node1's etcd did not restart for the new member"
    );
    let patroni = members(4);
    assert_eq!(patroni.len(), 4, "{patroni:?}");
    let leader = patroni.iter().find(|m| m.1 == "Leader").expect("a leader").0.clone();
    await_streaming(leader.trim_start_matches("node").parse().unwrap(), 3);
    assert_eq!(
        provision_ok(inv, Some(STAGES))["summary"]["changed"],
        0,
        "a re-run after the join"
    );
    assert_eq!(
        run(&["verify", inv, "--stages", "etcd,postgres,pg-lb"]).status.code(),
        Some(0),
        "verify on the four"
    );
}

/// The number of streaming replicas `node`'s PostgreSQL sends WAL to.
fn streaming_replicas(node: usize) -> usize {
    let sql = "select count(*) from pg_stat_replication where state = 'streaming'";
    let (rc, out) = ssh(node, &format!("su postgres -c \"psql -tAc \\\"{sql}\\\"\""));
    if rc == 0 {
        out.trim().parse().unwrap_or(0)
    } else {
        0
    }
}

/// The pid of the WAL sender streaming from `node` to Patroni member `member`, if one streams.
fn wal_sender(node: usize, member: &str) -> Option<String> {
    let sql =
        format!("select pid from pg_stat_replication where state = 'streaming' and application_name = '{member}'");
    let (rc, out) = ssh(node, &format!("su postgres -c \"psql -tAc \\\"{sql}\\\"\""));
    let pid = out.trim();
    (rc == 0 && !pid.is_empty()).then(|| pid.to_string())
}

/// Waits (60 s at most) until `node`'s PostgreSQL streams to `count` replicas.
fn await_streaming(node: usize, count: usize) {
    let started = Instant::now();
    while streaming_replicas(node) != count {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "node{node} does not stream to {count} replicas"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Scenario "Patroni's users' passwords rotate under a writer": `--rotate` of the replication,
/// superuser and rewind passwords on the running cluster with a writer through 5000 (no write
/// lost to it), a re-run changes nothing; then the replicas reconnect with the new replication
/// password (one restarted), and the leader's machine crashes: the failover, the old leader's
/// rewind and rejoin all log in with the new passwords.
fn patroni_passwords_rotate_under_a_writer(dir: &std::path::Path, inv: &str, password: &str) {
    const ROTATED: [&str; 3] = ["pg_replication_password", "pg_superuser_password", "pg_rewind_password"];
    let before: Vec<String> = ROTATED.iter().map(|n| secret(dir, n)).collect();
    let leader = members(1).into_iter().find(|m| m.1 == "Leader").expect("a leader").0;
    let leader_n: usize = leader.trim_start_matches("node").parse().unwrap();
    let replica_n = (1..=3).find(|n| *n != leader_n).unwrap();
    start_writer(replica_n, "hactl-writer-rotate", password);
    std::thread::sleep(Duration::from_secs(2));
    let mut args = vec!["provision", inv, "--stages", STAGES, "--output", "json"];
    for name in ROTATED {
        args.extend(["--rotate", name]);
    }
    let started = Instant::now();
    let rotated = run(&args);
    measured!(
        "rotating Patroni's three passwords: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(rotated.status.code(), Some(0), "{}", stderr(&rotated));
    let changed = changed_steps(&json(&rotated));
    assert!(
        changed
            .iter()
            .any(|s| s.starts_with(&format!("{leader}:")) && s.contains("Patroni's users' passwords")),
        "the primary {leader} set the passwords: {changed:?}"
    );
    for (name, old) in ROTATED.iter().zip(&before) {
        assert_ne!(&secret(dir, name), old, "{name} was not rotated");
    }
    let (failures, total, log) = writer_result(replica_n, "hactl-writer-rotate");
    measured!("writer during the rotation of Patroni's passwords: {failures} of {total} writes failed");
    assert!(failures <= 2, "writes failed during the rotation:\n{log}");
    await_streaming(leader_n, 2);
    assert_eq!(
        provision_ok(inv, Some(STAGES))["summary"]["changed"],
        0,
        "a re-run after the rotation"
    );

    // A replica that reconnects logs in with the new replication password: the leader streams
    // to it from a new WAL sender.
    let replica = format!("node{replica_n}");
    let sender = wal_sender(leader_n, &replica).expect("the leader streams to the replica");
    let restarted = Instant::now();
    assert_eq!(ssh(replica_n, "systemctl restart patroni").0, 0);
    while wal_sender(leader_n, &replica).is_none_or(|pid| pid == sender) {
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "{replica} does not stream again after its restart"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    measured!(
        "a restarted replica streams again (new replication password) after {:.1} s",
        restarted.elapsed().as_secs_f64()
    );

    // The leader's machine crashes: a replica takes over, the other follows it, and the old
    // leader rejoins (pg_rewind, replication) with the new passwords.
    assert!(stdout(&run(&["lab", "kill", &leader])).contains("crashed"));
    let stopped = Instant::now();
    while !write_through_lb(replica_n, password) {
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "no write through 5000 after the crash"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    measured!("failover after the rotation: {:.1} s", stopped.elapsed().as_secs_f64());
    let new_leader = members(replica_n)
        .into_iter()
        .find(|m| m.1 == "Leader")
        .expect("a new leader")
        .0;
    let new_leader_n: usize = new_leader.trim_start_matches("node").parse().unwrap();
    await_streaming(new_leader_n, 1);
    assert!(run(&["lab", "up", "--nodes", "3"]).status.success());
    assert_eq!(
        run(&["verify", inv, "--stages", "etcd,postgres,pg-lb"]).status.code(),
        Some(0),
        "verify after rejoin"
    );
    await_streaming(new_leader_n, 2);
    assert_eq!(
        provision_ok(inv, Some(STAGES))["summary"]["changed"],
        0,
        "a provision after the rejoin"
    );
}

/// Hand edits a Patroni setting and the PostgreSQL LB's configuration.
const HAND_EDIT: &str = "sed -i -E 's/loop_wait: [0-9]+/loop_wait: 9/' /etc/patroni/config.yml && echo '# hand edit' >> /etc/haproxy/conf.d/10-postgres.cfg";

/// `plan --out FILE` of a change that restarts every member: it names the rolling order, the
/// leader `leader` last, and saves it; the order line.
fn reviewed_rolling_plan(inv: &str, file: &str, leader: &str) -> String {
    let plan = run(&["plan", inv, "--stages", STAGES, "--out", file]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    let plan_text = stdout(&plan);
    let order_line = plan_text
        .lines()
        .find(|l| l.starts_with("postgres rolling: would restart"))
        .expect("plan names the order");
    assert!(order_line.ends_with(leader), "leader must come last: {order_line}");
    assert!(
        plan_text.contains("etcd rolling: would restart one host at a time"),
        "{plan_text}"
    );
    order_line.to_string()
}

/// A replica's SSH link is cut once the run has written its Patroni configuration: the run
/// ends (exit 1) with the host unreachable, the journal records it interrupted, naming the
/// host and what had been applied, and the next plan shows what is still owed there.
fn ssh_cut_mid_run(inv: &str) {
    let replica = members(1).into_iter().find(|m| m.1 == "Replica").unwrap().0;
    let n: usize = replica.trim_start_matches("node").parse().unwrap();
    assert_eq!(ssh(n, HAND_EDIT).0, 0);
    let written = format!("[{replica}] postgres/Patroni configuration changed");
    let (mut child, lines) = spawn_until(&["provision", inv, "--stages", "postgres,pg-lb"], &written);
    assert_eq!(run(&["lab", "link", &replica, "down"]).status.code(), Some(0));
    let cut = Instant::now();
    let rest: Vec<String> = lines.collect();
    let code = child.wait().unwrap().code();
    measured!(
        "SSH link cut mid-run: the run ended {:.1} s after the cut",
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(run(&["lab", "link", &replica, "up"]).status.code(), Some(0));
    assert_eq!(code, Some(1), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains(&format!(
            "[{replica}] UNREACHABLE: the connection was lost during postgres/"
        ))),
        "{rest:?}"
    );
    let last = run(&["log", inv, "--last"]);
    assert_eq!(last.status.code(), Some(0));
    let last = stdout(&last);
    assert!(
        last.contains(" interrupted ")
            && last.contains(&format!("the connection was lost: {replica} during postgres/"))
            && last.contains("  ~ postgres/Patroni configuration"),
        "{last}"
    );
    let plan = run(&["plan", inv, "--stages", "postgres,pg-lb", "--output", "json"]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    let owed = changed_steps(&json(&plan));
    assert!(
        owed.iter()
            .any(|s| s.starts_with(&replica) && s.contains("PostgreSQL primary (5000) and replicas (5001)")),
        "the LB configuration is owed on {replica}: {owed:?}"
    );
    let repair = run(&["provision", inv, "--stages", STAGES]);
    assert_eq!(repair.status.code(), Some(0), "{}", stderr(&repair));
    assert!(!ssh_ok(n, "cat /etc/patroni/config.yml").contains("loop_wait: 9"));
    assert_eq!(run(&["check", inv, "--stages", STAGES]).status.code(), Some(0));
}

/// Each node's PostgreSQL start time (changes when PostgreSQL restarts).
fn postmaster_starts() -> Vec<String> {
    (1..=3)
        .map(|n| ssh(n, "su postgres -c \"psql -tAc 'select pg_postmaster_start_time()'\"").1)
        .collect()
}
