//! `hactl secrets recover INVENTORY`: a lost secrets file rebuilt from the nodes. Stage base
//! keeps a root-only copy of the secrets on the `postgres` hosts (`/etc/hactl/secrets.yml`) and
//! a digest of each on every node; the first copy of a reachable `postgres` host that every
//! reachable node's digests agree with (a node that missed a rotation aside, by the local history
//! of rotated-away digests) is written beside the inventory (0600; never over
//! an existing file; sealed with age when the environment gives a key). No value is ever printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use miette::{miette, Result};

use crate::engine::preflight::{parse_node, read_script, NODE_CA_PATH};
use crate::inventory::Inventory;
use crate::secrets::{digest, parse, pending_file, sealed_path, History};
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
        let record = remote
            .run(&read_script(NODE_CA_PATH))
            .await
            .map_err(|e| miette!("{name}: {e}"))?;
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
    let copies: Vec<(String, String)> = holders
        .iter()
        .filter_map(|h| Some((h.clone(), reads.get(h)?.copy.clone()?)))
        .collect();
    let records: BTreeMap<String, String> = reads.into_iter().map(|(h, r)| (h, r.record)).collect();
    let history = History::load(&workspace.secret_history())?;
    let (source, values, checked) = choose_copy(&copies, &records, &history)?;
    let write = pending_file(&plain, &values)?;
    write.commit()?;
    Ok(format!(
        "recovered {} secrets from {source} into {} (checked against the records of {checked} nodes)",
        values.len(),
        write.path.display()
    ))
}

/// The first copy (host, text) that every node's record agrees with: its host, values and the
/// number of records checked; else a refusal saying why each copy was not taken.
fn choose_copy(
    copies: &[(String, String)],
    records: &BTreeMap<String, String>,
    history: &History,
) -> Result<(String, BTreeMap<String, String>, usize)> {
    if copies.is_empty() {
        return Err(miette!(
            "no reachable host of group postgres holds a copy of the secrets ({NODE_COPY_PATH}): nothing recovered"
        ));
    }
    let mut refusals = Vec::new();
    for (host, text) in copies {
        let checked = parse(text, Path::new(&format!("{host}:{NODE_COPY_PATH}")))
            .and_then(|values| Ok((check_against_records(&values, records, history)?, values)));
        match checked {
            Ok((checked, values)) => return Ok((host.clone(), values, checked)),
            Err(e) => refusals.push(format!("{host}'s: {e}")),
        }
    }
    Err(miette!(
        "no copy of the secrets agrees with every reachable node's record ({}): nothing recovered",
        refusals.join("; ")
    ))
}

/// Checks every value against the digests each node recorded (a node without a record checks
/// nothing; a node holding an older value of a secret, by `history`, missed its rotation and
/// does not count against a copy holding a newer one); the number of nodes whose record was
/// checked, or a refusal naming each secret and node that disagrees.
fn check_against_records(
    values: &BTreeMap<String, String>,
    records: &BTreeMap<String, String>,
    history: &History,
) -> Result<usize> {
    let mut wrong: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut checked = 0;
    for (host, output) in records {
        let Some(digests) = parse_node(output).digests else {
            continue;
        };
        checked += 1;
        for (name, recorded) in &digests {
            let ours = values.get(name).map(|v| digest(name, v));
            let behind = ours.as_ref().is_some_and(|d| !history.is_older(name, d)) && history.is_older(name, recorded);
            if ours.as_ref() != Some(recorded) && !behind {
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
    Err(miette!("it does not match the nodes' records ({})", list.join("; ")))
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
        assert_eq!(
            check_against_records(&values, &records, &History::default()).unwrap(),
            1
        );
        let records = BTreeMap::from([
            ("node1".to_string(), record(&[("a_password", "v4lue-one")])),
            (
                "node2".to_string(),
                record(&[("a_password", "v4lue-other"), ("c_cookie", "x")]),
            ),
        ]);
        let err = check_against_records(&values, &records, &History::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("a_password on node2; c_cookie on node2"), "{err}");
        assert!(!err.contains("v4lue"), "{err}");
    }

    #[test]
    fn the_copy_every_node_agrees_with_is_taken_and_a_node_behind_a_rotation_is_no_veto() {
        let copy = |pw: &str| format!("a_password: {pw}\nb_key: v4lue-two\n");
        let copies = vec![
            ("pg1".to_string(), copy("v4lue-old")),
            ("pg2".to_string(), copy("v4lue-new")),
        ];
        let records = BTreeMap::from([
            (
                "node1".to_string(),
                record(&[("a_password", "v4lue-new"), ("b_key", "v4lue-two")]),
            ),
            ("node2".to_string(), record(&[("a_password", "v4lue-new")])),
        ]);
        let none = History::default();
        let (source, values, checked) = choose_copy(&copies, &records, &none).unwrap();
        assert_eq!(
            (source.as_str(), values["a_password"].as_str(), checked),
            ("pg2", "v4lue-new", 2)
        );
        // node2 missed the rotation: only the history tells it is behind, not foreign.
        let records = BTreeMap::from([
            ("node1".to_string(), record(&[("a_password", "v4lue-new")])),
            ("node2".to_string(), record(&[("a_password", "v4lue-old")])),
        ]);
        let err = choose_copy(&copies, &records, &none).unwrap_err().to_string();
        assert!(
            err.contains("pg1's") && err.contains("pg2's") && err.contains("nothing recovered"),
            "{err}"
        );
        assert!(!err.contains("v4lue"), "{err}");
        let replaced = BTreeMap::from([("a_password".to_string(), digest("a_password", "v4lue-old"))]);
        let (history, _) = none.with(&replaced, Path::new("h.json")).unwrap();
        let (source, _, _) = choose_copy(&copies, &records, &history).unwrap();
        assert_eq!(
            source, "pg2",
            "the old copy never wins over a node holding the new value"
        );
        assert!(choose_copy(&[], &records, &history)
            .unwrap_err()
            .to_string()
            .contains("no reachable host"));
    }
}
