//! `rabbitmq_user`: a RabbitMQ user with a password, tags and permissions per vhost, or no such
//! user (`state: absent`; like Ansible's rabbitmq_user). The probe reads the user, its salted
//! SHA-256 password hash and its permissions from the management API that is already up, else
//! from rabbitmqctl; the password reaches rabbitmqctl on stdin, never as an argument. The plan
//! says `would create rabbitmq user airflow, grant … on vhost airflow`, `would delete rabbitmq
//! user guest`, or which part differs.

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

/// Whether the user must exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    /// It exists, with the password, tags and permissions given.
    #[default]
    Present,
    /// It does not exist.
    Absent,
}

/// Arguments of `rabbitmq_user`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqUser {
    /// The user name.
    pub name: String,
    /// Its password (needed unless `state: absent`).
    #[serde(default)]
    pub password: Option<String>,
    /// Present (the default) or absent.
    #[serde(default)]
    pub state: UserState,
    /// Its tags exactly (`administrator`, `management`…), when given; otherwise left alone.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
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
        /// The wanted user's tags, sorted (none when it does not exist).
        tags: Vec<String>,
        /// Whether the wanted password authenticates the wanted user.
        password_ok: bool,
        /// The wanted user's permissions.
        permissions: Vec<Permission>,
    },
}

#[derive(Deserialize)]
struct ListedUser {
    user: String,
    /// A list of tags, or (older versions) one string of them.
    #[serde(default)]
    tags: serde_json::Value,
}

impl ListedUser {
    /// Its tags, sorted.
    fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = match &self.tags {
            serde_json::Value::Array(items) => items.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
            serde_json::Value::String(text) => text
                .split(|c: char| c == ',' || c.is_whitespace() || c == '[' || c == ']')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        tags.sort();
        tags
    }
}

impl Fact for UserFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        if let NodeStatus::Down(why) = NodeStatus::parse(lines)? {
            return Ok(UserFact::Down(why));
        }
        let Some(users) = json_line::<Vec<ListedUser>>(lines, "users")? else {
            return Ok(UserFact::Down("list_users did not answer".into()));
        };
        let wanted = lines.get("user").unwrap_or("");
        Ok(UserFact::Known {
            tags: users
                .iter()
                .find(|u| u.user == wanted)
                .map(ListedUser::tags)
                .unwrap_or_default(),
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
        let state = match self.state {
            UserState::Present => "present",
            UserState::Absent => "absent",
        };
        let vars = [
            ("HACTL_USER", self.name.as_str()),
            ("HACTL_STATE", state),
            ("HACTL_PASSWORD", self.password.as_deref().unwrap_or("")),
            ("HACTL_SET_TAGS", if self.tags.is_some() { "yes" } else { "no" }),
            ("HACTL_TAGS", &self.tags.clone().unwrap_or_default().join("\n")),
            ("HACTL_PERMISSIONS", &permissions.join("\n")),
        ];
        script(SH, &vars, call)
    }

    /// The plan line for a user that must not exist.
    fn diff_absent(&self, fact: &UserFact) -> Option<Change> {
        match fact {
            UserFact::Down(why) => Some(Change::new(format!(
                "delete rabbitmq user {} if it exists ({why})",
                self.name
            ))),
            UserFact::Known { users, .. } if users.contains(&self.name) => {
                Some(Change::new(format!("delete rabbitmq user {}", self.name)))
            }
            UserFact::Known { .. } => None,
        }
    }

    /// The tags wanted, sorted, when given.
    fn wanted_tags(&self) -> Option<Vec<String>> {
        self.tags.clone().map(|mut tags| {
            tags.sort();
            tags.dedup();
            tags
        })
    }
}

impl Resource for RabbitmqUser {
    type Fact = UserFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &UserFact) -> Result<Option<Change>> {
        if self.state == UserState::Absent {
            return Ok(self.diff_absent(fact));
        }
        if self.password.is_none() {
            return Err(miette::miette!(
                "rabbitmq_user {}: a password is needed unless state is absent",
                self.name
            ));
        }
        let set_tags = |tags: &[String]| format!("set its tags to [{}]", tags.join(", "));
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
                parts.extend(self.wanted_tags().map(|t| set_tags(&t)));
                parts.extend(grants(&all));
                let last = parts.pop().expect("one part at least");
                parts.push(format!("{last} ({why})"));
            }
            UserFact::Known { users, .. } if !users.contains(&self.name) => {
                parts.push(format!("create rabbitmq user {}", self.name));
                parts.extend(self.wanted_tags().map(|t| set_tags(&t)));
                parts.extend(grants(&all));
            }
            UserFact::Known {
                password_ok,
                permissions,
                tags,
                ..
            } => {
                if !password_ok {
                    parts.push(format!("set the password of rabbitmq user {}", self.name));
                }
                if let Some(wanted) = self.wanted_tags().filter(|w| w != tags) {
                    parts.push(format!(
                        "set the tags of rabbitmq user {} to [{}]",
                        self.name,
                        wanted.join(", ")
                    ));
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
            password: Some("p'w \"$x".into()),
            state: UserState::Present,
            tags: None,
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
    fn plans_tags_and_absence() {
        let tagged = RabbitmqUser {
            tags: Some(vec!["management".into(), "administrator".into()]),
            ..user()
        };
        let perms = r#"permissions [{"vhost":"airflow","configure":".*","write":".*","read":".*"}]"#;
        let listed = |tags: &str| {
            format!("{UP}\nuser air-flow\nusers [{{\"user\":\"air-flow\",\"tags\":{tags}}}]\npassword ok\n{perms}\n")
        };
        assert_eq!(
            diff_of(&tagged, &listed(r#"["administrator","management"]"#)).unwrap(),
            None
        );
        assert_eq!(
            diff_of(&tagged, &listed(r#""administrator,management""#)).unwrap(),
            None
        );
        assert_eq!(
            diff_of(&tagged, &listed("[]")).unwrap().unwrap().summary,
            "set the tags of rabbitmq user air-flow to [administrator, management]"
        );
        assert_eq!(
            diff_of(&user(), &listed("[]")).unwrap(),
            None,
            "tags not given: left alone"
        );

        let guest = RabbitmqUser {
            name: "guest".into(),
            password: None,
            state: UserState::Absent,
            tags: None,
            permissions: Vec::new(),
        };
        let with_guest = format!("{UP}\nuser guest\nusers [{{\"user\":\"guest\",\"tags\":[\"administrator\"]}}]\n");
        assert_eq!(
            diff_of(&guest, &with_guest).unwrap().unwrap().summary,
            "delete rabbitmq user guest"
        );
        let without = format!("{UP}\nuser guest\nusers [{{\"user\":\"airflow\",\"tags\":[]}}]\n");
        assert_eq!(diff_of(&guest, &without).unwrap(), None);
        let no_password = RabbitmqUser {
            password: None,
            ..user()
        };
        assert!(diff_of(&no_password, &without).is_err());
    }

    #[test]
    fn the_password_is_never_in_the_script_text_outside_its_variable() {
        let script = user().probe();
        let assignments = script.lines().filter(|l| l.starts_with("HACTL_PASSWORD=")).count();
        assert_eq!(assignments, 1);
        let rest: String = script.lines().filter(|l| !l.starts_with("HACTL_PASSWORD=")).collect();
        assert!(!rest.contains("p'w"), "the password appears outside its assignment");
    }

    #[test]
    fn the_imported_hash_is_rabbitmqs_salted_sha256_of_the_password() {
        use base64::Engine as _;
        use sha2::{Digest, Sha256};
        let password = "p'w \"$x\\n é";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{SH}\nhactl_rabbitmq_hash"))
            .env("HACTL_PASSWORD", password)
            .output()
            .expect("sh");
        assert!(out.status.success());
        let stored = base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8_lossy(&out.stdout).trim())
            .expect("base64");
        assert_eq!(stored.len(), 4 + 32, "a 4-byte salt and a SHA-256");
        let (salt, digest) = stored.split_at(4);
        let want = Sha256::new().chain_update(salt).chain_update(password).finalize();
        assert_eq!(digest, &want[..]);
    }
}
