//! Handlers notified but not yet run, per host and stage, kept beside the inventory
//! (`.hactl/pending-handlers.json`) so that a restart owed by a failed run happens on the next run.
//! The file is replaced atomically; one that cannot be read is an error, never an empty list
//! (that would forget owed restarts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use miette::{miette, Result};

use crate::fsutil::write_atomic;
use crate::workspace::Workspace;

/// Host → stage → handler names.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Pending {
    #[serde(flatten)]
    hosts: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// The pending handlers of one inventory.
pub(super) struct PendingStore {
    path: PathBuf,
    state: Mutex<Pending>,
}

impl PendingStore {
    /// Opens the store of `workspace`'s inventory (empty when the file does not exist yet).
    pub(super) fn open(workspace: &Workspace) -> Result<Self> {
        let path = workspace.pending_handlers();
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                miette!(
                    "{} is corrupt ({e}): it lists restarts owed by an earlier run; fix or delete it",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Pending::default(),
            Err(e) => return Err(miette!("cannot read {}: {e}", path.display())),
        };
        Ok(PendingStore {
            path,
            state: Mutex::new(state),
        })
    }

    /// The handlers owed on `host` for `stage`.
    pub(super) fn get(&self, host: &str, stage: &str) -> BTreeSet<String> {
        let state = self.state.lock().expect("lock");
        state
            .hosts
            .get(host)
            .and_then(|s| s.get(stage))
            .cloned()
            .unwrap_or_default()
    }

    /// Records the handlers owed on `host` for `stage` (none clears them) and saves the file.
    pub(super) fn set(&self, host: &str, stage: &str, handlers: BTreeSet<String>) -> Result<()> {
        let mut state = self.state.lock().expect("lock");
        let stages = state.hosts.entry(host.to_string()).or_default();
        if handlers.is_empty() {
            stages.remove(stage);
        } else {
            stages.insert(stage.to_string(), handlers);
        }
        state.hosts.retain(|_, s| !s.is_empty());
        let text = serde_json::to_string_pretty(&*state).expect("pending serialises");
        write_atomic(&self.path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let inventory = dir.path().join("inventory.yml");
        let store = PendingStore::open(&Workspace::of(&inventory)).unwrap();
        store
            .set("node1", "etcd", BTreeSet::from(["restart etcd".to_string()]))
            .unwrap();
        let again = PendingStore::open(&Workspace::of(&inventory)).unwrap();
        assert_eq!(again.get("node1", "etcd"), BTreeSet::from(["restart etcd".to_string()]));
        let file = dir.path().join(".hactl/pending-handlers.json");
        std::fs::write(&file, "{not json").unwrap();
        let err = PendingStore::open(&Workspace::of(&inventory))
            .err()
            .expect("a corrupt file is an error");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
