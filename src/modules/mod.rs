//! Resource kinds. Each module is a [`Resource`]: a read-only probe script that prints what is
//! there, a typed fact parsed from that output, a diff of the fact against what the arguments
//! want (in Rust), and an apply script that converges. The engine batches the probes (and the
//! applies) of a stage into one round trip.
//!
//! Adding a module: write `src/modules/NAME.rs` (its arguments as a serde struct, its fact, its
//! [`Resource`] impl and tests) and `src/modules/NAME.sh` (shell functions `probe` and `apply`
//! reading `HACTL_*` variables, assembled by [`script`]), then add one line to [`registry!`]
//! below. A step names it by that key. `.ci/run` lints every `.sh` file with shellcheck.

pub mod airflow_db;
pub mod assert;
pub mod awk_edit;
pub mod command;
pub mod decommission;
pub mod dir_sync;
pub mod directory;
pub mod etcd;
pub mod etcd_join;
pub mod etcd_member;
pub mod etcd_remove;
pub mod file;
pub mod group;
pub mod hosts;
pub mod lineinfile;
pub mod package;
pub mod patroni;
pub mod patroni_leave;
pub mod patroni_pause;
pub mod patroni_restart;
pub mod pip;
pub mod postgres_password;
pub mod postgres_role;
pub mod rabbitmq;
pub mod rabbitmq_forget;
pub mod rabbitmq_grow;
pub mod rabbitmq_join;
pub mod rabbitmq_user;
pub mod rabbitmq_vhost;
pub mod reach;
pub mod service;
pub mod user;
pub mod wait_for;

use miette::{miette, Result};
use minijinja::value::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::quote::q;
use crate::render::Renderer;
use crate::secrets::Redactor;

/// What building a module for one host may need besides its rendered arguments.
pub struct BuildCx<'a> {
    /// Where the step is, for errors ("templates/etcd/stage.yml stage `etcd` step `x`").
    pub origin: &'a str,
    /// The template renderer (for modules that render files).
    pub renderer: &'a Renderer,
    /// The host's template context.
    pub ctx: &'a Value,
    /// The run's secrets (a module whose content holds one masks its diffs harder).
    pub redactor: &'a Redactor,
}

/// A module's arguments as a step writes them. Arguments that are the module itself need nothing
/// more (the blanket impl); others (e.g. `file`, which renders its template) say how to build it.
pub trait Spec: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The module for one host, from its rendered arguments.
    fn build(self, cx: &BuildCx) -> Result<Box<dyn Module>>;
}

impl<T: Module + Serialize + DeserializeOwned + 'static> Spec for T {
    fn build(self, _cx: &BuildCx) -> Result<Box<dyn Module>> {
        Ok(Box::new(self))
    }
}

/// The module table: one line per module, `"key" => ArgumentsType`.
macro_rules! registry {
    ($($name:literal => $spec:ty),* $(,)?) => {
        /// Every module's key, as steps write it.
        pub const NAMES: &[&str] = &[$($name),*];

        /// Reads the arguments of module `name` from a playbook map (errors keep the YAML's
        /// location) into JSON that still holds templates; `None` when no module has that key.
        pub fn parse_args<'de, A: serde::de::MapAccess<'de>>(
            name: &str,
            map: &mut A,
        ) -> Option<std::result::Result<Json, A::Error>> {
            match name {
                $($name => Some(map.next_value::<$spec>().and_then(|args| {
                    serde_json::to_value(args).map_err(serde::de::Error::custom)
                })),)*
                _ => None,
            }
        }

        /// Builds module `name` for one host from its rendered arguments.
        pub fn build(name: &str, args: Json, cx: &BuildCx) -> Result<Box<dyn Module>> {
            match name {
                $($name => serde_json::from_value::<$spec>(args)
                    .map_err(|e| miette!("{}: {e}", cx.origin))?
                    .build(cx),)*
                _ => Err(miette!("{}: unknown module `{name}`", cx.origin)),
            }
        }
    };
}

registry! {
    "package" => package::Package,
    "file" => file::FileArgs,
    "directory" => directory::Directory,
    "dir_sync" => dir_sync::DirSyncArgs,
    "lineinfile" => lineinfile::LineInFile,
    "hosts" => hosts::Hosts,
    "user" => user::User,
    "group" => group::Group,
    "service" => service::Service,
    "command" => command::Command,
    "pip" => pip::Pip,
    "wait_for" => wait_for::WaitFor,
    "rabbitmq_join" => rabbitmq_join::RabbitmqJoin,
    "rabbitmq_grow" => rabbitmq_grow::RabbitmqGrow,
    "rabbitmq_forget" => rabbitmq_forget::RabbitmqForget,
    "rabbitmq_user" => rabbitmq_user::RabbitmqUser,
    "rabbitmq_vhost" => rabbitmq_vhost::RabbitmqVhost,
    "postgres_role" => postgres_role::PostgresRole,
    "postgres_password" => postgres_password::PostgresPassword,
    "patroni_restart" => patroni_restart::PatroniRestart,
    "patroni_pause" => patroni_pause::PatroniPause,
    "etcd_member" => etcd_member::EtcdMember,
    "etcd_join" => etcd_join::EtcdJoin,
    "etcd_remove" => etcd_remove::EtcdRemove,
    "patroni_leave" => patroni_leave::PatroniLeave,
    "decommission" => decommission::Decommission,
    "airflow_db" => airflow_db::AirflowDb,
    "assert" => assert::Assert,
    "reach" => reach::Reach,
}

/// What a script part printed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Its stdout.
    pub stdout: String,
    /// Its stderr, when kept apart (probes that failed).
    pub stderr: String,
    /// Its exit status.
    pub rc: i32,
}

/// A difference between what is there and what is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// One line: what would change (e.g. "install etcd-server", "start etcd").
    pub summary: String,
    /// A unified diff, for files.
    pub diff: Option<String>,
    /// Whether applying it counts as a change (a wait does not).
    pub counts: bool,
    /// The systemd unit this change starts, when it starts one (so that a handler refreshing
    /// that unit is redundant if it was notified before the start: the unit starts with the
    /// configuration already in place).
    pub starts: Option<String>,
    /// Whether it removes a cluster's member that the inventory no longer has: applied only by
    /// `provision --prune`, otherwise left and reported.
    pub prune: bool,
    /// Why `provision --prune` must not make this removal (below quorum, a member still
    /// running): the run fails at this step instead, before it changes anything here.
    pub refusal: Option<String>,
}

impl Change {
    /// A counted change with no diff.
    pub fn new(summary: impl Into<String>) -> Self {
        Change {
            summary: summary.into(),
            diff: None,
            counts: true,
            starts: None,
            prune: false,
            refusal: None,
        }
    }

    /// A counted change with a diff (`None` when it must not be shown).
    pub fn with_diff(summary: impl Into<String>, diff: Option<String>) -> Self {
        Change {
            diff,
            ..Change::new(summary)
        }
    }

    /// A removal of members the inventory no longer has (see [`Change::prune`]): `summary` names
    /// them ("remove etcd member node3").
    pub fn removal(summary: impl Into<String>) -> Self {
        Change {
            prune: true,
            ..Change::new(summary)
        }
    }

    /// A removal that `provision --prune` refuses, and why (see [`Change::refusal`]).
    pub fn refused_removal(summary: impl Into<String>, why: impl Into<String>) -> Self {
        Change {
            refusal: Some(why.into()),
            ..Change::removal(summary)
        }
    }

    /// What a membership module reports for members outside its group (`removing`, a description
    /// ending "not in group G"): with `check_only` (the run's first check), only a removal
    /// `--prune` refuses, with why; without it, only a removal it may make (their state is
    /// `removal`'s summary).
    pub fn membership(check_only: bool, refusal: Option<String>, removing: String, removal: String) -> Option<Self> {
        match (refusal, check_only) {
            (Some(why), true) => Some(Change::refused_removal(removing, why)),
            // The run's check reports it, and refuses it with --prune.
            (Some(_), false) | (None, true) => None,
            (None, false) => Some(Change::removal(removal)),
        }
    }

    /// Something applying does that is not a change (a wait).
    pub fn not_counted(summary: impl Into<String>) -> Self {
        Change {
            counts: false,
            ..Change::new(summary)
        }
    }
}

/// One resource on one host, fully rendered: what the engine drives. Every [`Resource`] is one.
pub trait Module: Send + Sync {
    /// A read-only POSIX shell script printing the resource's state; exits non-zero only when it
    /// could not look (an error, never "absent").
    fn probe(&self) -> String;
    /// What would change, given the probe's output; `None` when in sync.
    fn diff(&self, observed: &Observed) -> Result<Option<Change>>;
    /// A POSIX shell script that converges the resource; exits non-zero on failure.
    fn apply(&self) -> String;
    /// Whether the post-apply re-probe must find it in sync (not for always-run commands).
    fn converges(&self) -> bool;
    /// For a handler: the systemd unit whose running process it refreshes (restart, reload). It
    /// is redundant on a host where this run started that unit after the change that notified it.
    fn refreshes(&self) -> Option<&str>;
    /// For a handler: whether its probe finding nothing to do means it would do nothing even
    /// after the handlers before it ran (a try-restart of a unit that does not run), so the
    /// engine may skip it. False for handlers whose work an earlier one creates (a restart that
    /// a reload makes pending).
    fn idle_when_in_sync(&self) -> bool;
}

/// A resource kind: its probe's output parses into a typed [`Fact`], which `diff` compares with
/// what the arguments want.
pub trait Resource: Send + Sync {
    /// What the probe finds on the host.
    type Fact: Fact;
    /// The read-only probe script (see [`Module::probe`]).
    fn probe(&self) -> String;
    /// What would change, given the fact; `None` when in sync.
    fn diff(&self, fact: &Self::Fact) -> Result<Option<Change>>;
    /// The converging script.
    fn apply(&self) -> String;
    /// Whether the post-apply re-probe must find it in sync.
    fn converges(&self) -> bool {
        true
    }
    /// See [`Module::refreshes`].
    fn refreshes(&self) -> Option<&str> {
        None
    }
    /// See [`Module::idle_when_in_sync`].
    fn idle_when_in_sync(&self) -> bool {
        false
    }
}

impl<R: Resource> Module for R {
    fn probe(&self) -> String {
        Resource::probe(self)
    }
    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let fact = R::Fact::parse(&ProbeLines::new(&observed.stdout))?;
        Resource::diff(self, &fact)
    }
    fn apply(&self) -> String {
        Resource::apply(self)
    }
    fn converges(&self) -> bool {
        Resource::converges(self)
    }
    fn refreshes(&self) -> Option<&str> {
        Resource::refreshes(self)
    }
    fn idle_when_in_sync(&self) -> bool {
        Resource::idle_when_in_sync(self)
    }
}

/// A typed, read-only fact about a host, parsed from the `key value` lines a probe printed.
pub trait Fact: Sized {
    /// Parses the lines; output that does not have the fact's shape is an error.
    fn parse(lines: &ProbeLines) -> Result<Self>;
}

/// A probe's output as `key value` lines (first word → the rest of the line).
pub struct ProbeLines<'a> {
    text: &'a str,
    lines: Vec<(&'a str, &'a str)>,
}

impl<'a> ProbeLines<'a> {
    /// Splits a probe's stdout.
    pub fn new(text: &'a str) -> Self {
        let lines = text
            .lines()
            .map(|l| {
                let l = l.trim_end();
                l.split_once(' ').unwrap_or((l, ""))
            })
            .collect();
        ProbeLines { text, lines }
    }

    /// The value of the first `key` line.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.lines.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The values of every `key` line, in order.
    pub fn all(&self, key: &'a str) -> impl Iterator<Item = &'a str> + '_ {
        self.lines.iter().filter(move |(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The value of the first `key` line, or an error showing what the probe printed.
    pub fn require(&self, key: &str) -> Result<&'a str> {
        self.get(key)
            .ok_or_else(|| miette!("the probe printed no `{key}` line (it printed: {:?})", self.text))
    }
}

/// Assembles a module's script: its variables (each value one shell word, exported so that awk
/// and python children read them from the environment, never from a command line), the module's
/// `.sh` file, then `call`. Values never become script text. The shared helpers ([`LIB_SH`]) are
/// defined once per batch by the engine, before the parts (which run in subshells).
pub fn script(file: &str, vars: &[(&str, &str)], call: &str) -> String {
    let mut s = String::new();
    for (name, value) in vars {
        debug_assert!(name.starts_with("HACTL_"), "module variables are HACTL_*");
        s.push_str(&format!("{name}={}; export {name}\n", q(value)));
    }
    s.push_str(file);
    s.push('\n');
    s.push_str(call);
    s.push('\n');
    s
}

/// Shell helpers every module script may use (see `lib.sh`), defined at the top of each batch.
pub const LIB_SH: &str = include_str!("lib.sh");

/// One value or a list of them (`name: x` or `name: [x, y]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// An argument given literally or as one `{{ expression }}` string still to render: a structure
/// (e.g. `entries: "{{ groups['all'] | hosts_entries(hostvars) }}"`) or a number (a template
/// renders to text, parsed once rendered).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Templated<T> {
    /// The value itself.
    Value(T),
    /// A template still to render.
    Template(String),
}

/// How a [`Templated`] value reads plain (non-template) text: numbers parse it, structures
/// refuse it.
pub trait FromText: Sized {
    /// The value the text stands for, or why it stands for none.
    fn from_text(text: &str) -> std::result::Result<Self, String>;
}

impl<T> FromText for Vec<T> {
    fn from_text(text: &str) -> std::result::Result<Self, String> {
        Err(format!(
            "expected a list or map, or a `{{{{ expression }}}}` giving one; got `{text}`"
        ))
    }
}

macro_rules! number_from_text {
    ($($t:ty),*) => {$(
        impl FromText for $t {
            fn from_text(text: &str) -> std::result::Result<Self, String> {
                text.trim().parse().map_err(|_| format!("`{text}` is not a number"))
            }
        }
    )*};
}
number_from_text!(u16, u32, u64);

impl FromText for bool {
    fn from_text(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "true" | "True" | "yes" => Ok(true),
            "false" | "False" | "no" | "" => Ok(false),
            other => Err(format!("`{other}` is not true or false")),
        }
    }
}

impl<'de, T: Deserialize<'de> + FromText> Deserialize<'de> for Templated<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Value(T),
            Text(String),
        }
        match Raw::<T>::deserialize(d)? {
            Raw::Value(v) => Ok(Templated::Value(v)),
            Raw::Text(t) if t.contains("{{") => Ok(Templated::Template(t)),
            Raw::Text(t) => T::from_text(&t).map(Templated::Value).map_err(serde::de::Error::custom),
        }
    }
}

impl<T: Default + Clone> Templated<T> {
    /// The rendered value; an error names `field` when the template did not give one.
    pub fn value(&self, field: &str) -> Result<T> {
        match self {
            Templated::Value(v) => Ok(v.clone()),
            Templated::Template(t) => Err(miette!("`{field}` did not render to a value of its type: {t}")),
        }
    }

    /// The rendered value, or the default (for scripts; `diff` reports the error first).
    pub fn or_default(&self) -> T {
        self.value("").unwrap_or_default()
    }
}

/// Present or absent.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// The resource exists.
    #[default]
    Present,
    /// The resource does not exist.
    Absent,
}

/// Parses an octal mode string like "0644" or "755".
pub fn parse_mode(mode: &str) -> Result<u32> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| miette!("mode `{mode}` is not an octal file mode such as 0644"))
}

/// Ownership and permissions wanted for a path; `None` fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attrs {
    /// Owner user name.
    pub owner: Option<String>,
    /// Owner group name.
    pub group: Option<String>,
    /// Octal mode.
    pub mode: Option<String>,
}

impl Attrs {
    /// The variables the shared `set_attrs` helper reads.
    pub fn vars(&self) -> [(&'static str, &str); 3] {
        [
            ("HACTL_OWNER", self.owner.as_deref().unwrap_or("")),
            ("HACTL_GROUP", self.group.as_deref().unwrap_or("")),
            ("HACTL_MODE", self.mode.as_deref().unwrap_or("")),
        ]
    }

    /// Human-readable differences against what a probe found.
    pub fn diff(&self, have: &Ownership) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if let Some(o) = self.owner.as_ref().filter(|o| **o != have.owner) {
            out.push(format!("owner {} → {o}", have.owner));
        }
        if let Some(g) = self.group.as_ref().filter(|g| **g != have.group) {
            out.push(format!("group {} → {g}", have.group));
        }
        if let Some(m) = &self.mode {
            let want = parse_mode(m)?;
            if have.mode != want {
                out.push(format!("mode {:04o} → {want:04o}", have.mode));
            }
        }
        Ok(out)
    }
}

/// Owner, group and mode of a path, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// Owner user name.
    pub owner: String,
    /// Group name.
    pub group: String,
    /// Permission bits.
    pub mode: u32,
}

/// What kind of thing is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing.
    Absent,
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// Something else (a socket, a device…).
    Other,
}

/// A path on the host: its kind, ownership and (for files) content hash and, when it differs
/// from what is wanted and is small, the old content for a diff. Printed by `probe_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFact {
    /// What is there.
    pub kind: PathKind,
    /// Its ownership, when it exists.
    pub ownership: Option<Ownership>,
    /// A file's sha256, hex.
    pub sha256: Option<String>,
    /// A file's old content, when it differs from the wanted hash and is small enough.
    pub old: Option<Vec<u8>>,
}

impl Fact for PathFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        use base64::Engine;
        let kind = match lines.require("kind")? {
            "absent" => PathKind::Absent,
            "file" => PathKind::File,
            "directory" => PathKind::Directory,
            "other" => PathKind::Other,
            k => return Err(miette!("unknown path kind `{k}` from the probe")),
        };
        let ownership = match lines.get("attrs") {
            Some(a) => {
                let f: Vec<&str> = a.split_whitespace().collect();
                let [owner, group, mode] = f[..] else {
                    return Err(miette!("bad attrs line from the probe: {a:?}"));
                };
                let mode = u32::from_str_radix(mode, 8).map_err(|_| miette!("bad mode {mode:?} from the probe"))?;
                Some(Ownership {
                    owner: owner.into(),
                    group: group.into(),
                    mode,
                })
            }
            None => None,
        };
        let old = match lines.get("old") {
            Some(b) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| miette!("bad old content from the probe: {e}"))?,
            ),
            None => None,
        };
        Ok(PathFact {
            kind,
            ownership,
            sha256: lines.get("sha").map(String::from),
            old,
        })
    }
}

/// Probes a module locally and diffs what it found (module tests).
#[cfg(test)]
pub fn local_diff(module: &dyn Module) -> Result<Option<Change>> {
    let observed = run_local(&module.probe());
    assert_eq!(observed.rc, 0, "probe failed: {}", observed.stderr);
    module.diff(&observed)
}

/// Applies a module locally (module tests).
#[cfg(test)]
pub fn local_apply(module: &dyn Module) -> Observed {
    run_local(&module.apply())
}

/// Diffs a module against canned probe output (module tests).
#[cfg(test)]
pub fn diff_of(module: &dyn Module, stdout: &str) -> Result<Option<Change>> {
    module.diff(&Observed {
        stdout: stdout.into(),
        ..Observed::default()
    })
}

/// Runs a script locally with `sh` (module tests exercise the real scripts against temp dirs),
/// as a batch runs a part: after the shared helpers, in a subshell with standard input closed.
#[cfg(test)]
pub fn run_local(script: &str) -> Observed {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!("{LIB_SH}\n(\n{script}\n) </dev/null");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Observed {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        rc: out.status.code().unwrap_or(-1),
    }
}
