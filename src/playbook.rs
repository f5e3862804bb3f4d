//! Playbooks: ordered stages, each targeting host groups with steps (a module and its arguments,
//! `when`, `notify`, `run_once`), handlers, `serial` batches and `verify` gates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use crate::inventory::{parse_yaml, Vars};
use crate::modules::{command, directory, file, group, hosts, lineinfile, package, pip, service, user, wait_for};
use crate::secrets::SecretSpec;

/// A playbook file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// A title.
    #[serde(default)]
    pub name: Option<String>,
    /// Defaults for variables (the inventory overrides them).
    #[serde(default)]
    pub vars: Vars,
    /// Secrets the playbook needs, generated when the inventory does not give them.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// The file it was loaded from.
    #[serde(skip)]
    pub path: PathBuf,
}

/// A stage: steps applied to a set of hosts, then verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Name, used by `--stages`.
    pub name: String,
    /// Host pattern (groups, names, `!`exclusions).
    pub hosts: String,
    /// Hosts per batch; batches run one after another, each verified before the next.
    #[serde(default)]
    pub serial: Option<usize>,
    /// The steps.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Steps run once at the end of the stage on a host when a step notified them.
    #[serde(default)]
    pub handlers: Vec<Step>,
    /// Gates: commands that must succeed after the stage (and alone, with `hactl verify`).
    #[serde(default)]
    pub verify: Vec<Gate>,
    /// Run handlers one host at a time, with the gates between hosts (rolling restarts that keep
    /// a cluster's quorum and a writable primary).
    #[serde(default)]
    pub rolling: bool,
    /// A read-only command run on each host whose output orders the rolling handlers (ascending,
    /// then inventory order), e.g. printing 1 on a cluster's leader and 0 elsewhere.
    #[serde(default)]
    pub rolling_order: Option<String>,
}

/// A step: one module with its arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What it does, shown in output.
    pub name: String,
    /// A minijinja expression; the step is skipped on hosts where it is false.
    #[serde(default)]
    pub when: Option<String>,
    /// Handlers to run when this step changes something.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Only on the first host of the stage.
    #[serde(default)]
    pub run_once: bool,
    /// Debian packages.
    #[serde(default)]
    pub package: Option<package::Package>,
    /// A file.
    #[serde(default)]
    pub file: Option<file::FileArgs>,
    /// A directory.
    #[serde(default)]
    pub directory: Option<directory::Directory>,
    /// A line in a file.
    #[serde(default)]
    pub lineinfile: Option<lineinfile::LineInFile>,
    /// /etc/hosts entries.
    #[serde(default)]
    pub hosts: Option<hosts::Hosts>,
    /// A user.
    #[serde(default)]
    pub user: Option<user::User>,
    /// A group.
    #[serde(default)]
    pub group: Option<group::Group>,
    /// A systemd service.
    #[serde(default)]
    pub service: Option<service::Service>,
    /// A guarded command.
    #[serde(default)]
    pub command: Option<command::Command>,
    /// A virtualenv with pip packages.
    #[serde(default)]
    pub pip: Option<pip::Pip>,
    /// Wait for a port or URL.
    #[serde(default)]
    pub wait_for: Option<wait_for::WaitFor>,
}

/// A step's module and arguments (still with templates in its strings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleSpec {
    /// `package`.
    Package(package::Package),
    /// `file`.
    File(file::FileArgs),
    /// `directory`.
    Directory(directory::Directory),
    /// `lineinfile`.
    Lineinfile(lineinfile::LineInFile),
    /// `hosts`.
    Hosts(hosts::Hosts),
    /// `user`.
    User(user::User),
    /// `group`.
    Group(group::Group),
    /// `service`.
    Service(service::Service),
    /// `command`.
    Command(command::Command),
    /// `pip`.
    Pip(pip::Pip),
    /// `wait_for`.
    WaitFor(wait_for::WaitFor),
}

impl Step {
    /// The one module this step uses.
    pub fn module(&self) -> Result<ModuleSpec> {
        let mut found: Vec<ModuleSpec> = Vec::new();
        macro_rules! take {
            ($($field:ident => $variant:ident),*) => {
                $(if let Some(args) = &self.$field { found.push(ModuleSpec::$variant(args.clone())); })*
            };
        }
        take!(package => Package, file => File, directory => Directory, lineinfile => Lineinfile,
              hosts => Hosts, user => User, group => Group, service => Service, command => Command,
              pip => Pip, wait_for => WaitFor);
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(miette!("step `{}` names no module (package, file, directory, lineinfile, hosts, user, group, service, command, pip, wait_for)", self.name)),
            _ => Err(miette!("step `{}` names more than one module", self.name)),
        }
    }
}

/// A verification gate: a read-only command that must exit 0.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// What it checks.
    pub name: String,
    /// Shell command (templated).
    pub command: String,
    /// Run on the stage's first host only.
    #[serde(default)]
    pub run_once: bool,
    /// Attempts before failing.
    #[serde(default = "one")]
    pub retries: u32,
    /// Seconds between attempts.
    #[serde(default = "one_second")]
    pub delay: f64,
}

fn one() -> u32 {
    1
}
fn one_second() -> f64 {
    1.0
}

impl Playbook {
    /// Loads and checks a playbook: YAML errors carry file:line:col; every step names one module,
    /// every notify names a handler, stage names are unique.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| miette!("cannot read playbook {}: {e}", path.display()))?;
        let mut playbook: Playbook = parse_yaml(&text, path)?;
        playbook.path = path.to_path_buf();
        let mut seen = std::collections::BTreeSet::new();
        for stage in &playbook.stages {
            if !seen.insert(stage.name.as_str()) {
                return Err(miette!("{}: stage `{}` is defined twice", path.display(), stage.name));
            }
            for step in stage.steps.iter().chain(&stage.handlers) {
                step.module()
                    .map_err(|e| miette!("{}: stage `{}`: {e}", path.display(), stage.name))?;
                for n in &step.notify {
                    if !stage.handlers.iter().any(|h| &h.name == n) {
                        return Err(miette!(
                            "{}: stage `{}` step `{}` notifies `{n}`, which is not a handler of the stage",
                            path.display(),
                            stage.name,
                            step.name
                        ));
                    }
                }
            }
        }
        Ok(playbook)
    }

    /// The templates directory: the nearest `templates/` at or above the playbook's directory.
    pub fn template_dir(&self) -> PathBuf {
        let start = self.path.parent().unwrap_or(Path::new("."));
        start
            .ancestors()
            .map(|d| d.join("templates"))
            .find(|d| d.is_dir())
            .unwrap_or_else(|| start.join("templates"))
    }

    /// The stages selected by `--stages` (all when `None`), in playbook order; unknown names are errors.
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
        Ok(self.stages.iter().filter(|s| wanted.contains(&s.name)).collect())
    }
}

#[cfg(test)]
mod tests {
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
        assert!(matches!(stage.steps[0].module().unwrap(), ModuleSpec::Package(_)));
        assert_eq!(stage.verify[0].retries, 3);
        assert!(pb.select_stages(Some(&["nope".into()])).is_err());
    }

    #[test]
    fn site_playbook_loads_with_shared_haproxy_steps() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks/site.yml");
        let pb = Playbook::load(&path).unwrap();
        let names: Vec<&str> = pb.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["base", "etcd", "postgres", "pg-lb", "rabbitmq", "mq-lb"]);
        let stage = |n: &str| pb.stages.iter().find(|s| s.name == n).unwrap();
        let steps = |n: &str| stage(n).steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let handlers = |n: &str| stage(n).handlers.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        for shared in [
            "HAProxy loads conf.d (its command line, so a restart)",
            "HAProxy running",
        ] {
            assert!(steps("pg-lb").iter().any(|s| s == shared) && steps("mq-lb").iter().any(|s| s == shared));
        }
        assert_eq!(handlers("mq-lb"), handlers("pg-lb"));
        assert_eq!(handlers("mq-lb"), ["restart haproxy", "reload haproxy"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = format!("{:?}", load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n        package: {name: x, stat: present}\n").unwrap_err());
        assert!(err.contains("pb.yml:6"), "{err}");
        assert!(err.contains("stat"), "{err}");
        let err = load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n        notify: [nope]\n        package: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("not a handler"), "{err}");
        let err = load("stages:\n  - name: a\n    hosts: all\n    steps:\n      - name: x\n").unwrap_err();
        assert!(err.to_string().contains("names no module"), "{err}");
    }
}
