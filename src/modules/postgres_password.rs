//! `postgres_password`: the passwords of existing PostgreSQL roles on a running cluster (Patroni's
//! own users, whose passwords Patroni sets only when it bootstraps the cluster), read and set
//! through the local server's socket as its superuser by peer authentication (no password to log
//! in with, so the superuser's own password can change too). The primary stores a new SCRAM
//! verifier made on the node (the password never reaches the server, a log or a command line);
//! a replica, whose catalog is the primary's, waits until the change has reached it. A server that
//! does not run here has nothing to change (Patroni sets the passwords when it bootstraps). The
//! plan says `set the password of roles replicator, postgres on the primary`.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::{script, Change, Fact, ProbeLines, Resource};

/// The module's shell functions.
const SH: &str = include_str!("postgres_password.sh");
/// Its SCRAM-SHA-256 side, run with python3 (`check`, `make INDEX`).
const PY: &str = include_str!("postgres_password.py");

/// Arguments of `postgres_password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresPassword {
    /// The roles and the passwords they log in with.
    pub roles: Vec<RolePassword>,
    /// The operating-system user that is the server's superuser (peer authentication).
    #[serde(default = "postgres")]
    pub os_user: String,
    /// The server's socket directory.
    #[serde(default = "socket")]
    pub socket: String,
    /// The server's port (its socket's name).
    #[serde(default = "pg_port")]
    pub port: u16,
    /// The psql to run.
    #[serde(default = "psql")]
    pub psql: String,
    /// The python3 that makes and checks SCRAM verifiers (root's, run isolated: `-I`).
    #[serde(default = "python")]
    pub python: String,
    /// Seconds a replica waits for the primary's change when applying.
    #[serde(default = "sixty")]
    pub timeout: u64,
}

/// One role and its password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePassword {
    /// The role (it must exist).
    pub name: String,
    /// Its password.
    pub password: String,
}

fn postgres() -> String {
    "postgres".into()
}
fn socket() -> String {
    "/var/run/postgresql".into()
}
fn pg_port() -> u16 {
    5432
}
fn psql() -> String {
    "psql".into()
}
fn python() -> String {
    "/usr/bin/python3".into()
}
fn sixty() -> u64 {
    60
}

/// One role's stored password against the wanted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// It is the wanted password's.
    Matches,
    /// It is another (or none, or not SCRAM).
    Differs,
    /// No such role.
    Absent,
}

/// The local server as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordFact {
    /// No server answers here: why.
    NoServer(String),
    /// The server answered.
    Server {
        /// Whether it is the primary.
        primary: bool,
        /// Each role's password, in the arguments' order.
        roles: Vec<Stored>,
    },
}

impl Fact for PasswordFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        if lines.require("server")? == "-" {
            return Ok(PasswordFact::NoServer(
                lines.get("reason").unwrap_or("no answer").into(),
            ));
        }
        let primary = lines.require("primary")? == "yes";
        let mut roles = Vec::new();
        while let Some(state) = lines.get(&format!("role{}", roles.len() + 1)) {
            roles.push(match state {
                "ok" => Stored::Matches,
                "differs" => Stored::Differs,
                "absent" => Stored::Absent,
                other => return Err(miette!("unexpected role state `{other}` from the probe")),
            });
        }
        Ok(PasswordFact::Server { primary, roles })
    }
}

impl PostgresPassword {
    fn script(&self, call: &str) -> String {
        let names: Vec<&str> = self.roles.iter().map(|r| r.name.as_str()).collect();
        let (names, port, timeout) = (names.join("\n"), self.port.to_string(), self.timeout.to_string());
        let passwords: Vec<(String, &str)> = (self.roles.iter().enumerate())
            .map(|(i, r)| (format!("HACTL_PASSWORD_{}", i + 1), r.password.as_str()))
            .collect();
        let mut vars = vec![
            ("HACTL_NAMES", names.as_str()),
            ("HACTL_OS_USER", &self.os_user),
            ("HACTL_SOCKET", &self.socket),
            ("HACTL_PORT", &port),
            ("HACTL_PSQL", &self.psql),
            ("HACTL_PYTHON", &self.python),
            ("HACTL_PY", PY),
            ("HACTL_TIMEOUT", &timeout),
        ];
        vars.extend(passwords.iter().map(|(k, v)| (k.as_str(), *v)));
        script(SH, &vars, call)
    }

    /// The roles whose stored password is `which`, by name.
    fn named(&self, roles: &[Stored], which: Stored) -> Vec<&str> {
        (self.roles.iter().zip(roles))
            .filter(|(_, s)| **s == which)
            .map(|(r, _)| r.name.as_str())
            .collect()
    }
}

impl Resource for PostgresPassword {
    type Fact = PasswordFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &PasswordFact) -> Result<Option<Change>> {
        if let Some(bad) = self.roles.iter().find(|r| r.name.is_empty() || r.name.contains('\n')) {
            return Err(miette!("role name {:?}: not a role name", bad.name));
        }
        let PasswordFact::Server { primary, roles } = fact else {
            return Ok(None);
        };
        if roles.len() != self.roles.len() {
            return Err(miette!(
                "the probe reported {} roles, not {}",
                roles.len(),
                self.roles.len()
            ));
        }
        let absent = self.named(roles, Stored::Absent);
        if !absent.is_empty() {
            return Err(miette!(
                "role {} does not exist on this server: hactl sets the passwords of existing roles only",
                absent.join(", ")
            ));
        }
        let differing = self.named(roles, Stored::Differs);
        if differing.is_empty() {
            return Ok(None);
        }
        let noun = if differing.len() == 1 { "role" } else { "roles" };
        let list = differing.join(", ");
        Ok(Some(if *primary {
            Change::new(format!("set the password of {noun} {list} on the primary"))
        } else {
            Change::not_counted(format!("wait for the primary to set the password of {noun} {list}"))
        }))
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{diff_of, local_apply, local_diff, run_local};
    use std::path::Path;
    use std::process::Command;

    fn module(passwords: [&str; 2]) -> PostgresPassword {
        PostgresPassword {
            roles: vec![
                RolePassword {
                    name: "post-gres".into(),
                    password: passwords[0].into(),
                },
                RolePassword {
                    name: "repl icator".into(),
                    password: passwords[1].into(),
                },
            ],
            os_user: postgres(),
            socket: socket(),
            port: pg_port(),
            psql: psql(),
            python: python(),
            timeout: 5,
        }
    }

    #[test]
    fn the_primary_sets_a_replica_waits_a_stopped_server_has_nothing_to_change() {
        let m = module(["a", "b"]);
        assert_eq!(diff_of(&m, "server -\nreason not running\n").unwrap(), None);
        assert_eq!(
            diff_of(&m, "server up\nprimary yes\nrole1 ok\nrole2 ok\n").unwrap(),
            None
        );
        let primary = diff_of(&m, "server up\nprimary yes\nrole1 differs\nrole2 ok\n")
            .unwrap()
            .unwrap();
        assert_eq!(primary.summary, "set the password of role post-gres on the primary");
        assert!(primary.counts);
        let replica = diff_of(&m, "server up\nprimary no\nrole1 differs\nrole2 differs\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            replica.summary,
            "wait for the primary to set the password of roles post-gres, repl icator"
        );
        assert!(!replica.counts, "a replica's wait is not a change");
        let absent = diff_of(&m, "server up\nprimary yes\nrole1 ok\nrole2 absent\n").unwrap_err();
        assert!(
            absent.to_string().contains("role repl icator does not exist"),
            "{absent}"
        );
        assert!(diff_of(&m, "server up\nprimary yes\nrole1 ok\n").is_err());
        assert!(diff_of(&m, "server up\nprimary yes\nrole1 maybe\nrole2 ok\n").is_err());
    }

    #[test]
    fn passwords_reach_the_script_only_as_variables() {
        let m = module(["p'w; DROP TABLE x; --", "$(reboot)"]);
        for script in [m.probe(), m.apply()] {
            let body: Vec<&str> = script.lines().filter(|l| !l.starts_with("HACTL_")).collect();
            let body = body.join("\n");
            assert!(
                !body.contains("DROP TABLE") && !body.contains("reboot"),
                "a value leaked"
            );
        }
    }

    /// Runs the python side as the probe does: `args`, the server's lines on stdin.
    fn py(args: &str, stdin: &str, passwords: &[&str]) -> String {
        let vars: String = (passwords.iter().enumerate())
            .map(|(i, p)| {
                format!(
                    "HACTL_PASSWORD_{}={}; export HACTL_PASSWORD_{}\n",
                    i + 1,
                    crate::quote::q(p),
                    i + 1
                )
            })
            .collect();
        let script = format!(
            "{vars}HACTL_PY={}; HACTL_IN={}\nprintf '%s' \"$HACTL_IN\" | /usr/bin/python3 -I -c \"$HACTL_PY\" {args}\n",
            crate::quote::q(PY),
            crate::quote::q(stdin)
        );
        let out = run_local(&script);
        assert_eq!(out.rc, 0, "python failed: {}", out.stderr);
        out.stdout
    }

    #[test]
    fn scram_verifiers_are_checked_and_made_as_postgresql_does() {
        // RFC 7677's example (user, pencil): its server signature checks out with these keys.
        let rfc = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
                   wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
        let lines = format!("1|{rfc}\n2|{rfc}\n3|absent\n4|none\n5|md5abc\n");
        let passwords = ["pencil", "pencil2", "x", "y", "z"];
        assert_eq!(
            py("check", &lines, &passwords),
            "role1 ok\nrole2 differs\nrole3 absent\nrole4 differs\nrole5 differs\n"
        );
        // A made verifier checks out, with a fresh salt each time; a non-ASCII password is
        // SASLprep'd (NFKC: the ligature ﬁ is fi), as libpq does when it logs in.
        for password in ["s3cret \"'$\\`", "ﬁsh\u{00A0}x"] {
            let made = py("make 1", "", &[password]);
            assert!(made.starts_with("SCRAM-SHA-256$4096:"), "{made}");
            assert_ne!(made, py("make 1", "", &[password]));
            assert_eq!(py("check", &format!("1|{}", made.trim()), &[password]), "role1 ok\n");
        }
        let ligature = py("make 1", "", &["ﬁsh x"]);
        assert_eq!(
            py("check", &format!("1|{}", ligature.trim()), &["fish x"]),
            "role1 ok\n"
        );
    }

    /// A throwaway PostgreSQL 15 primary and its streaming replica (Debian's binaries) as user
    /// postgres, on a private socket directory and loopback ports; stopped when dropped.
    struct Servers {
        dir: tempfile::TempDir,
        primary: u16,
        replica: u16,
    }

    const BIN: &str = "/usr/lib/postgresql/15/bin";

    fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    impl Servers {
        /// `None` (said on stderr) where this machine has no PostgreSQL 15 or the test is not root.
        fn start() -> Option<Servers> {
            let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
            if !Path::new(BIN).join("postgres").exists() || !root {
                eprintln!("no PostgreSQL 15 server here (or not root): the real-server test is left out");
                return None;
            }
            let (dir, primary, replica) = (tempfile::tempdir().unwrap(), free_port(), free_port());
            let d = dir.path().display();
            let start = |data: &str, port: u16| {
                format!("{BIN}/pg_ctl -s -w -D {d}/{data} -l {d}/{data}.log -o \"-k {d} -p {port} -c listen_addresses=127.0.0.1\" start")
            };
            let script = format!(
                "chown postgres {d} && chmod 0755 {d} && runuser -u postgres -- sh -c '\
                 {BIN}/initdb -A peer --auth-host=scram-sha-256 -U postgres -D {d}/primary >/dev/null && {} && \
                 {BIN}/psql -h {d} -p {primary} -U postgres -XqAtc \"create role \\\"repl icator\\\" login replication password '\"'\"'old'\"'\"'\" postgres && \
                 {BIN}/pg_basebackup -h {d} -p {primary} -U postgres -R -D {d}/replica && {}'",
                start("primary", primary),
                start("replica", replica),
            );
            let out = run_local(&script);
            assert_eq!(
                out.rc, 0,
                "the test servers did not start: {}{}",
                out.stdout, out.stderr
            );
            Some(Servers { dir, primary, replica })
        }

        /// The module for `passwords` on the server at `port`.
        fn module(&self, port: u16, passwords: [&str; 2]) -> PostgresPassword {
            let mut m = module(passwords);
            m.roles[0].name = "postgres".into();
            m.socket = self.dir.path().display().to_string();
            m.port = port;
            m.psql = format!("{BIN}/psql");
            m
        }

        /// Whether `user` logs in to the primary over TCP with `password` (scram-sha-256).
        fn logs_in(&self, user: &str, password: &str) -> bool {
            let port = self.primary.to_string();
            Command::new(format!("{BIN}/psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    user,
                    "-d",
                    "postgres",
                    "-XAtc",
                    "select 1",
                ])
                .env("PGPASSWORD", password)
                .output()
                .is_ok_and(|o| o.status.success())
        }
    }

    impl Drop for Servers {
        fn drop(&mut self) {
            let d = self.dir.path().display();
            for data in ["replica", "primary"] {
                run_local(&format!(
                    "runuser -u postgres -- {BIN}/pg_ctl -s -w -D {d}/{data} stop -m immediate"
                ));
            }
        }
    }

    #[test]
    fn the_primary_sets_new_passwords_once_its_replica_waits_for_them_logins_take_them() {
        let Some(servers) = Servers::start() else {
            return;
        };
        let passwords = ["new superuser pw ' \"", "new repl pw $x"];
        let (primary, mut replica) = (
            servers.module(servers.primary, passwords),
            servers.module(servers.replica, passwords),
        );
        assert_eq!(
            local_diff(&primary).unwrap().unwrap().summary,
            "set the password of roles postgres, repl icator on the primary"
        );
        let waits = local_diff(&replica).unwrap().unwrap();
        assert!(
            waits.summary.starts_with("wait for the primary") && !waits.counts,
            "{waits:?}"
        );
        replica.timeout = 2;
        let alone = local_apply(&replica);
        assert!(
            alone.rc != 0
                && alone
                    .stderr
                    .contains("the primary did not set the new passwords within 2s"),
            "a replica without its primary's change fails: {alone:?}"
        );
        let applied = local_apply(&primary);
        assert_eq!(applied.rc, 0, "apply failed: {}{}", applied.stdout, applied.stderr);
        assert_eq!(local_diff(&primary).unwrap(), None, "a second run changes nothing");
        replica.timeout = 30;
        let followed = local_apply(&replica);
        assert_eq!(followed.rc, 0, "the replica waits for the change: {followed:?}");
        assert_eq!(local_diff(&replica).unwrap(), None);
        assert!(servers.logs_in("postgres", passwords[0]) && servers.logs_in("repl icator", passwords[1]));
        assert!(!servers.logs_in("repl icator", "old"));
        let log = std::fs::read_to_string(servers.dir.path().join("primary.log")).unwrap_or_default();
        assert!(!log.contains("new repl pw"), "a password reached the server's log");
        let stopped = PostgresPassword {
            socket: "/nonexistent".into(),
            ..primary
        };
        assert_eq!(local_diff(&stopped).unwrap(), None, "no server here: nothing to change");
    }
}
