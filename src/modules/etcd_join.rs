//! `etcd_join`: this member in its etcd cluster. Where no member answers and this node has no
//! data, it bootstraps with its group (etcd's bootstrap settings, state `new`, in their own file,
//! which etcd reads only at a member's first start, so a membership change restarts no member).
//! Where the cluster answers, a node that is not a member joins it the way etcd documents: added
//! as a learner (`member add --learner`: it does not count towards quorum while it catches up;
//! etcd admits one learner at a time, so joins queue), started with state `existing` and the
//! cluster's members, then promoted to a voter once in sync. A member registered without data
//! here (a wiped machine under the same name and address) is removed and added again. The plan
//! says `add etcd member node4 (https://…:2380) to the cluster of node1, node2, node3 as a
//! learner, then promote it`.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::etcd::{parse_members, script, ListedMember};
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("etcd_join.sh");

/// Arguments of `etcd_join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdJoin {
    /// This member's name (`ETCD_NAME`).
    pub name: String,
    /// Its peer URLs.
    pub peer_urls: Vec<String>,
    /// The group's `name=peer-url,…`: the initial cluster of a bootstrap.
    pub initial_cluster: String,
    /// The group's client URLs, in order: the cluster is asked through the first that answers.
    pub via: Templated<Vec<String>>,
    /// etcd's data directory (`member/wal` in it: this node has a member's data).
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// The bootstrap settings' file (`ETCD_INITIAL_CLUSTER`, `ETCD_INITIAL_CLUSTER_STATE`),
    /// read by etcd's unit after /etc/default/etcd.
    #[serde(default = "default_env_file")]
    pub env_file: String,
    /// The CA that signs the members' certificates (for https:// URLs).
    #[serde(default)]
    pub cacert: String,
    /// The client certificate hactl presents to https:// URLs.
    #[serde(default)]
    pub cert: String,
    /// Its key.
    #[serde(default)]
    pub key: String,
    /// Seconds an apply waits for the learner's place and for the promotion.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_data_dir() -> String {
    "/var/lib/etcd/default".into()
}

fn default_env_file() -> String {
    "/etc/hactl/etcd-initial.env".into()
}

fn default_timeout() -> u64 {
    120
}

/// Why the members are not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unlisted {
    /// Asked, no member answered: why, and whether a cluster may exist anyway (a peer lists a
    /// published member, or could not be asked): then no bootstrap.
    NoAnswer(String, bool),
    /// This node cannot ask yet (a new node before its packages and certificates): why.
    CannotAsk(String),
}

/// What the node and its cluster say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinFact {
    /// Whether etcd's data directory holds a member's data (a WAL).
    pub has_data: bool,
    /// The bootstrap file's state and initial cluster (`-` where unset).
    pub env: (String, String),
    /// The members, or why they are not known.
    pub members: std::result::Result<Vec<ListedMember>, Unlisted>,
}

impl Fact for JoinFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        let has_data = match lines.require("data")? {
            "yes" => true,
            "no" => false,
            other => return Err(miette!("unexpected `data {other}`")),
        };
        let env = (
            lines.require("env_state")?.to_string(),
            lines.require("env_cluster")?.to_string(),
        );
        let why = lines.get("reason").unwrap_or("no answer").to_string();
        let members = match lines.require("members")? {
            "-" => Err(Unlisted::NoAnswer(
                why,
                matches!(lines.get("published"), Some("yes" | "unknown")),
            )),
            "?" => Err(Unlisted::CannotAsk(why)),
            json => Ok(parse_members(json)?),
        };
        Ok(JoinFact { has_data, env, members })
    }
}

impl EtcdJoin {
    fn script(&self, call: &str) -> String {
        let (peer_urls, via, timeout) = (
            self.peer_urls.join(","),
            self.via.or_default().join("\n"),
            self.timeout.to_string(),
        );
        let vars = [
            ("HACTL_NAME", self.name.as_str()),
            ("HACTL_PEER_URLS", &peer_urls),
            ("HACTL_INITIAL_CLUSTER", &self.initial_cluster),
            ("HACTL_VIA", &via),
            ("HACTL_DATA_DIR", &self.data_dir),
            ("HACTL_ENV_FILE", &self.env_file),
            ("HACTL_CACERT", &self.cacert),
            ("HACTL_CERT", &self.cert),
            ("HACTL_KEY", &self.key),
            ("HACTL_TIMEOUT", &timeout),
        ];
        script(SH, &vars, call)
    }

    /// The group's names, as its initial cluster lists them.
    fn names(&self) -> impl Iterator<Item = &str> {
        self.initial_cluster
            .split(',')
            .filter_map(|entry| entry.split_once('=').map(|(name, _)| name))
    }

    /// The group's names, as the plan names the cluster.
    fn group_names(&self) -> String {
        self.names().collect::<Vec<_>>().join(", ")
    }

    /// The group's other names.
    fn others(&self) -> String {
        let names: Vec<&str> = self.names().filter(|name| *name != self.name).collect();
        names.join(", ")
    }

    /// This member's entry: registered at one of its peer URLs, or under its name.
    fn me<'a>(&self, members: &'a [ListedMember]) -> Option<&'a ListedMember> {
        members.iter().find(|m| {
            m.peer_urls.iter().any(|u| self.peer_urls.contains(u)) || (!m.name.is_empty() && m.name == self.name)
        })
    }

    /// The bootstrap settings of a new cluster, unless the file already holds them.
    fn bootstrap(&self, fact: &JoinFact, why: &str) -> Option<Change> {
        let wanted = ("new".to_string(), self.initial_cluster.clone());
        (fact.env != wanted).then(|| {
            Change::new(format!(
                "write etcd's bootstrap settings for {}: a new cluster of {} ({why})",
                self.name,
                self.group_names()
            ))
        })
    }

    /// A member with its data ignores the bootstrap settings, but they list the group as every
    /// other file does (nothing on a node names a removed member, and a member added since is
    /// named): rewritten with the group.
    fn stale_env(&self, fact: &JoinFact) -> Option<Change> {
        if fact.env.1 == "-" {
            return None;
        }
        let group: Vec<&str> = self.names().collect();
        let listed: Vec<&str> = fact
            .env
            .1
            .split(',')
            .filter_map(|entry| entry.split_once('=').map(|(name, _)| name))
            .collect();
        let gone: Vec<&str> = listed.iter().copied().filter(|name| !group.contains(name)).collect();
        let missing: Vec<&str> = group.iter().copied().filter(|name| !listed.contains(name)).collect();
        let why = match (gone.is_empty(), missing.is_empty()) {
            (true, true) => return None,
            (false, true) => format!("they name {}, no longer in it", gone.join(", ")),
            (true, false) => format!("they lack {}, added to it", missing.join(", ")),
            (false, false) => format!(
                "they name {}, no longer in it, and lack {}, added to it",
                gone.join(", "),
                missing.join(", ")
            ),
        };
        Some(Change::new(format!(
            "rewrite etcd's bootstrap settings on {} with the group: {why} (read at a member's first start only: nothing restarts)",
            self.name
        )))
    }

    fn joined(&self, fact: &JoinFact, members: &[ListedMember]) -> Result<Option<Change>> {
        let (name, urls) = (&self.name, self.peer_urls.join(","));
        let cluster: Vec<&str> = members
            .iter()
            .filter(|m| !m.name.is_empty() && m.name != *name)
            .map(|m| m.name.as_str())
            .collect();
        let cluster = cluster.join(", ");
        Ok(match self.me(members) {
            None if fact.has_data => {
                return Err(miette!(
                    "{name} has etcd data in {} but is not a member of the etcd cluster of {cluster}: remove the directory if it is a leftover (hactl does not delete it)",
                    self.data_dir
                ))
            }
            None => Some(Change::new(format!(
                "add etcd member {name} ({urls}) to the cluster of {cluster} as a learner, then promote it"
            ))),
            Some(m) if m.is_learner => Some(Change::new(format!(
                "start etcd learner {name} ({urls}) and promote it in the cluster of {cluster}"
            ))),
            Some(_) if fact.has_data => self.stale_env(fact),
            // Registered but never started (a member of the cluster's first start, or one
            // added by an interrupted run): the settings of its start, unless written already.
            Some(m) if m.client_urls.is_empty() => (fact.env.0 == "-").then(|| {
                Change::new(format!(
                    "write etcd's settings for {name}, registered in the cluster of {cluster} but never started here"
                ))
            }),
            Some(_) => Some(Change::new(format!(
                "add etcd member {name} ({urls}) again: it is registered but its data is gone here (remove its registration, add it as a learner, then promote it)"
            ))),
        })
    }
}

impl Resource for EtcdJoin {
    type Fact = JoinFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &JoinFact) -> Result<Option<Change>> {
        if self.peer_urls.is_empty() {
            return Err(miette!("etcd_join {}: peer_urls is empty", self.name));
        }
        self.via.value("via")?;
        match &fact.members {
            Ok(members) => self.joined(fact, members),
            Err(_) if fact.has_data => Ok(None),
            Err(Unlisted::NoAnswer(why, true)) => Ok(Some(Change::new(format!(
                "add etcd member {} to the cluster of {} once a member answers ({why}, but the cluster may exist: the run waits {} s for an answer, then refuses; it never bootstraps a second cluster)",
                self.name,
                self.others(),
                self.timeout
            )))),
            Err(Unlisted::NoAnswer(why, false)) => Ok(self.bootstrap(
                fact,
                &format!(
                    "{why}; where one answers when it runs, {} joins it as a learner instead",
                    self.name
                ),
            )),
            Err(Unlisted::CannotAsk(why)) => Ok(Some(Change::new(format!(
                "add etcd member {} ({}) to the cluster of {} as a learner and promote it, or bootstrap that cluster where no member answers ({why}: asked when it runs)",
                self.name,
                self.peer_urls.join(","),
                self.others()
            )))),
        }
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn node4() -> EtcdJoin {
        EtcdJoin {
            name: "node4".into(),
            peer_urls: vec!["https://10.0.0.4:2380".into()],
            initial_cluster: "node1=https://10.0.0.1:2380,node2=https://10.0.0.2:2380,node4=https://10.0.0.4:2380"
                .into(),
            via: Templated::Value(vec!["https://10.0.0.1:2379".into()]),
            data_dir: default_data_dir(),
            env_file: default_env_file(),
            cacert: "/etc/hactl/tls/ca.crt".into(),
            cert: "/etc/hactl/tls/etcd-client.crt".into(),
            key: "/etc/hactl/tls/etcd-client.key".into(),
            timeout: 120,
        }
    }

    fn probe(data: &str, env: (&str, &str), members: &str) -> String {
        format!(
            "data {data}\nenv_state {}\nenv_cluster {}\nmembers {members}\n",
            env.0, env.1
        )
    }

    const TWO: &str = r#"{"header":{"cluster_id":1},"members":[{"ID":1,"name":"node1","peerURLs":["https://10.0.0.1:2380"]},{"ID":2,"name":"node2","peerURLs":["https://10.0.0.2:2380"]}]}"#;

    fn with(member: &str) -> String {
        TWO.replace("]}]}", &format!("]}},{member}]}}"))
    }

    #[test]
    fn a_node_outside_an_answering_cluster_joins_as_a_learner() {
        let change = diff_of(&node4(), &probe("no", ("-", "-"), TWO)).unwrap().unwrap();
        assert_eq!(
            change.summary,
            "add etcd member node4 (https://10.0.0.4:2380) to the cluster of node1, node2 as a learner, then promote it"
        );
        let learner = with(r#"{"ID":4,"name":"","peerURLs":["https://10.0.0.4:2380"],"isLearner":true}"#);
        assert_eq!(
            diff_of(&node4(), &probe("yes", ("existing", "x"), &learner))
                .unwrap()
                .unwrap()
                .summary,
            "start etcd learner node4 (https://10.0.0.4:2380) and promote it in the cluster of node1, node2",
            "an interrupted join resumes at the promotion"
        );
    }

    #[test]
    fn a_voting_member_with_its_data_is_left_alone_and_one_without_is_added_again() {
        let voter = with(
            r#"{"ID":4,"name":"node4","peerURLs":["https://10.0.0.4:2380"],"clientURLs":["https://10.0.0.4:2379"]}"#,
        );
        assert_eq!(diff_of(&node4(), &probe("yes", ("-", "-"), &voter)).unwrap(), None);
        let registered = with(r#"{"ID":4,"name":"node4","peerURLs":["https://10.0.0.4:2380"]}"#);
        assert_eq!(
            diff_of(&node4(), &probe("no", ("-", "-"), &registered))
                .unwrap()
                .unwrap()
                .summary,
            "write etcd's settings for node4, registered in the cluster of node1, node2 but never started here"
        );
        assert_eq!(
            diff_of(&node4(), &probe("no", ("existing", "x"), &registered)).unwrap(),
            None
        );
        assert!(diff_of(&node4(), &probe("no", ("-", "-"), &voter))
            .unwrap()
            .unwrap()
            .summary
            .starts_with("add etcd member node4 (https://10.0.0.4:2380) again"));
    }

    #[test]
    fn bootstrap_settings_naming_a_host_that_left_or_missing_one_added_are_rewritten() {
        let voter = with(
            r#"{"ID":4,"name":"node4","peerURLs":["https://10.0.0.4:2380"],"clientURLs":["https://10.0.0.4:2379"]}"#,
        );
        let stale = (
            "existing",
            "node1=https://10.0.0.1:2380,node3=https://10.0.0.3:2380,node4=https://10.0.0.4:2380",
        );
        assert_eq!(
            diff_of(&node4(), &probe("yes", stale, &voter)).unwrap().unwrap().summary,
            "rewrite etcd's bootstrap settings on node4 with the group: they name node3, no longer in it, and lack node2, added to it (read at a member's first start only: nothing restarts)"
        );
        let before_node2 = ("new", "node1=https://10.0.0.1:2380,node4=https://10.0.0.4:2380");
        assert_eq!(
            diff_of(&node4(), &probe("yes", before_node2, &voter)).unwrap().unwrap().summary,
            "rewrite etcd's bootstrap settings on node4 with the group: they lack node2, added to it (read at a member's first start only: nothing restarts)"
        );
        let current = (
            "existing",
            "node4=https://10.0.0.4:2380,node1=https://10.0.0.1:2380,node2=https://10.0.0.2:2380",
        );
        assert_eq!(
            diff_of(&node4(), &probe("yes", current, &voter)).unwrap(),
            None,
            "in any order"
        );
    }

    #[test]
    fn data_of_a_node_that_is_not_a_member_is_refused_not_deleted() {
        let error = diff_of(&node4(), &probe("yes", ("-", "-"), TWO)).unwrap_err();
        assert!(
            format!("{error}").contains(
                "node4 has etcd data in /var/lib/etcd/default but is not a member of the etcd cluster of node1, node2"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_new_node_that_cannot_ask_yet_plans_its_join() {
        let fresh = "data no\nenv_state -\nenv_cluster -\nmembers ?\nreason etcdctl is not installed here yet\n";
        assert_eq!(
            diff_of(&node4(), fresh).unwrap().unwrap().summary,
            "add etcd member node4 (https://10.0.0.4:2380) to the cluster of node1, node2 as a learner and promote it, or bootstrap that cluster where no member answers (etcdctl is not installed here yet: asked when it runs)"
        );
    }

    #[test]
    fn with_no_member_answering_the_group_bootstraps_once() {
        let down = "data no\nenv_state -\nenv_cluster -\nmembers -\nreason no member answers\n";
        assert_eq!(
            diff_of(&node4(), down).unwrap().unwrap().summary,
            "write etcd's bootstrap settings for node4: a new cluster of node1, node2, node4 (no member answers; where one answers when it runs, node4 joins it as a learner instead)"
        );
        let written = down
            .replace("env_state -", "env_state new")
            .replace("env_cluster -", &format!("env_cluster {}", node4().initial_cluster));
        assert_eq!(diff_of(&node4(), &written).unwrap(), None);
        let member = down.replace("data no", "data yes");
        assert_eq!(
            diff_of(&node4(), &member).unwrap(),
            None,
            "a member whose cluster is down"
        );
    }

    /// A stand-in etcdctl (the simple listing: `lists[n]` after n adds and removes; a promotion
    /// fails `promote_fails` times) and systemctl, each call logged, with the module's apply run
    /// against a temporary data directory and env file: its exit status, the calls, the env file.
    fn apply_with(lists: [&str; 3], promote_fails: usize) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let (log, count) = (dir.path().join("calls"), dir.path().join("promotes"));
        let fake = format!(
            "L0={}; L1={}; L2={}\n\
             etcdctl() {{ echo \"$*\" >> {log}; case \"$*\" in \
             *'member list'*) case $(grep -cE 'member (add|remove)' {log}) in \
               0) printf '%s\\n' \"$L0\";; 1) printf '%s\\n' \"$L1\";; *) printf '%s\\n' \"$L2\";; esac;; \
             *'member promote'*) echo x >> {count}; [ \"$(wc -l < {count})\" -gt {promote_fails} ] || \
               {{ echo 'Error: etcdserver: can only promote a learner member which is in sync with leader' >&2; return 1; }};; esac; }}\n\
             systemctl() {{ echo \"systemctl $*\" >> {log}; }}\n\
             curl() {{ echo '{{\"health\":\"true\"}}'; }}\n",
            crate::quote::q(lists[0]),
            crate::quote::q(lists[1]),
            crate::quote::q(lists[2]),
            log = log.display(),
            count = count.display(),
        );
        let module = EtcdJoin {
            data_dir: dir.path().join("data").display().to_string(),
            env_file: dir.path().join("etcd-initial.env").display().to_string(),
            ..node4()
        };
        let script = module.apply().replacen("hactl_apply", &format!("{fake}hactl_apply"), 1);
        let out = crate::modules::run_local(&script);
        let env = std::fs::read_to_string(&module.env_file).unwrap_or_default();
        (out.rc, std::fs::read_to_string(&log).unwrap_or_default(), env)
    }

    const NODE1: &str = "a1, started, node1, https://10.0.0.1:2380, https://10.0.0.1:2379, false";
    const NODE2: &str = "b2, started, node2, https://10.0.0.2:2380, https://10.0.0.2:2379, false";
    const LEARNER: &str = "d4, unstarted, , https://10.0.0.4:2380, , true";

    #[test]
    fn a_learner_is_added_started_with_the_cluster_it_joins_and_promoted_once_in_sync() {
        let (before, added) = (format!("{NODE1}\n{NODE2}"), format!("{NODE1}\n{NODE2}\n{LEARNER}"));
        let (rc, calls, env) = apply_with([&before, &added, &added], 2);
        assert_eq!(rc, 0, "{calls}");
        assert!(
            calls.contains("member add node4 --peer-urls=https://10.0.0.4:2380 --learner"),
            "{calls}"
        );
        assert!(
            env.contains("ETCD_INITIAL_CLUSTER=\"node1=https://10.0.0.1:2380,node2=https://10.0.0.2:2380,node4=https://10.0.0.4:2380\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\""),
            "{env}"
        );
        let start = calls.find("systemctl start --no-block etcd").expect(&calls);
        assert!(start < calls.find("member promote d4").expect(&calls), "{calls}");
        assert_eq!(
            calls.matches("member promote d4").count(),
            3,
            "retried until in sync: {calls}"
        );
    }

    #[test]
    fn a_registration_without_data_is_removed_before_the_member_is_added_again() {
        let (wiped, removed) = (
            format!("{NODE1}\n{NODE2}\nd9, started, node4, https://10.0.0.4:2380, https://10.0.0.4:2379, false"),
            format!("{NODE1}\n{NODE2}"),
        );
        let added = format!("{removed}\n{LEARNER}");
        let (rc, calls, _) = apply_with([&wiped, &removed, &added], 0);
        assert_eq!(rc, 0, "{calls}");
        let order: Vec<usize> = ["member remove d9", "member add node4", "member promote d4"]
            .iter()
            .map(|call| calls.find(call).expect(&calls))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{calls}");
    }

    #[test]
    fn a_member_of_the_first_start_not_started_yet_starts_with_the_cluster_it_is_in() {
        let list = format!("{NODE1}\n{NODE2}\nd4, started, node4, https://10.0.0.4:2380, , false");
        let (rc, calls, env) = apply_with([&list, &list, &list], 0);
        assert_eq!(rc, 0, "{calls}");
        assert!(
            !calls.contains("member remove") && !calls.contains("member add"),
            "{calls}"
        );
        assert!(
            env.contains("node4=https://10.0.0.4:2380") && env.contains("STATE=\"existing\""),
            "{env}"
        );
    }

    /// The apply with no member answering, the peers' /members answering `members` with curl's
    /// exit status `curl_rc` (7: refused, 28: no answer in time), within a 3 s deadline.
    fn apply_unanswered(members: &str, curl_rc: u8) -> (i32, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let fake = format!(
            "etcdctl() {{ return 1; }}\ncurl() {{ printf '%s\\n' {}; return {curl_rc}; }}\n",
            crate::quote::q(members)
        );
        let module = EtcdJoin {
            data_dir: dir.path().join("data").display().to_string(),
            env_file: dir.path().join("env").display().to_string(),
            timeout: 3,
            ..node4()
        };
        let script = module.apply().replacen("hactl_apply", &format!("{fake}hactl_apply"), 1);
        let out = crate::modules::run_local(&script);
        let env = std::fs::read_to_string(&module.env_file).unwrap_or_default();
        (out.rc, out.stdout + &out.stderr, env)
    }

    #[test]
    fn with_no_member_answering_a_new_cluster_is_bootstrapped_only_where_none_can_exist() {
        let unpublished = r#"[{"id":1,"peerURLs":["https://10.0.0.1:2380"],"clientURLs":[]}]"#;
        for (members, rc) in [(unpublished, 0), ("", 7)] {
            let (status, out, env) = apply_unanswered(members, rc);
            assert_eq!(status, 0, "{out}");
            assert!(env.contains("ETCD_INITIAL_CLUSTER_STATE=\"new\""), "{env}");
        }
        let published =
            r#"[{"id":1,"name":"node1","peerURLs":["https://10.0.0.1:2380"],"clientURLs":["https://10.0.0.1:2379"]}]"#;
        for (members, rc, what) in [(published, 0, "published"), ("", 28, "a peer that does not answer")] {
            let (status, out, env) = apply_unanswered(members, rc);
            assert_ne!(status, 0, "{what}: no second cluster");
            assert!(out.contains("not bootstrapping a second one"), "{what}: {out}");
            assert_eq!(env, "", "{what}: nothing written");
        }
    }

    #[test]
    fn a_cluster_that_may_exist_without_answering_is_waited_for_in_the_plan() {
        let probe = "members -\nreason no member answers\ndata no\nenv_state new\nenv_cluster x\npublished unknown\n";
        assert!(diff_of(&node4(), probe)
            .unwrap()
            .unwrap()
            .summary
            .contains("the cluster may exist: the run waits 120 s for an answer, then refuses"));
    }
}
