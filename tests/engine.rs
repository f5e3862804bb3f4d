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
    ssh_ok(node, "systemctl show -p MainPID --value hactl-demo")
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
    let restored = ssh_ok(2, "cat /etc/default/hactl-demo");
    assert!(
        !restored.contains("9999"),
        "file not restored: {restored}\n{}",
        ssh_ok(
            2,
            "stat -c '%i %y %s' /etc/default/hactl-demo; ls -la /etc/default; findmnt -o TARGET,SOURCE,FSTYPE /"
        )
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

/// An install whose script is killed mid-way (a lost connection, a crash: no trap runs) leaves
/// hactl's policy-rc.d behind, which would keep every later package's service from starting; the
/// next run repairs it first, and the node's own policy-rc.d survives hactl's installs.
#[test]
fn an_interrupted_install_is_repaired_by_the_next_run() {
    let _lab = lab_lock();
    let (dir, inv) = fresh_lab_inventory();
    let inv = inv.to_str().unwrap();
    let playbook = |name: &str, package: &str, no_start: bool| {
        let p = dir.path().join(name);
        let text = format!(
            "stages:\n  - name: s\n    hosts: node1\n    steps:\n      - name: install\n        package: {{name: {package}, no_start: {no_start}}}\n"
        );
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let quiet = playbook("quiet.yml", "haproxy", true);
    let mut run_bg = hactl()
        .args(["provision", inv, "-p", &quiet])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while ssh(1, "grep -qs '^# hactl:' /usr/sbin/policy-rc.d").0 != 0 {
        assert!(std::time::Instant::now() < deadline, "the install never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The script's shells die at once; apt-get, orphaned, finishes on its own.
    ssh_ok(
        1,
        "pkill -9 -x -f 'sh -s'; for i in $(seq 300); do pgrep -x 'apt-get|dpkg' >/dev/null || break; sleep 1; done",
    );
    let _ = run_bg.wait();
    ssh_ok(1, "grep -q '^# hactl:' /usr/sbin/policy-rc.d");

    let with_service = playbook("service.yml", "lighttpd", false);
    let plan = run(&["plan", inv, "-p", &with_service]);
    assert_eq!(plan.status.code(), Some(2));
    assert!(
        stdout(&plan).contains("repair what an interrupted install left"),
        "{}",
        stdout(&plan)
    );
    let o = run(&["provision", inv, "-p", &with_service]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        ssh(1, "test -e /usr/sbin/policy-rc.d").0,
        1,
        "hactl's policy-rc.d is gone"
    );
    assert_eq!(
        ssh_ok(1, "systemctl is-active lighttpd").trim(),
        "active",
        "the new package's service started"
    );

    // The node's own policy-rc.d is kept across an install that suppresses starts.
    ssh_ok(1, "printf '#!/bin/sh\\n# the node\\x27s own\\nexit 0\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d");
    let again = playbook("again.yml", "socat", true);
    assert_eq!(run(&["provision", inv, "-p", &again]).status.code(), Some(0));
    assert!(
        ssh_ok(1, "cat /usr/sbin/policy-rc.d").contains("own"),
        "the node's policy-rc.d is back"
    );
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
    let err = stderr(&o);
    assert!(
        err.contains("undefined.yml") && err.contains("step `f`") && err.contains("undefined"),
        "the error names the playbook, the step and the cause: {err}"
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
    assert_eq!(o.status.code(), Some(2), "the owed handler is a pending change");
    assert!(
        stdout(&o).contains("would run handler `mark`"),
        "plan shows the owed handler"
    );
    let o = run(&["provision", inv_s, "-p", &playbook(false)]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        ssh_ok(1, "wc -l < /root/handler-runs").trim(),
        "1",
        "owed handler ran once"
    );
    let o = run(&["provision", inv_s, "-p", &playbook(false), "--output", "json"]);
    assert_eq!(summary(&o)["changed"], 0);
    assert_eq!(ssh_ok(1, "wc -l < /root/handler-runs").trim(), "1");

    // A later step's apply makes an earlier step's re-probe fail: the run fails, and the changes
    // it had applied are still reported.
    let reprobe = dir.path().join("reprobe.yml");
    std::fs::write(
        &reprobe,
        "stages:\n  - name: s\n    hosts: node1\n    steps:\n      - name: a file\n        file: {path: /tmp/hactl-reprobe, content: \"x\\n\"}\n      - name: turns it into a directory\n        command: {cmd: \"rm -f /tmp/hactl-reprobe && mkdir /tmp/hactl-reprobe\", creates: /tmp/hactl-reprobe/.}\n",
    )
    .unwrap();
    let o = run(&["provision", inv_s, "-p", reprobe.to_str().unwrap(), "--output", "json"]);
    assert_eq!(o.status.code(), Some(1), "the re-probe fails");
    let doc = json(&o);
    let results = doc["results"].as_array().unwrap();
    let status_of = |step: &str, status: &str| results.iter().any(|r| r["step"] == step && r["status"] == status);
    assert!(
        status_of("a file", "changed") && status_of("turns it into a directory", "changed"),
        "{doc}"
    );
    assert!(status_of("a file", "failed"), "{doc}");
}

/// Gates of a stage that changed nothing run while the next stages probe, yet a failing one still
/// stops the next change; probes sent ahead are not trusted once a change is applied.
#[test]
fn deferred_gates_stop_the_next_change_and_probes_follow_changes() {
    let _lab = lab_lock();
    let (dir, inv) = fresh_lab_inventory();
    let inv = inv.to_str().unwrap();
    let playbook = dir.path().join("gated.yml");
    std::fs::write(
        &playbook,
        "stages:\n  - name: first\n    hosts: node1\n    steps:\n      - name: marker\n        file: {path: /etc/hactl-first.conf, content: \"one\\n\"}\n    verify:\n      - name: the gate file exists\n        command: test -e /root/gate-ok\n  - name: second\n    hosts: node1\n    steps:\n      - name: only while the marker is absent\n        command: {cmd: \"echo ran >> /root/second-ran\", creates: /etc/hactl-first.conf}\n      - name: second file\n        file: {path: /etc/hactl-second.conf, content: \"x\\n\"}\n",
    )
    .unwrap();
    let playbook = playbook.to_str().unwrap();
    assert_eq!(
        ssh(
            1,
            "rm -f /etc/hactl-first.conf /etc/hactl-second.conf /root/second-ran; touch /root/gate-ok"
        )
        .0,
        0
    );

    // The marker is written in `first`: `second` probes again and sees it (the probe sent at the
    // start saw no marker and would have run the command).
    let o = run(&["provision", inv, "-p", playbook]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(ssh(1, "test -e /root/second-ran").0, 1, "a stale probe ran the command");
    assert_eq!(ssh(1, "test -e /etc/hactl-second.conf").0, 0);

    // `first` changes nothing and its gate fails: `second`'s repair is not applied.
    assert_eq!(ssh(1, "rm /root/gate-ok /etc/hactl-second.conf").0, 0);
    let o = run(&["provision", inv, "-p", playbook, "--output", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let doc = json(&o);
    let results = doc["results"].as_array().unwrap();
    let has = |step: &str, status: &str| results.iter().any(|r| r["step"] == step && r["status"] == status);
    assert!(has("verify: the gate file exists", "failed"), "{doc}");
    assert!(
        results.iter().any(|r| r["step"] == "second file"
            && r["status"] == "skipped"
            && r["summary"] == "not applied: an earlier stage's gates failed"),
        "{doc}"
    );
    assert_eq!(
        ssh(1, "test -e /etc/hactl-second.conf").0,
        1,
        "applied after a failed gate"
    );

    // The gate passes again: the repair is applied, then a re-run changes nothing.
    assert_eq!(ssh(1, "touch /root/gate-ok").0, 0);
    let o = run(&["provision", inv, "-p", playbook, "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(summary(&o)["changed"], 1);
    let o = run(&["provision", inv, "-p", playbook, "--output", "json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(summary(&o)["changed"], 0);
    assert_eq!(run(&["verify", inv, "-p", playbook]).status.code(), Some(0));
}

/// `plan --out` on a fresh inventory (no secrets file, no CA yet) is applied as it is by
/// `provision --plan`: the demo playbook's secrets and the built-in stack's certificates (stage
/// base) are the ones the plan was computed with.
#[test]
fn a_plan_saved_on_a_fresh_inventory_is_applied() {
    let _lab = lab_lock();
    let (dir, inv) = fresh_lab_inventory();
    let inv = inv.to_str().unwrap();
    let file = dir.path().join("plan.json");
    let file = file.to_str().unwrap();
    for playbook in [&["-p", DEMO][..], &["--stages", "base"][..]] {
        let plan = run(&[&["plan", inv, "--out", file][..], playbook].concat());
        assert_eq!(plan.status.code(), Some(2), "plan --out: {}", stderr(&plan));
        let apply = run(&[&["provision", inv, "--plan", file][..], playbook].concat());
        assert_eq!(apply.status.code(), Some(0), "provision --plan: {}", stderr(&apply));
    }
}
