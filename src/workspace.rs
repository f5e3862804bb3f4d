//! The files hactl keeps beside an inventory, all named here: the secrets
//! (`INVENTORY.secrets.yml`), the certificate authority and host certificates
//! (`INVENTORY.pki/`), the run journal (`.hactl/runs.jsonl`), the handlers owed across runs
//! (`.hactl/pending-handlers.json`) and the digests of rotated-away secrets
//! (`.hactl/INVENTORY.secret-history.json`). A saved plan names the secrets file by its fingerprint.

use std::path::{Path, PathBuf};

/// An inventory and the files kept beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    inventory: PathBuf,
}

impl Workspace {
    /// The workspace of the inventory at `inventory` (as given: relative paths stay relative).
    pub fn of(inventory: &Path) -> Self {
        Workspace {
            inventory: inventory.to_path_buf(),
        }
    }

    /// Where the inventory's secrets are kept: `INVENTORY.secrets.yml`.
    pub fn secrets(&self) -> PathBuf {
        self.beside("secrets.yml")
    }

    /// The directory of the inventory's CA and host certificates: `INVENTORY.pki/`.
    pub fn pki_dir(&self) -> PathBuf {
        self.beside("pki")
    }

    /// The run journal: `.hactl/runs.jsonl` in the inventory's directory (`./.hactl/…` when the
    /// inventory is named without one, as `hactl log` says it).
    pub fn journal(&self) -> PathBuf {
        let dir = self.dir().filter(|d| !d.as_os_str().is_empty());
        dir.unwrap_or(Path::new(".")).join(".hactl/runs.jsonl")
    }

    /// Where the handlers owed on the inventory's hosts are kept:
    /// `.hactl/pending-handlers.json` in the inventory's directory.
    pub fn pending_handlers(&self) -> PathBuf {
        self.dir()
            .unwrap_or(Path::new("."))
            .join(".hactl/pending-handlers.json")
    }

    /// The digests of the secrets' rotated-away values: `.hactl/INVENTORY.secret-history.json`
    /// in the inventory's directory.
    pub fn secret_history(&self) -> PathBuf {
        let stem = self
            .inventory
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("inventory");
        self.dir()
            .unwrap_or(Path::new("."))
            .join(format!(".hactl/{stem}.secret-history.json"))
    }

    /// The inventory's directory, as given (empty for a bare file name).
    fn dir(&self) -> Option<&Path> {
        self.inventory.parent()
    }

    /// `INVENTORY.SUFFIX`: the inventory's file name without its extension, then `suffix`.
    fn beside(&self, suffix: &str) -> PathBuf {
        let stem = self
            .inventory
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("inventory");
        self.inventory.with_file_name(format!("{stem}.{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_the_name_it_always_had() {
        let ws = Workspace::of(Path::new("lab/inventory.yml"));
        assert_eq!(ws.secrets(), Path::new("lab/inventory.secrets.yml"));
        assert_eq!(ws.pki_dir(), Path::new("lab/inventory.pki"));
        assert_eq!(ws.journal(), Path::new("lab/.hactl/runs.jsonl"));
        assert_eq!(ws.pending_handlers(), Path::new("lab/.hactl/pending-handlers.json"));
        assert_eq!(
            ws.secret_history(),
            Path::new("lab/.hactl/inventory.secret-history.json")
        );
        let bare = Workspace::of(Path::new("inv.yml"));
        assert_eq!(bare.secrets(), Path::new("inv.secrets.yml"));
        assert_eq!(bare.journal().display().to_string(), "./.hactl/runs.jsonl");
        assert_eq!(
            bare.pending_handlers().display().to_string(),
            ".hactl/pending-handlers.json"
        );
    }
}
