//! `rabbitmq_user`: a RabbitMQ user with a password and permissions per vhost (like Ansible's
//! rabbitmq_user). The password reaches rabbitmqctl on stdin, never as an argument. The plan says
//! `would create rabbitmq user airflow, grant … on vhost airflow`, or which part differs.

use miette::Result;
use serde::{Deserialize, Serialize};

use super::rabbitmq::{json_line, script, NodeStatus};
use super::{Change, Fact, ProbeLines, Resource};

/// The module's shell functions.
const SH: &str = include_str!("rabbitmq_user.sh");

/// One vhost's permissions (regular expressions, as rabbitmqctl takes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    /// The vhost.
    pub vhost: String,
    /// Configure permission.
    #[serde(default = "everything")]
    pub configure: String,
    /// Write permission.
    #[serde(default = "everything")]
    pub write: String,
    /// Read permission.
    #[serde(default = "everything")]
    pub read: String,
}

fn everything() -> String {
    ".*".into()
}

/// Arguments of `rabbitmq_user`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqUser {
    /// The user name.
    pub name: String,
    /// Its password.
    pub password: String,
    /// Permissions it must have (others are left alone).
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// The node's users, as it reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFact {
    /// The node does not answer: why.
    Down(String),
    /// The node answered.
    Known {
        /// Every user's name.
        users: Vec<String>,
        /// Whether the wanted password authenticates the wanted user.
        password_ok: bool,
        /// The wanted user's permissions.
        permissions: Vec<Permission>,
    },
}

#[derive(Deserialize)]
struct ListedUser {
    user: String,
}

impl Fact for UserFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        if let NodeStatus::Down(why) = NodeStatus::parse(lines)? {
            return Ok(UserFact::Down(why));
        }
        let Some(users) = json_line::<Vec<ListedUser>>(lines, "users")? else {
            return Ok(UserFact::Down("list_users did not answer".into()));
        };
        Ok(UserFact::Known {
            users: users.into_iter().map(|u| u.user).collect(),
            password_ok: lines.get("password") == Some("ok"),
            permissions: json_line(lines, "permissions")?.unwrap_or_default(),
        })
    }
}

impl RabbitmqUser {
    fn script(&self, call: &str) -> String {
        let permissions: Vec<String> = self
            .permissions
            .iter()
            .map(|p| format!("{}\t{}\t{}\t{}", p.vhost, p.configure, p.write, p.read))
            .collect();
        let vars = [
            ("HACTL_USER", self.name.as_str()),
            ("HACTL_PASSWORD", &self.password),
            ("HACTL_PERMISSIONS", &permissions.join("\n")),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for RabbitmqUser {
    type Fact = UserFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &UserFact) -> Result<Option<Change>> {
        let grants = |missing: &[&Permission]| -> Vec<String> {
            missing
                .iter()
                .map(|p| {
                    format!(
                        "grant configure `{}` write `{}` read `{}` on vhost {}",
                        p.configure, p.write, p.read, p.vhost
                    )
                })
                .collect()
        };
        let all: Vec<&Permission> = self.permissions.iter().collect();
        let mut parts = Vec::new();
        match fact {
            UserFact::Down(why) => {
                parts.push(format!("create rabbitmq user {}", self.name));
                parts.extend(grants(&all));
                let last = parts.pop().expect("one part at least");
                parts.push(format!("{last} ({why})"));
            }
            UserFact::Known { users, .. } if !users.contains(&self.name) => {
                parts.push(format!("create rabbitmq user {}", self.name));
                parts.extend(grants(&all));
            }
            UserFact::Known {
                password_ok,
                permissions,
                ..
            } => {
                if !password_ok {
                    parts.push(format!("set the password of rabbitmq user {}", self.name));
                }
                let missing: Vec<&Permission> = all.into_iter().filter(|p| !permissions.contains(p)).collect();
                parts.extend(grants(&missing));
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

    fn user() -> RabbitmqUser {
        RabbitmqUser {
            name: "air-flow".into(),
            password: "p'w \"$x".into(),
            permissions: vec![Permission {
                vhost: "airflow".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            }],
        }
    }

    const UP: &str = r#"status {"disk_nodes":["rabbit@node1"]}"#;

    #[test]
    fn plans_exactly_what_differs() {
        let absent = format!("{UP}\nusers [{{\"user\":\"guest\",\"tags\":[]}}]\npassword differs\n");
        assert_eq!(
            diff_of(&user(), &absent).unwrap().unwrap().summary,
            "create rabbitmq user air-flow, grant configure `.*` write `.*` read `.*` on vhost airflow"
        );
        let perms = r#"permissions [{"vhost":"airflow","configure":".*","write":".*","read":".*"}]"#;
        let in_sync = format!("{UP}\nusers [{{\"user\":\"air-flow\"}}]\npassword ok\n{perms}\n");
        assert_eq!(diff_of(&user(), &in_sync).unwrap(), None);
        let new_password = in_sync.replace("password ok", "password differs");
        assert_eq!(
            diff_of(&user(), &new_password).unwrap().unwrap().summary,
            "set the password of rabbitmq user air-flow"
        );
        let down = "status -\nreason RabbitMQ is not installed yet\n";
        assert!(diff_of(&user(), down)
            .unwrap()
            .unwrap()
            .summary
            .ends_with("(RabbitMQ is not installed yet)"));
    }

    #[test]
    fn the_password_is_never_in_the_script_text_outside_its_variable() {
        let script = user().probe();
        let assignments = script.lines().filter(|l| l.starts_with("HACTL_PASSWORD=")).count();
        assert_eq!(assignments, 1);
        let rest: String = script.lines().filter(|l| !l.starts_with("HACTL_PASSWORD=")).collect();
        assert!(!rest.contains("p'w"), "the password appears outside its assignment");
    }
}
