//! What a run is computed from: the fingerprints of its inventory, playbook and secrets file,
//! and its selectors. A journal record and a saved plan both name them (and stamp their times
//! the same way, [`rfc3339`]).

use std::path::{Path, PathBuf};

use miette::{miette, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The inputs of a run: its fingerprints and selectors (what a journal record and a saved
/// plan name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The inventory file (as given).
    pub inventory: String,
    /// sha256 of the inventory with its group_vars/ and host_vars/.
    pub inventory_sha256: String,
    /// The playbook (`built-in` or its path).
    pub playbook: String,
    /// sha256 of the playbook and its templates.
    pub playbook_sha256: String,
    /// sha256 of the secrets file (its values never leave it).
    pub secrets_sha256: String,
    /// `--stages`, when given.
    pub stages: Option<Vec<String>>,
    /// `--limit`, when given.
    pub limit: Option<String>,
}

impl Inputs {
    /// The selectors, as `--stages … --limit …` (`(all)` where not given).
    pub fn selectors(&self) -> String {
        format!(
            "--stages {} --limit {}",
            self.stages.as_ref().map_or("(all)".into(), |s| s.join(",")),
            self.limit.as_deref().unwrap_or("(all)")
        )
    }
}

/// sha256 over the inventory file and the files of its group_vars/ and host_vars/ (name and
/// content, in order).
pub fn inventory_fingerprint(inventory: &Path) -> Result<String> {
    let mut hash = Sha256::new();
    let read = |p: &Path| std::fs::read(p).map_err(|e| miette!("cannot read {}: {e}", p.display()));
    hash.update(read(inventory)?);
    let dir = inventory.parent().unwrap_or(Path::new("."));
    for sub in ["group_vars", "host_vars"] {
        let mut files = Vec::new();
        collect_files(&dir.join(sub), &mut files);
        files.sort();
        for f in files {
            hash.update(f.display().to_string().as_bytes());
            hash.update(read(&f)?);
        }
    }
    Ok(hex::encode(hash.finalize()))
}

/// The regular files under `dir`, recursively (none when it does not exist).
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

/// sha256 over (path, content) pairs, in the order given.
pub fn fingerprint<'a>(files: impl IntoIterator<Item = (String, &'a [u8])>) -> String {
    let mut hash = Sha256::new();
    for (path, bytes) in files {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    hex::encode(hash.finalize())
}

/// A playbook's fingerprint on disk: the playbook and every file under the templates/ it
/// renders (when on disk).
pub fn disk_fingerprint(playbook: &Path, templates: Option<&Path>) -> Result<String> {
    let mut files = vec![playbook.to_path_buf()];
    if let Some(dir) = templates {
        collect_files(dir, &mut files);
    }
    files[1..].sort();
    let contents: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            std::fs::read(f)
                .map(|b| (f.display().to_string(), b))
                .map_err(|e| miette!("cannot read {}: {e}", f.display()))
        })
        .collect::<Result<_>>()?;
    Ok(fingerprint(contents.iter().map(|(p, b)| (p.clone(), b.as_slice()))))
}

/// sha256 of a file's bytes (absent: of nothing).
pub fn file_sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap_or_default()))
}

/// A time as RFC 3339 in UTC, to the second.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_fingerprint_follows_group_vars() {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inventory.yml");
        std::fs::write(&inv, "all: {}\n").unwrap();
        let before = inventory_fingerprint(&inv).unwrap();
        std::fs::create_dir(dir.path().join("group_vars")).unwrap();
        std::fs::write(dir.path().join("group_vars/all.yml"), "x: 1\n").unwrap();
        assert_ne!(inventory_fingerprint(&inv).unwrap(), before);
    }
}
