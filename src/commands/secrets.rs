//! `hactl secrets recover INVENTORY`: a lost secrets file rebuilt from the nodes. Stage base
//! keeps a root-only copy of the secrets on the `postgres` hosts (`/etc/hactl/secrets.yml`) and
//! a digest of each on every node; the copy of the first reachable `postgres` host is checked
//! against every reachable node's digests, then written beside the inventory (0600; never over
//! an existing file; sealed with age when the environment gives a key). No value is ever printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use miette::{miette, Result};

use crate::engine::preflight::{parse_node, read_script};
use crate::inventory::Inventory;
use crate::secrets::{digest, parse, pending_file, sealed_path};
use crate::ssh::{self, HostKeyPolicy};
use crate::workspace::Workspace;

/// Where stage base keeps the copy of the secrets on the `postgres` hosts.
pub const NODE_COPY_PATH: &str = "/etc/hactl/secrets.yml";
/// How long to wait for a host that refuses connections.
const PATIENCE: Duration = Duration::from_secs(20);

/// Runs `hactl secrets recover` and says what it did (exit 1 on any refusal).
pub fn recover(inventory: &Path, policy: HostKeyPolicy) -> ExitCode {
    match crate::engine::block_on(recover_file(inventory, policy)) {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What each reachable host said: its record's output, and (a `postgres` host) its copy.
struct Read {
    record: String,
    copy: Option<String>,
}

/// Rebuilds the secrets file; what it did, in one line.
async fn recover_file(inventory: &Path, policy: HostKeyPolicy) -> Result<String> {
    let workspace = Workspace::of(inventory);
    let plain = workspace.secrets();
    if let Some(existing) = [plain.clone(), sealed_path(&plain)].into_iter().find(|p| p.exists()) {
        return Err(miette!(
            "{} exists: recover never overwrites a secrets file (move it away first)",
            existing.display()
        ));
    }
    let inventory = Inventory::load(inventory)?;
    let holders = inventory.groups.get("postgres").cloned().unwrap_or_default();
    let mut reads = BTreeMap::new();
    for (name, host) in &inventory.hosts {
        let Ok(remote) = ssh::connect(name, &host.conn, policy, PATIENCE, &|_| {}).await else {
            eprintln!("[{name}] unreachable: its record is not checked");
            continue;
        };
        let copy_script = format!("cat {NODE_COPY_PATH} 2>/dev/null || exit 0\n");
        let record = remote.run(&read_script()).await.map_err(|e| miette!("{name}: {e}"))?;
        let copy = match holders.contains(name) {
            true => Some(
                remote
                    .run(&copy_script)
                    .await
                    .map_err(|e| miette!("{name}: {e}"))?
                    .stdout,
            ),
            false => None,
        };
        reads.insert(
            name.clone(),
            Read {
                record: record.stdout,
                copy: copy.filter(|c| !c.trim().is_empty()),
            },
        );
    }
    let (source, text) = holders
        .iter()
        .find_map(|h| reads.get(h)?.copy.as_ref().map(|c| (h.clone(), c.clone())))
        .ok_or_else(|| {
            miette!(
                "no reachable host of group postgres holds a copy of the secrets ({NODE_COPY_PATH}): nothing recovered"
            )
        })?;
    let values = parse(&text, Path::new(&format!("{source}:{NODE_COPY_PATH}")))?;
    let records: BTreeMap<String, String> = reads.into_iter().map(|(h, r)| (h, r.record)).collect();
    let checked = check_against_records(&values, &records)?;
    let write = pending_file(&plain, &values)?;
    write.commit()?;
    Ok(format!(
        "recovered {} secrets from {source} into {} (checked against the records of {checked} nodes)",
        values.len(),
        write.path.display()
    ))
}

/// Checks every value against the digests each node recorded (a node without a record checks
/// nothing); the number of nodes whose record was checked, or a refusal naming each secret and
/// node that disagrees.
fn check_against_records(values: &BTreeMap<String, String>, records: &BTreeMap<String, String>) -> Result<usize> {
    let mut wrong: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut checked = 0;
    for (host, output) in records {
        let Some(digests) = parse_node(output).digests else {
            continue;
        };
        checked += 1;
        for (name, recorded) in &digests {
            if values.get(name).is_none_or(|v| digest(name, v) != *recorded) {
                wrong.entry(name.clone()).or_default().push(host);
            }
        }
    }
    if wrong.is_empty() {
        return Ok(checked);
    }
    let list: Vec<String> = wrong
        .iter()
        .map(|(name, hosts)| format!("{name} on {}", hosts.join(", ")))
        .collect();
    Err(miette!(
        "the copy of the secrets does not match the nodes' records ({}): nothing recovered",
        list.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::digest_record;

    fn record(values: &[(&str, &str)]) -> String {
        let digests = values.iter().map(|(n, v)| (n.to_string(), digest(n, v))).collect();
        format!("--hactl-record\n{}", digest_record(&digests))
    }

    #[test]
    fn a_copy_is_accepted_only_when_every_node_s_record_agrees() {
        let values = BTreeMap::from([
            ("a_password".to_string(), "v4lue-one".to_string()),
            ("b_key".to_string(), "v4lue-two".to_string()),
        ]);
        let records = BTreeMap::from([
            (
                "node1".to_string(),
                record(&[("a_password", "v4lue-one"), ("b_key", "v4lue-two")]),
            ),
            ("node2".to_string(), String::new()),
        ]);
        assert_eq!(check_against_records(&values, &records).unwrap(), 1);
        let records = BTreeMap::from([
            ("node1".to_string(), record(&[("a_password", "v4lue-one")])),
            (
                "node2".to_string(),
                record(&[("a_password", "v4lue-other"), ("c_cookie", "x")]),
            ),
        ]);
        let err = check_against_records(&values, &records).unwrap_err().to_string();
        assert!(err.contains("a_password on node2; c_cookie on node2"), "{err}");
        assert!(!err.contains("v4lue"), "{err}");
    }
}
