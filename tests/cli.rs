//! Fast command-line tests that need no lab: the built-in stack from any directory, `hactl init`,
//! the example inventories, usage and input errors with their exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

/// An "installed" hactl: the built binary copied once into a bin/ directory of its own, run from
/// `cwd` (never the checkout), so nothing can come from the repository's files.
fn installed(cwd: &Path) -> Command {
    static BIN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, exe) = BIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("hactl");
        std::fs::copy(env!("CARGO_BIN_EXE_hactl"), &exe).unwrap();
        (dir, exe)
    });
    let mut cmd = Command::new(exe);
    cmd.current_dir(cwd);
    cmd
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    // A test thread forking while the copy was written can hold its descriptor a moment longer
    // ("text file busy"): that passes.
    let out = (0..50)
        .find_map(|_| match installed(cwd).args(args).output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                None
            }
            other => Some(other.unwrap()),
        })
        .expect("the installed binary runs");
    eprintln!(
        "$ hactl {}\n-> {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// An inventory of one host in every role group that can never be reached (port 9 on loopback
/// answers nothing).
fn unreachable_inventory(dir: &Path) -> PathBuf {
    let path = dir.join("inventory.yml");
    std::fs::write(&path, one_host_inventory("nowhere")).unwrap();
    path
}

fn one_host_inventory(host: &str) -> String {
    let mut text = format!("all:\n  hosts:\n    {host}: {{ansible_host: 127.0.0.1, ansible_port: 9}}\n  children:\n");
    for group in hactl::lab::ROLE_GROUPS {
        text.push_str(&format!("    {group}: {{hosts: {{{host}: {{}}}}}}\n"));
    }
    text
}

#[test]
fn a_weakened_default_is_a_warning_and_a_plan_writes_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yml");
    let weakened =
        one_host_inventory("nowhere").replacen("all:\n", "all:\n  vars: {web_lb_backend_verify_name: false}\n", 1);
    std::fs::write(&inv, weakened).unwrap();
    // An unknown stage: the run stops before connecting, after the warnings.
    let out = run(dir.path(), &["plan", inv.to_str().unwrap(), "--stages", "nope"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: web_lb_backend_verify_name is false: the web LB (haproxy) does not check"),
        "{err}"
    );
    assert!(
        !dir.path().join("inventory.pki").exists(),
        "a plan made the CA only in memory"
    );
    let quiet = run(
        dir.path(),
        &[
            "plan",
            unreachable_inventory(dir.path()).to_str().unwrap(),
            "--stages",
            "nope",
        ],
    );
    assert!(!text(&quiet.stderr).contains("warning:"), "{}", text(&quiet.stderr));
}

/// The warnings of a plan of the one-host inventory with `vars` (stopped at an unknown stage,
/// before connecting), one a line; and its exit code.
fn warnings_with(vars: &str) -> (Vec<String>, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yml");
    let inventory = one_host_inventory("nowhere").replacen("all:\n", &format!("all:\n  vars: {vars}\n"), 1);
    std::fs::write(&inv, inventory).unwrap();
    let out = run(dir.path(), &["plan", inv.to_str().unwrap(), "--stages", "nope"]);
    let warnings = text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(str::to_string)
        .collect();
    (warnings, out.status.code())
}

#[test]
fn security_relaxed_warns_for_each_protection_off_and_a_bad_mode_is_an_error() {
    let (relaxed, code) = warnings_with("{hactl_security: relaxed}");
    assert_eq!(code, Some(1), "the unknown stage");
    let said: Vec<&str> = relaxed
        .iter()
        .map(|w| w.split(':').nth(1).unwrap_or("").trim())
        .collect();
    assert_eq!(
        said,
        [
            "firewall is off",
            "etcd_tls is off",
            "pg_tls is off",
            "patroni_restapi_tls is off",
            "patroni_restapi_auth is off",
            "haproxy_stats_auth is off",
            "haproxy_stats_tls is off",
            "rabbitmq_tls is off",
            "rabbitmq_remove_guest is off",
            "airflow_api_tls is off",
            "web_lb_tls is off"
        ],
        "one warning per protection, in the playbook's order (its stages', each stage's own): {relaxed:?}"
    );
    let (one, _) = warnings_with("{firewall: false}");
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(
        one[0].starts_with("warning: firewall is off: every cluster port"),
        "{one:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yml");
    std::fs::write(
        &inv,
        one_host_inventory("nowhere").replacen("all:\n", "all:\n  vars: {hactl_security: lax}\n", 1),
    )
    .unwrap();
    let out = run(dir.path(), &["plan", inv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("hactl_security is `lax`: it must be strict or relaxed"),
        "{}",
        text(&out.stderr)
    );
    let named = one_host_inventory("nowhere").replace("ansible_host: 127.0.0.1", "ansible_host: localhost");
    std::fs::write(&inv, named).unwrap();
    let out = run(dir.path(), &["plan", inv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("`localhost` is not an IPv4 address"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_built_in_stack_works_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let inv = unreachable_inventory(dir.path());
    let out = run(dir.path(), &["plan", inv.to_str().unwrap(), "--stages", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(!err.contains("cannot read playbook"), "{err}");
    assert!(err.contains("unknown stage `nope`"), "{err}");
    for stage in ["base", "etcd", "postgres", "pg-lb", "rabbitmq", "mq-lb"] {
        assert!(
            err.contains(stage),
            "the built-in playbook's stage {stage} is listed: {err}"
        );
    }
}

#[test]
fn init_writes_the_stack_and_its_copy_is_used_with_p() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["init", "mystack"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let site = dir.path().join("mystack/playbooks/site.yml");
    assert!(site.is_file() && dir.path().join("mystack/templates/haproxy/haproxy.cfg.j2").is_file());
    assert!(dir
        .path()
        .join("mystack/inventories/production/group_vars/all.yml")
        .is_file());
    assert_eq!(
        run(dir.path(), &["init", "mystack"]).status.code(),
        Some(0),
        "a second init is a no-op"
    );

    // The copy is what -p runs: a stage renamed in its stage file (templates/mq-lb/stage.yml,
    // beside site.yml's templates) is what --stages now knows.
    let stage = dir.path().join("mystack/templates/mq-lb/stage.yml");
    let edited = std::fs::read_to_string(&stage)
        .unwrap()
        .replace("\nname: mq-lb\n", "\nname: amqp-lb\n");
    std::fs::write(&stage, edited).unwrap();
    let inv = unreachable_inventory(dir.path());
    let out = run(
        dir.path(),
        &[
            "plan",
            inv.to_str().unwrap(),
            "-p",
            site.to_str().unwrap(),
            "--stages",
            "nope",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("amqp-lb"), "{}", text(&out.stderr));

    let out = run(dir.path(), &["init", "mystack"]);
    assert_eq!(out.status.code(), Some(1), "init refuses to overwrite an edited file");
    assert!(text(&out.stderr).contains("templates/mq-lb/stage.yml"));
}

#[test]
fn example_inventories_load_with_the_stack() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories");
    for name in ["lab", "production"] {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&root.join(name), dir.path());
        let loaded = hactl::engine::load(
            &dir.path().join("inventory.yml"),
            None,
            hactl::secrets::Missing::Preview,
            &hactl::engine::FactSource::every("12", "bookworm"),
        )
        .unwrap_or_else(|e| panic!("inventories/{name}: {e:?}"));
        let groups = &loaded.inventory.groups;
        for group in hactl::lab::ROLE_GROUPS {
            assert!(!groups[group].is_empty(), "inventories/{name}: group {group} is empty");
        }
        assert!(
            !dir.path().join("inventory.secrets.yml").exists(),
            "loading for a plan writes no secrets"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root.join("production"), dir.path());
    let loaded = hactl::engine::load(
        &dir.path().join("inventory.yml"),
        None,
        hactl::secrets::Missing::Preview,
        &hactl::engine::FactSource::every("12", "bookworm"),
    )
    .unwrap();
    let hosts = &loaded.inventory.hosts;
    assert_eq!(loaded.inventory.groups["etcd"], ["db1", "db2", "db3"]);
    assert_eq!(
        loaded.inventory.groups["airflow_workers"],
        ["worker1", "worker2", "worker3"]
    );
    assert!(hosts["worker1"].conn.become_root, "group_vars/all.yml applies");
    assert_eq!(hosts["db1"].conn.port, Some(2222), "host_vars/db1.yml applies");
    assert_eq!(
        hosts["db1"].vars["pg_shared_buffers"], "2GB",
        "group_vars/postgres.yml applies"
    );
    assert!(!hosts["master1"].vars.contains_key("pg_shared_buffers"));
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[test]
fn usage_errors_exit_1_not_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["plan"][..], &["plan", "x.yml", "--no-such-flag"], &["frobnicate"]] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "hactl {args:?}");
        assert!(!text(&out.stderr).is_empty());
    }
    assert_eq!(run(dir.path(), &["--help"]).status.code(), Some(0));
    assert_eq!(run(dir.path(), &["--version"]).status.code(), Some(0));
}

/// A self-signed certificate for a key (PEM).
fn certificate_of(key: &rcgen::KeyPair) -> String {
    rcgen::CertificateParams::new(vec!["h1".to_string()])
        .unwrap()
        .self_signed(key)
        .unwrap()
        .pem()
}

#[test]
fn input_errors_are_one_clear_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let good = write("good.yml", &one_host_inventory("h1"));
    let with_vars = |vars: &str| one_host_inventory("h1").replacen("all:\n", &format!("all:\n  vars: {vars}\n"), 1);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["plan".into(), write("bad.yml", "all:\n  hosts: [\n")], "bad.yml:"),
        (
            vec!["plan".into(), write("unknown.yml", "all:\n  hostz:\n    h1: {}\n")],
            "hostz",
        ),
        (vec!["plan".into(), dir.path().join("missing.yml").display().to_string()], "cannot read inventory"),
        (vec!["plan".into(), good.clone(), "--limit".into(), "nosuchhost".into()], "nosuchhost"),
        (
            vec!["plan".into(), good.clone(), "-p".into(), write("pb.yml", "stages:\n  - name: s\n    hosts: all\n    steps:\n      - name: x\n        file: {path: /tmp/x, content: \"{{ undefined_var }}\"}\n")],
            "undefined",
        ),
        (
            vec![
                "provision".into(),
                write("noworkers.yml", &one_host_inventory("h1").replace("    airflow_workers: {hosts: {h1: {}}}\n", "")),
            ],
            "has no host in group `airflow_workers`",
        ),
        (
            vec![
                "provision".into(),
                write("nomasters.yml", &one_host_inventory("h1").replace("airflow_masters: {hosts: {h1: {}}}", "airflow_masters: {hosts: {}}")),
            ],
            "has no host in group `airflow_masters`",
        ),
        (
            vec!["plan".into(), write("ttl.yml", &with_vars("{guard_ttl: 3}"))],
            "guard_ttl is 3 s: a TTL below 5 s is refused",
        ),
        (
            vec!["provision".into(), write("noetcd.yml", &with_vars("{guard_endpoints: []}"))],
            "guard_endpoints is empty",
        ),
        (
            vec!["plan".into(), write("mode.yml", &with_vars("{airflow_scheduler_mode: one}"))],
            "airflow_scheduler_mode is `one`: all-active or single-active",
        ),
        (
            vec!["plan".into(), write("frontend.yml", &with_vars("{web_lb_frontend: caddy}"))],
            "web_lb_frontend is `caddy`: it must be haproxy, nginx or apache",
        ),
        (
            vec!["plan".into(), write("route.yml", &with_vars("{web_lb_route_name: 'R; Path=/x'}"))],
            "web_lb_route_name is `R; Path=/x`: a cookie name of letters, digits and underscores",
        ),
        (
            vec!["provision".into(), write("vip.yml", &with_vars("{web_lb_vip: 192.0.2.7}"))],
            "web_lb_vip 192.0.2.7 is outside the subnet of load balancer h1 (127.0.0.0/24)",
        ),
        (
            vec![
                "provision".into(),
                write(
                    "mismatch.yml",
                    &with_vars(&format!(
                        "{{tls_cert_file: {}, tls_key_file: {}}}",
                        write("a.crt", &certificate_of(&rcgen::KeyPair::generate().unwrap())),
                        write("b.key", &rcgen::KeyPair::generate().unwrap().serialize_pem())
                    )),
                ),
            ],
            "a.crt does not match its key",
        ),
        (
            vec!["plan".into(), good, "-p".into(), write("pb2.yml", "stages:\n  - name: s\n    hosts: all\n    steps:\n      - name: x\n        packag: {name: x}\n")],
            "unknown key `packag`",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(dir.path(), &args);
        assert_eq!(out.status.code(), Some(1), "hactl {args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "hactl {args:?}: `{expected}` not in:\n{err}");
    }
}

#[test]
fn every_provision_leaves_a_journal_record_even_when_interrupted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let inv = unreachable_inventory(dir.path());
    let inv = inv.to_str().unwrap();
    let out = run(dir.path(), &["log", inv]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no run recorded"), "{}", text(&out.stderr));

    // A run whose only host never answers: recorded as failed, the host unreachable.
    let out = run(dir.path(), &["provision", inv, "--connect-timeout", "0"]);
    assert_eq!(out.status.code(), Some(1));

    // Ctrl-C while it waits for the host: exit 1, and the record says it was interrupted.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(["provision", inv, "--stages", "base", "--connect-timeout", "60"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("interrupted"), "{}", text(&out.stderr));

    let journal = dir.path().join(".hactl/runs.jsonl");
    let mode = std::fs::metadata(&journal).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the journal is the user's alone");
    let out = run(dir.path(), &["log", inv]);
    assert_eq!(out.status.code(), Some(0));
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(
        lines[0].starts_with("#1 ") && lines[0].contains(" failed ") && lines[0].contains("unreachable=1"),
        "{listed}"
    );
    assert!(
        lines[1].starts_with("#2 ") && lines[1].contains(" interrupted ") && lines[1].contains("stages=base"),
        "{listed}"
    );
    assert!(lines[0].contains("playbook=built-in ("), "{listed}");
    let out = run(dir.path(), &["log", inv, "--last"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("interrupted (stopped by Ctrl-C): what follows is what it had applied by then"),
        "{}",
        text(&out.stdout)
    );
    let out = run(dir.path(), &["log", inv, "--output", "json"]);
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let endings: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ending"].as_str().unwrap())
        .collect();
    assert_eq!(endings, ["failed", "interrupted"]);
    let sha = records[0]["inventory_sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64, "{records}");
}

#[test]
fn a_saved_plan_that_is_not_one_was_edited_or_names_another_inventory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inv = unreachable_inventory(dir.path());
    let inv = inv.to_str().unwrap();
    let file = dir.path().join("plan.json");

    // plan --out cannot save a plan that failed (the host never answers).
    let out = run(
        dir.path(),
        &["plan", inv, "--out", "plan.json", "--connect-timeout", "0"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not saved"), "{}", text(&out.stderr));
    assert!(!file.exists());
    // It made and kept the secrets and the CA it planned with (a plain plan keeps none), so that
    // `provision --plan` finds the values the saved plan was computed with.
    let workspace = hactl::workspace::Workspace::of(Path::new(inv));
    assert!(
        workspace.secrets().is_file(),
        "plan --out keeps the secrets it planned with"
    );
    assert!(
        workspace.pki_dir().join("ca.key").is_file(),
        "plan --out keeps the CA it planned with"
    );

    // Not a plan: show and provision --plan refuse, exit 1, before connecting to anything.
    std::fs::write(&file, "all: {}\n").unwrap();
    for args in [vec!["show", "plan.json"], vec!["provision", inv, "--plan", "plan.json"]] {
        let out = run(dir.path(), &args);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains("is not a hactl plan"),
            "{}",
            text(&out.stderr)
        );
    }

    // A real plan (as `plan --out` writes it) for another inventory, then edited by hand.
    let inputs = hactl::inputs::Inputs {
        inventory: "/elsewhere/inventory.yml".into(),
        inventory_sha256: "a".repeat(64),
        playbook: "built-in".into(),
        playbook_sha256: "b".repeat(64),
        secrets_sha256: "c".repeat(64),
        stages: None,
        limit: None,
    };
    let step = hactl::saved_plan::PlannedStep {
        host: "nowhere".into(),
        stage: "base".into(),
        step: "hosts file".into(),
        status: hactl::outcome::Status::Changed,
        summary: Some("update /etc/hosts".into()),
        diff: None,
        handler: false,
    };
    // For other stages, and 25 hours old: each refused with one error, before connecting.
    let mut other_stages = inputs.clone();
    other_stages.inventory = inv.to_string();
    other_stages.stages = Some(vec!["airflow".into()]);
    hactl::saved_plan::SavedPlan::new(other_stages.clone(), vec![step.clone()], vec![])
        .save(&file)
        .unwrap();
    let out = run(dir.path(), &["provision", inv, "--plan", "plan.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is a plan for --stages airflow --limit (all), and this run selects --stages (all)"),
        "{}",
        text(&out.stderr)
    );
    let day_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(25);
    hactl::saved_plan::SavedPlan::made_at(other_stages, vec![step.clone()], vec![], day_ago)
        .save(&file)
        .unwrap();
    let out = run(
        dir.path(),
        &["provision", inv, "--plan", "plan.json", "--stages", "airflow"],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(
        said.contains("was made 25.0 h ago") && said.contains("more than --plan-max-age 24 h"),
        "{said}"
    );
    hactl::saved_plan::SavedPlan::new(inputs, vec![step], vec![])
        .save(&file)
        .unwrap();
    let out = run(dir.path(), &["show", "plan.json"]);
    assert_eq!(out.status.code(), Some(0));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("  ~ hosts file: update /etc/hosts") && shown.contains("plan: 1 changes on 1 hosts"),
        "{shown}"
    );
    let out = run(dir.path(), &["show", "plan.json", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["steps"][0]["status"], "changed", "{doc}");
    let out = run(dir.path(), &["provision", inv, "--plan", "plan.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is a plan for the inventory /elsewhere/inventory.yml"),
        "{}",
        text(&out.stderr)
    );
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("update /etc/hosts", "update /etc/shadow");
    std::fs::write(&file, edited).unwrap();
    let out = run(dir.path(), &["provision", inv, "--plan", "plan.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("was changed after hactl wrote it"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join(".hactl/runs.jsonl").exists(),
        "a refused plan is not a run"
    );
}

#[test]
fn rotate_names_a_secret_and_recover_never_overwrites_a_secrets_file() {
    let dir = tempfile::tempdir().unwrap();
    let inv = unreachable_inventory(dir.path());
    let inv = inv.to_str().unwrap();
    let out = run(
        dir.path(),
        &["provision", inv, "--rotate", "nope", "--connect-timeout", "0"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--rotate nope: not a secret of this playbook"), "{err}");
    assert!(!dir.path().join("inventory.secrets.yml").exists(), "{err}");
    let out = run(
        dir.path(),
        &["plan", inv, "--rotate", "airflow_fernet_key", "--stages", "nope"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(!dir.path().join("inventory.secrets.yml").exists());
    // The Erlang cookie cannot be rolled out by a run; a saved plan already holds its rotation.
    let out = run(
        dir.path(),
        &[
            "provision",
            inv,
            "--rotate",
            "rabbitmq_erlang_cookie",
            "--connect-timeout",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("--rotate rabbitmq_erlang_cookie: refused"), "{err}");
    assert!(err.contains("every") && err.contains("RabbitMQ node stopped"), "{err}");
    let out = run(
        dir.path(),
        &["provision", inv, "--plan", "p.json", "--rotate", "airflow_jwt_secret"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("apply it without --rotate"));
    assert!(!dir.path().join("inventory.secrets.yml").exists());

    std::fs::write(dir.path().join("inventory.secrets.yml"), "a_password: kept-v4lue\n").unwrap();
    let out = run(dir.path(), &["secrets", "recover", inv]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("never overwrites"), "{err}");
    assert!(!err.contains("kept-v4lue"), "{err}");
    let kept = std::fs::read_to_string(dir.path().join("inventory.secrets.yml")).unwrap();
    assert_eq!(kept, "a_password: kept-v4lue\n");
}

#[test]
fn a_sealed_secrets_file_is_written_and_opened_with_the_passphrase_only() {
    let dir = tempfile::tempdir().unwrap();
    let inv = unreachable_inventory(dir.path());
    let inv = inv.to_str().unwrap();
    let with_passphrase = |args: &[&str], passphrase: Option<&str>| {
        let mut cmd = installed(dir.path());
        cmd.env_remove("HACTL_AGE_IDENTITY")
            .env_remove("HACTL_SECRETS_PASSPHRASE");
        if let Some(p) = passphrase {
            cmd.env("HACTL_SECRETS_PASSPHRASE", p);
        }
        let out = cmd.args(args).output().unwrap();
        eprintln!(
            "$ hactl {}\n-> {:?}\n{}",
            args.join(" "),
            out.status.code(),
            text(&out.stderr)
        );
        out
    };
    // The only host never answers: the run fails, and the secrets it made are written, sealed.
    let out = with_passphrase(&["provision", inv, "--connect-timeout", "0"], Some("pass phrase"));
    assert_eq!(out.status.code(), Some(1));
    let sealed = dir.path().join("inventory.secrets.yml.age");
    let armored = std::fs::read_to_string(&sealed).unwrap();
    assert!(armored.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"), "{armored}");
    assert!(!dir.path().join("inventory.secrets.yml").exists());
    let out = with_passphrase(&["plan", inv, "--stages", "nope"], None);
    assert!(
        text(&out.stderr).contains("is sealed: set HACTL_AGE_IDENTITY"),
        "{}",
        text(&out.stderr)
    );
    let out = with_passphrase(&["plan", inv, "--stages", "nope"], Some("wrong"));
    assert!(text(&out.stderr).contains("cannot decrypt"), "{}", text(&out.stderr));
    let out = with_passphrase(&["plan", inv, "--stages", "nope"], Some("pass phrase"));
    assert!(
        text(&out.stderr).contains("no stage named") || text(&out.stderr).contains("nope"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("cannot decrypt"), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&sealed).unwrap(),
        armored,
        "nothing new to write"
    );
}

#[test]
fn init_s_gitignore_keeps_plaintext_secrets_and_every_private_key_out_of_git() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["init", "stack"]);
    assert_eq!(out.status.code(), Some(0));
    let ignored = std::fs::read_to_string(dir.path().join("stack/.gitignore")).unwrap();
    for kept_out in ["*.secrets.yml", "*.pki/", "*.key"] {
        assert!(ignored.lines().any(|l| l == kept_out), "{kept_out} in {ignored}");
    }
    assert!(
        !ignored.lines().any(|l| l.ends_with(".age")),
        "a sealed file is for git: {ignored}"
    );
}

#[test]
fn a_ca_rotation_needs_a_ca_is_noted_repeats_until_done_on_every_node_and_is_not_restarted_midway() {
    let dir = tempfile::tempdir().unwrap();
    let inv = unreachable_inventory(dir.path());
    let inv = inv.to_str().unwrap();
    let pki = dir.path().join("inventory.pki");
    let provision = |extra: &[&str]| {
        let mut args = vec!["provision", inv, "--connect-timeout", "0"];
        args.extend_from_slice(extra);
        run(dir.path(), &args)
    };
    let out = provision(&["--rotate", "ca"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no cluster CA"), "{}", text(&out.stderr));
    assert!(!pki.join("ca.crt").exists());
    provision(&[]);
    assert!(pki.join("ca.crt").exists(), "the first provision makes the CA");
    // The host is unreachable: step 1 is made and noted, never recorded done, so it repeats.
    for _ in 0..2 {
        let out = provision(&["--rotate", "ca"]);
        let err = text(&out.stderr);
        assert!(err.contains("note: CA rotation step 1 of 3"), "{err}");
        assert!(
            err.contains("step 1 of 3 is not done on every node (no host failed, 1 unreachable)"),
            "{err}"
        );
        assert!(pki.join("ca-next.crt").exists() && !pki.join("ca-rotation").exists());
    }
    std::fs::write(pki.join("ca-rotation"), "1\n").unwrap();
    let out = provision(&["--rotate", "ca"]);
    let err = text(&out.stderr);
    assert!(err.contains("a CA rotation is under way (step 1 of 3 done"), "{err}");
    let out = run(dir.path(), &["plan", inv, "--connect-timeout", "0"]);
    assert!(
        text(&out.stderr).contains("note: CA rotation step 2 of 3"),
        "{}",
        text(&out.stderr)
    );
}
