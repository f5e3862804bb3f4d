//! Hardening on the whole stack in the production shape, on six fresh lab nodes: the data tier
//! (etcd, PostgreSQL, RabbitMQ) on node1–3 with the load balancers on node1–2 and the VIP, the
//! Airflow masters on node4–5, the worker on node6, so that every Airflow node reaches the
//! database through the VIP. Every password of the inventory is hostile (quotes, `$`, a
//! backslash, `;`, a space, backticks, `!`, `&`, `#` and `%`; the HAProxy stats passwords
//! without the single quote, which HAProxy cannot take) and the user names have a dash.
//! Scenarios, each reported on its own: the first provision (the smoke DAG through the web LB
//! with the hostile admin password, its tasks on the worker only), a re-run that changes
//! nothing, `verify`, where Airflow runs (never on the data nodes, one dag-processor), a
//! password change that Airflow follows, a provision with the secrets file moved away
//! refusing with the nodes' files unchanged (then `hactl secrets recover`), a failed run that masks the secret it prints, and
//! `plan` leaving the nodes exactly as they were. A sampler reads every process's command line
//! on every node every 50 ms throughout and never sees a secret; no output, JSON or log line
//! holds a secret or a form derived from it.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use common::*;

/// The lab's nodes.
const NODES: usize = 6;

/// The role groups of the split shape: (group, its nodes).
const SHAPE: [(&str, &[usize]); 6] = [
    ("etcd", &[1, 2, 3]),
    ("postgres", &[1, 2, 3]),
    ("rabbitmq", &[1, 2, 3]),
    ("loadbalancers", &[1, 2]),
    ("airflow_masters", &[4, 5]),
    ("airflow_workers", &[6]),
];

/// The nodes that run Airflow.
const AIRFLOW_NODES: [usize; 3] = [4, 5, 6];

/// A hostile password: ' " $ \ ; a space, backticks, ! & # and % (a URL escape and a
/// configparser interpolation among them).
fn nasty(tag: &str) -> String {
    format!("{tag}'q\"d$HOME\\b;s p`id`-x!&#%41%(x)s")
}

/// Every password the inventory sets.
const PASSWORDS: [&str; 10] = [
    "pg_superuser_password",
    "pg_replication_password",
    "pg_rewind_password",
    "airflow_db_password",
    "rabbitmq_airflow_password",
    "rabbitmq_admin_password",
    "patroni_restapi_password",
    "airflow_admin_password",
    "web_lb_stats_password",
    "haproxy_stats_password",
];

/// HAProxy reads these as single-quoted words: hactl refuses a single quote in them.
const NO_SINGLE_QUOTE: [&str; 2] = ["web_lb_stats_password", "haproxy_stats_password"];

/// The passwords a password change rotates: the application's, and Patroni's own users' (set on
/// the primary by stage postgres before Patroni's configuration carries them).
const ROTATED: [&str; 5] = [
    "airflow_db_password",
    "rabbitmq_airflow_password",
    "pg_superuser_password",
    "pg_replication_password",
    "pg_rewind_password",
];

/// The secrets hactl generates into the secrets file.
const GENERATED: [&str; 4] = [
    "rabbitmq_erlang_cookie",
    "airflow_fernet_key",
    "airflow_api_secret_key",
    "airflow_jwt_secret",
];

/// A password's value in round `round` (only the rotated ones change between rounds).
fn password(key: &str, round: u32) -> String {
    let round = if ROTATED.contains(&key) { round } else { 1 };
    let value = nasty(&format!("{key}{round}"));
    if NO_SINGLE_QUOTE.contains(&key) {
        value.replace('\'', "")
    } else {
        value
    }
}

/// The files a regenerated secret would change, on a data node and an Airflow node.
const WATCHED: [(usize, &str); 3] = [
    (1, "/etc/patroni/config.yml"),
    (4, "/etc/airflow/airflow.cfg"),
    (1, "/etc/hactl/secrets.sha256"),
];

/// The sha256 of each [`WATCHED`] file.
fn watched_digests() -> Vec<String> {
    WATCHED
        .iter()
        .map(|(node, path)| ssh_ok(*node, &format!("sha256sum {path}")))
        .collect()
}

/// A provision with the secrets file moved away refuses (exit 1), names the secrets it would
/// have generated, writes no secrets file and leaves the nodes' files as they were; then
/// `hactl secrets recover` rebuilds the file (the same values) and a provision changes nothing.
fn lost_secrets_file_is_refused_then_recovered(inv: &str, dir: &Path) {
    let file = dir.join("inventory.secrets.yml");
    let kept = std::fs::read_to_string(&file).expect("the secrets file");
    let before = watched_digests();
    std::fs::rename(&file, dir.join("moved-away.yml")).unwrap();
    let refused = run(&["provision", inv]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let err = stderr(&refused);
    for name in GENERATED {
        assert!(err.contains(name), "the refusal names {name}: {err}");
    }
    assert!(err.contains("nothing changed"), "{err}");
    assert!(!file.exists(), "a refused run writes no secrets file");
    assert_eq!(watched_digests(), before, "a refused run changes no node's file");
    assert!(!stdout(&refused).contains("changed"), "{}", stdout(&refused));

    let recovered = run(&["secrets", "recover", inv]);
    assert_eq!(recovered.status.code(), Some(0), "{}", stderr(&recovered));
    let again = std::fs::read_to_string(&file).expect("the recovered secrets file");
    for name in GENERATED {
        assert_eq!(
            hactl::secrets::parse(&again, &file).unwrap().get(name),
            hactl::secrets::parse(&kept, &file).unwrap().get(name),
            "{name} recovered as it was"
        );
    }
    assert!(!stdout(&recovered).contains(&secret(dir, "airflow_fernet_key")));
    let doc = provision_ok(inv, None);
    assert_eq!(
        changed_steps(&doc),
        Vec::<String>::new(),
        "after recover, provision changes nothing"
    );
    assert_eq!(watched_digests(), before);
}

/// The split shape's inventory (from the lab's: its connection settings and the VIP) with the
/// hostile passwords of round `round` and dashed user names.
fn write_inventory(path: &Path, round: u32) {
    let base = std::fs::read_to_string(format!("{LAB}/inventory.yml")).unwrap();
    let head = &base[..base.find("  children:\n").expect("the lab inventory has children")];
    let mut vars = String::new();
    for key in PASSWORDS {
        let value = serde_json::to_string(&password(key, round)).unwrap();
        vars.push_str(&format!("    {key}: {value}\n"));
    }
    vars.push_str("    airflow_db_user: air-flow\n    airflow_db_name: air-flow-db\n");
    vars.push_str("    rabbitmq_user: air-flow\n    rabbitmq_vhost: air-flow-vhost\n");
    let head = head.replacen("  vars:\n", &format!("  vars:\n{vars}"), 1);
    assert!(head.contains("web_lb_vip:"), "the lab inventory sets the VIP");
    let mut children = String::from("  children:\n");
    for (group, nodes) in SHAPE {
        children.push_str(&format!("    {group}:\n      hosts:\n"));
        for n in nodes {
            children.push_str(&format!("        node{n}: {{}}\n"));
        }
    }
    std::fs::write(path, head + &children).unwrap();
}

/// Every secret of the run: the inventory's and the generated ones.
fn secrets(dir: &Path, round: u32) -> Vec<String> {
    let mut all: Vec<String> = PASSWORDS.iter().map(|k| password(k, round)).collect();
    all.extend(GENERATED.iter().map(|k| secret(dir, k)));
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
    for n in 1..=NODES {
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
    for n in 1..=NODES {
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

/// A whole-stack provision with debug logs: its output, everything it printed (stdout and
/// stderr), its JSON document and its time.
fn provision_all_output(inv: &str) -> (std::process::Output, String, serde_json::Value, f64) {
    let started = Instant::now();
    let o = hactl()
        .args(["provision", inv, "--output", "json"])
        .env("HACTL_LOG", "debug")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hactl runs");
    let seconds = started.elapsed().as_secs_f64();
    let text = format!("{}{}", stdout(&o), stderr(&o));
    log_line(&format!(
        "$ hactl provision {inv} -> {:?} in {seconds:.1} s\n{text}",
        o.status.code()
    ));
    let doc = serde_json::from_slice(&o.stdout).unwrap_or_default();
    (o, text, doc, seconds)
}

/// The worker hosts the smoke gate's report says the DAG's tasks ran on ("… tasks ran on node6
/// (8)").
fn smoke_hosts(report: &str) -> BTreeSet<String> {
    let spread = report
        .split_once("ran on ")
        .unwrap_or_else(|| panic!("the smoke report names no hosts: {report}"))
        .1;
    spread
        .split(", ")
        .map(|h| h.split(" (").next().unwrap_or(h).to_string())
        .collect()
}

/// A fingerprint of what a plan must never touch: files (path, size, mtime, mode, owner) under
/// /etc, /srv, /opt, /usr, /home and dpkg's database; on a data node also the PostgreSQL data
/// directory's configuration, the Erlang cookie, etcd's keys, PostgreSQL's roles and databases,
/// RabbitMQ's users, vhosts and permissions.
fn stack_fingerprint(node: usize) -> String {
    let files = "set -e; find /etc /srv /opt /usr /home /var/lib/dpkg -xdev -printf '%p %s %T@ %m %u\\n' 2>/dev/null | sort | sha256sum";
    let data = if node <= 3 {
        format!(
            "; ls -l --time-style=+%s /var/lib/postgresql/[0-9]*/main/*.conf /var/lib/rabbitmq/.erlang.cookie; \
             sha256sum /var/lib/postgresql/[0-9]*/main/*.conf /var/lib/rabbitmq/.erlang.cookie; \
             {ETCDCTL} --endpoints=https://10.213.0.1{node}:2379 get --prefix '' --keys-only | grep -v '^$' | sort; \
             su postgres -c \"psql -XAtc 'select rolname, rolpassword from pg_authid order by 1; select datname from pg_database order by 1'\"; \
             rabbitmqctl -q list_users; rabbitmqctl -q list_vhosts; rabbitmqctl -q list_permissions -p air-flow-vhost"
        )
    } else {
        String::new()
    };
    let (rc, out) = ssh(node, &format!("{files}{data}"));
    assert_eq!(rc, 0, "fingerprint on node{node}: {out}");
    out
}

/// Every node's fingerprint.
fn fingerprints() -> Vec<String> {
    (1..=NODES).map(stack_fingerprint).collect()
}

#[test]
fn split_shape_with_hostile_passwords_provisions_whole_and_leaks_no_secret() {
    let _lab = lab_lock();
    fresh_lab(NODES);
    let dir = tempfile::tempdir().expect("temporary directory");
    let inv_path = dir.path().join("inventory.yml");
    write_inventory(&inv_path, 1);
    let inv = inv_path.to_str().unwrap();
    let mut scenarios = Scenarios::default();
    start_samplers();

    let mut first_doc = serde_json::Value::Null;
    let provisioned = scenarios.run("first provision of the split shape, every password hostile", || {
        let (first, text, doc, seconds) = provision_all_output(inv);
        assert_eq!(
            first.status.code(),
            Some(0),
            "first provision: {:#?}",
            why_it_failed(&first)
        );
        measured!("split shape (6 nodes, every password hostile): first provision of the whole stack {seconds:.1} s");
        assert_clean(
            "the first provision's output",
            &text,
            &forbidden(&secrets(dir.path(), 1)),
        );
        assert!(changed_steps(&doc).len() > 100, "a first provision changes things");
        first_doc = doc;
    });
    if !provisioned {
        scenarios.skip("everything after the first provision", "first provision");
        scenarios.finish();
        return;
    }

    scenarios.run(
        "the smoke DAG ran through the web LB with the hostile admin password, on the worker only",
        || {
            let report = gate_report(&first_doc, "hactl_smoke triggered through the LB");
            measured!("split shape: smoke DAG (first provision gate): {report}");
            assert_eq!(smoke_hosts(&report), BTreeSet::from(["node6".to_string()]), "{report}");
        },
    );

    scenarios.run("a re-run changes nothing", || {
        let (second, _, doc, seconds) = provision_all_output(inv);
        assert_eq!(second.status.code(), Some(0), "{:#?}", why_it_failed(&second));
        measured!("split shape: no-op re-run {seconds:.1} s");
        assert_eq!(changed_steps(&doc), Vec::<String>::new(), "the re-run changes nothing");
    });

    scenarios.run("verify passes every gate", || {
        let o = run(&["verify", inv, "--output", "json"]);
        assert_eq!(o.status.code(), Some(0), "verify: {:#?}", why_it_failed(&o));
        let report = gate_report(&json(&o), "hactl_smoke triggered through the LB");
        assert_eq!(smoke_hosts(&report), BTreeSet::from(["node6".to_string()]), "{report}");
    });

    scenarios.run(
        "Airflow runs on its nodes only, one dag-processor among the masters",
        || {
            for n in 1..=3 {
                let (rc, units) = ssh(
                    n,
                    // (`airflow-.service.d`: the firewall's drop-in for any airflow unit, on every node)
                    "ls /etc/systemd/system | grep '^airflow' | grep -vx 'airflow-.service.d' || true; \
                     pgrep -af '[a]irflow ' || true",
                );
                assert_eq!(rc, 0);
                assert_eq!(units.trim(), "", "node{n} (data tier) has Airflow");
            }
            let holders = nodes_running("airflow dag-processor");
            assert_eq!(holders.len(), 1, "one dag-processor: {holders:?}");
            assert!(
                holders.iter().all(|h| h == "node4" || h == "node5"),
                "the dag-processor runs on a master: {holders:?}"
            );
            let workers = nodes_running("celery worker");
            assert_eq!(
                workers,
                BTreeSet::from(["node6".to_string()]),
                "the Celery worker runs on the worker node only"
            );
            for n in AIRFLOW_NODES {
                let resolved = ssh_ok(n, "getent hosts hactl-lb | awk '{print $1}'");
                assert_eq!(
                    resolved.trim(),
                    "10.213.0.254",
                    "node{n} reaches the LBs through the VIP"
                );
            }
        },
    );

    scenarios.run(
        "a lost secrets file is a refusal that changes nothing; `secrets recover` rebuilds it",
        || lost_secrets_file_is_refused_then_recovered(inv, dir.path()),
    );

    let rotated = scenarios.run("a password change goes through, Airflow follows", || {
        write_inventory(&inv_path, 2);
        let (third, text, doc, _) = provision_all_output(inv);
        assert_eq!(
            third.status.code(),
            Some(0),
            "password change: {:#?}",
            why_it_failed(&third)
        );
        let changes = changed_steps(&doc);
        assert!(
            changes.iter().any(|c| c.contains("airflow role and database"))
                && changes.iter().any(|c| c.contains("airflow user"))
                && changes.iter().any(|c| c.contains("the cluster's configuration"))
                && changes.iter().any(|c| c.contains("Patroni's users' passwords")),
            "the roles, the user and airflow.cfg get the new passwords: {changes:?}"
        );
        let both = [secrets(dir.path(), 1), secrets(dir.path(), 2)].concat();
        assert_clean("the password change's output", &text, &forbidden(&both));
    });

    scenarios.run("no node's process list ever showed a secret", || {
        let both = [secrets(dir.path(), 1), secrets(dir.path(), 2)].concat();
        assert_clean("the nodes' process lists", &sampled(), &forbidden(&both));
    });

    let round = if rotated { 2 } else { 1 };
    scenarios.run("a failed run that prints a secret shows it masked", || {
        let failing = dir.path().join("failing.yml");
        std::fs::write(
            &failing,
            "stages:\n  - name: leak\n    hosts: node1\n    steps:\n      - name: prints a secret then fails\n        command: {cmd: \"echo {{ airflow_db_password | quote }} {{ airflow_db_password | b64encode }}; exit 3\"}\n",
        )
        .unwrap();
        let secrets = secrets(dir.path(), round);
        let o = run(&["provision", inv, "-p", failing.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "the failing run fails");
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(text.contains("exit 3"), "{text}");
        assert_clean("a failed run's output", &text, &forbidden(&secrets));
        let o = run(&["provision", inv, "-p", failing.to_str().unwrap(), "--output", "json"]);
        assert_clean("a failed run's JSON", &stdout(&o), &forbidden(&secrets));
    });

    scenarios.run("plan is read-only, in sync and after drift", || {
        let before = fingerprints();
        let plan = run(&["plan", inv]);
        assert_eq!(plan.status.code(), Some(0), "in sync: {}", stdout(&plan));
        assert_eq!(before, fingerprints(), "plan changed a node");
        assert_eq!(ssh(2, "echo '# drift' >> /etc/haproxy/haproxy.cfg").0, 0);
        let before = fingerprints();
        let plan = run(&["plan", inv]);
        assert_eq!(plan.status.code(), Some(2), "drift pending: {}", stdout(&plan));
        assert_eq!(before, fingerprints(), "plan after drift changed a node");
    });
    scenarios.finish();
}
