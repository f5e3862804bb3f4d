//! `airflow_db`: Airflow's metadata database at the schema revision of the installed airflow.
//! One host migrates (`migrate: true`, `airflow db migrate`); the others wait for it, so that
//! their services never start against an old schema. The probe reads the migrations' head from
//! the installed files and the database's revision through the cluster's connection URL (the
//! one airflow.cfg holds, given through the environment), without starting the airflow CLI: a
//! no-op run costs a fraction of a second, and the plan says whether a migration would run
//! (`would migrate the metadata database from revision X to Y`). A database that does not answer
//! fails the step with psycopg2's reason (which host, which address, what answered): at once
//! before a migration, after `unreachable_grace` seconds during a wait.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("airflow_db.sh");
/// The probe's Python (run by the venv's interpreter).
const PROBE_PY: &str = concat!(include_str!("dist_version.py"), include_str!("airflow_db.py"));

/// Arguments of `airflow_db`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirflowDb {
    /// The venv's interpreter (has airflow's migrations and psycopg2).
    pub python: String,
    /// The metadata database's URL (`[database] sql_alchemy_conn`; SQLAlchemy's driver suffix
    /// is dropped).
    pub url: String,
    /// The airflow CLI that migrates (runs as the airflow user with that configuration).
    pub airflow: String,
    /// Whether this host migrates; otherwise it waits for another host's migration.
    pub migrate: Templated<bool>,
    /// Seconds to wait for the database to reach the installed revision.
    #[serde(default = "fifteen_minutes")]
    pub timeout: u64,
    /// Seconds the database may not answer during a wait before the step fails with the reason.
    #[serde(default = "half_a_minute")]
    pub unreachable_grace: u64,
    /// Who runs the probe's python (`plan` included), with the URL in its environment: the
    /// airflow user, never root.
    pub user: Option<String>,
}

fn fifteen_minutes() -> u64 {
    900
}

fn half_a_minute() -> u64 {
    30
}

/// The schema as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// Not known: why (airflow not installed yet, database unreachable).
    Unknown(String),
    /// Known.
    Known {
        /// The installed airflow's head revision.
        head: String,
        /// The database's revision (`-`: empty database).
        current: String,
        /// The installed airflow-core version.
        version: String,
    },
}

impl Fact for Schema {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("schema")? {
            "unknown" => Ok(Schema::Unknown(lines.get("reason").unwrap_or("no reason").to_string())),
            "known" => Ok(Schema::Known {
                head: lines.require("head")?.to_string(),
                current: lines.require("current")?.to_string(),
                version: lines.require("version")?.to_string(),
            }),
            other => Err(miette!("unknown schema state `{other}` from the probe")),
        }
    }
}

impl Resource for AirflowDb {
    type Fact = Schema;

    fn probe(&self) -> String {
        let vars = [
            ("HACTL_PYTHON", self.python.as_str()),
            ("HACTL_DB_URL", &self.url),
            ("HACTL_PROBE_PY", PROBE_PY),
            ("HACTL_USER", self.user.as_deref().unwrap_or("")),
        ];
        script(SH, &vars, "hactl_probe")
    }

    fn diff(&self, schema: &Schema) -> Result<Option<Change>> {
        let migrate = self.migrate.value("migrate")?;
        let what = match schema {
            Schema::Known { head, .. } if head == "-" => {
                return Err(miette!(
                    "the installed airflow has no migrations: is it installed whole?"
                ))
            }
            Schema::Known { head, current, .. } if head == current => return Ok(None),
            Schema::Known { head, current, version } if current == "-" => {
                format!("the empty metadata database to revision {head} (airflow {version})")
            }
            Schema::Known { head, current, version } => {
                format!("the metadata database from revision {current} to {head} (airflow {version})")
            }
            Schema::Unknown(why) => format!("the metadata database (its revision is unknown: {why})"),
        };
        Ok(Some(if migrate {
            Change::new(format!("migrate {what}"))
        } else {
            Change::not_counted(format!("wait for another host to migrate {what}"))
        }))
    }

    fn apply(&self) -> String {
        let migrate = if self.migrate.or_default() { "yes" } else { "no" };
        let timeout = self.timeout.to_string();
        let grace = self.unreachable_grace.to_string();
        let vars = [
            ("HACTL_PYTHON", self.python.as_str()),
            ("HACTL_DB_URL", &self.url),
            ("HACTL_PROBE_PY", PROBE_PY),
            ("HACTL_AIRFLOW", &self.airflow),
            ("HACTL_MIGRATE", migrate),
            ("HACTL_TIMEOUT", &timeout),
            ("HACTL_UNREACHABLE_GRACE", &grace),
            ("HACTL_USER", self.user.as_deref().unwrap_or("")),
        ];
        script(SH, &vars, "hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{diff_of, local_apply, local_diff};

    fn module(migrate: bool, python: &str) -> AirflowDb {
        AirflowDb {
            python: python.into(),
            url: "postgresql+psycopg2://u:p@127.0.0.1:1/x".into(),
            airflow: "/usr/local/bin/airflow".into(),
            migrate: Templated::Value(migrate),
            timeout: 5,
            unreachable_grace: 3,
            user: None,
        }
    }

    #[test]
    fn the_probe_runs_as_the_user_with_the_url_alone() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let python = dir.path().join("python");
        let script = "#!/bin/sh\necho 'schema unknown'\necho \"reason $(id -un) ${HACTL_DB_URL%%:*} ${HACTL_PROBE_PY:-no-code-in-env} $HOME\"\n";
        std::fs::write(&python, script).unwrap();
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
        let m = AirflowDb {
            user: Some("nobody".into()),
            ..module(true, &python.display().to_string())
        };
        let change = local_diff(&m).unwrap().unwrap();
        assert!(
            change
                .summary
                .contains("nobody postgresql+psycopg2 no-code-in-env /nonexistent"),
            "{}",
            change.summary
        );
    }

    #[test]
    fn plan_lines_say_what_migrates_or_waits() {
        let m = module(true, "/v/bin/python");
        let known = |current: &str| format!("schema known\nhead abc\ncurrent {current}\nversion 3.3.2\n");
        assert_eq!(diff_of(&m, &known("abc")).unwrap(), None);
        assert_eq!(
            diff_of(&m, &known("-")).unwrap().unwrap().summary,
            "migrate the empty metadata database to revision abc (airflow 3.3.2)"
        );
        assert_eq!(
            diff_of(&m, &known("old")).unwrap().unwrap().summary,
            "migrate the metadata database from revision old to abc (airflow 3.3.2)"
        );
        let wait = diff_of(&module(false, "/v/bin/python"), &known("old"))
            .unwrap()
            .unwrap();
        assert!(
            !wait.counts && wait.summary.starts_with("wait for another host to migrate"),
            "{wait:?}"
        );
        assert!(diff_of(&m, "schema known\nhead -\ncurrent -\nversion 3\n").is_err());
    }

    #[test]
    fn a_host_without_airflow_is_unknown_not_an_error() {
        let change = local_diff(&module(true, "/nonexistent/python")).unwrap().unwrap();
        assert_eq!(
            change.summary,
            "migrate the metadata database (its revision is unknown: airflow is not installed yet)"
        );
    }

    /// A stand-in for the venv's interpreter that prints `answers` (the probe's lines), in turn
    /// one per call, the last one again and again.
    fn fake_python(dir: &std::path::Path, answers: &[&str]) -> String {
        let mut cases = String::new();
        for (i, answer) in answers.iter().enumerate() {
            cases.push_str(&format!("  {i}) printf '%s\\n' '{answer}' ;;\n"));
        }
        let last = answers.last().expect("an answer");
        let script = format!(
            "#!/bin/sh\nn=$(cat {d}/calls 2>/dev/null || echo 0); echo $((n + 1)) > {d}/calls\ncase $n in\n{cases}  *) printf '%s\\n' '{last}' ;;\nesac\n",
            d = dir.display()
        );
        let path = dir.join("python");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    const NO_ROUTE: &str = "head abc\nversion 3.3.2\nschema unknown\nreason connection to server at \"hactl-lb\" (10.9.9.9), port 5000 failed: No route to host";

    #[test]
    fn a_database_that_does_not_answer_fails_at_once_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let m = AirflowDb {
            python: fake_python(dir.path(), &[NO_ROUTE]),
            ..module(true, "")
        };
        let started = std::time::Instant::now();
        let out = local_apply(&m);
        assert_ne!(out.rc, 0, "it fails");
        assert!(
            out.stderr.contains(
                "does not answer: connection to server at \"hactl-lb\" (10.9.9.9), port 5000 failed: No route to host"
            ),
            "{}",
            out.stderr
        );
        assert!(started.elapsed().as_secs() < 2, "at once, not after a wait");
    }

    #[test]
    fn a_wait_fails_with_the_reason_once_the_database_stops_answering() {
        let dir = tempfile::tempdir().unwrap();
        let behind = "head abc\nversion 3.3.2\nschema known\ncurrent old";
        let m = AirflowDb {
            python: fake_python(dir.path(), &[behind, behind, NO_ROUTE]),
            timeout: 60,
            unreachable_grace: 3,
            ..module(false, "")
        };
        let started = std::time::Instant::now();
        let out = local_apply(&m);
        assert_ne!(out.rc, 0, "it fails");
        assert!(
            out.stderr.contains("has not answered for 3s: connection to server at"),
            "{}",
            out.stderr
        );
        assert!(
            started.elapsed().as_secs() < 20,
            "within the grace, not the whole timeout"
        );
    }

    #[test]
    fn a_wait_ends_when_the_database_reaches_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let behind = "head abc\nversion 3.3.2\nschema known\ncurrent old";
        let done = "head abc\nversion 3.3.2\nschema known\ncurrent abc";
        let m = AirflowDb {
            python: fake_python(dir.path(), &[behind, behind, done]),
            ..module(false, "")
        };
        let out = local_apply(&m);
        assert_eq!(out.rc, 0, "{}", out.stderr);
    }

    #[test]
    fn the_probe_finds_the_head_of_real_migration_files() {
        // A chain aaa → bbb → ccc in a versions directory, and a database that does not answer.
        let dir = tempfile::tempdir().unwrap();
        let versions = dir.path().join("versions");
        std::fs::create_dir(&versions).unwrap();
        for (rev, down) in [("aaa", "None"), ("bbb", "\"aaa\""), ("ccc", "\"bbb\"")] {
            let text = format!("revision = \"{rev}\"\ndown_revision = {down}\n");
            std::fs::write(versions.join(format!("{rev}.py")), text).unwrap();
        }
        let purelib = r#"os.path.join(sysconfig.get_paths()["purelib"], "airflow", "migrations", "versions")"#;
        assert!(PROBE_PY.contains(purelib));
        let probe = PROBE_PY
            .replace(purelib, &format!("{:?}", versions.display().to_string()))
            .replace(
                "import psycopg2\n",
                "raise ConnectionError('no database at 127.0.0.1:1')\n",
            );
        let out = std::process::Command::new("python3")
            .args(["-c", &probe])
            .env("HACTL_DB_URL", "postgresql+psycopg2://u:p@127.0.0.1:1/x")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout, "head ccc\nversion -\nschema unknown\nreason no database at 127.0.0.1:1\n",
            "the password in the URL is never printed"
        );
    }
}
