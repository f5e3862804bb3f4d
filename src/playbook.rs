//! Playbooks: ordered stages, each targeting host groups with steps (a module and its arguments,
//! `when`, `notify`, `run_once`), handlers, `serial` batches and `verify` gates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use miette::{miette, Result};
use serde::Deserialize;

use crate::inventory::Vars;
use crate::modules;
use crate::render::TemplateSource;
use crate::secrets::SecretSpec;

mod files;

/// A playbook: its cluster-wide settings merged with what each stage declares (see
/// [`Playbook::load`] and `docs/architecture.md`).
#[derive(Debug, Clone)]
pub struct Playbook {
    /// A title.
    pub name: Option<String>,
    /// Defaults for variables (the inventory overrides them).
    pub vars: Vars,
    /// Secrets the playbook needs, generated when the inventory does not give them.
    pub secrets: BTreeMap<String, SecretSpec>,
    /// Inventory groups that must each have at least one host (the stack's role groups):
    /// checked before anything renders, so a missing one is one clear error.
    pub required_groups: Vec<String>,
    /// Groups whose hosts form one cluster on one Debian release (etcd, postgres, rabbitmq):
    /// every run reads the facts of all their hosts, selected or not, so that the playbook's
    /// `checks` judge a cluster on every member's release.
    pub release_groups: Vec<String>,
    /// The playbook uses the cluster CA: hactl makes it and a certificate per host (for the
    /// host's name, its address and its variable `tls_extra_names`), and gives each host the
    /// variables `tls_ca_cert`, `tls_cert` and `tls_key` (see [`crate::pki`]).
    pub pki: bool,
    /// Conditions on each host's variables, checked before anything connects: a bad setting
    /// is one clear error before anything changes.
    pub checks: Vec<Condition>,
    /// Settings that weaken the stack (an opt-out of a default protection): `plan` and
    /// `provision` print each one that holds as a warning.
    pub warnings: Vec<Condition>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// The file it was loaded from (for the built-in playbook, its path in a checkout).
    pub path: PathBuf,
    /// Where its templates come from.
    pub templates: TemplateSource,
}

/// A condition on a host's variables and what to say when it holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// An expression (as in `when`) evaluated in each host's context.
    pub when: String,
    /// The message (a template) printed when it holds.
    pub msg: String,
}

/// A stage: steps applied to a set of hosts, then verified.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Name, used by `--stages`.
    pub name: String,
    /// Host pattern (groups, names, `!`exclusions).
    pub hosts: String,
    /// Hosts per batch; batches run one after another, each verified before the next.
    pub serial: Option<usize>,
    /// The steps.
    pub steps: Vec<Step>,
    /// Steps run once at the end of the stage on a host when a step notified them.
    pub handlers: Vec<Step>,
    /// Gates: commands that must succeed after the stage (and alone, with `hactl verify`).
    pub verify: Vec<Gate>,
    /// Run handlers one host at a time, with the gates between hosts (rolling restarts that keep
    /// a cluster's quorum and a writable primary).
    pub rolling: bool,
    /// A read-only command run on each host whose output orders the rolling handlers (ascending,
    /// then inventory order), e.g. printing 1 on a cluster's leader and 0 elsewhere.
    pub rolling_order: Option<String>,
    /// The stage this one is a part of: `--stages NAME` selects it too (a stage split in parts
    /// keeps its one name), and it runs where it stands in the playbook: after its stage, or
    /// before it (what must be ready before the stage changes something another stage uses).
    pub part_of: Option<String>,
    /// The file it is written in (its stage file, or the playbook), for messages.
    pub file: PathBuf,
}

/// A step: one module with its arguments (still holding templates), plus `when`, `notify` and
/// `run_once`. Any key that is not one of those four names the module (see `modules::NAMES`).
#[derive(Debug, Clone)]
pub struct Step {
    /// What it does, shown in output.
    pub name: String,
    /// A minijinja expression; the step is skipped on hosts where it is false.
    pub when: Option<String>,
    /// Handlers to run when this step changes something.
    pub notify: Vec<String>,
    /// Only on the first host of the stage.
    pub run_once: bool,
    /// The module's key (`package`, `file`, …).
    pub module: String,
    /// Its arguments, checked against the module's argument type, templates not yet rendered.
    pub args: serde_json::Value,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match d.deserialize_map(StepVisitor)? {
            StepItem::Step(step) => Ok(step),
            _ => Err(serde::de::Error::custom("a step here, not a block or an include")),
        }
    }
}

/// An item of a stage's `steps` or `handlers` as written: a step, a block of items sharing a
/// `when` and/or `hosts` (group or host names, `!` exclusions; AND-ed with each one's own `when`), or the items of a shared file (`include: FILE#LIST`,
/// FILE under templates/, optionally with a `when` too). Loading expands blocks and includes.
#[derive(Debug, Clone)]
pub(crate) enum StepItem {
    Step(Step),
    Block {
        when: Option<String>,
        hosts: Option<String>,
        items: Vec<StepItem>,
    },
    Include {
        include: String,
        when: Option<String>,
    },
}

impl<'de> Deserialize<'de> for StepItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> serde::de::Visitor<'de> for StepVisitor {
    type Value = StepItem;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(
            "a step (`name`, one module and optionally `when`, `notify`, `run_once`), a `block` or an `include`",
        )
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<StepItem, A::Error> {
        use serde::de::Error;
        let (mut name, mut when, mut notify, mut run_once) = (None, None, Vec::new(), false);
        let (mut block, mut include): (Option<Vec<StepItem>>, Option<String>) = (None, None);
        let mut block_hosts: Option<String> = None;
        let mut module: Option<(String, serde_json::Value)> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "name" => name = Some(map.next_value()?),
                "when" => when = Some(map.next_value()?),
                "notify" => notify = map.next_value()?,
                "run_once" => run_once = map.next_value()?,
                "block" => block = Some(map.next_value()?),
                "include" => include = Some(map.next_value()?),
                // A block's host pattern (a string), or the `hosts` module's arguments (a map).
                "hosts" => match map.next_value::<HostsKey>()? {
                    HostsKey::Pattern(p) => block_hosts = Some(p),
                    HostsKey::Module(args) => {
                        if let Some((first, _)) = &module {
                            return Err(A::Error::custom(format!(
                                "a step names one module; this one names `{first}` and `hosts`"
                            )));
                        }
                        module = Some(("hosts".to_string(), args));
                    }
                },
                other => {
                    let args = modules::parse_args(other, &mut map).ok_or_else(|| {
                        A::Error::custom(format!(
                            "unknown key `{other}`: a step has `name`, `when`, `notify`, `run_once` and one module ({}); a block `block` and `when`; an include `include` and `when`",
                            modules::NAMES.join(", ")
                        ))
                    })??;
                    if let Some((first, _)) = &module {
                        return Err(A::Error::custom(format!(
                            "a step names one module; this one names `{first}` and `{other}`"
                        )));
                    }
                    module = Some((other.to_string(), args));
                }
            }
        }
        if block.is_some() || include.is_some() {
            if block.is_some() && include.is_some() || module.is_some() || !notify.is_empty() || run_once {
                return Err(A::Error::custom(
                    "a `block` has its steps and a `when` (and a `name` as a title); an `include` its `FILE#LIST` and a `when`",
                ));
            }
            if block_hosts.is_some() && block.is_none() {
                return Err(A::Error::custom("`hosts: PATTERN` belongs to a `block`"));
            }
            return Ok(match (block, include) {
                (Some(items), _) => StepItem::Block {
                    when,
                    hosts: block_hosts,
                    items,
                },
                (_, Some(include)) => StepItem::Include { include, when },
                _ => unreachable!(),
            });
        }
        if block_hosts.is_some() {
            return Err(A::Error::custom(
                "`hosts: PATTERN` belongs to a `block`; the `hosts` module takes `entries`",
            ));
        }
        let name: String = name.ok_or_else(|| A::Error::missing_field("name"))?;
        let (module, args) = module.ok_or_else(|| {
            A::Error::custom(format!("step `{name}` names no module ({})", modules::NAMES.join(", ")))
        })?;
        Ok(StepItem::Step(Step {
            name,
            when,
            notify,
            run_once,
            module,
            args,
        }))
    }
}

/// The value of a step's `hosts` key: a block's host pattern, or the `hosts` module's arguments.
enum HostsKey {
    Pattern(String),
    Module(serde_json::Value),
}

impl<'de> Deserialize<'de> for HostsKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HostsKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a host pattern (a block's) or the `hosts` module's arguments")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<HostsKey, E> {
                Ok(HostsKey::Pattern(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<HostsKey, A::Error> {
                let args = modules::hosts::Hosts::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                serde_json::to_value(args)
                    .map(HostsKey::Module)
                    .map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A verification gate: a read-only command that must exit 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// What it checks.
    pub name: String,
    /// Shell command (templated), one line; empty for a gate with a `script`.
    pub command: String,
    /// Or a script beside its stage (`STAGE/gates/NAME.sh` under templates/, not templated: plain
    /// POSIX sh), read at load time; its inputs arrive as the `env` variables.
    #[serde(skip)]
    pub script: Option<GateScript>,
    /// A script gate's inputs: `HACTL_*` names and their values (templated, per host), exported
    /// before the script runs, so that values never become script text.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Run on the stage's first host only.
    #[serde(default)]
    pub run_once: bool,
    /// A minijinja expression: the gate runs only on hosts where it is true.
    #[serde(default)]
    pub when: Option<String>,
    /// Attempts before failing.
    #[serde(default = "one")]
    pub retries: u32,
    /// Seconds between attempts.
    #[serde(default = "one_second")]
    pub delay: f64,
    /// Show the last line the command printed when it passes (a figure, such as a run's time).
    #[serde(default)]
    pub report: bool,
    /// Within a provision, run only when the run has changed something (in this stage or an
    /// earlier one); `verify` always runs it. For end-to-end checks too slow for every no-op
    /// re-run (a smoke DAG run).
    #[serde(default)]
    pub after_change: bool,
    /// A clock check, with the most seconds of skew allowed (templated): the command prints the
    /// node's time (seconds since the epoch) first, and the gate passes when that time lies within
    /// this of the controller's clock between sending the gate and receiving its answer (so the
    /// gate's transit on a busy machine is not taken for skew).
    #[serde(default)]
    pub max_clock_skew: Option<String>,
}

/// A gate's script: its path under templates/ and its text.
#[derive(Debug, Clone)]
pub struct GateScript {
    /// Its path under templates/ (`STAGE/gates/NAME.sh`).
    pub path: String,
    /// Its text, run as it is.
    pub text: String,
}

impl Gate {
    /// The gate's command for one host: its `command` rendered, or its `env` values rendered and
    /// exported (each one shell word) ahead of its script's text.
    pub fn render(&self, renderer: &crate::render::Renderer, origin: &str, ctx: &minijinja::Value) -> Result<String> {
        let Some(script) = &self.script else {
            return renderer.render_str(origin, &self.command, ctx);
        };
        let mut values = Vec::new();
        for (name, template) in &self.env {
            let value = renderer.render_str(&format!("{origin} env `{name}`"), template, ctx)?;
            values.push((name.as_str(), value));
        }
        let vars: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
        Ok(crate::modules::script(&script.text, &vars, ""))
    }
}

fn one() -> u32 {
    1
}
fn one_second() -> f64 {
    1.0
}

impl Playbook {
    /// Loads and checks a playbook: YAML errors carry file:line:col; every step names one module
    /// (checked while parsing), every notify names a handler, stage names are unique.
    /// Its templates are the nearest `templates/` at or above the playbook's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| miette!("cannot read playbook {}: {e}", path.display()))?;
        Self::parse(&text, path, TemplateSource::Dir(template_dir(path)))
    }

    /// The whole HA stack, built into hactl (`playbooks/site.yml` and its templates).
    pub fn built_in() -> Result<Self> {
        let path = PathBuf::from(format!("(built-in) {}", crate::stack::SITE));
        Self::parse(crate::stack::site_playbook(), &path, TemplateSource::BuiltIn)
    }

    fn parse(text: &str, path: &Path, templates: TemplateSource) -> Result<Self> {
        let playbook = files::assemble(text, path, templates)?;
        let mut seen = std::collections::BTreeSet::new();
        for stage in &playbook.stages {
            if !seen.insert(stage.name.as_str()) {
                return Err(miette!(
                    "{}: stage `{}` is defined twice",
                    stage.file.display(),
                    stage.name
                ));
            }
        }
        for stage in &playbook.stages {
            if let Some(whole) = &stage.part_of {
                let is_stage = playbook.stages.iter().any(|s| &s.name == whole && s.part_of.is_none());
                if !is_stage || whole == &stage.name {
                    return Err(miette!(
                        "{}: stage `{}` is part_of `{whole}`, which is not another stage of the playbook (a part belongs to a whole stage)",
                        stage.file.display(),
                        stage.name
                    ));
                }
            }
            for step in stage.steps.iter().chain(&stage.handlers) {
                for n in &step.notify {
                    if !stage.handlers.iter().any(|h| &h.name == n) {
                        return Err(miette!(
                            "{}: stage `{}` step `{}` notifies `{n}`, which is not a handler of the stage",
                            stage.file.display(),
                            stage.name,
                            step.name
                        ));
                    }
                }
            }
        }
        Ok(playbook)
    }

    /// The stages selected by `--stages` (all when `None`), in playbook order: a name selects its
    /// stage and the stage's parts; unknown names are errors.
    pub fn select_stages(&self, wanted: Option<&[String]>) -> Result<Vec<&Stage>> {
        let Some(wanted) = wanted else {
            return Ok(self.stages.iter().collect());
        };
        for w in wanted {
            if !self.stages.iter().any(|s| &s.name == w) {
                let known: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
                return Err(miette!("unknown stage `{w}` (this playbook has: {})", known.join(", ")));
            }
        }
        let selected = |s: &Stage| wanted.contains(&s.name) || s.part_of.as_ref().is_some_and(|p| wanted.contains(p));
        Ok(self.stages.iter().filter(|s| selected(s)).collect())
    }
}

/// The templates directory of a playbook on disk: the nearest `templates/` at or above its directory.
fn template_dir(playbook: &Path) -> PathBuf {
    let start = playbook.parent().unwrap_or(Path::new("."));
    start
        .ancestors()
        .map(|d| d.join("templates"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| start.join("templates"))
}

#[cfg(test)]
mod tests {
    /// Every `{{ … }}` that a stage file pastes into shell (a gate's `command`, a `command`
    /// step's `cmd`, `unless`, `creates`, `removes`, a `rolling_order`) goes through `| quote`,
    /// or is a list quoted word by word, or chooses between two literals. (A gate's `env` values
    /// are exported as quoted words by the engine.)
    #[test]
    fn every_value_pasted_into_shell_is_quoted() {
        fn walk(node: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
            const SHELL: [&str; 6] = ["command", "cmd", "unless", "creates", "removes", "rolling_order"];
            match node {
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        if let (true, Some(text)) = (SHELL.contains(&key.as_str()), value.as_str()) {
                            out.push((format!("{at}.{key}"), text.to_string()));
                        }
                        walk(value, &format!("{at}.{key}"), out);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        walk(item, &format!("{at}[{i}]"), out);
                    }
                }
                _ => {}
            }
        }
        let expression = regex::Regex::new(r"(?s)\{\{(.*?)\}\}").unwrap();
        let safe = regex::Regex::new(
            r"(?s)(\|\s*quote\s*$)|(map\('quote'\)\s*\|\s*join\('[^']*'\)$)|(^'[^']*' if [^']* else '[^']*'$)",
        )
        .unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<std::path::PathBuf> = glob::glob(&format!("{}/templates/*/*.yml", root.display()))
            .unwrap()
            .flatten()
            .collect();
        files.push(root.join("playbooks/site.yml"));
        let mut raw = Vec::new();
        for file in &files {
            let doc: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            let mut found = Vec::new();
            walk(&doc, "", &mut found);
            for (at, text) in found {
                for m in expression.captures_iter(&text) {
                    let inner = m[1].trim();
                    if !safe.is_match(inner) {
                        raw.push(format!("{}{at}: {{{{ {inner} }}}}", file.display()));
                    }
                }
            }
        }
        assert!(
            !files.is_empty() && raw.is_empty(),
            "unquoted in shell:\n{}",
            raw.join("\n")
        );
    }

    use super::*;

    fn load(text: &str) -> Result<Playbook> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pb.yml");
        std::fs::write(&p, text).unwrap();
        Playbook::load(&p)
    }

    #[test]
    fn loads_steps_handlers_and_gates() {
        let pb = load(
            "stages:\n  - name: web\n    hosts: all\n    serial: 1\n    steps:\n      - name: nginx\n        package: {name: nginx}\n        notify: [restart]\n    handlers:\n      - name: restart\n        service: {name: nginx, state: restarted}\n    verify:\n      - name: up\n        command: systemctl is-active nginx\n        retries: 3\n",
        )
        .unwrap();
        let stage = &pb.stages[0];
        assert_eq!(stage.serial, Some(1));
        assert_eq!(stage.steps[0].module, "package");
        assert_eq!(stage.steps[0].args["name"], "nginx");
        assert_eq!(stage.verify[0].retries, 3);
        assert!(pb.select_stages(Some(&["nope".into()])).is_err());
    }

    #[test]
    fn a_part_goes_with_its_stage() {
        let stage = |name: &str, extra: &str| format!("  - name: {name}\n    hosts: all\n{extra}");
        let pb = load(&format!(
            "stages:\n{}{}{}",
            stage("etcd", ""),
            stage("postgres", ""),
            stage("etcd-finish", "    part_of: etcd\n")
        ))
        .unwrap();
        let names = |wanted: &[&str]| {
            let wanted: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
            let stages = pb.select_stages(Some(&wanted)).unwrap();
            stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(",")
        };
        assert_eq!(names(&["etcd"]), "etcd,etcd-finish");
        assert_eq!(names(&["postgres", "etcd"]), "etcd,postgres,etcd-finish");
        assert_eq!(names(&["postgres"]), "postgres", "a part goes only with its own stage");
        let before = load(&format!(
            "stages:\n{}{}{}",
            stage("ready-for-b", "    part_of: b\n"),
            stage("a", ""),
            stage("b", "")
        ))
        .unwrap();
        let stages = before.select_stages(Some(&["b".into()])).unwrap();
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["ready-for-b", "b"],
            "a part before its stage runs where it stands"
        );
        for (bad, why) in [
            ("    part_of: c\n", "unknown"),
            ("    part_of: a\n", "itself"),
            ("    part_of: etcd-finish\n", "a part"),
        ] {
            let err = load(&format!(
                "stages:\n{}{}{}",
                stage("a", bad),
                stage("etcd", ""),
                stage("etcd-finish", "    part_of: etcd\n")
            ))
            .unwrap_err();
            assert!(err.to_string().contains("not another stage"), "{why}: {err}");
        }
    }

    #[test]
    fn site_playbook_loads_with_shared_haproxy_steps() {
        let pb = Playbook::built_in().unwrap();
        assert_eq!(pb.templates, TemplateSource::BuiltIn);
        let names: Vec<&str> = pb.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "etcd-membership",
                "rabbitmq-membership",
                "departed",
                "base",
                "etcd",
                "guard-etcd-tls",
                "patroni-etcd-tls",
                "patroni-resumed",
                "etcd-tls-converted",
                "pg-lb-checks-both",
                "postgres",
                "pg-lb",
                "rabbitmq-package",
                "rabbitmq-cookie",
                "rabbitmq",
                "mq-lb",
                "airflow",
                "web-lb",
                "guard"
            ]
        );
        let stage = |n: &str| pb.stages.iter().find(|s| s.name == n).unwrap();
        let steps = |n: &str| stage(n).steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let handlers = |n: &str| stage(n).handlers.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        for shared in [
            "HAProxy loads conf.d (its command line, so a restart)",
            "HAProxy running",
        ] {
            for lb in ["pg-lb", "mq-lb", "web-lb"] {
                assert!(steps(lb).iter().any(|s| s == shared), "{lb} lacks {shared}");
            }
        }
        assert_eq!(handlers("pg-lb-checks-both"), handlers("mq-lb"));
        assert_eq!(handlers("mq-lb"), ["restart haproxy", "reload haproxy"]);
        // pg-lb also keeps the VIP (keepalived): hosts that are not LBs reach the database there.
        assert_eq!(
            handlers("pg-lb"),
            ["restart haproxy", "reload haproxy", "reload keepalived"]
        );
        assert_eq!(handlers("web-lb")[..2], handlers("mq-lb")[..]);
        // In web-lb, the shared steps (YAML merge keys) apply only with the HAProxy front end.
        let running = stage("web-lb")
            .steps
            .iter()
            .find(|s| s.name == "HAProxy running")
            .unwrap();
        assert_eq!(running.when.as_deref(), Some("web_lb_frontend == 'haproxy'"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = format!("{:?}", load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n        package: {name: x, stat: present}\n").unwrap_err());
        assert!(err.contains("pb.yml:6"), "{err}");
        assert!(err.contains("stat"), "{err}");
        let err = load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n        notify: [nope]\n        package: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("not a handler"), "{err}");
        let err = format!(
            "{:?}",
            load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n").unwrap_err()
        );
        assert!(err.contains("names no module"), "{err}");
        let err = format!(
            "{:?}",
            load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n        packge: {name: x}\n")
                .unwrap_err()
        );
        assert!(
            err.contains("unknown key `packge`") && err.contains("pb.yml:5"),
            "{err}"
        );
        let err = format!("{:?}", load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n        package: {name: x}\n        file: {path: /x}\n").unwrap_err());
        assert!(err.contains("names one module"), "{err}");
    }
}
