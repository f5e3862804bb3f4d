//! `pip`: a Python virtualenv with packages installed by pip (PEP 668 forbids the system pip).

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{q, Change, Module, Observed, Templated};

/// Arguments of `pip`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pip {
    /// The virtualenv's directory (created with `python -m venv` when missing).
    pub venv: String,
    /// Requirements: `name`, `name==version`, `name[extra]==version`.
    #[serde(default = "no_packages")]
    pub packages: Templated<Vec<String>>,
    /// Interpreter that creates the venv.
    #[serde(default = "default_python")]
    pub python: String,
    /// Extra arguments to `pip install` (e.g. `--constraint URL`).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

fn no_packages() -> Templated<Vec<String>> {
    Templated::Value(Vec::new())
}

fn default_python() -> String {
    "python3".into()
}

/// Splits a requirement into its distribution name and pinned version.
fn parse_requirement(req: &str) -> (String, Option<String>) {
    let (name, version) = match req.split_once("==") {
        Some((n, v)) => (n, Some(v.trim().to_string())),
        None => (req.split(['<', '>', '=', '!', '~', ';']).next().unwrap_or(req), None),
    };
    let name = name.split('[').next().unwrap_or(name).trim();
    (name.to_lowercase().replace('_', "-"), version)
}

const PROBE_PY: &str = r#"import importlib.metadata as m, sys
for name in sys.argv[1:]:
    try: print(name, m.version(name))
    except m.PackageNotFoundError: print(name, "-")"#;

impl Module for Pip {
    fn probe(&self) -> String {
        let names: Vec<String> = self
            .packages
            .or_default()
            .iter()
            .map(|r| q(&parse_requirement(r).0))
            .collect();
        format!(
            "v={}\nif [ -x \"$v/bin/python\" ]; then echo venv; \"$v/bin/python\" -c {} {}; else echo novenv; fi\n",
            q(&self.venv),
            q(PROBE_PY),
            names.join(" ")
        )
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let out = &observed.stdout;
        let mut parts = Vec::new();
        if !out.lines().any(|l| l == "venv") {
            parts.push(format!("create venv {}", self.venv));
        }
        let have: std::collections::HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once(' ')).collect();
        for req in &self.packages.value("packages")? {
            let (name, version) = parse_requirement(req);
            match (have.get(name.as_str()).copied().unwrap_or("-"), version) {
                ("-", _) => parts.push(format!("install {req}")),
                (h, Some(v)) if h != v => parts.push(format!("change {name} {h} → {v}")),
                _ => {}
            }
        }
        Ok((!parts.is_empty()).then(|| Change::new(parts.join(", "))))
    }

    fn apply(&self) -> String {
        let packages = self.packages.or_default();
        let reqs: Vec<String> = packages.iter().chain(&self.extra_args).map(|r| q(r)).collect();
        let mut s = format!(
            "v={}\n[ -x \"$v/bin/python\" ] || {} -m venv \"$v\" || exit 1\n",
            q(&self.venv),
            q(&self.python)
        );
        if !packages.is_empty() {
            s.push_str(&format!(
                "\"$v/bin/python\" -m pip install -q --disable-pip-version-check {} || exit 1\n",
                reqs.join(" ")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_names() {
        assert_eq!(
            parse_requirement("apache-airflow[celery,postgres]==3.3.2"),
            ("apache-airflow".into(), Some("3.3.2".into()))
        );
        assert_eq!(parse_requirement("Six>=1.0"), ("six".into(), None));
        assert_eq!(
            parse_requirement("typing_extensions"),
            ("typing-extensions".into(), None)
        );
    }

    #[test]
    fn diff_against_probe_output() {
        let p = Pip {
            venv: "/v".into(),
            packages: Templated::Value(vec!["six==1.16.0".into(), "idna".into()]),
            python: "python3".into(),
            extra_args: vec![],
        };
        let out = Observed {
            stdout: "venv\nsix 1.15.0\nidna 3.4\n".into(),
            rc: 0,
        };
        assert_eq!(p.diff(&out).unwrap().unwrap().summary, "change six 1.15.0 → 1.16.0");
        let ok = Observed {
            stdout: "venv\nsix 1.16.0\nidna 3.4\n".into(),
            rc: 0,
        };
        assert_eq!(p.diff(&ok).unwrap(), None);
    }

    #[test]
    fn probe_runs_against_a_real_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let python = which::which("python3").unwrap();
        std::os::unix::fs::symlink(python, dir.path().join("bin/python")).unwrap();
        let p = Pip {
            venv: dir.path().display().to_string(),
            packages: Templated::Value(vec!["pip".into(), "hactl-none".into()]),
            python: "python3".into(),
            extra_args: vec![],
        };
        let out = crate::modules::run_local(&p.probe());
        assert!(out.stdout.contains("hactl-none -"), "{}", out.stdout);
        assert!(
            out.stdout.lines().any(|l| l.starts_with("pip ") && l != "pip -"),
            "{}",
            out.stdout
        );
    }
}
