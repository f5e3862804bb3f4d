//! `hosts`: entries in /etc/hosts, each marked `# hactl`. Any other line naming a managed name
//! (e.g. the installer's `127.0.1.1 node1`) is removed, and so is a marked line no longer wanted
//! (a host that left the inventory).

use miette::Result;
use serde::{Deserialize, Serialize};

use super::awk_edit::{AwkEdit, EditFact};
use super::{Change, Resource, Templated};

/// One hosts entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostsEntry {
    /// The address.
    pub ip: String,
    /// Names for it, canonical first.
    pub names: Vec<String>,
}

/// Arguments of `hosts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hosts {
    /// Wanted entries.
    pub entries: Templated<Vec<HostsEntry>>,
    /// The hosts file (default /etc/hosts).
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/etc/hosts".into()
}

const HOSTS_AWK: &str = r#"BEGIN { n = split(ENVIRON["HACTL_ENTRIES"], want, "\n")
  for (i = 1; i <= n; i++) { m = split(want[i], f, " "); for (j = 2; j <= m; j++) managed[f[j]] = 1 } }
{ line = $0; ours = (line ~ /# hactl$/); sub(/#.*/, "", line); k = split(line, f, /[ \t]+/); norm = ""; hit = ours
  for (j = 1; j <= k; j++) if (f[j] != "") { norm = norm (norm == "" ? "" : " ") f[j] }
  m = split(norm, g, " "); for (j = 2; j <= m; j++) if (g[j] in managed) hit = 1
  if (!hit) { print; next }
  if (ours) for (i = 1; i <= n; i++) if (norm == want[i] && !(i in done)) { done[i] = 1; print; next } }
END { for (i = 1; i <= n; i++) if (!(i in done) && want[i] != "") print want[i] " # hactl" }"#;

impl Hosts {
    fn edit(&self) -> AwkEdit {
        let entries = self.entries.or_default();
        let lines: Vec<String> = entries
            .iter()
            .map(|e| format!("{} {}", e.ip, e.names.join(" ")))
            .collect();
        AwkEdit {
            path: self.path.clone(),
            program: HOSTS_AWK.into(),
            env: vec![("HACTL_ENTRIES", lines.join("\n"))],
            create: true,
            what: format!("{} entries", entries.len()),
        }
    }
}

impl Resource for Hosts {
    type Fact = EditFact;

    fn probe(&self) -> String {
        self.edit().probe()
    }
    fn diff(&self, fact: &EditFact) -> Result<Option<Change>> {
        self.entries.value("entries")?;
        self.edit().diff(fact)
    }
    fn apply(&self) -> String {
        self.edit().apply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{local_apply, local_diff};

    #[test]
    fn drops_conflicting_and_departed_lines_and_appends_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hosts");
        std::fs::write(
            &p,
            "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n# comment node1\n10.0.0.2 node2 # hactl\n10.0.0.3 node3 # hactl\n10.0.0.9 other\n",
        )
        .unwrap();
        let h = Hosts {
            path: p.display().to_string(),
            entries: Templated::Value(vec![
                HostsEntry {
                    ip: "10.0.0.1".into(),
                    names: vec!["node1".into()],
                },
                HostsEntry {
                    ip: "10.0.0.2".into(),
                    names: vec!["node2".into()],
                },
            ]),
        };
        assert!(local_diff(&h).unwrap().is_some());
        assert_eq!(local_apply(&h).rc, 0);
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "127.0.0.1\tlocalhost\n# comment node1\n10.0.0.2 node2 # hactl\n10.0.0.9 other\n10.0.0.1 node1 # hactl\n"
        );
        assert_eq!(local_diff(&h).unwrap(), None);
    }
}
