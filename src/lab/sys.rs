//! The lab's dealings with the host system: running its tools, writing files, preflight checks.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
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
