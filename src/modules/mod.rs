//! Resource kinds. Each module turns its arguments into three POSIX shell scripts: a read-only
//! probe that prints what is there, a diff of that against what is wanted (in Rust), and an apply
//! that converges. The engine batches the probes (and the applies) of a stage into one round trip.

pub mod command;
pub mod directory;
pub mod file;
pub mod group;
pub mod hosts;
pub mod lineinfile;
pub mod package;
pub mod pip;
pub mod service;
pub mod user;
pub mod wait_for;

use miette::Result;
use serde::{Deserialize, Serialize};

/// What a probe printed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The probe's stdout.
    pub stdout: String,
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
}

impl Change {
    /// A counted change with no diff.
    pub fn new(summary: impl Into<String>) -> Self {
        Change {
            summary: summary.into(),
            diff: None,
            counts: true,
        }
    }
}

/// One resource on one host, fully rendered.
pub trait Module: Send + Sync {
    /// A read-only POSIX shell script printing the resource's state.
    fn probe(&self) -> String;
    /// What would change, given the probe's output; `None` when in sync.
    fn diff(&self, observed: &Observed) -> Result<Option<Change>>;
    /// A POSIX shell script that converges the resource; exits non-zero on failure.
    fn apply(&self) -> String;
    /// Whether the post-apply re-probe must find it in sync (not for always-run commands).
    fn converges(&self) -> bool {
        true
    }
}

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

/// A structured argument given either literally or as one `{{ expression }}` string that
/// renders to the structure (e.g. `entries: "{{ groups['all'] | hosts_entries(hostvars) }}"`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Templated<T> {
    /// The value itself.
    Value(T),
    /// A template still to render.
    Template(String),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Templated<T> {
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
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "expected a list or map, or a `{{{{ expression }}}}` giving one; got `{t}`"
            ))),
        }
    }
}

impl<T: Default + Clone> Templated<T> {
    /// The rendered value; an error names `field` when the template did not give a structure.
    pub fn value(&self, field: &str) -> Result<T> {
        match self {
            Templated::Value(v) => Ok(v.clone()),
            Templated::Template(t) => Err(miette::miette!("`{field}` did not render to a structure: {t}")),
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

/// POSIX single-quoting for embedding a value in a script.
pub fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The lines of `stdout` as `key value` pairs (first word → rest).
pub fn fields(stdout: &str) -> std::collections::HashMap<&str, &str> {
    stdout
        .lines()
        .map(|l| {
            let l = l.trim_end();
            l.split_once(' ').unwrap_or((l, ""))
        })
        .collect()
}

/// Parses an octal mode string like "0644" or "755".
pub fn parse_mode(mode: &str) -> Result<u32> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| miette::miette!("mode `{mode}` is not an octal file mode such as 0644"))
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
    /// Shell lines printing `attrs OWNER GROUP MODE` of `$p` (the probe side).
    pub fn probe_line() -> &'static str {
        "stat -c 'attrs %U %G %a' \"$p\""
    }

    /// Human-readable differences against `attrs U G M` from a probe.
    pub fn diff(&self, observed: &str) -> Result<Vec<String>> {
        let mut parts = observed.split_whitespace();
        let (owner, group, mode) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let mut out = Vec::new();
        if let Some(o) = &self.owner {
            if o != owner {
                out.push(format!("owner {owner} → {o}"));
            }
        }
        if let Some(g) = &self.group {
            if g != group {
                out.push(format!("group {group} → {g}"));
            }
        }
        if let Some(m) = &self.mode {
            let want = parse_mode(m)?;
            if u32::from_str_radix(mode, 8).ok() != Some(want) {
                out.push(format!("mode {mode:0>4} → {want:04o}"));
            }
        }
        Ok(out)
    }

    /// Shell lines setting the attributes on `$target`, copying unspecified ones from `$p` when it
    /// exists, else `default_mode`.
    pub fn apply_lines(&self, default_mode: &str) -> String {
        let mut s = String::from(
            "if [ -e \"$p\" ]; then chown --reference=\"$p\" \"$target\" && chmod --reference=\"$p\" \"$target\"; ",
        );
        s.push_str(&format!("else chmod {default_mode} \"$target\"; fi || exit 1\n"));
        match (&self.owner, &self.group) {
            (Some(o), Some(g)) => s.push_str(&format!("chown {}:{} \"$target\" || exit 1\n", q(o), q(g))),
            (Some(o), None) => s.push_str(&format!("chown {} \"$target\" || exit 1\n", q(o))),
            (None, Some(g)) => s.push_str(&format!("chgrp {} \"$target\" || exit 1\n", q(g))),
            (None, None) => {}
        }
        if let Some(m) = &self.mode {
            s.push_str(&format!("chmod {} \"$target\" || exit 1\n", q(m)));
        }
        s
    }
}

/// Runs a script locally with `sh` (module tests exercise the real scripts against temp dirs).
#[cfg(test)]
pub fn run_local(script: &str) -> Observed {
    use std::io::Write;
    let mut child = std::process::Command::new("sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Observed {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        rc: out.status.code().unwrap_or(-1),
    }
}
