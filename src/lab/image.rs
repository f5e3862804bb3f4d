//! The lab's base images: a debootstrap minbase Debian (one per release) with systemd, sshd and
//! a few tools, cached by release and a hash of its recipe and rebuilt when the recipe or the
//! host's CA certificates change; and the lab's SSH key.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::release::Release;
use super::sys::{io_err, path_str, run, write_file};
use super::{Lab, Result, SUDO_USER};

/// Packages of the base image, on top of debootstrap's minbase (the same names on Debian 12 and 13).
const BASE_PACKAGES: [&str; 9] = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "iproute2",
    "ca-certificates",
    "sudo",
    "procps",
];
/// Bumped whenever the image customisation below changes, so the cached image is rebuilt.
const IMAGE_RECIPE_VERSION: &str = "4";
/// Where each node sees the shared apt package pool. Sharing /var/cache/apt/archives itself
/// would make parallel apt runs fail on its lock, so apt hooks copy packages in and out instead.
pub(super) const APT_POOL: &str = "/var/cache/hactl-apt-pool";
/// apt configuration of the image: pull pooled packages after `update`, push new ones after dpkg.
const APT_POOL_CONF: &str = "APT::Update::Post-Invoke { \"cp -n /var/cache/hactl-apt-pool/*.deb /var/cache/apt/archives/ 2>/dev/null || true\"; };\n\
DPkg::Post-Invoke { \"cp -n /var/cache/apt/archives/*.deb /var/cache/hactl-apt-pool/ 2>/dev/null || true\"; };\n";
/// Host directory with extra CA certificates copied into the image.
const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

impl Lab {
    /// The cached base image of `release` for the current recipe, built (atomically) when missing.
    pub(super) fn ensure_image(
        &self,
        release: Release,
        log: &mut dyn FnMut(&str),
        changes: &mut Vec<String>,
    ) -> Result<PathBuf> {
        let name = image_name(release, &image_recipe_hash(release)?);
        let images = self.root.join("images");
        let image = images.join(&name);
        if image.join("etc/debian_version").exists() {
            return Ok(image);
        }
        fs::create_dir_all(&images).map_err(|e| io_err(&images, e))?;
        let building = images.join(format!("{name}.building"));
        if building.exists() {
            fs::remove_dir_all(&building).map_err(|e| io_err(&building, e))?;
        }
        log(&format!(
            "building the Debian {} base image with debootstrap (about a minute, once)",
            release.number()
        ));
        let mirror = std::env::var("HACTL_LAB_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let include = format!("--include={}", BASE_PACKAGES.join(","));
        run(
            "debootstrap",
            &[
                "--variant=minbase",
                &include,
                release.codename(),
                path_str(&building),
                &mirror,
            ],
        )?;
        customise_image(&building)?;
        fs::rename(&building, &image).map_err(|e| io_err(&image, e))?;
        self.remove_stale_images(release, &name)?;
        changes.push(format!("built base image {name}"));
        Ok(image)
    }

    /// Removes the images of `release`'s older recipes (and those made before images carried
    /// their release) but `keep` and those a node's overlay still stands on (a running node keeps
    /// its image; a later rebuild removes it once unused). Other releases' images stay cached.
    fn remove_stale_images(&self, release: Release, keep: &str) -> Result<()> {
        let images = self.root.join("images");
        let in_use = lower_dirs(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        let entries = fs::read_dir(&images).map_err(|e| io_err(&images, e))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let name = file_name.to_string_lossy();
            if name != keep && is_stale_candidate(&name, release) && !in_use.contains(&entry.path()) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|e| io_err(&path, e))?;
            }
        }
        Ok(())
    }

    /// The lab's SSH key pair, generated once.
    pub(super) fn ensure_key(&self, changes: &mut Vec<String>) -> Result<()> {
        let key = self.key_path();
        if key.exists() {
            return Ok(());
        }
        let dir = key.parent().expect("key has a parent");
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        run(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", "hactl-lab", "-f", path_str(&key)],
        )?;
        changes.push(format!("generated lab key {}", key.display()));
        Ok(())
    }
}

/// Writes the image customisation: no shared host keys, networkd, the sudo user, the host's CAs.
fn customise_image(root: &Path) -> Result<()> {
    let ssh = root.join("etc/ssh");
    for entry in fs::read_dir(&ssh).map_err(|e| io_err(&ssh, e))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
        }
    }
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).map_err(|e| io_err(&wants, e))?;
    let link = wants.join("systemd-networkd.service");
    if !link.exists() {
        std::os::unix::fs::symlink("/lib/systemd/system/systemd-networkd.service", &link)
            .map_err(|e| io_err(&link, e))?;
    }
    write_file(
        &root.join("etc/ssh/sshd_config.d/hactl-lab.conf"),
        b"UseDNS no\nPermitRootLogin prohibit-password\nMaxSessions 10\n",
        0o644,
    )?;
    write_file(
        &root.join("etc/apt/apt.conf.d/90hactl-lab-pool"),
        APT_POOL_CONF.as_bytes(),
        0o644,
    )?;
    fs::create_dir_all(root.join(&APT_POOL[1..])).map_err(|e| io_err(root, e))?;
    write_file(
        &root.join(format!("etc/sudoers.d/{SUDO_USER}")),
        format!("{SUDO_USER} ALL=(ALL) NOPASSWD:ALL\n").as_bytes(),
        0o440,
    )?;
    for cert in host_ca_files() {
        let dest = root
            .join("usr/local/share/ca-certificates")
            .join(cert.file_name().expect("file"));
        let bytes = fs::read(&cert).map_err(|e| io_err(&cert, e))?;
        write_file(&dest, &bytes, 0o644)?;
    }
    let setup = format!(
        "useradd --create-home --uid 1000 --shell /bin/bash {SUDO_USER} && update-ca-certificates >/dev/null && \
         apt-get clean && rm -f /etc/machine-id && touch /etc/machine-id"
    );
    run("chroot", &[path_str(root), "/bin/sh", "-c", &setup]).map(|_| ())
}

/// Every overlay mount's lower directories (`lowerdir=A:B` in mountinfo's super options, after
/// the ` - ` separator).
fn lower_dirs(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split_once(" - ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split(' ').nth(2))
        .flat_map(|options| options.split(','))
        .filter_map(|option| option.strip_prefix("lowerdir="))
        .flat_map(|dirs| dirs.split(':'))
        .map(PathBuf::from)
        .collect()
}

/// The directory name of `release`'s image for the recipe `hash`.
fn image_name(release: Release, hash: &str) -> String {
    format!("{}-{hash}", release.codename())
}

/// Whether the image directory `name` is one `release`'s rebuild may remove: its own release's,
/// or one named before images carried their release (no `-`).
fn is_stale_candidate(name: &str, release: Release) -> bool {
    name.strip_prefix(release.codename())
        .is_some_and(|rest| rest.starts_with('-'))
        || !name.contains('-')
}

/// Sha256 over everything `release`'s image is built from, first 16 hex digits.
fn image_recipe_hash(release: Release) -> Result<String> {
    let mut hash = Sha256::new();
    hash.update(IMAGE_RECIPE_VERSION);
    hash.update(release.codename());
    hash.update(BASE_PACKAGES.join(","));
    for cert in host_ca_files() {
        hash.update(cert.file_name().expect("file").as_encoded_bytes());
        hash.update(fs::read(&cert).map_err(|e| io_err(&cert, e))?);
    }
    Ok(hex::encode(hash.finalize())[..16].to_string())
}

/// The host's extra CA certificates, copied into the image.
fn host_ca_files() -> Vec<PathBuf> {
    let mut certs: Vec<PathBuf> = fs::read_dir(HOST_CA_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect()
        })
        .unwrap_or_default();
    certs.sort();
    certs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_release_has_its_own_image() {
        assert_eq!(image_name(Release::Trixie, "0123"), "trixie-0123");
        assert!(is_stale_candidate("trixie-0123", Release::Trixie));
        assert!(is_stale_candidate("trixie-0123.building", Release::Trixie));
        assert!(!is_stale_candidate("bookworm-0123", Release::Trixie));
        assert!(is_stale_candidate("0123456789abcdef", Release::Trixie));
        assert!(!is_stale_candidate("trixies-0123", Release::Trixie));
    }

    #[test]
    fn the_images_under_overlays_are_found() {
        let mountinfo = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
            301 22 0:52 / /var/lib/hactl/lab/nodes/node1/root rw,relatime shared:150 - overlay overlay \
            rw,lowerdir=/var/lib/hactl/lab/images/0123456789abcdef,upperdir=/var/lib/hactl/lab/nodes/node1/upper,\
            workdir=/var/lib/hactl/lab/nodes/node1/work\n\
            302 22 0:53 / /x rw - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w\n";
        assert_eq!(
            lower_dirs(mountinfo),
            [
                PathBuf::from("/var/lib/hactl/lab/images/0123456789abcdef"),
                PathBuf::from("/a"),
                PathBuf::from("/b")
            ]
        );
    }
}
