//! Hardening on the real stack (base … mq-lb) on three fresh lab nodes: passwords full of shell
//! and SQL metacharacters and user names with a dash go through every stage, whose gates pass;
//! a sampler reads every process's command line on every node every 50 ms throughout a first
//! provision and a password change and never sees a secret; no output, JSON or log line of
//! those runs, nor of a failed run, holds a secret or a form derived from it; `plan` leaves the
//! nodes exactly as they were, data directories, etcd keys and users included.

mod common;

use std::path::Path;

use common::*;

const STAGES: &str = "base,etcd,postgres,pg-lb,rabbitmq,mq-lb";

/// The passwords the inventory sets: each has ' " $ \ ; a space and backticks.
fn nasty(tag: &str) -> String {
    format!("{tag}'q\"d$HOME\\b;s p`id`-x")
}

const PASSWORDS: [&str; 5] = [
    "pg_superuser_password",
    "pg_replication_password",
    "pg_rewind_password",
    "airflow_db_password",
    "rabbitmq_airflow_password",
];

/// The passwords a password change rotates (the application's: Patroni sets its own users'
/// passwords only when it bootstraps a cluster).
const ROTATED: [&str; 2] = ["airflow_db_password", "rabbitmq_airflow_password"];

/// A password's value in round `round` (only the rotated ones change between rounds).
fn password(key: &str, round: u32) -> String {
    let round = if ROTATED.contains(&key) { round } else { 1 };
    nasty(&format!("{key}{round}"))
}

/// The lab inventory with the nasty passwords (round `round`) and dashed user names.
fn write_inventory(path: &Path, round: u32) {
    let base = std::fs::read_to_string(format!("{LAB}/inventory.yml")).unwrap();
    let mut vars = String::new();
    for key in PASSWORDS {
        let value = serde_json::to_string(&password(key, round)).unwrap();
        vars.push_str(&format!("    {key}: {value}\n"));
    }
    vars.push_str("    airflow_db_user: air-flow\n    airflow_db_name: air-flow-db\n");
    vars.push_str("    rabbitmq_user: air-flow\n    rabbitmq_vhost: air-flow-vhost\n");
    let text = base.replacen("  vars:\n", &format!("  vars:\n{vars}"), 1);
    assert_ne!(text, base, "the lab inventory has all.vars");
    std::fs::write(path, text).unwrap();
}

/// Every secret of the run: the inventory's and the generated ones.
fn secrets(dir: &Path, round: u32) -> Vec<String> {
    let mut all: Vec<String> = PASSWORDS.iter().map(|k| password(k, round)).collect();
    all.push(secret(dir, "rabbitmq_erlang_cookie"));
    all
}

/// Every form of every secret that must never show.
fn forbidden(secrets: &[String]) -> Vec<String> {
    secrets.iter().flat_map(|s| hactl::secrets::derived_forms(s)).collect()
}

fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    for form in forbidden {
        assert!(
            !text.contains(form.as_str()),
            "{what} shows a secret (or a form of one): {form:?}"
        );
    }
}

/// Reads every process's command line every 50 ms until /root/stop-sampler exists, then writes
/// the distinct ones to /root/cmdlines.
const SAMPLER: &str = r#"import os, time
seen, rounds = set(), 0
while not os.path.exists("/root/stop-sampler"):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                seen.add(open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode("utf-8", "replace"))
            except OSError:
                pass
    rounds += 1
    time.sleep(0.05)
seen.add("sampler rounds %d" % rounds)
open("/root/cmdlines.tmp", "w").write("\n".join(sorted(seen)) + "\n")
os.rename("/root/cmdlines.tmp", "/root/cmdlines")
"#;

/// Starts the sampler on every node.
fn start_samplers() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(SAMPLER);
    for n in 1..=3 {
        let cmd = format!(
            "rm -f /root/stop-sampler /root/cmdlines && echo {b64} | base64 -d > /root/sampler.py && \
             (nohup python3 /root/sampler.py >/dev/null 2>&1 &)"
        );
        assert_eq!(ssh(n, &cmd).0, 0, "sampler on node{n}");
    }
}

/// Stops the samplers; every distinct command line they saw, from all nodes.
fn sampled() -> String {
    let mut all = String::new();
    for n in 1..=3 {
        let (rc, out) = ssh(
            n,
            "touch /root/stop-sampler; for i in $(seq 50); do [ -e /root/cmdlines ] && break; sleep 0.1; done; cat /root/cmdlines",
        );
        assert_eq!(rc, 0, "sampler output on node{n}");
        let rounds: u32 = out
            .lines()
            .find_map(|l| l.strip_prefix("sampler rounds "))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        assert!(rounds > 1000, "node{n}'s sampler ran only {rounds} rounds");
        assert!(out.lines().count() > 50, "node{n}'s sampler saw too little: {out}");
        all.push_str(&out);
    }
    all
}

/// Everything a provision printed (stdout and stderr, with debug logs), and the JSON document.
fn provision_all_output(inv: &str) -> (std::process::Output, String) {
    let o = hactl()
        .args(["provision", inv, "--stages", STAGES, "--output", "json"])
        .env("HACTL_LOG", "debug")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hactl runs");
    let text = format!("{}{}", stdout(&o), stderr(&o));
    log_line(&format!("$ hactl provision {inv} -> {:?}\n{text}", o.status.code()));
    (o, text)
}

/// A fingerprint of what a plan must never touch: files (path, size, mtime, mode, owner) under
/// /etc, /srv, /opt, /usr, /home and dpkg's database; the PostgreSQL data directory's
/// configuration; the Erlang cookie; etcd's keys; PostgreSQL's roles and databases; RabbitMQ's
/// users, vhosts and permissions.
fn stack_fingerprint(node: usize) -> String {
    let (rc, out) = ssh(
        node,
        &format!(
            "set -e; \
         find /etc /srv /opt /usr /home /var/lib/dpkg -xdev -printf '%p %s %T@ %m %u\\n' 2>/dev/null | sort | sha256sum; \
         ls -l --time-style=+%s /var/lib/postgresql/15/main/*.conf /var/lib/rabbitmq/.erlang.cookie; \
         sha256sum /var/lib/postgresql/15/main/*.conf /var/lib/rabbitmq/.erlang.cookie; \
         {ETCDCTL} --endpoints=https://10.213.0.1{node}:2379 get --prefix '' --keys-only | grep -v '^$' | sort; \
         su postgres -c \"psql -XAtc 'select rolname, rolpassword from pg_authid order by 1; select datname from pg_database order by 1'\"; \
         rabbitmqctl -q list_users; rabbitmqctl -q list_vhosts; rabbitmqctl -q list_permissions -p air-flow-vhost"
        ),
    );
    assert_eq!(rc, 0, "fingerprint on node{node}: {out}");
    out
}

#[test]
fn nasty_passwords_no_secret_in_any_process_list_or_output_and_plan_is_read_only() {
    let _lab = lab_lock();
    let (dir, inv_path) = fresh_lab_inventory();
    write_inventory(&inv_path, 1);
    let inv = inv_path.to_str().unwrap();

    start_samplers();
    let (first, first_text) = provision_all_output(inv);
    let doc = json(&first);
    assert_eq!(
        first.status.code(),
        Some(0),
        "first provision with nasty passwords: {:#?}",
        why_it_failed(&first)
    );
    let secrets_dir = dir.path();
    let round1 = secrets(secrets_dir, 1);
    assert_clean("the first provision's output", &first_text, &forbidden(&round1));
    assert!(changed_steps(&doc).len() > 20, "a first provision changes things");

    let (second, _) = provision_all_output(inv);
    assert_eq!(second.status.code(), Some(0), "{:#?}", why_it_failed(&second));
    assert_eq!(
        changed_steps(&json(&second)),
        Vec::<String>::new(),
        "the re-run changes nothing"
    );

    // A password change goes through (role and RabbitMQ user updated in place).
    write_inventory(&inv_path, 2);
    let (third, third_text) = provision_all_output(inv);
    assert_eq!(
        third.status.code(),
        Some(0),
        "password change: {:#?}",
        why_it_failed(&third)
    );
    let changes = changed_steps(&json(&third));
    assert!(
        changes.iter().any(|c| c.contains("airflow role and database"))
            && changes.iter().any(|c| c.contains("airflow user")),
        "the role and the user get their new passwords: {changes:?}"
    );
    let round2 = secrets(secrets_dir, 2);
    assert_clean(
        "the password change's output",
        &third_text,
        &forbidden(&[round1.clone(), round2.clone()].concat()),
    );
    assert_clean(
        "the nodes' process lists",
        &sampled(),
        &forbidden(&[round1, round2.clone()].concat()),
    );

    // A failed run that prints a secret in its error shows it masked.
    let failing = dir.path().join("failing.yml");
    std::fs::write(
        &failing,
        "stages:\n  - name: leak\n    hosts: node1\n    steps:\n      - name: prints a secret then fails\n        command: {cmd: \"echo {{ airflow_db_password | quote }} {{ airflow_db_password | b64encode }}; exit 3\"}\n",
    )
    .unwrap();
    let o = run(&["provision", inv, "-p", failing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "the failing run fails");
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains("exit 3"), "{text}");
    assert_clean("a failed run's output", &text, &forbidden(&round2));
    let o = run(&["provision", inv, "-p", failing.to_str().unwrap(), "--output", "json"]);
    assert_clean("a failed run's JSON", &stdout(&o), &forbidden(&round2));

    // Plan is read-only on the real stack: in sync, and after drift.
    let before: Vec<String> = (1..=3).map(stack_fingerprint).collect();
    let plan = run(&["plan", inv, "--stages", STAGES]);
    assert_eq!(plan.status.code(), Some(0), "in sync: {}", stdout(&plan));
    assert_eq!(
        before,
        (1..=3).map(stack_fingerprint).collect::<Vec<_>>(),
        "plan changed a node"
    );
    assert_eq!(ssh(2, "echo '# drift' >> /etc/haproxy/haproxy.cfg").0, 0);
    let before: Vec<String> = (1..=3).map(stack_fingerprint).collect();
    let plan = run(&["plan", inv, "--stages", STAGES]);
    assert_eq!(plan.status.code(), Some(2), "drift pending: {}", stdout(&plan));
    assert_eq!(
        before,
        (1..=3).map(stack_fingerprint).collect::<Vec<_>>(),
        "plan after drift changed a node"
    );
}
