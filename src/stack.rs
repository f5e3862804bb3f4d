//! The HA stack shipped inside the binary: `playbooks/`, `templates/`, the example
//! `inventories/` and a `.gitignore`, as they are in the repository. An installed `hactl` provisions the stack from
//! any directory; `hactl init DIR` writes these files out for a user who wants to change them
//! (then `-p DIR/playbooks/site.yml` uses that copy and the templates beside it).

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir, DirEntry};
use miette::{miette, Result};

/// The stack's playbooks.
pub static PLAYBOOKS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/playbooks");
/// The templates the playbooks render.
pub static TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");
/// The DAGs synced to every Airflow node (`dags/` at the repository root).
pub static DAGS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/dags");
/// Example inventories.
pub static INVENTORIES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/inventories");

/// What must never reach git beside an inventory (plaintext secrets, the cluster CA's and the
/// hosts' private keys, the run journal): the repository's own `.gitignore`, which `hactl init`
/// writes too.
pub static GITIGNORE: &[u8] = include_bytes!("../.gitignore");

/// The built-in playbook's name in messages: where `hactl init` writes it.
pub const SITE: &str = "playbooks/site.yml";

/// The text of the built-in site playbook.
pub fn site_playbook() -> &'static str {
    PLAYBOOKS
        .get_file("site.yml")
        .and_then(|f| f.contents_utf8())
        .expect("playbooks/site.yml is built in")
}

/// A built-in template's text, by its path under templates/.
pub fn template(name: &str) -> Option<&'static str> {
    TEMPLATES.get_file(name).and_then(|f| f.contents_utf8())
}

/// The built-in files under a top directory (`dags`) as (path relative to it, content),
/// sorted; `None` when no such directory is built in.
pub fn tree(dir: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let root = match dir.trim_end_matches('/') {
        "dags" => &DAGS,
        _ => return None,
    };
    let mut files = Vec::new();
    collect(Path::new(""), root, &mut files);
    let mut out: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .map(|(p, b)| (p.to_string_lossy().into_owned(), b.to_vec()))
        .collect();
    out.sort();
    Some(out)
}

/// Every built-in file as (path relative to a checkout, contents), in a stable order.
pub fn files() -> Vec<(PathBuf, &'static [u8])> {
    let mut out = Vec::new();
    for (root, dir) in [
        ("playbooks", &PLAYBOOKS),
        ("templates", &TEMPLATES),
        ("inventories", &INVENTORIES),
        ("dags", &DAGS),
    ] {
        collect(Path::new(root), dir, &mut out);
    }
    out.push((PathBuf::from(".gitignore"), GITIGNORE));
    out.sort();
    out
}

fn collect(root: &Path, dir: &Dir<'static>, out: &mut Vec<(PathBuf, &'static [u8])>) {
    for entry in dir.entries() {
        match entry {
            DirEntry::Dir(d) => collect(root, d, out),
            DirEntry::File(f) => out.push((root.join(f.path()), f.contents())),
        }
    }
}

/// Writes the built-in files under `dir` (`hactl init`). Files already there with the same
/// content are left alone; with different content nothing is written and the error lists them,
/// unless `force`. Returns the files written.
pub fn init(dir: &Path, force: bool) -> Result<Vec<PathBuf>> {
    let files = files();
    let differing: Vec<String> = files
        .iter()
        .filter(|(rel, bytes)| std::fs::read(dir.join(rel)).is_ok_and(|old| old != *bytes))
        .map(|(rel, _)| rel.display().to_string())
        .collect();
    if !differing.is_empty() && !force {
        return Err(miette!(
            "{} already holds different versions of: {} (nothing written; --force overwrites them)",
            dir.display(),
            differing.join(", ")
        ));
    }
    let mut written = Vec::new();
    for (rel, bytes) in files {
        let path = dir.join(&rel);
        if std::fs::read(&path).is_ok_and(|old| old == bytes) {
            continue;
        }
        crate::fsutil::write_atomic(&path, bytes, 0o644)?;
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_everything_once_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let written = init(dir.path(), false).unwrap();
        assert!(written.contains(&PathBuf::from(SITE)), "{written:?}");
        assert!(dir.path().join("templates/etcd/etcd.default.j2").is_file());
        let ignored = std::fs::read_to_string(dir.path().join(".gitignore")).unwrap();
        for kept_out in ["*.secrets.yml", "*.pki/", ".hactl/"] {
            assert!(ignored.lines().any(|l| l == kept_out), "{kept_out} in {ignored}");
        }
        assert!(
            init(dir.path(), false).unwrap().is_empty(),
            "a second init writes nothing"
        );
        std::fs::write(dir.path().join(SITE), "changed").unwrap();
        let err = init(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains(SITE) && err.contains("--force"), "{err}");
        assert_eq!(init(dir.path(), true).unwrap(), vec![PathBuf::from(SITE)]);
    }

    #[test]
    fn built_in_files_are_the_repository_files() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (rel, bytes) in files() {
            assert_eq!(std::fs::read(repo.join(&rel)).unwrap(), bytes, "{}", rel.display());
        }
    }
}
