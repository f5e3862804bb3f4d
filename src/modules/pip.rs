//! `pip`: a Python virtualenv with packages installed by pip (PEP 668 forbids the system pip).

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource, Templated};

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
    /// Extra arguments to `pip install`.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// The package index (`--index-url`); checked for reachability before installing, so that
    /// an unreachable index is one clear error.
    pub index_url: Option<String>,
    /// A constraints (lock) file on the host: every install resolves against it, and a change
    /// of the file re-resolves the packages (its hash is stamped into the venv).
    pub constraints: Option<String>,
    /// The venv's owner, set recursively (links themselves, never what they point to) before any
    /// python of the venv runs and after installing; nothing in it stays writable by others, all
    /// of it readable by everyone. A venv something in which is not the owner's alone is rebuilt
    /// (moved aside, never run, then removed).
    pub owner: Option<String>,
    /// Who runs the venv's python in the probe (`plan` included): a user without root's powers,
    /// so that nothing the venv's packages run at start ever runs as root there.
    pub probe_user: Option<String>,
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

/// The module's shell functions.
const SH: &str = include_str!("pip.sh");

/// Prints `dist NAME VERSION` (`-` when not installed) for each name in HACTL_NAMES.
const PROBE_PY: &str = concat!(
    include_str!("dist_version.py"),
    r#"
for name in filter(None, os.environ["HACTL_NAMES"].split("\n")):
    print("dist", name, dist_version(name) or "-")
"#
);

/// A virtualenv as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Venv {
    /// Whether its interpreter exists.
    pub exists: bool,
    /// Distribution name → installed version (`None`: not installed).
    pub versions: std::collections::HashMap<String, Option<String>>,
    /// Owner of the venv's directory.
    pub owner: Option<String>,
    /// sha256 of the constraints file as it is now.
    pub constraints: Option<String>,
    /// sha256 of the constraints file the packages were last resolved against.
    pub stamp: Option<String>,
    /// Whether something in it is not the wanted owner's, or is writable by others.
    pub foreign: bool,
    /// `.pth`, sitecustomize and usercustomize files no installed distribution lists.
    pub strays: Vec<String>,
}

impl Fact for Venv {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        let exists = lines.require("venv")? == "yes";
        let field = |k: &str| lines.get(k).filter(|v| *v != "-").map(String::from);
        let (owner, constraints, stamp) = (field("owner"), field("constraints"), field("stamp"));
        let mut versions = std::collections::HashMap::new();
        for line in lines.all("dist") {
            let (name, version) = line
                .split_once(' ')
                .ok_or_else(|| miette::miette!("bad dist line from the probe: {line:?}"))?;
            versions.insert(name.to_string(), (version != "-").then(|| version.to_string()));
        }
        Ok(Venv {
            exists,
            versions,
            owner,
            constraints,
            stamp,
            foreign: lines.get("foreign") == Some("yes"),
            strays: lines.all("stray").map(String::from).collect(),
        })
    }
}

impl Resource for Pip {
    type Fact = Venv;

    fn probe(&self) -> String {
        let names: Vec<String> = self
            .packages
            .or_default()
            .iter()
            .map(|r| parse_requirement(r).0)
            .collect();
        let vars = [
            ("HACTL_VENV", self.venv.as_str()),
            ("HACTL_NAMES", &names.join("\n")),
            ("HACTL_PROBE_PY", PROBE_PY),
            ("HACTL_CONSTRAINTS", self.constraints.as_deref().unwrap_or("")),
            ("HACTL_OWNER", self.owner.as_deref().unwrap_or("")),
            ("HACTL_PROBE_USER", self.probe_user.as_deref().unwrap_or("")),
        ];
        script(SH, &vars, "hactl_probe")
    }

    fn diff(&self, venv: &Venv) -> Result<Option<Change>> {
        if !venv.strays.is_empty() {
            return Err(miette::miette!(
                "{} holds files no installed package lists, which every python of it runs at start: {} \
                 (look at them and remove them; a venv another user could write is safest made again)",
                self.venv,
                venv.strays.join(", ")
            ));
        }
        let mut parts = Vec::new();
        if !venv.exists {
            parts.push(format!("create venv {}", self.venv));
        }
        if let Some(owner) = self.owner.as_ref().filter(|_| venv.exists && venv.foreign) {
            parts.push(format!(
                "rebuild the venv {}: something in it was not {owner}'s alone (the old one is moved aside, \
                 never run, and removed)",
                self.venv
            ));
        }
        for req in &self.packages.value("packages")? {
            let (name, version) = parse_requirement(req);
            match (venv.versions.get(&name).cloned().flatten(), version) {
                (None, _) => parts.push(format!("install {req}")),
                (Some(h), Some(v)) if h != v => parts.push(format!("change {name} {h} → {v}")),
                _ => {}
            }
        }
        if let Some(file) = &self.constraints {
            if venv.exists && parts.is_empty() && venv.constraints != venv.stamp {
                parts.push(format!("re-resolve the packages against {file} (it changed)"));
            }
        }
        if let Some(owner) = self
            .owner
            .as_ref()
            .filter(|o| venv.exists && !venv.foreign && venv.owner.as_ref() != Some(*o))
        {
            parts.push(format!(
                "owner {} → {owner} (everything in it, writable by {owner} alone)",
                venv.owner.as_deref().unwrap_or("-")
            ));
        }
        Ok((!parts.is_empty()).then(|| Change::new(parts.join(", "))))
    }

    fn apply(&self) -> String {
        let packages = self.packages.or_default();
        let mut reqs: Vec<&str> = Vec::new();
        if !packages.is_empty() {
            reqs.extend(packages.iter().chain(&self.extra_args).map(String::as_str));
            if let Some(url) = &self.index_url {
                reqs.extend(["--index-url", url]);
            }
            if let Some(file) = &self.constraints {
                reqs.extend(["--constraint", file]);
            }
        }
        let vars = [
            ("HACTL_VENV", self.venv.as_str()),
            ("HACTL_PYTHON", &self.python),
            ("HACTL_REQS", &reqs.join("\n")),
            ("HACTL_INDEX_URL", self.index_url.as_deref().unwrap_or("")),
            ("HACTL_CONSTRAINTS", self.constraints.as_deref().unwrap_or("")),
            ("HACTL_OWNER", self.owner.as_deref().unwrap_or("")),
        ];
        script(SH, &vars, "hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The venv's site-packages directory (lib/pythonX.Y/site-packages).
    fn site_packages(venv: &std::path::Path) -> std::path::PathBuf {
        std::fs::read_dir(venv.join("lib"))
            .unwrap()
            .flatten()
            .map(|e| e.path().join("site-packages"))
            .find(|p| p.is_dir())
            .unwrap()
    }
    use crate::modules::{diff_of, local_diff};
    use std::os::unix::fs::PermissionsExt;

    /// The probe's output for `names` with `path` first on Python's path.
    fn probe_versions(path: &std::path::Path, names: &str) -> String {
        let out = std::process::Command::new("python3")
            .args(["-c", PROBE_PY])
            .env("PYTHONPATH", path)
            .env("HACTL_NAMES", names)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_probe_finds_versions_as_importlib_metadata_does() {
        let dir = tempfile::tempdir().unwrap();
        let dist = dir.path().join("Foo_Bar-1.2.dist-info");
        std::fs::create_dir(&dist).unwrap();
        // METADATA's Version counts, not the directory's name; the body after the headers is not read.
        std::fs::write(
            dist.join("METADATA"),
            "Metadata-Version: 2.1\nName: Foo-Bar\nVersion: 1.2.post1\n\nVersion: 9\n",
        )
        .unwrap();
        let egg = dir.path().join("old_thing-0.5-py3.11.egg-info");
        std::fs::create_dir(&egg).unwrap();
        std::fs::write(
            egg.join("PKG-INFO"),
            "Metadata-Version: 1.1\nName: old-thing\nVersion: 0.5\n",
        )
        .unwrap();
        assert_eq!(
            probe_versions(dir.path(), "foo-bar\nFOO.bar\nold-thing\nnot-there\n"),
            "dist foo-bar 1.2.post1\ndist FOO.bar 1.2.post1\ndist old-thing 0.5\ndist not-there -\n"
        );
        // A real installed distribution: the same version as importlib.metadata's.
        let real = std::process::Command::new("python3")
            .args(["-c", "import importlib.metadata as m; print(m.version('pip'))"])
            .output()
            .unwrap();
        assert!(real.status.success());
        let want = format!("dist pip {}", String::from_utf8(real.stdout).unwrap());
        assert_eq!(probe_versions(dir.path(), "pip"), want);
    }

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
            index_url: None,
            constraints: None,
            owner: None,
            probe_user: None,
        };
        let out = "venv yes\ndist six 1.15.0\ndist idna 3.4\n";
        assert_eq!(diff_of(&p, out).unwrap().unwrap().summary, "change six 1.15.0 → 1.16.0");
        assert_eq!(diff_of(&p, "venv yes\ndist six 1.16.0\ndist idna 3.4\n").unwrap(), None);
        let none = diff_of(&p, "venv no\n").unwrap().unwrap().summary;
        assert_eq!(none, "create venv /v, install six==1.16.0, install idna");
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
            index_url: None,
            constraints: None,
            owner: None,
            probe_user: None,
        };
        let change = local_diff(&p).unwrap().unwrap().summary;
        assert_eq!(
            change, "install hactl-none",
            "pip is found in the venv, hactl-none is not"
        );
    }

    #[test]
    fn an_unreachable_index_is_one_clear_error_before_pip_runs() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pip {
            venv: dir.path().join("v").display().to_string(),
            packages: Templated::Value(vec!["six==1.16.0".into()]),
            python: "python3".into(),
            extra_args: vec![],
            index_url: Some("http://127.0.0.1:9/simple".into()),
            constraints: None,
            owner: None,
            probe_user: None,
        };
        let out = crate::modules::local_apply(&p);
        assert_ne!(out.rc, 0);
        assert!(
            out.stderr.contains(
                "the package index http://127.0.0.1:9/simple cannot be reached: [Errno 111] Connection refused"
            ),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn a_changed_constraints_file_re_resolves_and_a_wrong_owner_is_a_change() {
        let p = Pip {
            venv: "/v".into(),
            packages: Templated::Value(vec!["six==1.16.0".into()]),
            python: "python3".into(),
            extra_args: vec![],
            index_url: None,
            constraints: Some("/c.txt".into()),
            owner: Some("airflow".into()),
            probe_user: None,
        };
        let base = "venv yes\nowner airflow\ndist six 1.16.0\n";
        assert_eq!(diff_of(&p, &format!("{base}constraints aa\nstamp aa\n")).unwrap(), None);
        assert_eq!(
            diff_of(&p, &format!("{base}constraints bb\nstamp aa\n"))
                .unwrap()
                .unwrap()
                .summary,
            "re-resolve the packages against /c.txt (it changed)"
        );
        let root_owned = "venv yes\nowner root\ndist six 1.16.0\nconstraints aa\nstamp aa\n";
        assert_eq!(
            diff_of(&p, root_owned).unwrap().unwrap().summary,
            "owner root → airflow (everything in it, writable by airflow alone)"
        );
        let foreign = "venv yes\nowner airflow\nforeign yes\n";
        assert_eq!(
            diff_of(&p, foreign).unwrap().unwrap().summary,
            "rebuild the venv /v: something in it was not airflow's alone (the old one is moved aside, \
             never run, and removed), install six==1.16.0"
        );
        let stray = format!("{base}stray /v/lib/python3.11/site-packages/evil.pth\n");
        let err = diff_of(&p, &stray).unwrap_err().to_string();
        assert!(err.contains("evil.pth"), "{err}");
    }

    /// Whether the tests run as root (the cases with another user need it).
    fn as_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid() == 0
    }

    #[test]
    fn a_venv_is_made_root_s_and_a_planted_pth_file_is_refused() {
        if !as_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let venv = dir.path().join("v");
        let p = Pip {
            venv: venv.display().to_string(),
            packages: Templated::Value(vec![]),
            python: "python3".into(),
            extra_args: vec![],
            index_url: None,
            constraints: None,
            owner: Some("root".into()),
            probe_user: Some("nobody".into()),
        };
        let out = crate::modules::local_apply(&p);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert_eq!(
            local_diff(&p).unwrap(),
            None,
            "the probe runs as nobody and finds it converged"
        );
        // What another owner could write is rebuilt, never run nor read (a FIFO hangs nothing).
        let bin = venv.join("bin");
        std::os::unix::fs::chown(&bin, Some(65534), None).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", bin.join("planted")).unwrap();
        std::os::unix::fs::lchown(bin.join("planted"), Some(65534), None).unwrap();
        let site = site_packages(&venv);
        let fifo = site.join("x-1.dist-info");
        std::fs::create_dir(&fifo).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(fifo.join("RECORD"))
            .status()
            .unwrap()
            .success());
        assert!(local_diff(&p).unwrap().unwrap().summary.starts_with("rebuild the venv"));
        let out = crate::modules::local_apply(&p);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert!(std::fs::symlink_metadata(bin.join("planted")).is_err());
        assert!(!fifo.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the old venv is removed"
        );
        assert_eq!(local_diff(&p).unwrap(), None);
        // Made under a root session's umask 077: readable by the services, writable by root alone.
        std::fs::remove_dir_all(&venv).unwrap();
        let out = crate::modules::run_local(&format!("umask 077\n{}", Resource::apply(&p)));
        assert_eq!(out.rc, 0, "{}", out.stderr);
        let private = std::process::Command::new("find")
            .args([
                venv.to_str().unwrap(),
                "!",
                "-type",
                "l",
                "(",
                "!",
                "-perm",
                "-o+r",
                "-o",
                "-perm",
                "/022",
                ")",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&private.stdout), "");
        // A .pth file no package installed: the plan and the apply refuse, naming it.
        let site = site_packages(&venv);
        std::fs::write(site.join("evil.pth"), "import os\n").unwrap();
        let err = local_diff(&p).unwrap_err().to_string();
        assert!(err.contains("evil.pth"), "{err}");
        let out = crate::modules::local_apply(&p);
        assert_ne!(out.rc, 0);
        assert!(out.stderr.contains("evil.pth"), "{}", out.stderr);
    }
}
