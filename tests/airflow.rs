//! The whole stack, base through web-lb, on a fresh 3-node lab where every node is in every group:
//! an unreachable pip index is one clear error that leaves the earlier stages converged; the
//! first provision runs the smoke DAG through the LB on at least two workers; a re-run changes
//! nothing and restarts nothing; a hand edit of the configuration on one node is reported and
//! repaired with restarts on that node only; a hard crash of the node holding the PostgreSQL
//! leader, the first RabbitMQ node and the dag-processor is followed by a DAG run, triggered
//! through a surviving node's LB, that succeeds.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::*;

/// Airflow's units, as `systemctl show` names them.
const UNITS: &[&str] = &[
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-triggerer",
    "airflow-dag-processor",
    "airflow-worker",
];

/// Runs a provision, returning its exit code and JSON document.
fn provision(inv: &str) -> (Option<i32>, serde_json::Value) {
    let o = run(&["provision", inv, "--output", "json"]);
    (o.status.code(), json(&o))
}

/// Every node's airflow units with their MainPID (0: not running).
fn main_pids() -> Vec<String> {
    (1..=3)
        .map(|n| {
            let names = UNITS.join(" ");
            let pids = ssh_ok(n, &format!("systemctl show -p Id -p MainPID {names} | paste -sd' '"));
            format!("node{n}: {}", pids.trim())
        })
        .collect()
}

/// The summary line a passed gate reported (`report: true`), by its name's start.
fn gate_report(doc: &serde_json::Value, gate: &str) -> String {
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

/// Sets (or removes, with `None`) one variable under `all.vars` of the lab inventory.
fn set_inventory_var(inv: &std::path::Path, line: Option<&str>) {
    let text = std::fs::read_to_string(inv).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("# test override")).collect();
    let mut out = Vec::new();
    for l in kept {
        out.push(l.to_string());
        if l.trim_end() == "  vars:" {
            if let Some(extra) = line {
                out.push(format!("    {extra}  # test override"));
            }
        }
    }
    std::fs::write(inv, out.join("\n") + "\n").unwrap();
}

/// Triggers hactl_smoke through node `n`'s LB (the check the web-lb gate runs), with the admin
/// password read on the node (never in a command line or a failure message), returning the
/// helper's line; panics unless it succeeded.
fn smoke_through(n: usize, min_workers: usize) -> String {
    let cmd = format!(
        "HACTL_AIRFLOW_PASSWORD=$(python3 -c 'import json; print(json.load(open(\"/var/lib/airflow/simple_auth_manager_passwords.json\"))[\"admin\"])') \
         python3 /usr/local/lib/hactl/airflow_check.py smoke --url http://127.0.0.1:8080 --min-workers {min_workers} --timeout 300"
    );
    ssh_ok(n, &cmd)
}

#[test]
fn airflow_runs_dags_across_workers_repairs_drift_and_survives_a_hard_crash() {
    let _lab = lab_lock();
    let (dir, inv_path) = fresh_lab_inventory();
    let inv = inv_path.to_str().unwrap();

    // An index nobody answers (loopback): one clear error in the airflow stage, exit 1; the
    // earlier stages converge and no airflow unit exists.
    set_inventory_var(&inv_path, Some("pip_index_url: http://127.0.0.1:9/simple"));
    let started = Instant::now();
    let (code, doc) = provision(inv);
    measured!(
        "first provision base..mq-lb (airflow stopped at pip): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(1), "{doc}");
    let failures: Vec<&serde_json::Value> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "failed")
        .collect();
    assert_eq!(failures.len(), 3, "one failure per host: {failures:?}");
    for f in &failures {
        assert_eq!(f["stage"], "airflow");
        let error = f["error"].as_str().unwrap();
        assert!(
            error.contains("the package index http://127.0.0.1:9/simple cannot be reached"),
            "the error names the cause: {error}"
        );
    }
    for stage in ["base", "etcd", "postgres", "pg-lb", "rabbitmq", "mq-lb"] {
        assert!(
            doc["results"].as_array().unwrap().iter().any(|r| r["stage"] == stage),
            "stage {stage} ran"
        );
    }
    for n in 1..=3 {
        let units = ssh_ok(n, "systemctl list-unit-files 'airflow*' --no-legend | wc -l");
        assert_eq!(units.trim(), "0", "no airflow unit on node{n}");
    }
    set_inventory_var(&inv_path, None);

    // The plan names the install, the migration and the units to start; it shows no secret.
    let plan = run(&["plan", inv, "--stages", "airflow,web-lb"]);
    assert_eq!(plan.status.code(), Some(2));
    let text = stdout(&plan);
    for want in [
        "install apache-airflow[celery,postgres]==3.3.2",
        "would migrate the metadata database",
        "wait for another host to migrate",
        "add hactl_smoke.py",
        "start airflow-scheduler",
        "start airflow-dag-processor",
        "create /etc/haproxy/conf.d/30-airflow.cfg",
    ] {
        assert!(text.contains(want), "the plan says `{want}`:\n{text}");
    }
    for name in [
        "airflow_admin_password",
        "airflow_fernet_key",
        "airflow_jwt_secret",
        "web_lb_stats_password",
    ] {
        assert!(!text.contains(&secret(dir.path(), name)), "{name} in the plan");
    }

    // The stack through web-lb: the smoke DAG through the LB on at least two workers.
    let started = Instant::now();
    let (code, doc) = provision(inv);
    measured!(
        "first provision airflow + web-lb: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(0), "{doc}");
    let smoke = gate_report(&doc, "hactl_smoke triggered through the LB");
    measured!("smoke DAG (first provision gate): {smoke}");
    let hosts = smoke
        .split(" ran on ")
        .nth(1)
        .expect("hosts listed")
        .split(", ")
        .count();
    assert!(hosts >= 2, "tasks on at least two workers: {smoke}");
    let jobs = gate_report(&doc, "live scheduler and triggerer heartbeats");
    assert!(
        jobs.contains("DagProcessorJob: node1") && jobs.contains("SchedulerJob: node1,node2,node3"),
        "{jobs}"
    );

    // What an operator meets on a node.
    let dags = ssh_ok(3, "airflow dags list -o plain");
    assert!(
        dags.contains("hactl_smoke"),
        "airflow on node3 lists the smoke DAG: {dags}"
    );
    let attrs = ssh_ok(2, "stat -c '%U %G %a' /etc/airflow/airflow.cfg");
    assert_eq!(attrs.trim(), "root airflow 640");
    let active = |n: usize, unit: &str| ssh(n, &format!("systemctl is-active --quiet {unit}")).0 == 0;
    assert!(
        active(1, "airflow-dag-processor"),
        "the dag-processor runs on the first master"
    );
    assert!(
        !active(2, "airflow-dag-processor") && !active(3, "airflow-dag-processor"),
        "and nowhere else"
    );
    let (_, code) = ssh(1, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:1936/");
    assert_eq!(code, "401", "the LB's stats page asks for a password");
    let stats = secret(dir.path(), "web_lb_stats_password");
    let (rc, code) = ssh(
        1,
        &format!("curl -s -o /dev/null -w '%{{http_code}}' -u 'admin:{stats}' http://127.0.0.1:1936/"),
    );
    assert_eq!((rc, code.as_str()), (0, "200"), "with it, the stats page answers");

    // A re-run changes nothing and restarts nothing.
    let before = main_pids();
    let stopped: Vec<usize> = before.iter().map(|l| l.matches("MainPID=0").count()).collect();
    assert_eq!(
        stopped,
        [0, 1, 1],
        "every unit runs, the dag-processor on node1 only: {before:?}"
    );
    let started = Instant::now();
    let (code, doc) = provision(inv);
    measured!(
        "no-op re-run of the whole stack: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(0));
    assert_eq!(doc["summary"]["changed"], 0, "{:?}", changed_steps(&doc));
    assert_eq!(main_pids(), before, "no unit restarted");

    // Drift: a hand edit of the configuration on node2 and a stray DAG file on node3.
    ssh_ok(
        2,
        "sed -i 's/^worker_concurrency = .*/worker_concurrency = 9/' /etc/airflow/airflow.cfg",
    );
    ssh_ok(3, "echo 'x = 1' > /var/lib/airflow/dags/stray.py");
    let check = run(&["check", inv, "--stages", "airflow"]);
    assert_eq!(check.status.code(), Some(2), "check reports the drift");
    let text = stdout(&check);
    assert!(
        text.contains("update /etc/airflow/airflow.cfg") && text.contains("remove stray.py"),
        "{text}"
    );
    let (code, doc) = provision(inv);
    assert_eq!(code, Some(0));
    let mut changed = changed_steps(&doc);
    changed.sort();
    assert!(
        changed
            .iter()
            .all(|s| s.starts_with("node2:") || s == "node3:the DAGs, identical on every node"),
        "only node2's configuration and its units, and node3's DAGs: {changed:?}"
    );
    assert!(changed.contains(&"node2:restart scheduler".to_string()), "{changed:?}");
    let after = main_pids();
    assert_eq!(
        (&after[0], &after[2]),
        (&before[0], &before[2]),
        "node1 and node3 kept every unit up"
    );
    assert_ne!(after[1], before[1], "node2's units restarted");
    assert_eq!(
        ssh(3, "test -e /var/lib/airflow/dags/stray.py").0,
        1,
        "the stray DAG file is gone"
    );

    // A hard crash of node1: the PostgreSQL leader (switched there first), the first RabbitMQ
    // node and the dag-processor. A DAG triggered through node2's LB succeeds.
    let leader = || {
        ssh_ok(
            2,
            "patronictl -c /etc/patroni/config.yml list -f json | jq -r '.[] | select(.Role == \"Leader\") | .Member'",
        )
        .trim()
        .to_string()
    };
    let current = leader();
    if current != "node1" {
        ssh_ok(
            2,
            &format!("patronictl -c /etc/patroni/config.yml switchover --leader {current} --candidate node1 --force"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while leader() != "node1" {
            assert!(Instant::now() < deadline, "node1 did not become the leader");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let verify = run(&["verify", inv, "--stages", "pg-lb,airflow"]);
    assert_eq!(verify.status.code(), Some(0), "the cluster is whole before the crash");
    let crash = Instant::now();
    assert!(stdout(&run(&["lab", "kill", "node1"])).contains("crashed"));
    let line = smoke_through(2, 2);
    measured!(
        "node1 crashed (PG leader, first RabbitMQ node, dag-processor) -> hactl_smoke through node2's LB succeeded: {:.1} s ({})",
        crash.elapsed().as_secs_f64(),
        line.trim()
    );
    assert!(line.contains("succeeded") && !line.contains("node1"), "{line}");
}
