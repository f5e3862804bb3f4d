//! The pre-flight: before a run changes anything (or a plan reports anything), every reachable
//! host's record of what it was provisioned with is read in one round trip (sent with the
//! prefetched probes): the digest of each secret (`/etc/hactl/secrets.sha256`, written by stage
//! base) and the CA it trusts (`/etc/hactl/tls/ca.crt`). A secret that is missing here (about to
//! be generated) or differs from a host's record, or a CA that is not the one a host trusts,
//! refuses the run, naming them and the hosts; nothing is written, locally or on a host. Only
//! then are the secrets and certificates this run made written beside the inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use miette::{miette, Result};

use super::Engine;
use crate::pki::Pki;
use crate::secrets::{parse_digest_record, History, PendingWrite};

/// Where stage base keeps a node's secret digests.
pub const RECORD_PATH: &str = "/etc/hactl/secrets.sha256";
/// Where stage base puts the cluster CA's certificate when the host has no `tls_dir`
/// (`TLS_DIR/ca.crt` otherwise).
pub const NODE_CA_PATH: &str = "/etc/hactl/tls/ca.crt";
/// The playbook variable naming the directory of a host's CA certificate.
const TLS_DIR_VAR: &str = "tls_dir";
/// The marker lines of the pre-flight script's output.
const RECORD_MARK: &str = "--hactl-record";
const CA_MARK: &str = "--hactl-ca";

/// What a run checks against the nodes before it changes anything, and what it writes locally
/// once they agree.
#[derive(Debug, Default)]
pub struct Preflight {
    /// The secrets file (named in a refusal).
    pub secrets_file: PathBuf,
    /// The digest of each secret this run takes from the secrets file.
    pub digests: BTreeMap<String, String>,
    /// The secrets this run generated (missing from the file, or rotated).
    pub generated: BTreeSet<String>,
    /// The secrets allowed to differ (`--rotate`).
    pub rotate: BTreeSet<String>,
    /// The CA certificate this run uses (PEM), and whether this run made it.
    pub ca: Option<(String, bool)>,
    /// The digests of the secrets' older values: a node holding one is behind (this run
    /// updates it), not foreign.
    pub history: History,
    /// The secrets file as this run changed it.
    pub secrets_write: Option<PendingWrite>,
    /// The history as this run's rotation added to it.
    pub history_write: Option<PendingWrite>,
    /// The certificates this run made.
    pub pki: Option<Pki>,
}

/// What a node says it was provisioned with.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its secret digests, when it has a record.
    pub digests: Option<BTreeMap<String, String>>,
    /// The CA certificate it trusts, when it has one.
    pub ca: Option<String>,
}

/// The script that prints a node's record and the CA certificate at `ca_path` (read-only).
pub fn read_script(ca_path: &str) -> String {
    format!(
        "HACTL_CA={}\n\
         if [ -f {RECORD_PATH} ]; then echo {RECORD_MARK}; cat {RECORD_PATH}; fi\n\
         if [ -f \"$HACTL_CA\" ]; then echo {CA_MARK}; cat \"$HACTL_CA\"; fi\n\
         exit 0\n",
        crate::quote::q(ca_path)
    )
}

/// Whether `line` starts one of [`read_script`]'s sections (what precedes the first is the
/// facts').
pub fn is_mark(line: &str) -> bool {
    line == RECORD_MARK || line == CA_MARK
}

/// A node's record from [`read_script`]'s output.
pub fn parse_node(stdout: &str) -> NodeRecord {
    let mut record = NodeRecord::default();
    let mut section: Option<&str> = None;
    let (mut digests, mut ca) = (String::new(), String::new());
    for line in stdout.lines() {
        if line == RECORD_MARK || line == CA_MARK {
            section = Some(if line == RECORD_MARK { "record" } else { "ca" });
            if line == RECORD_MARK {
                record.digests = Some(BTreeMap::new());
            }
            continue;
        }
        match section {
            Some("record") => digests.push_str(&format!("{line}\n")),
            Some(_) => ca.push_str(&format!("{line}\n")),
            None => {}
        }
    }
    if record.digests.is_some() {
        record.digests = Some(parse_digest_record(&digests));
    }
    if stdout.lines().any(|l| l == CA_MARK) {
        record.ca = Some(ca);
    }
    record
}

impl Preflight {
    /// What differs between this run and a node's record (each a sentence naming it), the
    /// rotated secrets aside. A node without a record differs in nothing (a fresh node, or one
    /// provisioned by an older hactl: this run writes its record).
    pub fn differences(&self, node: &NodeRecord) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(recorded) = &node.digests {
            for (name, theirs) in recorded {
                if self.rotate.contains(name) {
                    continue;
                }
                let Some(ours) = self.digests.get(name) else {
                    continue;
                };
                if self.generated.contains(name) {
                    out.push(format!(
                        "{name} (missing from {}: it would be generated)",
                        self.secrets_file.display()
                    ));
                } else if ours != theirs && !self.history.is_older(name, theirs) {
                    out.push(format!("{name} (differs from the value the node was provisioned with)"));
                }
            }
        }
        if let (Some(theirs), Some((ours, new))) = (&node.ca, &self.ca) {
            match &self.pki {
                Some(pki) => out.extend(pki.refuses_node_ca(theirs)),
                None if *new || theirs.trim() != ours.trim() => out.push(crate::pki::FOREIGN_CA.to_string()),
                None => {}
            }
        }
        out
    }

    /// The secrets a node holds an older value of (it missed a rotation): this run updates
    /// them.
    pub fn behind(&self, node: &NodeRecord) -> Vec<String> {
        let Some(recorded) = &node.digests else {
            return Vec::new();
        };
        recorded
            .iter()
            .filter(|(name, theirs)| {
                !self.rotate.contains(*name)
                    && !self.generated.contains(*name)
                    && self.digests.get(*name).is_some_and(|ours| ours != *theirs)
                    && self.history.is_older(name, theirs)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The refusal for these differences per host, when there is any.
    pub fn verdict(&self, by_host: &BTreeMap<String, Vec<String>>) -> Result<()> {
        let mut hosts_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (host, differences) in by_host {
            for d in differences {
                hosts_of.entry(d).or_default().push(host);
            }
        }
        if hosts_of.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = hosts_of
            .iter()
            .map(|(d, hosts)| format!("{d} on {}", hosts.join(", ")))
            .collect();
        Err(miette!(
            "refused, nothing changed: the run's secrets are not the ones the nodes were provisioned with: {}. \
             Restore the secrets file (`hactl secrets recover INVENTORY` rebuilds it from the nodes) or the CA from a backup; \
             to change a secret on purpose, run with --rotate NAME",
            list.join("; ")
        ))
    }

    /// Writes what this run made locally (the secrets file, certificates).
    pub fn commit(&self) -> Result<()> {
        for write in [&self.secrets_write, &self.history_write].into_iter().flatten() {
            write.commit()?;
        }
        match &self.pki {
            Some(pki) => pki.commit(),
            None => Ok(()),
        }
    }
}

impl Engine {
    /// The run's first round trip to each of `hosts`, all at once: its facts ([`super::facts`])
    /// and its secrets record. Its output by host; a host not reached is left out (unreachable
    /// for the run), a failed read fails the run before anything changes.
    pub(super) async fn read_nodes(self: &Arc<Self>, hosts: &BTreeSet<String>) -> Result<BTreeMap<String, String>> {
        let mut reading = tokio::task::JoinSet::new();
        for host in hosts {
            let (me, host) = (Arc::clone(self), host.clone());
            let script = format!("{}{}", super::facts::SCRIPT, read_script(&self.node_ca_path(&host)));
            reading.spawn(async move {
                let remote = me.remote(&host).await?;
                me.reporter.host_activity(&host, "reading its facts and records");
                let out = remote.run(&script).await;
                me.reporter.host_idle(&host);
                Some((host, out))
            });
        }
        let mut outputs = BTreeMap::new();
        while let Some(read) = reading.join_next().await {
            let Some((host, out)) = read.ok().flatten() else {
                continue;
            };
            let out = out.map_err(|e| miette!("{host}: cannot read its facts and secrets record: {e}"))?;
            if out.code != 0 {
                return Err(miette!(
                    "{host}: cannot read its facts and secrets record (exit {}): {}; nothing changed",
                    out.code,
                    out.stderr.trim()
                ));
            }
            outputs.insert(host, out.stdout);
        }
        Ok(outputs)
    }

    /// Refuses the run when the record of any of `hosts` (their [`Engine::read_nodes`] output)
    /// differs from the run's secrets, else writes what the run made locally.
    pub(super) fn judge(&self, outputs: &BTreeMap<String, String>, hosts: &BTreeSet<&String>) -> Result<()> {
        let mut by_host = BTreeMap::new();
        for (host, stdout) in outputs.iter().filter(|(h, _)| hosts.contains(h)) {
            let node = parse_node(stdout);
            let behind = self.loaded.preflight.behind(&node);
            if !behind.is_empty() {
                self.reporter.log(&format!(
                    "note: {host} holds an older value of {} (it missed a rotation): this run updates it",
                    behind.join(", ")
                ));
            }
            by_host.insert(host.clone(), self.loaded.preflight.differences(&node));
        }
        self.loaded.preflight.verdict(&by_host)?;
        self.loaded.preflight.commit()
    }

    /// Where `host` keeps the cluster CA's certificate (see [`ca_path`]).
    fn node_ca_path(&self, host: &str) -> String {
        ca_path(self.contexts().get(host))
    }
}

/// Where a host with these variables keeps the cluster CA's certificate: `TLS_DIR/ca.crt`, or
/// [`NODE_CA_PATH`] without a `tls_dir`.
fn ca_path(vars: Option<&minijinja::Value>) -> String {
    let dir = vars.and_then(|vars| vars.get_attr(TLS_DIR_VAR).ok());
    match dir.as_ref().and_then(|d| d.as_str()).filter(|d| !d.is_empty()) {
        Some(dir) => format!("{}/ca.crt", dir.trim_end_matches('/')),
        None => NODE_CA_PATH.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{digest, digest_record};
    use std::path::Path;

    fn preflight() -> Preflight {
        Preflight {
            secrets_file: PathBuf::from("inv.secrets.yml"),
            digests: BTreeMap::from([
                ("a_password".to_string(), digest("a_password", "one")),
                ("b_key".to_string(), digest("b_key", "two")),
            ]),
            ca: Some(("CA\n".to_string(), false)),
            ..Preflight::default()
        }
    }

    fn node(values: &[(&str, &str)], ca: Option<&str>) -> NodeRecord {
        let digests: BTreeMap<String, String> = values.iter().map(|(n, v)| (n.to_string(), digest(n, v))).collect();
        let mut out = format!("{RECORD_MARK}\n{}", digest_record(&digests));
        if let Some(ca) = ca {
            out.push_str(&format!("{CA_MARK}\n{ca}"));
        }
        parse_node(&out)
    }

    #[test]
    fn a_node_without_a_record_is_fine_and_the_same_secrets_pass() {
        let pre = preflight();
        assert!(pre.differences(&parse_node("")).is_empty());
        assert!(pre
            .differences(&node(
                &[("a_password", "one"), ("b_key", "two"), ("gone", "x")],
                Some("CA")
            ))
            .is_empty());
    }

    #[test]
    fn a_differing_or_generated_secret_and_another_ca_are_named_unless_rotated() {
        let mut pre = preflight();
        pre.generated.insert("b_key".into());
        let theirs = node(&[("a_password", "old"), ("b_key", "two")], Some("OTHER CA\n"));
        let found = pre.differences(&theirs);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("a_password (differs"), "{found:?}");
        assert!(found[1].contains("b_key (missing from inv.secrets.yml"), "{found:?}");
        assert!(found[2].contains("cluster CA"), "{found:?}");
        let err = pre
            .verdict(&BTreeMap::from([
                ("node1".to_string(), found.clone()),
                ("node2".to_string(), found[..1].to_vec()),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a_password (differs from the value the node was provisioned with) on node1, node2"),
            "{err}"
        );
        assert!(err.contains("nothing changed") && err.contains("--rotate"), "{err}");
        assert!(!err.contains(&digest("a_password", "one")), "{err}");
        pre.rotate = BTreeSet::from(["a_password".to_string(), "b_key".to_string()]);
        pre.ca = Some(("OTHER CA".into(), false));
        assert!(pre.differences(&theirs).is_empty());
    }

    #[test]
    fn every_node_records_the_digests_of_the_secrets_file_s_values_and_postgres_keeps_a_copy() {
        use crate::engine::load::{DIGESTS_VAR, SECRETS_COPY_VAR};
        let dir = tempfile::tempdir().unwrap();
        let loaded = crate::engine::golden::loaded(dir.path(), crate::engine::golden::SPLIT);
        let file = crate::workspace::Workspace::of(&dir.path().join("inventory.yml")).secrets();
        let values = crate::secrets::parse(&std::fs::read_to_string(&file).unwrap(), &file).unwrap();
        let record = loaded.contexts["node4"].get_attr(DIGESTS_VAR).unwrap().to_string();
        let parsed = parse_digest_record(&record);
        assert_eq!(parsed.len(), values.len(), "{record}");
        for (name, value) in &values {
            assert_eq!(parsed[name], digest(name, value), "{name}");
            assert!(!record.contains(value.as_str()), "{name}'s value is in the record");
        }
        assert_eq!(loaded.preflight.digests, parsed);
        let copy = loaded.contexts["node1"].get_attr(SECRETS_COPY_VAR).unwrap().to_string();
        assert_eq!(crate::secrets::parse(&copy, &file).unwrap(), values);
    }

    #[test]
    fn a_node_holding_an_older_value_of_a_rotated_secret_is_behind_not_foreign() {
        let mut pre = preflight();
        let theirs = node(&[("a_password", "old"), ("b_key", "stranger")], None);
        assert_eq!(pre.differences(&theirs).len(), 2);
        let (history, write) = History::default()
            .with(
                &BTreeMap::from([("a_password".to_string(), digest("a_password", "old"))]),
                Path::new("h.json"),
            )
            .unwrap();
        assert!(write.is_some());
        pre.history = history;
        let found = pre.differences(&theirs);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("b_key (differs"), "{found:?}");
        assert_eq!(pre.behind(&theirs), vec!["a_password".to_string()]);
        assert!(pre.behind(&node(&[("a_password", "one")], None)).is_empty());
    }

    #[test]
    fn the_read_script_takes_the_ca_path_as_one_quoted_word() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("t $(x) l's");
        std::fs::create_dir(&tls).unwrap();
        std::fs::write(tls.join("ca.crt"), "THE CA\n").unwrap();
        let script = read_script(&tls.join("ca.crt").display().to_string());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}");
        assert_eq!(
            parse_node(&String::from_utf8_lossy(&out.stdout)).ca.as_deref(),
            Some("THE CA\n")
        );
    }

    #[test]
    fn the_ca_is_read_from_the_host_s_tls_dir() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = crate::engine::golden::loaded(dir.path(), crate::engine::golden::SPLIT);
        assert_eq!(ca_path(loaded.contexts.get("node1")), "/etc/hactl/tls/ca.crt");
        let tls_dir = loaded.contexts["node1"].get_attr(TLS_DIR_VAR).unwrap();
        assert_eq!(
            tls_dir.as_str(),
            Some("/etc/hactl/tls"),
            "read from the variables, not the default"
        );
        let moved = minijinja::context! { tls_dir => "/srv/tls/" };
        assert_eq!(ca_path(Some(&moved)), "/srv/tls/ca.crt");
        assert_eq!(ca_path(None), NODE_CA_PATH);
    }

    #[test]
    fn a_new_ca_over_a_node_that_trusts_one_is_refused() {
        let mut pre = preflight();
        pre.ca = Some(("CA\n".to_string(), true));
        assert_eq!(pre.differences(&node(&[], Some("CA\n"))).len(), 1);
        assert!(pre.differences(&node(&[], None)).is_empty());
    }
}
