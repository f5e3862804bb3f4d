//! `file`: a file's content (inline or from a template), owner, group and mode; atomic writes.

use base64::Engine;
use miette::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{script, Attrs, BuildCx, Change, Module, PathFact, PathKind, Presence, Resource, Spec};
use crate::secrets::Redactor;

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
    /// The run's secrets, when the content holds one: a diff then masks the value of every
    /// removed line the content lacks (the node's old content may hold old secrets).
    pub holds_secrets: Option<Redactor>,
}

impl Spec for FileArgs {
    /// Resolves the content (inline, or the template rendered with the host's variables).
    fn build(self, cx: &BuildCx) -> Result<Box<dyn Module>> {
        let origin = cx.origin;
        let content = match (&self.content, &self.template) {
            (Some(_), Some(_)) => return Err(miette::miette!("{origin}: give `content` or `template`, not both")),
            (Some(c), None) => Some(c.clone().into_bytes()),
            (None, Some(t)) => Some(cx.renderer.render_template(t, cx.ctx)?.into_bytes()),
            (None, None) => None,
        };
        if let Some(m) = &self.mode {
            super::parse_mode(m).map_err(|e| miette::miette!("{origin}: {e}"))?;
        }
        let holds_secrets = content
            .as_deref()
            .filter(|c| cx.redactor.finds_secret(&String::from_utf8_lossy(c)))
            .map(|_| cx.redactor.clone());
        Ok(Box::new(File {
            path: self.path,
            content,
            holds_secrets,
            attrs: Attrs {
                owner: self.owner,
                group: self.group,
                mode: self.mode,
            },
            state: self.state,
            sensitive: self.sensitive,
        }))
    }
}

/// The module's shell functions.
const SH: &str = include_str!("file.sh");

impl File {
    fn want_hash(&self) -> String {
        self.content
            .as_ref()
            .map(|c| hex::encode(Sha256::digest(c)))
            .unwrap_or_default()
    }

    /// The diff from a node's `old` content to the wanted `content`, masked as
    /// [`Redactor::redact_secret_file_diff`] does when the content holds secrets.
    fn masked_diff(&self, old: &[u8], content: &[u8]) -> String {
        let diff = unified_diff(&self.path, old, content);
        match &self.holds_secrets {
            Some(redactor) => redactor.redact_secret_file_diff(&diff, &String::from_utf8_lossy(content)),
            None => diff,
        }
    }

    /// The change to a file that exists, with content wanted.
    fn update(&self, fact: &PathFact, content: &[u8]) -> Result<Option<Change>> {
        let mut parts = self
            .attrs
            .diff(fact.ownership.as_ref().expect("an existing file has attrs"))?;
        let mut diff = None;
        if fact.sha256.as_deref() != Some(self.want_hash().as_str()) {
            parts.insert(0, "content".into());
            if !self.sensitive {
                diff = Some(match &fact.old {
                    Some(old) => self.masked_diff(old, content),
                    None => "(old content too large or unreadable to diff)\n".into(),
                });
            }
        }
        Ok(
            (!parts.is_empty())
                .then(|| Change::with_diff(format!("update {} ({})", self.path, parts.join(", ")), diff)),
        )
    }
}

impl Resource for File {
    type Fact = PathFact;

    fn probe(&self) -> String {
        let hash = self.want_hash();
        let limit = DIFF_LIMIT.to_string();
        script(
            SH,
            &[
                ("HACTL_PATH", &self.path),
                ("HACTL_WANT_SHA", &hash),
                ("HACTL_DIFF_LIMIT", &limit),
            ],
            "hactl_probe",
        )
    }

    fn diff(&self, fact: &PathFact) -> Result<Option<Change>> {
        match (fact.kind, self.state, &self.content) {
            (PathKind::Other, Presence::Absent, _) => Ok(Some(Change::new(format!("remove {}", self.path)))),
            (PathKind::Directory | PathKind::Other, _, _) => Err(miette::miette!(
                "{} exists but is not a regular file (hactl never writes through a symbolic link)",
                self.path
            )),
            (PathKind::Absent, Presence::Absent, _) => Ok(None),
            (PathKind::File, Presence::Absent, _) => Ok(Some(Change::new(format!("remove {}", self.path)))),
            (PathKind::Absent, Presence::Present, None) => Err(miette::miette!(
                "{} does not exist and no content or template is given",
                self.path
            )),
            (PathKind::File, Presence::Present, None) => {
                let parts = self
                    .attrs
                    .diff(fact.ownership.as_ref().expect("an existing file has attrs"))?;
                Ok((!parts.is_empty()).then(|| Change::new(format!("{}: {}", self.path, parts.join(", ")))))
            }
            (PathKind::Absent, Presence::Present, Some(content)) => Ok(Some(Change::with_diff(
                format!("create {}", self.path),
                (!self.sensitive).then(|| unified_diff(&self.path, b"", content)),
            ))),
            (PathKind::File, Presence::Present, Some(content)) => self.update(fact, content),
        }
    }

    fn apply(&self) -> String {
        let b64 = self
            .content
            .as_ref()
            .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
            .unwrap_or_default();
        let state = if self.state == Presence::Absent {
            "absent"
        } else {
            "present"
        };
        let write = if self.content.is_some() { "yes" } else { "no" };
        let [owner, group, mode] = self.attrs.vars();
        let vars = [
            ("HACTL_PATH", self.path.as_str()),
            ("HACTL_STATE", state),
            ("HACTL_WRITE", write),
            ("HACTL_CONTENT_B64", &b64),
            owner,
            group,
            mode,
        ];
        script(SH, &vars, "hactl_apply")
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
    use crate::modules::{local_apply, local_diff};
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
            holds_secrets: None,
        }
    }

    #[test]
    fn create_update_and_converge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.conf").display().to_string();
        let f = file(&path, "x=1\ny=2\n", Some("0600"));
        let change = local_diff(&f).unwrap().unwrap();
        assert!(change.summary.starts_with("create"));
        assert_eq!(local_apply(&f).rc, 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x=1\ny=2\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(local_diff(&f).unwrap(), None);

        std::fs::write(&path, "x=1\ny=3\n").unwrap();
        let change = local_diff(&f).unwrap().unwrap();
        assert!(change.summary.contains("content"), "{}", change.summary);
        let diff = change.diff.unwrap();
        assert!(diff.contains("-y=3") && diff.contains("+y=2"), "{diff}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        local_apply(&f);
        assert_eq!(local_diff(&f).unwrap(), None);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind: {leftovers:?}");
    }

    /// A `file` step with inline `content`, built as the engine builds it with these secrets.
    fn built(path: &str, content: &str, secrets: &[&str]) -> Box<dyn Module> {
        let renderer = crate::render::Renderer::new(&crate::render::TemplateSource::BuiltIn);
        let redactor = Redactor::new(secrets.iter().copied());
        let cx = BuildCx {
            origin: "test",
            renderer: &renderer,
            ctx: &minijinja::Value::UNDEFINED,
            redactor: &redactor,
        };
        let args = serde_json::json!({"path": path, "content": content});
        crate::modules::build("file", args, &cx).unwrap()
    }

    #[test]
    fn a_removed_line_of_a_file_holding_secrets_shows_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.cfg").display().to_string();
        std::fs::write(
            &path,
            "[db]\nold_token = gone-secret-1\npassword = old-secret-1\nport = 1\n",
        )
        .unwrap();
        let new = "[db]\npassword = new-secret-2\nport = 1\n";
        let f = built(&path, new, &["new-secret-2"]);
        let diff = local_diff(f.as_ref()).unwrap().unwrap().diff.unwrap();
        assert!(!diff.contains("secret-1") && !diff.contains("new-secret-2"), "{diff}");
        assert!(
            diff.contains("-old_token = (masked: this file holds secrets)"),
            "{diff}"
        );
        assert!(diff.contains("-password = (masked: this file holds secrets)"), "{diff}");

        let plain = built(&path, "[db]\nport = 2\n", &["new-secret-2"]);
        let diff = local_diff(plain.as_ref()).unwrap().unwrap().diff.unwrap();
        assert!(
            diff.contains("-password = old-secret-1\n"),
            "a file without secrets shows its removed lines as they are: {diff}"
        );
    }

    #[test]
    fn mode_only_change_keeps_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m").display().to_string();
        std::fs::write(&path, "same\n").unwrap();
        let f = file(&path, "same\n", Some("0640"));
        let change = local_diff(&f).unwrap().unwrap();
        assert!(
            change.summary.contains("mode") && !change.summary.contains("content"),
            "{}",
            change.summary
        );
        assert!(change.diff.is_none());
        local_apply(&f);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn empty_content_is_written_and_attributes_alone_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e").display().to_string();
        std::fs::write(&path, "old\n").unwrap();
        let f = file(&path, "", Some("0600"));
        assert_eq!(local_apply(&f).rc, 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let attrs_only = File {
            content: None,
            ..file(&path, "", Some("0640"))
        };
        assert_eq!(local_apply(&attrs_only).rc, 0);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(local_diff(&attrs_only).unwrap(), None);
    }

    #[test]
    fn a_directory_in_the_way_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(&dir.path().display().to_string(), "x", None);
        let err = local_diff(&f).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn absent_removes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").display().to_string();
        std::fs::write(&path, "x").unwrap();
        let mut f = file(&path, "", None);
        f.state = Presence::Absent;
        assert!(local_diff(&f).unwrap().is_some());
        local_apply(&f);
        assert!(local_diff(&f).unwrap().is_none());
    }

    /// Whether the tests run as root (the cases with another user's files need it).
    fn as_root() -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid() == 0
    }

    #[test]
    fn a_symbolic_link_at_the_path_is_refused_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        let path = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let f = file(&path.display().to_string(), "x\n", Some("0600"));
        let err = local_diff(&f).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let out = local_apply(&f);
        assert_ne!(out.rc, 0, "{}", out.stdout);
        assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);

        let mut gone = file(&path.display().to_string(), "", None);
        gone.state = Presence::Absent;
        assert!(local_diff(&gone).unwrap().is_some());
        assert_eq!(local_apply(&gone).rc, 0);
        assert!(std::fs::symlink_metadata(&path).is_err(), "the link itself is removed");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn a_directory_another_user_owns_gets_the_file_through_a_private_one() {
        if !as_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let theirs = root.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let path = theirs.join("config");
        let f = file(&path.display().to_string(), "x=1\n", Some("0640"));
        let out = local_apply(&f);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x=1\n");
        assert_eq!(local_diff(&f).unwrap(), None);
        let leftovers = std::fs::read_dir(root.path()).unwrap().count() + std::fs::read_dir(&theirs).unwrap().count();
        assert_eq!(leftovers, 2, "no temporary file or directory left behind");
    }

    #[test]
    fn a_link_another_user_owns_on_the_path_is_refused() {
        if !as_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let theirs = root.path().join("theirs");
        std::fs::create_dir_all(theirs.join("sub")).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        std::os::unix::fs::chown(theirs.join("sub"), Some(65534), Some(65534)).unwrap();
        // Nested directories another user owns: the private directory goes above them.
        let nested = theirs.join("sub/config");
        let out = local_apply(&file(&nested.display().to_string(), "x\n", None));
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert_eq!(std::fs::read_to_string(&nested).unwrap(), "x\n");
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, theirs.join("link")).unwrap();
        std::os::unix::fs::lchown(theirs.join("link"), Some(65534), Some(65534)).unwrap();
        let path = theirs.join("link/config");
        let out = local_apply(&file(&path.display().to_string(), "x\n", None));
        assert_ne!(out.rc, 0);
        assert!(out.stderr.contains("refusing to write"), "{}", out.stderr);
        assert!(!elsewhere.join("config").exists());
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            2,
            "no temporary directory left"
        );
    }

    #[test]
    fn a_directory_the_files_owner_owns_is_written_by_that_user() {
        if !as_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let theirs = root.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let path = theirs.join("server.key");
        let f = File {
            attrs: Attrs {
                owner: Some("nobody".into()),
                group: None,
                mode: Some("0600".into()),
            },
            ..file(&path.display().to_string(), "key\n", None)
        };
        for content in ["key\n", "key2\n"] {
            let f = File {
                content: Some(content.as_bytes().to_vec()),
                ..f.clone()
            };
            let out = local_apply(&f);
            assert_eq!(out.rc, 0, "{}", out.stderr);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
            assert_eq!(local_diff(&f).unwrap(), None);
        }
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o600));
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            1,
            "no private directory above it"
        );
        assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn no_trusted_directory_up_to_the_root_is_refused_not_looped_over() {
        let script = format!(
            "{}\n{SH}\nhactl_trusted_dir() {{ return 1; }}\nHACTL_PATH=/var/x/y\nhactl_staging /var/x",
            crate::modules::LIB_SH
        );
        let out = std::process::Command::new("timeout")
            .args(["20", "sh", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no directory above /var/x is root's alone"));
    }

    #[test]
    fn missing_directory_fails_cleanly() {
        let f = file("/nonexistent-dir-hactl/x", "a", None);
        assert_ne!(local_apply(&f).rc, 0);
    }
}
