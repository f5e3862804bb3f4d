//! `etcd_remove`: the etcd cluster has no member outside its group. A member whose host left the
//! group (or the inventory, or died for good) still counts towards quorum until `member remove`
//! drops it. Removing is a prune (`provision --prune`; without it the member is left and the
//! report says so), done by one member of the group: the first of the group's names, in order,
//! that is a started, healthy member; on the others this module has nothing to do, so a plan
//! names each removal once. A removal that would take the cluster below quorum is refused by
//! `provision --prune`, naming the members, and so is one of a member whose etcd still runs on a
//! host outside the inventory (a host still in it, outside group etcd, has its etcd stopped first
//! by the run: stage part departed); without --prune it is left like any other. With
//! `check_only` (the run's first stage, before anything changes), only such refused removals;
//! without it, only the others. The plan says `remove etcd member node3, not in group etcd`.

use std::collections::BTreeSet;

use miette::Result;
use serde::{Deserialize, Serialize};

use super::etcd::{parse_members, script, ListedMember};
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("etcd_remove.sh");

/// Arguments of `etcd_remove`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdRemove {
    /// This host's name (the member that removes, when it is the first healthy one of the group).
    pub name: String,
    /// The group's names: every other named member is removed.
    pub members: Templated<Vec<String>>,
    /// The group's client URLs: the cluster is asked through the first that answers.
    pub via: Templated<Vec<String>>,
    /// The CA that signs the members' certificates (for https:// URLs).
    #[serde(default)]
    pub cacert: String,
    /// The client certificate hactl presents to https:// URLs.
    #[serde(default)]
    pub cert: String,
    /// Its key.
    #[serde(default)]
    pub key: String,
    /// The inventory's hosts outside the group: a member among them may still run (the run
    /// stops its etcd first, stage part departed, with `provision --prune`).
    #[serde(default = "no_hosts")]
    pub departing: Templated<Vec<String>>,
    /// Only refuse what could not be removed (a run's first check, before anything changes):
    /// never a change.
    #[serde(default)]
    pub check_only: bool,
}

fn no_hosts() -> Templated<Vec<String>> {
    Templated::Value(Vec::new())
}

/// The cluster as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFact {
    /// The members, when this host could ask (none: it cannot, or no member answers).
    pub members: Option<Vec<ListedMember>>,
    /// The started members whose client URL reports itself healthy.
    pub healthy: BTreeSet<String>,
}

impl Fact for ClusterFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        let members = match lines.require("members")? {
            "-" | "?" => None,
            json => Some(parse_members(json)?),
        };
        let healthy = lines.all("healthy").map(str::to_string).collect();
        Ok(ClusterFact { members, healthy })
    }
}

/// Why a set of removals is refused, or `None` when quorum holds during and after it: the
/// voters that remain must have a majority of healthy ones (removing the members that are down
/// first, every step in between has one too).
pub fn below_quorum(voters: &[&str], leaving: &[&str], healthy: &BTreeSet<String>) -> Option<String> {
    let remaining: Vec<&str> = voters.iter().copied().filter(|v| !leaving.contains(v)).collect();
    let up = remaining.iter().filter(|v| healthy.contains(**v)).count();
    let needed = remaining.len() / 2 + 1;
    if !remaining.is_empty() && up >= needed {
        return None;
    }
    let state = |v: &&str| format!("{v} ({})", if healthy.contains(*v) { "healthy" } else { "down" });
    let left: Vec<String> = remaining.iter().map(state).collect();
    Some(format!(
        "removing {} would take etcd below quorum: {} would remain, and {} voting members need {needed} healthy; bring the members that are down back first, or remove fewer at once",
        leaving.join(", "),
        if left.is_empty() { "no member".to_string() } else { left.join(", ") },
        remaining.len()
    ))
}

/// Why `provision --prune` must not remove `leaving`: a member whose etcd still runs on a host
/// outside the inventory (hactl cannot stop it), quorum lost while the departing hosts' etcd
/// stops before its removal, or quorum lost after it (see [`below_quorum`]). `departing`: the
/// inventory's hosts outside the group, whose etcd the run stops first (stage part departed).
fn refusal(voters: &[&str], leaving: &[&str], healthy: &BTreeSet<String>, departing: &[String]) -> Option<String> {
    let running: Vec<&str> = leaving.iter().copied().filter(|name| healthy.contains(*name)).collect();
    let unreachable: Vec<&str> = running
        .iter()
        .copied()
        .filter(|name| !departing.iter().any(|d| d == name))
        .collect();
    if !unreachable.is_empty() {
        return Some(format!(
            "{} left group etcd and the inventory but {} etcd still runs: hactl stops the services of a host that is still in the inventory (outside the groups it left), and removes the members of machines that are gone for good; put {} back among the inventory's hosts, or stop the stack there, then run provision --prune again",
            unreachable.join(", "),
            if unreachable.len() == 1 { "its" } else { "their" },
            unreachable.join(", ")
        ));
    }
    let up = voters
        .iter()
        .filter(|v| healthy.contains(**v) && !running.contains(v))
        .count();
    let needed = voters.len() / 2 + 1;
    if !running.is_empty() && up < needed {
        return Some(format!(
            "stopping etcd on {} before removing {} would take etcd below quorum: {up} of {} voting members would be healthy meanwhile, and they need {needed}; add members first, or remove fewer at once",
            running.join(", "),
            if running.len() == 1 { "it" } else { "them" },
            voters.len()
        ));
    }
    below_quorum(voters, leaving, healthy)
}

impl EtcdRemove {
    fn script(&self, call: &str) -> String {
        let (members, via) = (self.members.or_default().join("\n"), self.via.or_default().join("\n"));
        let vars = [
            ("HACTL_NAME", self.name.as_str()),
            ("HACTL_MEMBERS", &members),
            ("HACTL_VIA", &via),
            ("HACTL_CACERT", &self.cacert),
            ("HACTL_CERT", &self.cert),
            ("HACTL_KEY", &self.key),
        ];
        script(SH, &vars, call)
    }
}

impl Resource for EtcdRemove {
    type Fact = ClusterFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &ClusterFact) -> Result<Option<Change>> {
        let wanted = self.members.value("members")?;
        self.via.value("via")?;
        let Some(members) = &fact.members else {
            return Ok(None);
        };
        // The member of the group that removes: the first of its names that is started and healthy.
        if wanted.iter().find(|name| fact.healthy.contains(*name)) != Some(&self.name) {
            return Ok(None);
        }
        let named = |m: &&ListedMember| !m.name.is_empty();
        let leaving: Vec<&str> = members
            .iter()
            .filter(named)
            .filter(|m| !wanted.contains(&m.name))
            .map(|m| m.name.as_str())
            .collect();
        if leaving.is_empty() {
            return Ok(None);
        }
        let voters: Vec<&str> = members
            .iter()
            .filter(named)
            .filter(|m| !m.is_learner)
            .map(|m| m.name.as_str())
            .collect();
        let noun = if leaving.len() == 1 { "member" } else { "members" };
        let names = leaving.join(", ");
        Ok(Change::membership(
            self.check_only,
            refusal(&voters, &leaving, &fact.healthy, &self.departing.or_default()),
            format!("remove etcd {noun} {names}, not in group etcd"),
            if leaving.iter().any(|name| fact.healthy.contains(*name)) {
                format!("remove etcd {noun} {names}, not in group etcd (where etcd still runs, it stops first)")
            } else {
                format!("remove etcd {noun} {names}, down and not in group etcd")
            },
        ))
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn on(name: &str) -> EtcdRemove {
        EtcdRemove {
            name: name.into(),
            members: Templated::Value(vec!["node1".into(), "node2".into(), "node4".into()]),
            via: Templated::Value(vec!["https://10.0.0.1:2379".into()]),
            cacert: String::new(),
            cert: String::new(),
            key: String::new(),
            departing: Templated::Value(Vec::new()),
            check_only: false,
        }
    }

    fn member(name: &str, learner: bool) -> String {
        format!(
            r#"{{"ID":1,"name":"{name}","peerURLs":["https://{name}:2380"],"clientURLs":["https://{name}:2379"],"isLearner":{learner}}}"#
        )
    }

    fn probe(members: &[&str], healthy: &[&str]) -> String {
        let list: Vec<String> = members.iter().map(|m| member(m, false)).collect();
        let mut out = format!("members {{\"members\":[{}]}}\n", list.join(","));
        for h in healthy {
            out.push_str(&format!("healthy {h}\n"));
        }
        out
    }

    #[test]
    fn a_member_outside_the_group_is_removed_by_the_first_healthy_member_only() {
        let seen = probe(&["node1", "node2", "node3"], &["node1", "node2"]);
        let change = diff_of(&on("node1"), &seen).unwrap().unwrap();
        assert_eq!(change.summary, "remove etcd member node3, down and not in group etcd");
        assert!(change.prune && change.counts);
        assert_eq!(diff_of(&on("node2"), &seen).unwrap(), None, "node1 removes it");
        let node1_down = probe(&["node1", "node2", "node3", "node4"], &["node2", "node4"]);
        assert!(
            diff_of(&on("node2"), &node1_down).unwrap().is_some(),
            "node2 removes it when node1 is down"
        );
        let check = EtcdRemove {
            check_only: true,
            ..on("node1")
        };
        assert_eq!(diff_of(&check, &seen).unwrap(), None, "a check changes nothing");
        assert_eq!(
            diff_of(&on("node4"), "members ?\nreason etcdctl is not installed here yet\n").unwrap(),
            None
        );
    }

    #[test]
    fn the_group_alone_is_in_sync() {
        let seen = probe(&["node1", "node2", "node4"], &["node1", "node2", "node4"]);
        assert_eq!(diff_of(&on("node1"), &seen).unwrap(), None);
    }

    #[test]
    fn a_removal_below_quorum_or_of_a_running_member_is_the_check_s_refused_removal() {
        // node3 and node4 leave, node2 is down: node1 and node2 would remain, 1 healthy of 2.
        let members = Templated::Value(vec!["node1".into(), "node2".into()]);
        let module = EtcdRemove { members, ..on("node1") };
        let check = EtcdRemove {
            check_only: true,
            ..module.clone()
        };
        let seen = probe(&["node1", "node2", "node3", "node4"], &["node1"]);
        let refused = diff_of(&check, &seen).unwrap().unwrap();
        assert_eq!(refused.summary, "remove etcd members node3, node4, not in group etcd");
        assert!(refused.prune, "left without --prune");
        assert_eq!(
            refused.refusal.as_deref(),
            Some("removing node3, node4 would take etcd below quorum: node1 (healthy), node2 (down) would remain, and 2 voting members need 2 healthy; bring the members that are down back first, or remove fewer at once")
        );
        assert_eq!(diff_of(&module, &seen).unwrap(), None, "the check reports it, once");
        let running = diff_of(
            &check,
            &probe(&["node1", "node2", "node3"], &["node1", "node2", "node3"]),
        )
        .unwrap()
        .unwrap();
        assert!(
            running.refusal.as_deref().unwrap_or_default().starts_with(
                "node3 left group etcd and the inventory but its etcd still runs: hactl stops the services of a host that is still in the inventory"
            ),
            "{running:?}"
        );
        // node3 still in the inventory: the run stops its etcd first, then removes it.
        let departing = |m: &EtcdRemove| EtcdRemove {
            departing: Templated::Value(vec!["node3".into()]),
            ..m.clone()
        };
        let all_up = probe(&["node1", "node2", "node3"], &["node1", "node2", "node3"]);
        assert_eq!(diff_of(&departing(&check), &all_up).unwrap(), None, "nothing refused");
        assert_eq!(
            diff_of(&departing(&module), &all_up).unwrap().unwrap().summary,
            "remove etcd member node3, not in group etcd (where etcd still runs, it stops first)"
        );
        // Stopping node3 first while node2 is down: node1 alone of 3 voters meanwhile.
        let one_down = probe(&["node1", "node2", "node3"], &["node1", "node3"]);
        assert!(diff_of(&departing(&check), &one_down)
            .unwrap()
            .unwrap()
            .refusal
            .unwrap_or_default()
            .starts_with("stopping etcd on node3 before removing it would take etcd below quorum: 1 of 3"),);
        // A dead member leaving never lowers quorum: 2 of 2 healthy remain.
        let dead = probe(&["node1", "node2", "node3"], &["node1", "node2"]);
        assert!(diff_of(&module, &dead).unwrap().is_some_and(|c| c.refusal.is_none()));
        assert_eq!(diff_of(&check, &dead).unwrap(), None);
    }

    #[test]
    fn quorum_counts_voters_not_learners() {
        let healthy: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(below_quorum(&["a", "b", "c"], &["c"], &healthy), None);
        assert!(below_quorum(&["a", "b", "c", "d"], &["a"], &healthy).is_some());
        assert!(
            below_quorum(&["a"], &["a"], &healthy).is_some(),
            "never the last member"
        );
        let learner = format!(
            "members {{\"members\":[{},{},{}]}}\nhealthy node1\nhealthy node2\n",
            member("node1", false),
            member("node2", false),
            member("node5", true)
        );
        assert_eq!(
            diff_of(&on("node1"), &learner).unwrap().unwrap().summary,
            "remove etcd member node5, down and not in group etcd"
        );
    }

    /// The apply against a fake etcdctl whose `member list` prints `list`, the client URLs in
    /// `healthy` (a case pattern) answering; returns its exit status and the calls it made.
    fn apply_with(list: &str, healthy: &str) -> (i32, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let fake = format!(
            "etcdctl() {{ echo \"$*\" >> {log}; case \"$*\" in *'member list'*) printf '%s\\n' {list};; esac; }}\n\
             hactl_endpoint_healthy() {{ case \"$1\" in {healthy}) return 0;; esac; return 1; }}\n",
            log = log.display(),
            list = crate::quote::q(list),
        );
        let script = on("node1")
            .apply()
            .replacen("hactl_apply", &format!("{fake}hactl_apply"), 1);
        let out = crate::modules::run_local(&script);
        (out.rc, std::fs::read_to_string(&log).unwrap_or_default() + &out.stderr)
    }

    /// The probe's output where the cluster lists `names` (each started and healthy).
    fn probed(names: &[&str]) -> String {
        let list: Vec<String> = names.iter().map(|n| member(n, false)).collect();
        let json = format!("{{\"members\":[{}]}}", list.join(","));
        let fake = format!(
            "hactl_probe_members() {{ hactl_members=listed; hactl_list={}; echo \"members $hactl_list\"; }}\n\
             hactl_endpoint_healthy() {{ return 0; }}\n",
            crate::quote::q(&json)
        );
        let script = on("node1")
            .probe()
            .replacen("hactl_probe() {", &format!("{fake}hactl_probe() {{"), 1);
        let out = crate::modules::run_local(&script);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        out.stdout
    }

    #[test]
    fn the_probe_asks_the_members_health_only_where_one_is_outside_the_group() {
        assert!(!probed(&["node1", "node2", "node4"]).contains("healthy"));
        let leaving = probed(&["node1", "node2", "node3", "node4"]);
        for name in ["node1", "node2", "node3", "node4"] {
            assert!(leaving.contains(&format!("healthy {name}\n")), "{leaving}");
        }
    }

    const LIST: &str = "a1, started, node1, https://n1:2380, https://n1:2379, false\n\
                        b2, started, node2, https://n2:2380, https://n2:2379, false\n\
                        c3, started, node3, https://n3:2380, https://n3:2379, false\n\
                        d5, started, node5, https://n5:2380, https://n5:2379, false";

    #[test]
    fn every_member_outside_the_group_is_removed_unless_one_answers_again() {
        let (rc, calls) = apply_with(LIST, "https://10.0.0.1:2379|https://n1:2379");
        assert_eq!(rc, 0, "{calls}");
        assert!(
            calls.contains("member remove c3") && calls.contains("member remove d5"),
            "{calls}"
        );
        assert!(!calls.contains("remove b2") && !calls.contains("remove a1"), "{calls}");
        let (rc, calls) = apply_with(LIST, "https://10.0.0.1:2379|https://n1:2379|https://n3:2379");
        assert_ne!(rc, 0, "node3 came back: {calls}");
        assert!(
            calls.contains("etcd members node3 left group etcd but still run: not removed"),
            "{calls}"
        );
        assert!(!calls.contains("member remove"), "nothing removed: {calls}");
    }
}
