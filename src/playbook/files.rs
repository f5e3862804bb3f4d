//! The playbook as written: `site.yml`'s cluster-wide settings and its ordered list of stages,
//! each in a stage file under templates/ (`- base` is `templates/base/stage.yml`, `- etcd/x.yml`
//! is `templates/etcd/x.yml`) or written in place; a stage file declares what the stage needs
//! from the rest (its variables' defaults, secrets, groups, checks, warnings, firewall ports).
//! Loading merges them into one [`Playbook`] and expands blocks and includes, so that the engine
//! sees plain steps.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use miette::{miette, Result};
use serde::Deserialize;
use serde_json::Value as Json;

use super::{Condition, Gate, GateScript, Playbook, Stage, Step, StepItem};
use crate::inventory::{parse_yaml, Vars};
use crate::render::TemplateSource;
use crate::secrets::SecretSpec;

/// `site.yml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    vars: Vars,
    #[serde(default)]
    secrets: BTreeMap<String, SecretSpec>,
    #[serde(default)]
    required_groups: Vec<String>,
    #[serde(default)]
    release_groups: Vec<String>,
    #[serde(default)]
    pki: bool,
    #[serde(default)]
    checks: Vec<Condition>,
    #[serde(default)]
    warnings: Vec<Condition>,
    stages: Vec<Entry>,
}

/// An entry of `stages:`: a stage file's name, or a stage written in place.
#[derive(Debug)]
enum Entry {
    File(String),
    Inline(Box<StageFile>),
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a stage file (`base`, `etcd/tls-conversion.yml`) or a stage")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Entry, E> {
                Ok(Entry::File(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Entry, A::Error> {
                let file = StageFile::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Entry::Inline(Box::new(file)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A stage file: what its stages declare, and one stage (its fields at the top) or several
/// (`stages:`, a stage's parts).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    /// Defaults of the stage's variables (the inventory overrides them).
    #[serde(default)]
    vars: Vars,
    #[serde(default)]
    secrets: BTreeMap<String, SecretSpec>,
    #[serde(default)]
    required_groups: Vec<String>,
    #[serde(default)]
    release_groups: Vec<String>,
    #[serde(default)]
    checks: Vec<Condition>,
    #[serde(default)]
    warnings: Vec<Condition>,
    /// Ports (Jinja expressions: numbers, variables, a quoted range) the cluster's nodes reach.
    #[serde(default)]
    firewall_cluster_tcp_ports: Vec<Json>,
    /// Ports the database's clients (pg_extra_client_networks) reach too.
    #[serde(default)]
    firewall_db_client_tcp_ports: Vec<Json>,
    /// Several stages (a stage's parts)…
    #[serde(default)]
    stages: Vec<RawStage>,
    /// …or one, its fields at the top.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    hosts: Option<String>,
    #[serde(default)]
    serial: Option<usize>,
    #[serde(default)]
    steps: Vec<StepItem>,
    #[serde(default)]
    handlers: Vec<StepItem>,
    #[serde(default)]
    verify: Vec<RawGate>,
    #[serde(default)]
    rolling: bool,
    #[serde(default)]
    rolling_order: Option<String>,
    #[serde(default)]
    part_of: Option<String>,
}

/// A stage as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    hosts: String,
    #[serde(default)]
    serial: Option<usize>,
    #[serde(default)]
    steps: Vec<StepItem>,
    #[serde(default)]
    handlers: Vec<StepItem>,
    #[serde(default)]
    verify: Vec<RawGate>,
    #[serde(default)]
    rolling: bool,
    #[serde(default)]
    rolling_order: Option<String>,
    #[serde(default)]
    part_of: Option<String>,
}

/// A gate as written, or `include: FILE#LIST` (with `after_change` to set on each).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGate {
    #[serde(default)]
    include: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    script: Option<String>,
    #[serde(default)]
    env: IndexMap<String, String>,
    #[serde(default)]
    run_once: bool,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    delay: Option<f64>,
    #[serde(default)]
    report: bool,
    #[serde(default)]
    after_change: bool,
    #[serde(default)]
    max_clock_skew: Option<String>,
}

/// Reads a file under the templates.
fn read(templates: &TemplateSource, rel: &str) -> Result<(String, PathBuf)> {
    match templates {
        TemplateSource::BuiltIn => crate::stack::template(rel)
            .map(|t| (t.to_string(), PathBuf::from(format!("(built-in) templates/{rel}"))))
            .ok_or_else(|| miette!("no built-in file templates/{rel}")),
        TemplateSource::Dir(dir) => {
            let path = dir.join(rel);
            std::fs::read_to_string(&path)
                .map(|t| (t, path.clone()))
                .map_err(|e| miette!("cannot read {}: {e}", path.display()))
        }
    }
}

/// Loads a playbook: `text` is site.yml's.
pub(super) fn assemble(text: &str, path: &Path, templates: TemplateSource) -> Result<Playbook> {
    let raw: RawPlaybook = parse_yaml(text, path)?;
    let mut pb = Playbook {
        name: raw.name,
        vars: raw.vars,
        secrets: raw.secrets,
        required_groups: raw.required_groups,
        release_groups: raw.release_groups,
        pki: raw.pki,
        checks: raw.checks,
        warnings: raw.warnings,
        stages: Vec::new(),
        path: path.to_path_buf(),
        templates,
    };
    let site = path.display().to_string();
    let mut var_origin: HashMap<String, String> = pb.vars.keys().map(|k| (k.clone(), site.clone())).collect();
    let mut secret_origin: HashMap<String, String> = pb.secrets.keys().map(|k| (k.clone(), site.clone())).collect();
    let (mut cluster_ports, mut db_ports): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut includes = Includes::default();
    for entry in raw.stages {
        let (file, origin, file_path) = match entry {
            Entry::Inline(file) => (*file, site.clone(), path.to_path_buf()),
            Entry::File(name) => {
                let rel = if name.contains('/') || name.ends_with(".yml") {
                    name.clone()
                } else {
                    format!("{name}/stage.yml")
                };
                let (text, file_path) =
                    read(&pb.templates, &rel).map_err(|e| miette!("{site}: stage `{name}`: {e}"))?;
                let file: StageFile = parse_yaml(&text, &file_path)?;
                (file, file_path.display().to_string(), file_path)
            }
        };
        for (k, v) in file.vars {
            if let Some(first) = var_origin.get(&k) {
                return Err(miette!("variable `{k}` is defined twice: in {first} and in {origin}"));
            }
            var_origin.insert(k.clone(), origin.clone());
            pb.vars.insert(k, v);
        }
        for (k, v) in file.secrets {
            if let Some(first) = secret_origin.get(&k) {
                return Err(miette!("secret `{k}` is declared twice: in {first} and in {origin}"));
            }
            secret_origin.insert(k.clone(), origin.clone());
            pb.secrets.insert(k, v);
        }
        for g in file.required_groups {
            if !pb.required_groups.contains(&g) {
                pb.required_groups.push(g);
            }
        }
        for g in file.release_groups {
            if !pb.release_groups.contains(&g) {
                pb.release_groups.push(g);
            }
        }
        pb.checks.extend(file.checks);
        pb.warnings.extend(file.warnings);
        cluster_ports.extend(file.firewall_cluster_tcp_ports.iter().map(port));
        db_ports.extend(file.firewall_db_client_tcp_ports.iter().map(port));
        let one = file.name.is_some()
            || file.hosts.is_some()
            || !file.steps.is_empty()
            || !file.handlers.is_empty()
            || !file.verify.is_empty();
        let stages = match (one, file.stages.is_empty()) {
            (true, true) => {
                let (Some(name), Some(hosts)) = (file.name, file.hosts) else {
                    return Err(miette!("{origin}: a stage has a `name` and `hosts`"));
                };
                vec![RawStage {
                    name,
                    hosts,
                    serial: file.serial,
                    steps: file.steps,
                    handlers: file.handlers,
                    verify: file.verify,
                    rolling: file.rolling,
                    rolling_order: file.rolling_order,
                    part_of: file.part_of,
                }]
            }
            (false, false) => file.stages,
            (true, false) => {
                return Err(miette!(
                    "{origin}: a stage file holds one stage (`name`, `hosts`, …) or `stages:`, not both"
                ))
            }
            (false, true) => return Err(miette!("{origin}: no stage (`name`, `hosts`, …) and no `stages:`")),
        };
        for stage in stages {
            pb.stages.push(includes.stage(stage, &pb.templates, &file_path)?);
        }
    }
    for (var, ports) in [
        ("firewall_cluster_tcp_ports", cluster_ports),
        ("firewall_db_client_tcp_ports", db_ports),
    ] {
        if ports.is_empty() {
            continue;
        }
        if let Some(first) = var_origin.get(var) {
            return Err(miette!(
                "variable `{var}` is defined in {first} and made of the stages' `{var}` too: keep one"
            ));
        }
        pb.vars.insert(
            var.to_string(),
            Json::String(format!("{{{{ [{}] | unique | list }}}}", ports.join(", "))),
        );
    }
    Ok(pb)
}

/// A firewall port as a Jinja expression: a number, a variable, a quoted string.
fn port(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `a` and `b`: both must hold.
fn and(a: Option<&str>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (None, b) => b,
        (Some(a), None) => Some(a.to_string()),
        (Some(a), Some(b)) => Some(format!("({a}) and ({b})")),
    }
}

/// A block's host pattern as a `when`: group or host names separated by `,` or `:`, each
/// `!`-prefixed one excluded (globs and `&` belong to a stage's `hosts`).
fn hosts_when(pattern: &str, origin: &str) -> Result<String> {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for term in pattern.split([',', ':']).map(str::trim).filter(|t| !t.is_empty()) {
        let (out, name) = match term.strip_prefix('!') {
            Some(name) => (&mut without, name),
            None => (&mut with, term),
        };
        if name.is_empty() || name.contains(['*', '?', '[', '&', '\'', '"', ' ']) {
            return Err(miette!(
                "{origin}: a block's hosts `{pattern}`: group or host names, `!` to exclude one (globs and `&` belong to a stage's hosts)"
            ));
        }
        out.push(format!("(groups['{name}'] if '{name}' in groups else ['{name}'])"));
    }
    let mut parts = Vec::new();
    if !with.is_empty() {
        let any: Vec<String> = with.iter().map(|g| format!("inventory_hostname in {g}")).collect();
        parts.push(if any.len() > 1 {
            format!("({})", any.join(" or "))
        } else {
            any.join(" or ")
        });
    }
    parts.extend(without.iter().map(|g| format!("inventory_hostname not in {g}")));
    if parts.is_empty() {
        return Err(miette!("{origin}: a block's hosts `{pattern}` name no host"));
    }
    Ok(parts.join(" and "))
}

/// The shared files included, each read once.
#[derive(Default)]
struct Includes {
    steps: HashMap<String, BTreeMap<String, Vec<StepItem>>>,
    gates: HashMap<String, BTreeMap<String, Vec<RawGate>>>,
}

impl Includes {
    fn stage(&mut self, raw: RawStage, templates: &TemplateSource, file: &Path) -> Result<Stage> {
        let origin = &file.display().to_string();
        let mut steps = Vec::new();
        self.expand(raw.steps, None, templates, origin, &mut steps, 0)?;
        let mut handlers = Vec::new();
        self.expand(raw.handlers, None, templates, origin, &mut handlers, 0)?;
        let mut verify = Vec::new();
        self.gates(raw.verify, templates, origin, &mut verify, 0)?;
        Ok(Stage {
            name: raw.name,
            hosts: raw.hosts,
            serial: raw.serial,
            steps,
            handlers,
            verify,
            rolling: raw.rolling,
            rolling_order: raw.rolling_order,
            part_of: raw.part_of,
            file: file.to_path_buf(),
        })
    }

    fn expand(
        &mut self,
        items: Vec<StepItem>,
        when: Option<&str>,
        templates: &TemplateSource,
        origin: &str,
        out: &mut Vec<Step>,
        depth: usize,
    ) -> Result<()> {
        if depth > 8 {
            return Err(miette!(
                "{origin}: includes nest more than 8 deep (one includes itself?)"
            ));
        }
        for item in items {
            match item {
                StepItem::Step(mut step) => {
                    step.when = and(when, step.when.take());
                    out.push(step);
                }
                StepItem::Block {
                    when: own,
                    hosts,
                    items,
                } => {
                    let hosts = hosts.map(|p| hosts_when(&p, origin)).transpose()?;
                    let when = and(and(when, hosts).as_deref(), own);
                    self.expand(items, when.as_deref(), templates, origin, out, depth + 1)?;
                }
                StepItem::Include { include, when: own } => {
                    let (file, list) = split_include(&include, origin)?;
                    if !self.steps.contains_key(file) {
                        let (text, path) =
                            read(templates, file).map_err(|e| miette!("{origin}: include `{include}`: {e}"))?;
                        self.steps.insert(file.to_string(), parse_yaml(&text, &path)?);
                    }
                    let items = self.steps[file].get(list).cloned().ok_or_else(|| {
                        miette!("{origin}: include `{include}`: templates/{file} has no list `{list}`")
                    })?;
                    let when = and(when, own);
                    self.expand(
                        items,
                        when.as_deref(),
                        templates,
                        &format!("templates/{file}"),
                        out,
                        depth + 1,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn gates(
        &mut self,
        items: Vec<RawGate>,
        templates: &TemplateSource,
        origin: &str,
        out: &mut Vec<Gate>,
        depth: usize,
    ) -> Result<()> {
        if depth > 8 {
            return Err(miette!(
                "{origin}: includes nest more than 8 deep (one includes itself?)"
            ));
        }
        for raw in items {
            if let Some(include) = &raw.include {
                let (file, list) = split_include(include, origin)?;
                if !self.gates.contains_key(file) {
                    let (text, path) =
                        read(templates, file).map_err(|e| miette!("{origin}: include `{include}`: {e}"))?;
                    self.gates.insert(file.to_string(), parse_yaml(&text, &path)?);
                }
                let Some(list) = self.gates[file].get(list).cloned() else {
                    return Err(miette!(
                        "{origin}: include `{include}`: templates/{file} has no list `{list}`"
                    ));
                };
                let mut gates = Vec::new();
                self.gates(list, templates, origin, &mut gates, depth + 1)?;
                for mut gate in gates {
                    gate.after_change |= raw.after_change;
                    out.push(gate);
                }
                continue;
            }
            let Some(name) = raw.name else {
                return Err(miette!(
                    "{origin}: a gate has a `name` and a `command` or a `script` (or is an `include`)"
                ));
            };
            let (command, script) = match (raw.command, raw.script) {
                (Some(command), None) if raw.env.is_empty() => (command, None),
                (Some(_), None) => {
                    return Err(miette!(
                        "{origin}: gate `{name}`: `env` goes with a `script`, not a `command`"
                    ))
                }
                (None, Some(path)) => {
                    let (text, _) =
                        read(templates, &path).map_err(|e| miette!("{origin}: gate `{name}`: script `{path}`: {e}"))?;
                    (String::new(), Some(GateScript { path, text }))
                }
                _ => {
                    return Err(miette!(
                        "{origin}: gate `{name}` has either a `command` (one line) or a `script` (a file under templates/), not both nor neither"
                    ))
                }
            };
            if let Some(bad) = raw.env.keys().find(|k| {
                !k.starts_with("HACTL_")
                    || k.len() == "HACTL_".len()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            }) {
                return Err(miette!(
                    "{origin}: gate `{name}`: env `{bad}` is not a HACTL_* name (upper-case letters, digits and _)"
                ));
            }
            out.push(Gate {
                name,
                command,
                script,
                env: raw.env,
                run_once: raw.run_once,
                when: raw.when,
                retries: raw.retries.unwrap_or(1),
                delay: raw.delay.unwrap_or(1.0),
                report: raw.report,
                after_change: raw.after_change,
                max_clock_skew: raw.max_clock_skew,
            });
        }
        Ok(())
    }
}

/// `FILE#LIST` split.
fn split_include<'a>(include: &'a str, origin: &str) -> Result<(&'a str, &'a str)> {
    include
        .split_once('#')
        .filter(|(f, l)| !f.is_empty() && !l.is_empty())
        .ok_or_else(|| {
            miette!("{origin}: include `{include}` is not FILE#LIST (a file under templates/ and a list in it)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const SHARED: &str = "common:\n  - name: shared dir\n    directory: {path: /etc/x}\n";
    const GATES: &str = "up:\n  - name: up\n    command: 'true'\n    retries: 3\n";

    #[test]
    fn stage_files_declare_their_needs_and_expand_blocks_and_includes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "playbooks/site.yml",
            "vars: {cluster: 1}\nstages:\n  - a\n  - b/parts.yml\n",
        );
        write(
            d,
            "templates/a/stage.yml",
            "vars: {a_port: 10}\nsecrets: {a_password: {length: 8}}\nrequired_groups: [a]\nfirewall_cluster_tcp_ports: [22, a_port]\nwarnings:\n  - {when: 'not a_port', msg: off}\nname: a\nhosts: a\nsteps:\n  - include: shared/steps.yml#common\n    when: x\n  - block:\n      - name: one\n        when: y\n        directory: {path: /one}\n      - name: two\n        directory: {path: /two}\n    when: z\n  - block:\n      - name: three\n        directory: {path: /three}\n    hosts: web:db:!node1\nverify:\n  - include: shared/gates.yml#up\n    after_change: true\n",
        );
        write(
            d,
            "templates/b/parts.yml",
            "firewall_cluster_tcp_ports: [\"'1-2'\"]\nrequired_groups: [a, b]\nstages:\n  - name: b\n    hosts: b\n  - name: b-end\n    hosts: b\n    part_of: b\n",
        );
        write(d, "templates/shared/steps.yml", SHARED);
        write(d, "templates/shared/gates.yml", GATES);
        let pb = Playbook::load(&d.join("playbooks/site.yml")).unwrap();
        let names: Vec<&str> = pb.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "b-end"]);
        let a = &pb.stages[0];
        let whens: Vec<(&str, Option<&str>)> = a.steps.iter().map(|s| (s.name.as_str(), s.when.as_deref())).collect();
        assert_eq!(
            whens,
            [
                ("shared dir", Some("x")),
                ("one", Some("(z) and (y)")),
                ("two", Some("z")),
                (
                    "three",
                    Some("(inventory_hostname in (groups['web'] if 'web' in groups else ['web']) or inventory_hostname in (groups['db'] if 'db' in groups else ['db'])) and inventory_hostname not in (groups['node1'] if 'node1' in groups else ['node1'])")
                )
            ]
        );
        let renderer = crate::render::Renderer::new(&TemplateSource::BuiltIn);
        let on = |host: &str| {
            let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
                "inventory_hostname": host,
                "groups": {"web": ["node1", "node2"], "db": ["node3"]},
            })));
            renderer
                .eval_bool("test", a.steps[3].when.as_deref().unwrap(), &ctx)
                .unwrap()
        };
        assert_eq!(
            (on("node1"), on("node2"), on("node3"), on("node4")),
            (false, true, true, false)
        );
        assert!(a.verify[0].after_change && a.verify[0].retries == 3);
        assert_eq!(pb.required_groups, ["a", "b"]);
        assert!(pb.secrets.contains_key("a_password") && pb.vars["a_port"] == 10);
        assert_eq!(
            pb.vars["firewall_cluster_tcp_ports"],
            "{{ [22, a_port, '1-2'] | unique | list }}"
        );
        assert_eq!(pb.warnings.len(), 1);

        write(d, "templates/b/parts.yml", "vars: {a_port: 1}\nname: b\nhosts: b\n");
        let err = Playbook::load(&d.join("playbooks/site.yml")).unwrap_err().to_string();
        assert!(
            err.contains("a_port") && err.contains("a/stage.yml") && err.contains("b/parts.yml"),
            "{err}"
        );
        write(
            d,
            "templates/b/parts.yml",
            "name: b\nhosts: b\nsteps:\n  - name: x\n    bogus: 1\n",
        );
        let err = format!("{:?}", Playbook::load(&d.join("playbooks/site.yml")).unwrap_err());
        assert!(err.contains("b/parts.yml:4:"), "{err}");
        write(
            d,
            "templates/b/parts.yml",
            "name: b\nhosts: b\nsteps:\n  - name: x\n    directory: {path: /x}\n    notify: [nope]\n",
        );
        let err = Playbook::load(&d.join("playbooks/site.yml")).unwrap_err().to_string();
        assert!(err.contains("b/parts.yml: stage `b` step `x` notifies `nope`"), "{err}");
    }
}

#[cfg(test)]
mod gate_script_tests {
    use super::*;

    fn site(dir: &Path, verify: &str) -> Result<Playbook> {
        let w = |rel: &str, text: &str| {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        w("playbooks/site.yml", "stages:\n  - a\n");
        w(
            "templates/a/gates/check.sh",
            "# shellcheck shell=sh\n[ \"$HACTL_WORD\" = 'it'\"'\"'s {{ x }}; $(false)' ] || { echo \"got $HACTL_WORD\"; exit 1; }\necho \"ok $HACTL_N\"\n",
        );
        w(
            "templates/a/stage.yml",
            &format!("name: a\nhosts: a\nverify:\n{verify}"),
        );
        Playbook::load(&dir.join("playbooks/site.yml"))
    }

    #[test]
    fn a_script_gate_gets_its_env_as_exported_words_and_runs_its_file_unrendered() {
        let dir = tempfile::tempdir().unwrap();
        let pb = site(
            dir.path(),
            "  - name: check\n    script: a/gates/check.sh\n    env:\n      HACTL_WORD: \"{{ word }}\"\n      HACTL_N: \"{{ 1 + 2 }}\"\n",
        )
        .unwrap();
        let gate = &pb.stages[0].verify[0];
        assert_eq!(gate.script.as_ref().unwrap().path, "a/gates/check.sh");
        let renderer = crate::render::Renderer::new(&TemplateSource::BuiltIn);
        let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({
            "word": "it's {{ x }}; $(false)",
        })));
        let cmd = gate.render(&renderer, "test", &ctx).unwrap();
        assert!(cmd.starts_with("HACTL_WORD="), "{cmd}");
        assert!(cmd.contains("export HACTL_N\n# shellcheck shell=sh\n"), "{cmd}");
        let out = crate::modules::run_local(&cmd);
        assert_eq!((out.rc, out.stdout.trim()), (0, "ok 3"), "{out:?}");
    }

    #[test]
    fn a_gate_has_a_command_or_a_script_and_env_names_are_hactl() {
        let dir = tempfile::tempdir().unwrap();
        for (verify, wanted) in [
            (
                "  - name: g\n    command: 'true'\n    script: a/gates/check.sh\n",
                "not both",
            ),
            ("  - name: g\n    retries: 2\n", "not both nor neither"),
            (
                "  - name: g\n    command: 'true'\n    env: {HACTL_X: y}\n",
                "goes with a `script`",
            ),
            (
                "  - name: g\n    script: a/gates/check.sh\n    env: {PATH: y}\n",
                "not a HACTL_* name",
            ),
            ("  - name: g\n    script: a/gates/none.sh\n", "a/gates/none.sh"),
        ] {
            let err = site(dir.path(), verify).unwrap_err().to_string();
            assert!(err.contains(wanted) && err.contains("a/stage.yml"), "{verify}: {err}");
        }
    }
}
