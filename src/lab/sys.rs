//! The lab's dealings with the host system: running its tools, writing files, preflight checks.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use super::{LabError, Result};

pub(super) fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn path_str(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

pub(super) fn io_err(path: &Path, source: std::io::Error) -> LabError {
    LabError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Runs a system command, returning its stdout, or an error with its stderr.
pub(super) fn run(program: &str, args: &[&str]) -> Result<String> {
    let cmd = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: cmd.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(LabError::Command {
            cmd,
            detail: format!("{} {detail}", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes a file atomically (a temporary file renamed over it) with `mode`.
pub(super) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    crate::fsutil::write_atomic(path, bytes, mode).map_err(|e| LabError::Command {
        cmd: format!("write {}", path.display()),
        detail: e.to_string(),
    })
}

/// `rel` inside a node's root `root`, safe for root to write: every directory on the way is a real
/// directory of the node (missing ones are made), never a symlink that the node's root could
/// point at the host's files; a symlink or other special file at the end is removed (the lab
/// puts a regular file there, by a rename that never follows it). Only while the node does not
/// run: nothing in it can then swap a path between this check and the write.
pub(super) fn node_path(root: &Path, rel: &str) -> Result<PathBuf> {
    let path = node_dirs(root, rel, true)?;
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        Ok(meta) if meta.is_dir() => return Err(unsafe_path(&path)),
        Ok(_) => fs::remove_file(&path).map_err(|e| io_err(&path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path, e)),
    }
    Ok(path)
}

/// `rel` inside `root`, every directory on the way checked to be a real directory (none a
/// symlink); missing ones are made when `make`, else an error. The last component is not looked
/// at (open it with O_NOFOLLOW, or see [`node_path`]).
pub(super) fn node_dirs(root: &Path, rel: &str, make: bool) -> Result<PathBuf> {
    let rel = Path::new(rel);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(unsafe_path(rel));
    };
    let mut dir = root.to_path_buf();
    for part in parent.components() {
        let Component::Normal(part) = part else {
            return Err(unsafe_path(rel));
        };
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(unsafe_path(&dir)),
            Err(e) if make && e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&dir).map_err(|e| io_err(&dir, e))?
            }
            Err(e) => return Err(io_err(&dir, e)),
        }
    }
    Ok(dir.join(name))
}

/// The error for a path inside a node that the lab does not go through.
fn unsafe_path(path: &Path) -> LabError {
    LabError::UnsafeNodePath {
        path: path.display().to_string(),
    }
}

/// Writes a kernel setting under /proc/sys (which cannot be replaced by a rename).
pub(super) fn write_sysctl(path: &str, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| io_err(Path::new(path), e))
}

/// Writes the file only when its bytes differ; returns whether it wrote.
pub(super) fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_file(path, bytes, mode)?;
    Ok(true)
}

pub(super) fn preflight_root() -> Result<()> {
    let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if uid != 0 {
        return Err(LabError::NotRoot);
    }
    Ok(())
}

pub(super) fn preflight() -> Result<()> {
    preflight_root()?;
    let tools: [(&str, &str); 6] = [
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("iptables", "iptables"),
        ("ip", "iproute2"),
        ("ssh-keygen", "openssh-client"),
        ("ssh", "openssh-client"),
    ];
    for (tool, package) in tools {
        if which::which(tool).is_err() {
            return Err(LabError::MissingTool {
                tool,
                package: if tool == "systemd-nspawn" {
                    "systemd-container debootstrap iptables"
                } else {
                    package
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_path_never_leads_through_a_symlink() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("shadow"), "secret").unwrap();
        // A directory on the way that points outside: refused, nothing written there.
        std::os::unix::fs::symlink(host.path(), root.path().join("etc")).unwrap();
        assert!(matches!(
            node_path(root.path(), "etc/hostname"),
            Err(LabError::UnsafeNodePath { .. })
        ));
        // A symlink at the end is removed, never followed.
        std::fs::create_dir_all(root.path().join("root/.ssh")).unwrap();
        let keys = root.path().join("root/.ssh/authorized_keys");
        std::os::unix::fs::symlink(host.path().join("shadow"), &keys).unwrap();
        let path = node_path(root.path(), "root/.ssh/authorized_keys").unwrap();
        assert_eq!(path, keys);
        assert!(!keys.exists() && keys.symlink_metadata().is_err());
        write_file(&path, b"key", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(host.path().join("shadow")).unwrap(), "secret");
        // Missing directories are made; a regular file stays; `..` is refused.
        let made = node_path(root.path(), "home/hactl/.ssh/authorized_keys").unwrap();
        assert!(made.parent().unwrap().is_dir());
        assert_eq!(node_path(root.path(), "root/.ssh/authorized_keys").unwrap(), keys);
        assert!(node_path(root.path(), "../x/y").is_err());
        // Checking without making: a missing directory is an error, nothing made.
        assert!(node_dirs(root.path(), "var/lib/x", false).is_err());
        assert!(!root.path().join("var").exists());
        assert!(node_dirs(root.path(), "etc/x", false).is_err());
    }
}
