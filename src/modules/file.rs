//! `file`: a file's content (inline or from a template), owner, group and mode; atomic writes.

use base64::Engine;
use miette::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{fields, q, Attrs, Change, Module, Observed, Presence};

/// Largest file whose old content is fetched for a diff.
const DIFF_LIMIT: usize = 256 * 1024;

/// Arguments of `file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    /// Absolute path on the host.
    pub path: String,
    /// Inline content.
    pub content: Option<String>,
    /// A template in templates/, rendered with the host's variables.
    pub template: Option<String>,
    /// Owner user name.
    pub owner: Option<String>,
    /// Owner group name.
    pub group: Option<String>,
    /// Octal mode, quoted (e.g. "0644").
    pub mode: Option<String>,
    /// present (default) or absent.
    #[serde(default)]
    pub state: Presence,
    /// Never show the content in a diff (e.g. key files).
    #[serde(default)]
    pub sensitive: bool,
}

/// A file with its content resolved.
#[derive(Debug, Clone)]
pub struct File {
    /// The path.
    pub path: String,
    /// Wanted content; `None` manages only attributes of an existing file.
    pub content: Option<Vec<u8>>,
    /// Wanted attributes.
    pub attrs: Attrs,
    /// present or absent.
    pub state: Presence,
    /// Hide content in diffs.
    pub sensitive: bool,
}

impl File {
    fn want_hash(&self) -> String {
        self.content
            .as_ref()
            .map(|c| hex::encode(Sha256::digest(c)))
            .unwrap_or_default()
    }
}

impl Module for File {
    fn probe(&self) -> String {
        format!(
            "p={}\nif [ -f \"$p\" ]; then {}\n h=$(sha256sum < \"$p\" | cut -d' ' -f1); echo \"sha $h\"\n \
             if [ \"$h\" != {} ] && [ \"$(stat -c %s \"$p\")\" -le {DIFF_LIMIT} ]; then printf 'old '; base64 -w0 < \"$p\"; echo; fi\n\
             elif [ -e \"$p\" ]; then echo notfile; else echo absent; fi\n",
            q(&self.path),
            Attrs::probe_line(),
            q(&self.want_hash())
        )
    }

    fn diff(&self, observed: &Observed) -> Result<Option<Change>> {
        let f = fields(&observed.stdout);
        if f.contains_key("notfile") {
            return Err(miette::miette!("{} exists but is not a regular file", self.path));
        }
        let exists = !f.contains_key("absent");
        if self.state == Presence::Absent {
            return Ok(exists.then(|| Change::new(format!("remove {}", self.path))));
        }
        let Some(content) = &self.content else {
            if !exists {
                return Err(miette::miette!(
                    "{} does not exist and no content or template is given",
                    self.path
                ));
            }
            let parts = self.attrs.diff(f.get("attrs").copied().unwrap_or(""))?;
            return Ok((!parts.is_empty()).then(|| Change::new(format!("{}: {}", self.path, parts.join(", ")))));
        };
        if !exists {
            let diff = (!self.sensitive).then(|| unified_diff(&self.path, b"", content));
            return Ok(Some(Change {
                summary: format!("create {}", self.path),
                diff,
                counts: true,
            }));
        }
        let mut parts = self.attrs.diff(f.get("attrs").copied().unwrap_or(""))?;
        let mut diff = None;
        if f.get("sha").copied() != Some(self.want_hash().as_str()) {
            parts.insert(0, "content".into());
            if !self.sensitive {
                let old = f
                    .get("old")
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
                diff = Some(match old {
                    Some(old) => unified_diff(&self.path, &old, content),
                    None => "(old content too large or unreadable to diff)\n".into(),
                });
            }
        }
        Ok((!parts.is_empty()).then(|| Change {
            summary: format!("update {} ({})", self.path, parts.join(", ")),
            diff,
            counts: true,
        }))
    }

    fn apply(&self) -> String {
        let path = q(&self.path);
        if self.state == Presence::Absent {
            return format!("rm -f {path}\n");
        }
        let Some(content) = &self.content else {
            return format!("p={path}; target=\"$p\"\n{}", self.attrs.apply_lines("0644"));
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        format!(
            "p={path}; d=$(dirname \"$p\")\n\
             [ -d \"$d\" ] || {{ echo \"directory $d does not exist\" >&2; exit 1; }}\n\
             target=$(mktemp \"$d/.hactl.XXXXXX\") || exit 1\n\
             trap 'rm -f \"$target\"' EXIT\n\
             printf '%s' '{b64}' | base64 -d > \"$target\" || exit 1\n\
             {}mv -f \"$target\" \"$p\" || exit 1\ntrap - EXIT\n",
            self.attrs.apply_lines("0644")
        )
    }
}

/// A unified diff of two byte strings (lossy UTF-8), with `path` in the headers.
pub fn unified_diff(path: &str, old: &[u8], new: &[u8]) -> String {
    let (old, new) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (on host)"), &format!("{path} (wanted)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::run_local;
    use std::os::unix::fs::PermissionsExt;

    fn file(path: &str, content: &str, mode: Option<&str>) -> File {
        File {
            path: path.into(),
            content: Some(content.as_bytes().to_vec()),
            attrs: Attrs {
                owner: None,
                group: None,
                mode: mode.map(String::from),
            },
            state: Presence::Present,
            sensitive: false,
        }
    }

    #[test]
    fn create_update_and_converge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conf").display().to_string();
        let f = file(&path, "x=1\ny=2\n", Some("0600"));
        let change = f.diff(&run_local(&f.probe())).unwrap().unwrap();
        assert!(change.summary.starts_with("create"));
        assert_eq!(run_local(&f.apply()).rc, 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x=1\ny=2\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(f.diff(&run_local(&f.probe())).unwrap(), None);

        std::fs::write(&path, "x=1\ny=3\n").unwrap();
        let change = f.diff(&run_local(&f.probe())).unwrap().unwrap();
        assert!(change.summary.contains("content"), "{}", change.summary);
        let diff = change.diff.unwrap();
        assert!(diff.contains("-y=3") && diff.contains("+y=2"), "{diff}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        run_local(&f.apply());
        assert_eq!(f.diff(&run_local(&f.probe())).unwrap(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind: {leftovers:?}");
    }

    #[test]
    fn mode_only_change_keeps_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m").display().to_string();
        std::fs::write(&path, "same\n").unwrap();
        let f = file(&path, "same\n", Some("0640"));
        let change = f.diff(&run_local(&f.probe())).unwrap().unwrap();
        assert!(
            change.summary.contains("mode") && !change.summary.contains("content"),
            "{}",
            change.summary
        );
        assert!(change.diff.is_none());
        run_local(&f.apply());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn absent_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").display().to_string();
        std::fs::write(&path, "x").unwrap();
        let mut f = file(&path, "", None);
        f.state = Presence::Absent;
        assert!(f.diff(&run_local(&f.probe())).unwrap().is_some());
        run_local(&f.apply());
        assert!(f.diff(&run_local(&f.probe())).unwrap().is_none());
    }

    #[test]
    fn missing_directory_fails_cleanly() {
        let f = file("/nonexistent-dir-hactl/x", "a", None);
        assert_ne!(run_local(&f.apply()).rc, 0);
    }
}
