//! `etcd_member`: the peer URLs the etcd cluster has registered for a member (`etcdctl member
//! update`), for a member whose peers must dial it elsewhere, e.g. at https:// once etcd speaks
//! TLS between peers. A rolling handler that runs before the member's restart: from the update
//! on, its peers dial the new URLs, so the restart follows at once, one member at a time (the
//! others keep quorum); a leader hands its leadership over first (`move-leader`). The plan says
//! `set etcd member node1's peer URLs to https://…:2380 (now http://…:2380)`.

use miette::{miette, Result};
use serde::{Deserialize, Serialize};

use super::etcd::script;
use super::{Change, Fact, ProbeLines, Resource, Templated};

/// The module's shell functions.
const SH: &str = include_str!("etcd_member.sh");

/// Arguments of `etcd_member`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdMember {
    /// The member's name (`ETCD_NAME`).
    pub name: String,
    /// The peer URLs it should be registered with.
    pub peer_urls: Vec<String>,
    /// Client URLs to ask, in order (the first that answers): the local member's own.
    pub endpoints: Vec<String>,
    /// The other members' client URLs, in order: the update goes through the first that answers
    /// (this member's own answer may never come: its peers stop reaching it once it commits).
    pub via: Templated<Vec<String>>,
    /// The CA that signs the members' certificates (for https:// endpoints).
    #[serde(default)]
    pub cacert: String,
    /// The client certificate hactl presents to https:// endpoints.
    #[serde(default)]
    pub cert: String,
    /// Its key.
    #[serde(default)]
    pub key: String,
    /// Seconds the update waits for an endpoint to answer (a member just started waits for
    /// its cluster's quorum).
    #[serde(default = "sixty")]
    pub timeout: u64,
}

fn sixty() -> u64 {
    60
}

/// The cluster's members as an endpoint lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembersFact {
    /// No endpoint answered: why.
    Down(String),
    /// Every member's name and registered peer URLs.
    Listed(Vec<(String, Vec<String>)>),
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "peerURLs")]
    peer_urls: Vec<String>,
}

impl Fact for MembersFact {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        match lines.require("members")? {
            "-" => Ok(MembersFact::Down(
                lines.get("reason").unwrap_or("no answer").to_string(),
            )),
            json => {
                let list: MemberList = serde_json::from_str(json)
                    .map_err(|e| miette!("unexpected member list from etcdctl ({e}): {json}"))?;
                Ok(MembersFact::Listed(
                    list.members.into_iter().map(|m| (m.name, m.peer_urls)).collect(),
                ))
            }
        }
    }
}

impl EtcdMember {
    fn script(&self, call: &str) -> String {
        let (peer_urls, endpoints, via, timeout) = (
            self.peer_urls.join(","),
            self.endpoints.join("\n"),
            self.via.or_default().join("\n"),
            self.timeout.to_string(),
        );
        let vars = [
            ("HACTL_NAME", self.name.as_str()),
            ("HACTL_PEER_URLS", &peer_urls),
            ("HACTL_ENDPOINTS", &endpoints),
            ("HACTL_VIA", &via),
            ("HACTL_CACERT", &self.cacert),
            ("HACTL_CERT", &self.cert),
            ("HACTL_KEY", &self.key),
            ("HACTL_TIMEOUT", &timeout),
        ];
        script(SH, &vars, call)
    }

    fn wanted(&self) -> String {
        self.peer_urls.join(",")
    }
}

impl Resource for EtcdMember {
    type Fact = MembersFact;

    fn probe(&self) -> String {
        self.script("hactl_probe")
    }

    fn diff(&self, fact: &MembersFact) -> Result<Option<Change>> {
        if self.peer_urls.is_empty() {
            return Err(miette!("etcd_member {}: peer_urls is empty", self.name));
        }
        self.via.value("via")?;
        let (name, wanted) = (&self.name, self.wanted());
        Ok(match fact {
            MembersFact::Down(why) => Some(Change::new(format!(
                "set etcd member {name}'s peer URLs to {wanted} if they differ ({why})"
            ))),
            MembersFact::Listed(members) => match members.iter().find(|(n, _)| n == name) {
                None => {
                    return Err(miette!(
                        "{name} is not a member of the etcd cluster its endpoints answer for"
                    ))
                }
                Some((_, urls)) if urls.join(",") == wanted => None,
                Some((_, urls)) => Some(Change::new(format!(
                    "set etcd member {name}'s peer URLs to {wanted} (now {})",
                    urls.join(",")
                ))),
            },
        })
    }

    fn apply(&self) -> String {
        self.script("hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::diff_of;

    fn member() -> EtcdMember {
        EtcdMember {
            name: "node1".into(),
            peer_urls: vec!["https://10.0.0.1:2380".into()],
            endpoints: vec!["https://10.0.0.1:2379".into(), "http://127.0.0.1:2379".into()],
            via: Templated::Value(vec!["https://10.0.0.2:2379".into()]),
            cacert: "/etc/etcd/tls/ca.crt".into(),
            cert: "/etc/etcd/tls/server.crt".into(),
            key: "/etc/etcd/tls/server.key".into(),
            timeout: 60,
        }
    }

    const LIST: &str = r#"members {"header":{"cluster_id":17237436991929493444},"members":[{"ID":10276657743932975437,"name":"node1","peerURLs":["http://10.0.0.1:2380"],"clientURLs":["http://10.0.0.1:2379"]},{"ID":9372538179322589801,"name":"node2","peerURLs":["https://10.0.0.2:2380"]}]}"#;

    #[test]
    fn plans_an_update_only_where_the_registered_urls_differ() {
        assert_eq!(
            diff_of(&member(), LIST).unwrap().unwrap().summary,
            "set etcd member node1's peer URLs to https://10.0.0.1:2380 (now http://10.0.0.1:2380)"
        );
        let node2 = EtcdMember {
            name: "node2".into(),
            peer_urls: vec!["https://10.0.0.2:2380".into()],
            ..member()
        };
        assert_eq!(diff_of(&node2, LIST).unwrap(), None);
        let stranger = EtcdMember {
            name: "node9".into(),
            ..member()
        };
        assert!(diff_of(&stranger, LIST).is_err(), "not a member: an error, not an add");
        let down = "members -\nreason no endpoint answers\n";
        assert!(diff_of(&member(), down)
            .unwrap()
            .unwrap()
            .summary
            .ends_with("if they differ (no endpoint answers)"));
    }

    #[test]
    fn the_apply_reads_the_hex_id_from_the_simple_listing_and_leaves_equal_urls_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        // A stand-in etcdctl: the simple listing, and every call's arguments logged.
        let fake = format!(
            "etcdctl() {{ echo \"$*\" >> {log}; case \"$*\" in *'member list'*) \
             echo '8e9e05c52164694d, started, node1, http://10.0.0.1:2380, http://10.0.0.1:2379, false'; \
             echo '1a2b3c, started, node2, https://10.0.0.2:2380, https://10.0.0.2:2379, false';; \
             *'endpoint status'*) echo 'https://10.0.0.1:2379, 8e9e05c52164694d, 3.4.23, 20 kB, true, false, 2, 9, 9, ';; esac; }}\n\
             curl() {{ echo '{{\"health\":\"true\"}}'; }}\n",
            log = log.display()
        );
        let apply = |m: &EtcdMember| {
            let script = m.apply().replacen("hactl_apply", &format!("{fake}hactl_apply"), 1);
            crate::modules::run_local(&script)
        };
        let out = apply(&member());
        assert_eq!(out.rc, 0, "{out:?}");
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(
            calls.contains("--endpoints=https://10.0.0.2:2379 --dial-timeout=2s --command-timeout=5s --cacert=/etc/etcd/tls/ca.crt --cert=/etc/etcd/tls/server.crt --key=/etc/etcd/tls/server.key member update 8e9e05c52164694d --peer-urls=https://10.0.0.1:2380"),
            "the update goes through another member: {calls}"
        );
        assert!(
            calls
                .find("move-leader 1a2b3c")
                .is_some_and(|i| i < calls.find("member update").unwrap()),
            "the leader hands over to node2 before the update: {calls}"
        );
        assert!(
            calls.contains("--cert=/etc/etcd/tls/server.crt"),
            "https endpoints get the client certificate: {calls}"
        );
        std::fs::remove_file(&log).unwrap();
        let node2 = EtcdMember {
            name: "node2".into(),
            peer_urls: vec!["https://10.0.0.2:2380".into()],
            ..member()
        };
        assert_eq!(apply(&node2).rc, 0);
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(!calls.contains("member update"), "equal URLs: no update ({calls})");
    }
}
