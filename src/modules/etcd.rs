//! What the `etcd_*` modules share: etcdctl with the client's TLS files, and the first endpoint
//! of a list that answers (`etcd.sh`, prepended to each module's script).

use miette::{miette, Result};
use serde::Deserialize;

/// The helpers every `etcd_*` script starts with.
const SH: &str = include_str!("etcd.sh");

/// The script of an `etcd_*` module: the shared helpers, then its own functions.
pub fn script(module_sh: &str, vars: &[(&str, &str)], call: &str) -> String {
    super::script(&format!("{SH}\n{module_sh}"), vars, call)
}

/// A member as `member list -w json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedMember {
    /// Its name; empty until it first starts.
    #[serde(default)]
    pub name: String,
    /// Its registered peer URLs.
    #[serde(default, rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Its client URLs: none until it first starts and publishes them.
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
    /// Whether it is a learner (not voting yet).
    #[serde(default, rename = "isLearner")]
    pub is_learner: bool,
}

/// `member list -w json`'s document.
#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<ListedMember>,
}

/// The members in `member list -w json`'s document.
pub fn parse_members(json: &str) -> Result<Vec<ListedMember>> {
    Ok(serde_json::from_str::<MemberList>(json)
        .map_err(|e| miette!("unexpected member list from etcdctl ({e}): {json}"))?
        .members)
}
