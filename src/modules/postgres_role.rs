//! `postgres_role`: a PostgreSQL login role with a password and, optionally, a database it owns
//! (like Ansible's postgresql_user and postgresql_db), made through a server or an LB as a
//! superuser. Passwords never appear on a command line, and names and the password reach SQL
//! through psql's own quoting. The plan says `would create role airflow, create database airflow
//! owned by airflow`, or which part differs.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("postgres_role.sh");

/// Arguments of `postgres_role`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresRole {
    /// The role.
    pub name: String,
    /// Its password.
    pub password: String,
    /// A database it owns, created when missing.
    pub database: Option<String>,
    /// Server (or LB) address.
    #[serde(default = "localhost")]
    pub host: String,
    /// Its port.
    #[serde(default = "pg_port")]
    pub port: Templated<u16>,
    /// The superuser that creates them.
    #[serde(default = "postgres")]
    pub login_user: String,
    /// Its password.
    pub login_password: String,
    /// Seconds to wait for a writable primary when applying.
    #[serde(default = "sixty")]
    pub timeout: u64,
}

fn localhost() -> String {
    "127.0.0.1".into()
}
fn pg_port() -> Templated<u16> {
    Templated::Value(5432)
}
fn postgres() -> String {
    "postgres".into()
}
fn sixty() -> u64 {
    60
}

/// The role and database as the server reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleFact {
    /// The server could not be asked: why.
    Unreachable(String),
    /// The server answered.
    Known {
        /// Whether the role exists.
        role: bool,
        /// The database's owner (`None`: no such database).
        database_owner: Option<String>,
        /// Whether the role logs in with the wanted password.
        login: bool,
    },
}

impl Fact for RoleFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        if lines.require("server")? == "-" {
            return Ok(RoleFact::Unreachable(
                lines.get("reason").unwrap_or("no answer").to_string(),
            ));
        }
        let database = lines.require("database")?;
        Ok(RoleFact::Known {
            role: lines.require("role")? == "present",
            database_owner: (database != "-").then(|| database.to_string()),
            login: lines.require("login")? == "ok",
        })
    }
}

impl PostgresRole {
    fn script(&self, call: &str) -> String {
        let (port, timeout) = (self.port.or_default().to_string(), self.timeout.to_string());
        let vars = [
            ("HACTL_ROLE", self.name.as_str()),
            ("HACTL_PASSWORD", &self.password),
            ("HACTL_DB", self.database.as_deref().unwrap_or("")),
            ("HACTL_HOST", &self.host),
            ("HACTL_PORT", &port),
            ("HACTL_LOGIN_USER", &self.login_user),
            ("HACTL_LOGIN_PASSWORD", &self.login_password),
            ("HACTL_TIMEOUT", &timeout),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for PostgresRole {
    type Fact = RoleFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &RoleFact) -> Result<Option<Change>> {
        self.port.value("port")?;
        let create_db = |parts: &mut Vec<String>| {
            if let Some(db) = &self.database {
                parts.push(format!("create database {db} owned by {}", self.name));
            }
        };
        let mut parts = Vec::new();
        match fact {
            RoleFact::Unreachable(why) => {
                parts.push(format!("create role {}", self.name));
                create_db(&mut parts);
                let last = parts.pop().expect("one part at least");
                parts.push(format!("{last} (the server does not answer yet: {why})"));
            }
            RoleFact::Known {
                role,
                database_owner,
                login,
            } => {
                if !role {
                    parts.push(format!("create role {}", self.name));
                } else if !login {
                    parts.push(format!("set the password of role {}", self.name));
                }
                match (&self.database, database_owner) {
                    (Some(_), None) => create_db(&mut parts),
                    (Some(db), Some(owner)) if *owner != self.name => {
                        return Err(miette::miette!(
                            "database {db} exists but is owned by {owner}, not {}: hactl will not take it over",
                            self.name
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok((!parts.is_empty()).then(|| Change::new(parts.join(", "))))
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn role() -> PostgresRole {
        PostgresRole {
            name: "air-flow".into(),
            password: "p'w; DROP TABLE x; --".into(),
            database: Some("airflow".into()),
            host: "127.0.0.1".into(),
            port: Templated::Value(5000),
            login_user: "postgres".into(),
            login_password: "s".into(),
            timeout: 60,
        }
    }

    #[test]
    fn plans_exactly_what_differs() {
        let fresh = "server up\nrole absent\ndatabase -\nlogin fails\n";
        assert_eq!(
            diff_of(&role(), fresh).unwrap().unwrap().summary,
            "create role air-flow, create database airflow owned by air-flow"
        );
        let in_sync = "server up\nrole present\ndatabase air-flow\nlogin ok\n";
        assert_eq!(diff_of(&role(), in_sync).unwrap(), None);
        let new_password = "server up\nrole present\ndatabase air-flow\nlogin fails\n";
        assert_eq!(
            diff_of(&role(), new_password).unwrap().unwrap().summary,
            "set the password of role air-flow"
        );
        let foreign = "server up\nrole present\ndatabase someone\nlogin ok\n";
        assert!(diff_of(&role(), foreign)
            .unwrap_err()
            .to_string()
            .contains("owned by someone"));
        let down = "server -\nreason connection refused\n";
        assert!(diff_of(&role(), down)
            .unwrap()
            .unwrap()
            .summary
            .contains("does not answer yet"));
        let unrendered = PostgresRole {
            port: Templated::Template("{{ x }}".into()),
            ..role()
        };
        assert!(diff_of(&unrendered, in_sync)
            .unwrap_err()
            .to_string()
            .contains("did not render to a value"));
    }

    /// Where nothing listens on the port yet (stage pg-lb's own HAProxy is installed later in the
    /// run that probes), the probe says so at once instead of waiting out its 15 tries.
    #[test]
    fn a_port_nobody_listens_on_is_reported_at_once() {
        let refused = "psql() { echo 'psql: error: connection to server at \"127.0.0.1\", port 5000 failed: Connection refused' >&2; return 2; }\n";
        let script = role()
            .probe()
            .replacen("hactl_probe", &format!("{refused}hactl_probe"), 1);
        let started = std::time::Instant::now();
        let out = crate::modules::run_local(&script);
        assert_eq!(out.rc, 0, "{out:?}");
        assert!(started.elapsed().as_secs() < 3, "the probe waited: {out:?}");
        let change = diff_of(&role(), &out.stdout).unwrap().unwrap();
        assert!(change.summary.contains("does not answer yet"), "{}", change.summary);
        assert!(out.stdout.contains("Connection refused"), "{}", out.stdout);
    }

    #[test]
    fn values_reach_the_script_only_as_variables() {
        for script in [role().probe(), role().apply()] {
            let body: Vec<&str> = script.lines().filter(|l| !l.starts_with("HACTL_")).collect();
            assert!(
                !body.join("\n").contains("DROP TABLE"),
                "a value leaked into the script text"
            );
        }
    }
}
