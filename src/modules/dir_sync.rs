//! `dir_sync`: a directory tree on the host made identical to a local one (the stack's `dags/`,
//! or any directory beside the playbook's `templates/`): files compared by content hash, each
//! written atomically, files and directories that are not in the source removed, owner and modes
//! set. The plan names every file added, changed and removed, with diffs of small text files.
//! Names matching `exclude` (e.g. `__pycache__`) are neither compared nor removed.
//!
//! The tree stays root's: the destination and every directory above it must belong to root and
//! be writable by root alone, with no symbolic link among them (else the probe refuses and
//! nothing changes); a link found inside the tree is removed, never followed.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use miette::{miette, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::file::unified_diff;
use super::{parse_mode, script, BuildCx, Change, Fact, Module, ProbeLines, Resource, Spec};

/// The module's shell functions.
const SH: &str = include_str!("dir_sync.sh");

/// Largest file whose old content the probe fetches for a diff.
const DIFF_LIMIT: usize = 64 * 1024;

/// Arguments of `dir_sync`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSyncArgs {
    /// The local directory: relative to the stack's root (`dags`: the repository's, built into
    /// hactl; with `-p`, the directory holding the playbook's `templates/`), or absolute.
    pub src: String,
    /// The directory on the host.
    pub dest: String,
    /// Owner of everything synced: root (the tree must stay root's, see the module's doc).
    pub owner: Option<String>,
    /// Group of everything synced.
    pub group: Option<String>,
    /// Files' mode.
    #[serde(default = "file_mode")]
    pub mode: String,
    /// Directories' mode.
    #[serde(default = "dir_mode")]
    pub dir_mode: String,
    /// Base-name globs left out on both sides.
    #[serde(default = "default_exclude")]
    pub exclude: Vec<String>,
}

fn file_mode() -> String {
    "0644".into()
}
fn dir_mode() -> String {
    "0755".into()
}
fn default_exclude() -> Vec<String> {
    vec!["__pycache__".into(), "*.pyc".into(), ".*".into()]
}

/// The tree to sync, read from the local source.
#[derive(Debug, Clone)]
pub struct DirSync {
    /// The arguments.
    args: DirSyncArgs,
    /// Relative path → content.
    files: BTreeMap<String, Vec<u8>>,
}

impl Spec for DirSyncArgs {
    /// Reads the local tree (before anything connects: a missing source stops the run early).
    fn build(self, cx: &BuildCx) -> Result<Box<dyn Module>> {
        let origin = cx.origin;
        for m in [&self.mode, &self.dir_mode] {
            parse_mode(m).map_err(|e| miette!("{origin}: {e}"))?;
        }
        let tree = cx
            .renderer
            .source()
            .tree(&self.src)
            .map_err(|e| miette!("{origin}: {e}"))?;
        DirSync::new(self, tree)
            .map(|m| Box::new(m) as Box<dyn Module>)
            .map_err(|e| miette!("{origin}: {e}"))
    }
}

impl DirSync {
    /// The module for a tree of (relative path, content); excluded names are dropped.
    pub fn new(args: DirSyncArgs, tree: Vec<(String, Vec<u8>)>) -> Result<Self> {
        if let Some(owner) = args.owner.as_ref().filter(|o| *o != "root") {
            return Err(miette!(
                "owner {owner}: a synced tree stays root's (its group may be another, to read it)"
            ));
        }
        let mut files = BTreeMap::new();
        for (path, content) in tree {
            if path.contains(['\n', '\\']) || path.split('/').any(|p| p.is_empty() || p == "..") {
                return Err(miette!("cannot sync a file named {path:?}"));
            }
            if !path
                .split('/')
                .any(|part| args.exclude.iter().any(|g| crate::inventory::glob_match(g, part)))
            {
                files.insert(path, content);
            }
        }
        Ok(DirSync { args, files })
    }

    /// Every directory the tree needs (relative, parents first).
    fn dirs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for path in self.files.keys() {
            let mut parts: Vec<&str> = path.split('/').collect();
            parts.pop();
            for i in 1..=parts.len() {
                out.insert(parts[..i].join("/"));
            }
        }
        out
    }

    fn hash(content: &[u8]) -> String {
        hex::encode(Sha256::digest(content))
    }

    /// Whether an entry's owner, group and mode are as wanted.
    fn attrs_ok(&self, entry: &Entry, mode: &str) -> bool {
        let want_mode = parse_mode(mode).unwrap_or(0);
        entry.mode == want_mode
            && self.args.owner.as_ref().is_none_or(|o| *o == entry.owner)
            && self.args.group.as_ref().is_none_or(|g| *g == entry.group)
    }
}

/// A file or directory as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
    /// A file's sha256 (empty for a directory).
    pub sha256: String,
}

/// The tree on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// The destination's own attributes (`None`: it does not exist).
    pub root: Option<Entry>,
    /// Directories under it.
    pub dirs: BTreeMap<String, Entry>,
    /// Files under it.
    pub files: BTreeMap<String, Entry>,
    /// Old contents of differing small files.
    pub old: BTreeMap<String, Vec<u8>>,
    /// Anything else under it (symbolic links, sockets...): removed, never followed.
    pub others: BTreeSet<String>,
}

/// Parses `MODE OWNER GROUP [SHA] PATH` (the path is the rest of the line).
fn entry(line: &str, with_hash: bool) -> Result<(String, Entry)> {
    let n = if with_hash { 5 } else { 4 };
    let f: Vec<&str> = line.splitn(n, ' ').collect();
    if f.len() != n {
        return Err(miette!("bad tree line from the probe: {line:?}"));
    }
    let mode = u32::from_str_radix(f[0], 8).map_err(|_| miette!("bad mode in {line:?}"))?;
    let sha256 = if with_hash { f[3].to_string() } else { String::new() };
    let e = Entry {
        mode,
        owner: f[1].into(),
        group: f[2].into(),
        sha256,
    };
    Ok((f[n - 1].to_string(), e))
}

impl Fact for Tree {
    fn parse(lines: &ProbeLines) -> Result<Self> {
        if lines.require("dest")? == "absent" {
            return Ok(Tree::default());
        }
        let (_, root) = entry(&format!("{} .", lines.require("root")?), false)?;
        let mut tree = Tree {
            root: Some(root),
            ..Tree::default()
        };
        for l in lines.all("dir") {
            let (path, e) = entry(l, false)?;
            tree.dirs.insert(path, e);
        }
        for l in lines.all("file") {
            let (path, e) = entry(l, true)?;
            tree.files.insert(path, e);
        }
        tree.others = lines.all("other").map(String::from).collect();
        for l in lines.all("old") {
            let (path, b64) = l
                .rsplit_once(' ')
                .ok_or_else(|| miette!("bad old line from the probe"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| miette!("bad old content from the probe: {e}"))?;
            tree.old.insert(path.to_string(), bytes);
        }
        Ok(tree)
    }
}

impl Resource for DirSync {
    type Fact = Tree;

    fn probe(&self) -> String {
        let want: Vec<String> = self
            .files
            .iter()
            .map(|(p, c)| format!("{} {p}", Self::hash(c)))
            .collect();
        let limit = DIFF_LIMIT.to_string();
        let vars = [
            ("HACTL_DEST", self.args.dest.as_str()),
            ("HACTL_EXCLUDE", &self.args.exclude.join("\n")),
            ("HACTL_WANT", &want.join("\n")),
            ("HACTL_DIFF_LIMIT", &limit),
        ];
        script(SH, &vars, "hactl_probe")
    }

    fn diff(&self, tree: &Tree) -> Result<Option<Change>> {
        let (mut added, mut changed, mut removed, mut attrs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut diff = String::new();
        for (path, content) in &self.files {
            match tree.files.get(path) {
                None => {
                    added.push(path.as_str());
                    diff.push_str(&unified_diff(path, b"", content));
                }
                Some(e) if e.sha256 != Self::hash(content) => {
                    changed.push(path.as_str());
                    match tree.old.get(path) {
                        Some(old) => diff.push_str(&unified_diff(path, old, content)),
                        None => diff.push_str(&format!("{path}: (old content too large to diff)\n")),
                    }
                }
                Some(e) if !self.attrs_ok(e, &self.args.mode) => attrs.push(path.as_str()),
                Some(_) => {}
            }
        }
        for (path, _) in tree.files.iter().filter(|(p, _)| !self.files.contains_key(*p)) {
            removed.push(path.as_str());
            if let Some(old) = tree.old.get(path) {
                diff.push_str(&unified_diff(path, old, b""));
            }
        }
        removed.extend(tree.others.iter().map(String::as_str));
        let dirs = self.dirs();
        for (path, e) in &tree.dirs {
            if !dirs.contains(path) {
                removed.push(path.as_str());
            } else if !self.attrs_ok(e, &self.args.dir_mode) {
                attrs.push(path.as_str());
            }
        }
        let mut parts = Vec::new();
        match &tree.root {
            None => parts.push(format!("create {}", self.args.dest)),
            Some(root) if !self.attrs_ok(root, &self.args.dir_mode) => attrs.push("."),
            Some(_) => {}
        }
        for (verb, list) in [
            ("add", &added),
            ("change", &changed),
            ("remove", &removed),
            ("set owner/mode of", &attrs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{verb} {}", list.join(", ")));
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let summary = format!("sync {}: {}", self.args.dest, parts.join("; "));
        Ok(Some(Change::with_diff(summary, (!diff.is_empty()).then_some(diff))))
    }

    fn apply(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(p, c)| format!("{p} {}", b64.encode(c)))
            .collect();
        let dirs: Vec<String> = self.dirs().into_iter().collect();
        let vars = [
            ("HACTL_DEST", self.args.dest.as_str()),
            ("HACTL_EXCLUDE", &self.args.exclude.join("\n")),
            ("HACTL_FILES", &files.join("\n")),
            ("HACTL_DIRS", &dirs.join("\n")),
            ("HACTL_OWNER", self.args.owner.as_deref().unwrap_or("")),
            ("HACTL_GROUP", self.args.group.as_deref().unwrap_or("")),
            ("HACTL_MODE", &self.args.mode),
            ("HACTL_DIR_MODE", &self.args.dir_mode),
        ];
        script(SH, &vars, "hactl_apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{local_apply, local_diff};
    use std::os::unix::fs::PermissionsExt;

    fn sync(dest: &std::path::Path, tree: &[(&str, &str)]) -> DirSync {
        let args = DirSyncArgs {
            src: "unused".into(),
            dest: dest.display().to_string(),
            owner: None,
            group: None,
            mode: "0644".into(),
            dir_mode: "0755".into(),
            exclude: default_exclude(),
        };
        let tree = tree
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        DirSync::new(args, tree).unwrap()
    }

    #[test]
    fn syncs_adds_changes_and_removes_then_is_in_sync() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dags");
        let first = sync(&dest, &[("a.py", "a = 1\n"), ("sub/b.py", "b = 1\n")]);
        let change = local_diff(&first).unwrap().unwrap();
        assert!(
            change.summary.contains("create") && change.summary.contains("add a.py, sub/b.py"),
            "{change:?}"
        );
        let out = local_apply(&first);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert_eq!(local_diff(&first).unwrap(), None, "in sync after apply");

        // A stray file, a stray directory, an ignored cache, a hand edit.
        std::fs::write(dest.join("stray.py"), "x\n").unwrap();
        std::fs::create_dir_all(dest.join("old/deeper")).unwrap();
        std::fs::create_dir_all(dest.join("__pycache__")).unwrap();
        std::fs::write(dest.join("__pycache__/a.cpython-311.pyc"), "bytecode").unwrap();
        std::fs::write(dest.join("a.py"), "a = 2\n").unwrap();
        std::fs::set_permissions(dest.join("sub/b.py"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let second = sync(&dest, &[("a.py", "a = 1\n"), ("sub/b.py", "b = 1\n"), ("c.py", "c\n")]);
        let change = local_diff(&second).unwrap().unwrap();
        assert_eq!(
            change.summary,
            format!(
                "sync {}: add c.py; change a.py; remove stray.py, old, old/deeper; set owner/mode of sub/b.py",
                dest.display()
            )
        );
        let diff = change.diff.unwrap();
        assert!(
            diff.contains("-a = 2") && diff.contains("+a = 1") && diff.contains("+c"),
            "{diff}"
        );
        let out = local_apply(&second);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert_eq!(local_diff(&second).unwrap(), None, "in sync after the second apply");
        assert!(!dest.join("stray.py").exists() && !dest.join("old").exists());
        assert!(
            dest.join("__pycache__/a.cpython-311.pyc").exists(),
            "excluded names are left alone"
        );
        assert_eq!(std::fs::read_to_string(dest.join("a.py")).unwrap(), "a = 1\n");
        let mode = std::fs::metadata(dest.join("sub/b.py")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn an_unchanged_file_is_not_rewritten() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("d");
        let s = sync(&dest, &[("a.py", "a\n")]);
        assert_eq!(local_apply(&s).rc, 0);
        let before = std::fs::metadata(dest.join("a.py")).unwrap();
        std::fs::write(dest.join("extra"), "e").unwrap();
        assert_eq!(local_apply(&s).rc, 0);
        let after = std::fs::metadata(dest.join("a.py")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ino(), after.ino(), "same inode: not rewritten");
    }

    #[test]
    fn a_link_in_the_tree_is_removed_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dags");
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "k\n").unwrap();
        let s = sync(&dest, &[("a.py", "a\n"), ("sub/b.py", "b\n")]);
        assert_eq!(local_apply(&s).rc, 0);
        std::os::unix::fs::symlink(&outside, dest.join("evil")).unwrap();
        std::fs::remove_dir_all(dest.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        let change = local_diff(&s).unwrap().unwrap();
        assert!(change.summary.contains("remove evil, sub"), "{}", change.summary);
        let out = local_apply(&s);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert_eq!(local_diff(&s).unwrap(), None);
        assert!(outside.join("keep").exists() && !outside.join("b.py").exists());
        assert!(dest.join("sub").is_dir() && !dest.join("sub").is_symlink());
    }

    #[test]
    fn a_link_or_another_user_s_directory_on_the_way_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("hostname"), "h\n").unwrap();
        let home = root.path().join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::symlink(&etc, home.join("dags")).unwrap();
        let s = sync(&home.join("dags"), &[("a.py", "a\n")]);
        let probe = crate::modules::run_local(&Resource::probe(&s));
        assert!(
            probe.rc != 0 && probe.stderr.contains("symbolic link"),
            "{}",
            probe.stderr
        );
        let out = local_apply(&s);
        assert!(out.rc != 0 && out.stderr.contains("symbolic link"), "{}", out.stderr);
        assert_eq!(
            std::fs::read_dir(&etc).unwrap().count(),
            1,
            "nothing changed behind the link"
        );
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            std::fs::remove_file(home.join("dags")).unwrap();
            std::os::unix::fs::chown(&home, Some(65534), None).unwrap();
            let out = local_apply(&sync(&home.join("dags"), &[("a.py", "a\n")]));
            assert!(
                out.rc != 0 && out.stderr.contains("belongs to nobody"),
                "{}",
                out.stderr
            );
            assert!(!home.join("dags").exists());
        }
        let mut args = sync(&home, &[]).args;
        args.owner = Some("airflow".into());
        assert!(DirSync::new(args, vec![]).is_err(), "a tree another user owns");
    }

    #[test]
    fn a_root_s_link_above_the_destination_is_followed_another_user_s_is_not() {
        let root = tempfile::tempdir().unwrap();
        let srv = root.path().join("srv");
        std::fs::create_dir(&srv).unwrap();
        let opt = root.path().join("opt");
        std::os::unix::fs::symlink(&srv, &opt).unwrap();
        let s = sync(&opt.join("dags"), &[("a.py", "a\n")]);
        let out = local_apply(&s);
        assert_eq!(out.rc, 0, "{}", out.stderr);
        assert_eq!(std::fs::read_to_string(srv.join("dags/a.py")).unwrap(), "a\n");
        assert_eq!(local_diff(&s).unwrap(), None);
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").unwrap().uid() == 0 {
            std::os::unix::fs::lchown(&opt, Some(65534), None).unwrap();
            let out = local_apply(&sync(&opt.join("dags"), &[("b.py", "b\n")]));
            assert!(
                out.rc != 0 && out.stderr.contains("belongs to nobody"),
                "{}",
                out.stderr
            );
            assert!(!srv.join("dags/b.py").exists());
        }
    }

    #[test]
    fn names_that_cannot_travel_are_refused() {
        let dest = std::path::Path::new("/x");
        let args = sync(dest, &[]).args;
        for bad in ["a\nb", "../up", "a//b"] {
            assert!(
                DirSync::new(args.clone(), vec![(bad.into(), vec![])]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_built_in_dags_include_the_smoke_dag() {
        let tree = crate::render::TemplateSource::BuiltIn.tree("dags").unwrap();
        assert!(tree.iter().any(|(p, _)| p == "hactl_smoke.py"), "{tree:?}");
    }
}
