//! The built-in playbook rendered for fixed inventories, secrets and PKI material, as one
//! deterministic text: every stage's hosts, every step's probe and apply scripts (a `file`'s
//! content included), every handler and every gate's command, for every host. The golden files
//! under `tests/golden/` hold it; a change of the playbook's layout must leave it identical
//! (what reaches a node is byte-for-byte what it was).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use minijinja::value::Value;
use serde_json::Value as Json;

use super::facts::FactSource;
use super::load::{load, render_json, Loaded};
use crate::modules::{self, BuildCx};
use crate::playbook::Step;
use crate::secrets::Missing;

/// The split shape: etcd, PostgreSQL and RabbitMQ on node1-3, the load balancers node1-2, the
/// masters node4-5, a worker node6, a web LB VIP.
pub(super) const SPLIT: &str = "all:
  vars:
    ansible_user: root
    web_lb_vip: 10.213.0.100
  hosts:
    node1: {ansible_host: 10.213.0.11}
    node2: {ansible_host: 10.213.0.12}
    node3: {ansible_host: 10.213.0.13}
    node4: {ansible_host: 10.213.0.14}
    node5: {ansible_host: 10.213.0.15}
    node6: {ansible_host: 10.213.0.16}
  children:
    etcd: {hosts: {node1: {}, node2: {}, node3: {}}}
    postgres: {hosts: {node1: {}, node2: {}, node3: {}}}
    rabbitmq: {hosts: {node1: {}, node2: {}, node3: {}}}
    airflow_masters: {hosts: {node4: {}, node5: {}}}
    airflow_workers: {hosts: {node6: {}}}
    loadbalancers: {hosts: {node1: {}, node2: {}}}
";

/// [`loaded_with`] every host on Debian 12.
pub(super) fn loaded(dir: &Path, inventory: &str) -> Loaded {
    loaded_with(dir, inventory, &BOOKWORM).unwrap()
}

/// Every host on Debian 12 (bookworm).
const BOOKWORM: (&str, &str) = ("12", "bookworm");
/// Every host on Debian 13 (trixie).
const TRIXIE: (&str, &str) = ("13", "trixie");

/// Writes `inventory` and a secrets file of fixed values beside it, loads the built-in playbook
/// with them (SSH port 22) and every host on `release` (number, codename), and puts fixed text in
/// place of the (generated) CA, certificates and keys.
fn loaded_with(dir: &Path, inventory: &str, release: &(&str, &str)) -> miette::Result<Loaded> {
    loaded_from(dir, inventory, &FactSource::every(release.0, release.1))
}

/// [`loaded_with`] with the facts of `source`.
fn loaded_from(dir: &Path, inventory: &str, source: &FactSource) -> miette::Result<Loaded> {
    let path: PathBuf = dir.join("inventory.yml");
    // A fixed SSH port: `hactl_ssh_port` must not depend on this machine's ~/.ssh/config.
    assert!(
        inventory.contains("\n  vars:\n"),
        "the inventory has group vars for all"
    );
    let inventory = inventory.replacen("\n  vars:\n", "\n  vars:\n    ansible_port: 22\n", 1);
    std::fs::write(&path, inventory).unwrap();
    let playbook = crate::playbook::Playbook::built_in().unwrap();
    let mut secrets = String::new();
    for name in playbook.secrets.keys() {
        // 32 bytes in URL-safe base64 (a valid Fernet key); the name keeps each one distinct.
        let value = if name == "airflow_fernet_key" {
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_string()
        } else {
            format!("fixed-{name}-%\"$x")
        };
        writeln!(secrets, "{name}: {}", serde_json::to_string(&value).unwrap()).unwrap();
    }
    std::fs::write(crate::workspace::Workspace::of(&path).secrets(), secrets).unwrap();
    let mut loaded = load(&path, None, Missing::Preview, source)?;
    // The PKI material is made afresh on every load: each value becomes a fixed text.
    let mut fixed: Vec<(String, String)> = Vec::new();
    for (host, ctx) in &loaded.contexts {
        let json: Json = serde_json::to_value(ctx).unwrap();
        // The CA, the host's certificate and key, and each role's (`tls_ROLE_cert`, `tls_ROLE_key`).
        let pem_keys = json.as_object().unwrap().iter().filter(|(k, v)| {
            k.starts_with("tls_")
                && (k.ends_with("_cert") || k.ends_with("_key"))
                && v.as_str().is_some_and(|s| s.starts_with("-----BEGIN"))
        });
        for (key, value) in pem_keys {
            let value = value.as_str().unwrap().to_string();
            let placeholder = if key == "tls_ca_cert" {
                "FIXED CA CERTIFICATE\n".to_string()
            } else {
                format!("FIXED {key} OF {host}\n")
            };
            fixed.push((value, placeholder));
        }
    }
    fn replace(v: Json, fixed: &[(String, String)]) -> Json {
        match v {
            Json::String(s) => Json::String(
                fixed
                    .iter()
                    .find(|(from, _)| *from == s)
                    .map(|(_, to)| to.clone())
                    .unwrap_or(s),
            ),
            Json::Array(a) => Json::Array(a.into_iter().map(|v| replace(v, fixed)).collect()),
            Json::Object(m) => Json::Object(m.into_iter().map(|(k, v)| (k, replace(v, fixed))).collect()),
            other => other,
        }
    }
    for ctx in loaded.contexts.values_mut() {
        let json = replace(serde_json::to_value(&*ctx).unwrap(), &fixed);
        *ctx = Value::from(minijinja::value::Serde(json));
    }
    Ok(loaded)
}

/// The dump of everything the built-in playbook renders for `inventory`, every host on `release`.
fn dump(inventory: &str, release: &(&str, &str)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let loaded = loaded_with(dir.path(), inventory, release).unwrap();
    let (pb, renderer) = (&loaded.playbook, &loaded.renderer);
    let mut out = String::new();
    // Checks and warnings sorted: their order (the stages') is not rendered on a node.
    let mut warnings = loaded.warnings.clone();
    warnings.sort();
    writeln!(out, "warnings: {warnings:?}").unwrap();
    writeln!(out, "required_groups: {:?}", pb.required_groups).unwrap();
    for (kind, conditions) in [("check", &pb.checks), ("warning", &pb.warnings)] {
        let mut lines: Vec<String> = conditions
            .iter()
            .map(|c| format!("{kind}: {:?} => {:?}", c.when, c.msg))
            .collect();
        lines.sort();
        writeln!(out, "{}", lines.join("\n")).unwrap();
    }
    let mut hosts: Vec<&String> = loaded.contexts.keys().collect();
    hosts.sort();
    for host in hosts {
        let ctx = &loaded.contexts[host.as_str()];
        let mut vars: Json = serde_json::to_value(ctx).unwrap();
        let vars = vars.as_object_mut().unwrap();
        vars.remove("hostvars");
        // Sorted: the order in which the playbook declares its variables is not rendered.
        let vars: std::collections::BTreeMap<&String, &Json> = vars.iter().collect();
        writeln!(out, "== host {host} vars: {}", serde_json::to_string(&vars).unwrap()).unwrap();
    }
    let step = |out: &mut String, kind: &str, step: &Step, ctx: &Value, is_first: bool| {
        writeln!(
            out,
            "  {kind} {:?} module {} when {:?} run_once {} notify {:?}",
            step.name, step.module, step.when, step.run_once, step.notify
        )
        .unwrap();
        if step.run_once && !is_first {
            return writeln!(out, "    (run once elsewhere)").unwrap();
        }
        let applies = step
            .when
            .as_ref()
            .is_none_or(|w| renderer.eval_bool("golden", w, ctx).unwrap());
        if !applies {
            return writeln!(out, "    (skipped)").unwrap();
        }
        let args = render_json(renderer, "golden", step.args.clone(), ctx).unwrap();
        let cx = BuildCx {
            origin: "golden",
            renderer,
            ctx,
            redactor: &loaded.redactor,
        };
        let module = modules::build(&step.module, args, &cx).unwrap();
        writeln!(
            out,
            "    converges {} refreshes {:?} idle {}\n    probe:\n{}\n    apply:\n{}",
            module.converges(),
            module.refreshes(),
            module.idle_when_in_sync(),
            module.probe(),
            module.apply()
        )
        .unwrap();
    };
    for stage in &pb.stages {
        let hosts = loaded.inventory.select(&stage.hosts).unwrap();
        writeln!(
            out,
            "== stage {} hosts {:?} = {hosts:?} serial {:?} rolling {} order {:?} part_of {:?}",
            stage.name, stage.hosts, stage.serial, stage.rolling, stage.rolling_order, stage.part_of
        )
        .unwrap();
        for (index, host) in hosts.iter().enumerate() {
            writeln!(out, "= stage {} host {host}", stage.name).unwrap();
            let ctx = &loaded.contexts[host.as_str()];
            for s in &stage.steps {
                step(&mut out, "step", s, ctx, index == 0);
            }
            for h in &stage.handlers {
                step(&mut out, "handler", h, ctx, true);
            }
            for gate in &stage.verify {
                writeln!(
                    out,
                    "  gate {:?} when {:?} run_once {} retries {} delay {} report {} after_change {} skew {:?}",
                    gate.name,
                    gate.when,
                    gate.run_once,
                    gate.retries,
                    gate.delay,
                    gate.report,
                    gate.after_change,
                    gate.max_clock_skew
                )
                .unwrap();
                let applies = gate
                    .when
                    .as_ref()
                    .is_none_or(|w| renderer.eval_bool("golden", w, ctx).unwrap());
                if applies {
                    writeln!(out, "{}", gate.render(renderer, "golden", ctx).unwrap()).unwrap();
                } else {
                    writeln!(out, "    (skipped)").unwrap();
                }
            }
        }
    }
    out
}

/// [`check_on`] Debian 12.
fn check(name: &str, inventory: &str) {
    check_on(name, inventory, &BOOKWORM);
}

/// Compares a dump's SHA-256 with its line in `tests/golden/render.sha256` (`HACTL_BLESS=1`
/// writes the line instead; `HACTL_GOLDEN_DUMP=DIR` writes the dump there too). A differing dump is written to the system's temporary directory
/// (`hactl-golden/NAME`) to compare with one from the commit before (`diff`).
fn check_on(name: &str, inventory: &str, release: &(&str, &str)) {
    use sha2::Digest;
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/render.sha256");
    let text = dump(inventory, release);
    assert_eq!(text, dump(inventory, release), "the dump is deterministic");
    if let Some(dir) = std::env::var_os("HACTL_GOLDEN_DUMP") {
        std::fs::write(Path::new(&dir).join(name), &text).unwrap();
    }
    let sum = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    let line = format!("{sum}  {name}");
    let lines = std::fs::read_to_string(&golden).unwrap_or_default();
    let keep = |l: &&str| !l.ends_with(&format!("  {name}"));
    if std::env::var_os("HACTL_BLESS").is_some() {
        let _lock = BLESS.lock().unwrap();
        let lines = std::fs::read_to_string(&golden).unwrap_or_default();
        let mut all: Vec<&str> = lines.lines().filter(keep).collect();
        all.push(&line);
        all.sort_by_key(|l| l.split_once("  ").map(|(_, n)| n.to_string()));
        std::fs::write(&golden, all.join("\n") + "\n").unwrap();
        return;
    }
    if !lines.lines().any(|l| l == line) {
        let out = std::env::temp_dir().join("hactl-golden");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(name), &text).unwrap();
        panic!(
            "what the built-in playbook renders for {name} is not what {} records (sha256 {sum}); the dump is in {}",
            golden.display(),
            out.join(name).display()
        );
    }
}

static BLESS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_lab_shape_renders_as_its_golden_file() {
    let lab = include_str!("../../inventories/lab/inventory.yml");
    check("render-lab.txt", lab);
}

#[test]
fn the_split_shape_renders_as_its_golden_file() {
    check("render-split.txt", SPLIT);
}

#[test]
fn the_split_shape_on_debian_13_renders_as_its_golden_file() {
    check_on("render-split-trixie.txt", SPLIT, &TRIXIE);
    let dir = tempfile::tempdir().unwrap();
    let loaded = loaded_with(dir.path(), SPLIT, &TRIXIE).unwrap();
    let ctx: Json = serde_json::to_value(&loaded.contexts["node1"]).unwrap();
    assert_eq!(ctx["pg_psql"], "/usr/lib/postgresql/17/bin/psql");
    assert_eq!(ctx["airflow_python"], "3.13");
}

#[test]
fn a_cluster_on_two_releases_is_refused_naming_its_hosts() {
    let release = |number: &str, codename: &str| {
        let FactSource::Every(vars) = FactSource::every(number, codename) else {
            unreachable!()
        };
        vars
    };
    let mut facts: std::collections::BTreeMap<String, crate::inventory::Vars> = (1..=6)
        .map(|i| (format!("node{i}"), release("12", "bookworm")))
        .collect();
    facts.insert("node2".into(), release("13", "trixie"));
    let dir = tempfile::tempdir().unwrap();
    let err = loaded_from(dir.path(), SPLIT, &FactSource::Given(facts))
        .err()
        .expect("refused")
        .to_string();
    for group in ["etcd", "postgres", "rabbitmq"] {
        assert!(
            err.contains(&format!(
                "the {group} hosts run different Debian releases (node1: Debian 12, node2: Debian 13, node3: Debian 12)"
            )),
            "{err}"
        );
    }
    // A worker on another release than the clusters' is no cluster's business.
    let mut facts: std::collections::BTreeMap<String, crate::inventory::Vars> = (1..=6)
        .map(|i| (format!("node{i}"), release("12", "bookworm")))
        .collect();
    facts.insert("node6".into(), release("13", "trixie"));
    assert!(loaded_from(dir.path(), SPLIT, &FactSource::Given(facts)).is_ok());
}

#[test]
fn a_host_upgraded_under_its_cluster_is_refused() {
    let facts = |node: &str, extra: &[(&str, &str)]| {
        let mut facts: std::collections::BTreeMap<String, crate::inventory::Vars> = (1..=6)
            .map(|i| {
                let FactSource::Every(vars) = FactSource::every("13", "trixie") else {
                    unreachable!()
                };
                (format!("node{i}"), vars)
            })
            .collect();
        for (key, value) in extra {
            facts
                .get_mut(node)
                .unwrap()
                .insert(key.to_string(), Json::String(value.to_string()));
        }
        FactSource::Given(facts)
    };
    let dir = tempfile::tempdir().unwrap();
    let refused = |source: &FactSource| {
        loaded_from(dir.path(), SPLIT, source)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // A node built with PostgreSQL 15 whose release now says 17: never a second major beside it.
    let err = refused(&facts("node1", &[("postgresql_majors_installed", " 15 ")]));
    assert!(
        err.contains("host node1 has PostgreSQL 15 installed, but PostgreSQL 17 is Debian 13's: refused"),
        "{err}"
    );
    // Its own release's major installed: nothing to refuse.
    let same = facts("node1", &[("postgresql_majors_installed", " 17 ")]);
    assert!(loaded_from(dir.path(), SPLIT, &same).is_ok());
    // A worker (no postgres host) with PostgreSQL's server installed by someone is no cluster's business.
    assert!(loaded_from(
        dir.path(),
        SPLIT,
        &facts("node6", &[("postgresql_majors_installed", " 15 ")])
    )
    .is_ok());
}

#[test]
fn the_split_shape_with_each_web_front_end_renders_as_its_golden_file() {
    for (name, frontend, extra) in [
        ("nginx", "nginx", "    web_lb_sticky: true\n"),
        ("nginx-relaxed", "nginx", "    hactl_security: relaxed\n"),
        ("apache", "apache", "    web_lb_tls: false\n    web_lb_sticky: true\n"),
    ] {
        let inventory = SPLIT.replace(
            "    web_lb_vip: 10.213.0.100\n",
            &format!("    web_lb_vip: 10.213.0.100\n    web_lb_frontend: {frontend}\n{extra}"),
        );
        check(&format!("render-split-{name}.txt"), &inventory);
    }
}
