//! The engine end to end on three lab nodes: plan, provision, idempotence, drift repair with the
//! notified restart, become, bad input, and handlers remembered across a failed run.

mod common;

use std::path::Path;

use common::*;

const DEMO: &str = "playbooks/examples/demo.yml";

fn summary(o: &std::process::Output) -> serde_json::Value {
    json(o)["summary"].clone()
}

fn main_pid(node: usize) -> String {
    ssh(node, "systemctl show -p MainPID --value hactl-demo").1
}

/// The whole cycle of the "done when" on fresh nodes, through `inventory`.
fn full_cycle(inventory: &Path) {
    let inv = inventory.to_str().unwrap();
    let before: Vec<String> = (1..=3).map(fingerprint).collect();
    let plan = run(&["plan", inv, "-p", DEMO]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "plan on fresh nodes reports pending changes"
    );
    let text = stdout(&plan);
    for expected in [
        "would create /etc/default/hactl-demo",
        "would install python3-venv",
        "+DEMO_PORT=8000",
        // The service starts later in the same run, with the new settings: no restart.
        "handler `restart demo` would not run",
        "(creates /var/lib/hactl-demo/initialized: absent)",
    ] {
        assert!(text.contains(expected), "plan lacks `{expected}`:\n{text}");
    }
    let after: Vec<String> = (1..=3).map(fingerprint).collect();
    assert_eq!(before, after, "plan changed files on the nodes");

    let first = run(&["provision", inv, "-p", DEMO, "--output", "json"]);
    assert_eq!(first.status.code(), Some(0), "first provision");
    let s = summary(&first);
    assert!(
        s["changed"].as_u64().unwrap() > 0 && s["failed"] == 0 && s["unreachable"] == 0,
        "{s}"
    );
    assert!(
        !stdout(&first).contains(&secret(inventory.parent().unwrap(), "demo_token")),
        "secret printed in JSON"
    );
    assert!(
        !stdout(&first).contains("handler `restart demo` ran"),
        "a first provision restarts nothing it has just started"
    );

    let second = run(&["provision", inv, "-p", DEMO, "--output", "json"]);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(summary(&second)["changed"], 0, "second provision changed something");

    // Without a terminal, a no-op re-run prints no line per step (only the per-stage summaries);
    // -v prints every step.
    let quiet = run(&["provision", inv, "-p", DEMO]);
    assert_eq!(quiet.status.code(), Some(0));
    let step_lines = |o: &std::process::Output| stderr(o).lines().filter(|l| l.starts_with("[node")).count();
    assert_eq!(step_lines(&quiet), 0, "{}", stderr(&quiet));
    let stage_lines = stdout(&quiet).lines().filter(|l| l.starts_with("demo node")).count();
    assert_eq!(
        stage_lines,
        3,
        "one summary line per host and stage:\n{}",
        stdout(&quiet)
    );
    let verbose = run(&["provision", inv, "-p", DEMO, "-v"]);
    assert_eq!(verbose.status.code(), Some(0));
    let steps = summary(&second)["ok"].as_u64().unwrap() as usize;
    assert_eq!(step_lines(&verbose), steps, "-v shows every step and gate");
    assert_eq!(run(&["check", inv, "-p", DEMO]).status.code(), Some(0));

    let pid = main_pid(2);
    assert_eq!(ssh(2, "echo 'DEMO_PORT=9999' >> /etc/default/hactl-demo").0, 0);
    assert_eq!(
        run(&["check", inv, "-p", DEMO]).status.code(),
        Some(2),
        "check finds the drift"
    );
    let repair = run(&["provision", inv, "-p", DEMO]);
    assert_eq!(repair.status.code(), Some(0));
    assert!(
        stdout(&repair).contains("handler `restart demo` ran"),
        "{}",
        stdout(&repair)
    );
    assert!(
        !ssh(2, "cat /etc/default/hactl-demo").1.contains("9999"),
        "file not restored"
    );
    assert_ne!(main_pid(2), pid, "service not restarted");
    assert_eq!(run(&["check", inv, "-p", DEMO]).status.code(), Some(0));
}

#[test]
fn provision_plan_check_as_root_then_with_become() {
    let _lab = lab_lock();
    let (_dir, inv) = fresh_lab_inventory();
    full_cycle(&inv);

    let (_dir, inv) = fresh_lab_inventory();
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        "    ansible_user: root\n",
        "    ansible_user: hactl\n    ansible_become: true\n",
    );
    std::fs::write(&inv, text).unwrap();
    full_cycle(&inv);
}

/// A machine still booting refuses non-root logins (/run/nologin): hactl keeps trying, as a
/// cloud user's freshly created machine needs.
#[test]
fn a_booting_node_is_planned_at_once_as_a_non_root_user() {
    let _lab = lab_lock();
    let (_dir, inv) = fresh_lab_inventory();
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        "    ansible_user: root\n",
        "    ansible_user: hactl\n    ansible_become: true\n",
    );
    std::fs::write(&inv, text).unwrap();
    let inv = inv.to_str().unwrap();
    assert!(run(&["lab", "stop", "node3"]).status.success());
    // `lab up` starts the machine again; the plan starts as soon as it runs, mid-boot.
    let mut up = hactl()
        .args(["lab", "up", "--nodes", "3"])
        .spawn()
        .expect("lab up runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !stdout(&run(&["lab", "status"])).contains("node3 10.213.0.13 running") {
        assert!(std::time::Instant::now() < deadline, "node3 did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let plan = run(&["plan", inv, "-p", DEMO, "--limit", "node3"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "the plan reaches the booting node: {}",
        stderr(&plan)
    );
    assert!(
        stdout(&plan).contains("would install python3-venv"),
        "{}",
        stdout(&plan)
    );
    assert!(up.wait().unwrap().success(), "lab up");
}

#[test]
fn bad_input_fails_clearly_and_changes_nothing() {
    let _lab = lab_lock();
    let (dir, inv) = fresh_lab_inventory();
    let inv_s = inv.to_str().unwrap();
    let before: Vec<String> = (1..=3).map(fingerprint).collect();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    let malformed = write("malformed.yml", "stages:\n  - name: x\n    hosts: all\n    steps: [\n");
    let o = run(&["provision", inv_s, "-p", &malformed]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("malformed.yml:"), "{}", stderr(&o));

    let unknown = write(
        "unknown.yml",
        "stages:\n  - name: x\n    hosts: all\n    steps:\n      - name: f\n        file: {path: /tmp/x, contnet: y}\n",
    );
    let o = run(&["provision", inv_s, "-p", &unknown]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown.yml:6") && stderr(&o).contains("contnet"),
        "{}",
        stderr(&o)
    );

    let undefined = write("undefined.yml", "stages:\n  - name: x\n    hosts: all\n    steps:\n      - name: f\n        file: {path: /etc/hactl-undefined, content: \"v={{ no_such_var }}\"}\n");
    let o = run(&["provision", inv_s, "-p", &undefined]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("undefined") && stderr(&o).contains("line 1") || stderr(&o).contains(":1"),
        "{}",
        stderr(&o)
    );

    let unreachable = write(
        "unreachable.yml",
        "all:\n  hosts:\n    ghost: {ansible_host: 127.0.0.1, ansible_port: 1}\n",
    );
    let started = std::time::Instant::now();
    let o = run(&["provision", &unreachable, "-p", DEMO, "--connect-timeout", "3"]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("UNREACHABLE"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("trying again for up to 3 s"),
        "says once what it waits for: {}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("(tried for"),
        "the error says how long it tried: {}",
        stderr(&o)
    );
    assert!((3.0..20.0).contains(&took), "gave up after {took:.1} s");
    assert!(stdout(&o).contains("unreachable=1"), "{}", stdout(&o));

    let empty_known = write("known_hosts", "");
    let text = std::fs::read_to_string(&inv)
        .unwrap()
        .replace(&format!("{LAB}/ssh/known_hosts"), &empty_known);
    let strange = write("strange.yml", &text);
    let o = run(&["plan", &strange, "-p", DEMO, "--limit", "node1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("host key verification failed"), "{}", stderr(&o));
    let o = run(&[
        "plan",
        &strange,
        "-p",
        DEMO,
        "--limit",
        "node1",
        "--host-key-policy",
        "accept-new",
    ]);
    assert_eq!(o.status.code(), Some(2), "accept-new connects");
    assert!(
        std::fs::read_to_string(&empty_known).unwrap().contains("ssh-ed25519"),
        "accept-new records the key"
    );

    let after: Vec<String> = (1..=3).map(fingerprint).collect();
    assert_eq!(before, after, "bad input changed files on the nodes");
}

#[test]
fn notified_restart_survives_a_failed_run() {
    let _lab = lab_lock();
    let (dir, inv) = fresh_lab_inventory();
    let inv_s = inv.to_str().unwrap();
    let playbook = |fail: bool| {
        let failing = if fail {
            "      - name: breaks\n        command: {cmd: \"exit 7\"}\n"
        } else {
            ""
        };
        let text = format!(
            "stages:\n  - name: s\n    hosts: node1\n    steps:\n      - name: conf\n        file: {{path: /etc/hactl-pending.conf, content: \"v=1\\n\"}}\n        notify: [mark]\n{failing}    handlers:\n      - name: mark\n        command: {{cmd: \"date +%s%N >> /root/handler-runs\"}}\n"
        );
        let p = dir.path().join(if fail { "fail.yml" } else { "ok.yml" });
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let o = run(&["provision", inv_s, "-p", &playbook(true)]);
    assert_eq!(o.status.code(), Some(1), "the run fails at the breaking step");
    assert_eq!(
        ssh(1, "test -e /root/handler-runs").0,
        1,
        "handler must not run in a failed run"
    );
    let pending = std::fs::read_to_string(dir.path().join(".hactl/pending-handlers.json")).unwrap();
    assert!(pending.contains("mark"), "{pending}");

    let o = run(&["plan", inv_s, "-p", &playbook(false)]);
    assert!(
        stdout(&o).contains("would run handler `mark`"),
        "plan shows the owed handler"
    );
    let o = run(&["provision", inv_s, "-p", &playbook(false)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        ssh(1, "wc -l < /root/handler-runs").1.trim(),
        "1",
        "owed handler ran once"
    );
    let o = run(&["provision", inv_s, "-p", &playbook(false), "--output", "json"]);
    assert_eq!(summary(&o)["changed"], 0);
    assert_eq!(ssh(1, "wc -l < /root/handler-runs").1.trim(), "1");
}
