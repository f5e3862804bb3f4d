//! The hosts' facts: `debian_release` (`"12"`, `"13"`) and `debian_codename` (`bookworm`,
//! `trixie`), from `/etc/os-release`; the versions, package names and paths of the stages follow
//! them. A run reads them in its first round trip to each host (the pre-flight's), before it renders any step, and
//! renders the variables again with them ([`super::Loaded::with_facts`]), the playbook's `checks` too
//! (a cluster on two releases is refused there, before anything changes). They win over the
//! inventory's variables of the same names, as Ansible's facts do. Before that round trip (the
//! load, which connects to nothing), and for a host the run does not reach or select, a host is
//! taken to run the inventory's `debian_release`/`debian_codename` when set, else the release most
//! of the reached hosts run (Debian 13, hactl's default, when none answered).

use std::collections::{BTreeMap, HashMap};

use miette::{miette, Result};
use serde_json::Value as Json;

use super::Engine;
use crate::inventory::{Inventory, Vars};

/// The fact naming a host's Debian major release.
pub const RELEASE_FACT: &str = "debian_release";
/// The fact naming a host's Debian codename.
pub const CODENAME_FACT: &str = "debian_codename";
/// The fact listing the PostgreSQL majors installed on a host, each padded with spaces.
const PG_MAJORS_FACT: &str = "postgresql_majors_installed";
/// The release a host is taken to run when neither it nor any other host answered.
const UNANSWERED: (&str, &str) = ("13", "trixie");
/// The facts script: read-only `key value` lines, the first part of the pre-flight round trip
/// ([`super::preflight::read_script`] follows it). Besides the release:
/// `postgresql_majors_installed`, every PostgreSQL major whose server is installed (` 15 17 `,
/// padded with spaces so that a check can look for ` N `): a host built on Debian 12 and upgraded
/// since by hand still has its cluster's major, and the playbook's `checks` refuse to install a
/// second one beside it. (An upgraded host beside others not upgraded is a cluster on two
/// releases, refused by the checks too.)
pub const SCRIPT: &str = "f=/etc/os-release; [ -r \"$f\" ] || f=/usr/lib/os-release\n\
sed -n -e 's/^VERSION_ID=\"\\{0,1\\}\\([^\"]*\\)\"\\{0,1\\}$/debian_release \\1/p' \
-e 's/^VERSION_CODENAME=\"\\{0,1\\}\\([^\"]*\\)\"\\{0,1\\}$/debian_codename \\1/p' \"$f\"\n\
majors=\n\
for b in /usr/lib/postgresql/*/bin/postgres; do if [ -x \"$b\" ]; then b=${b%/bin/postgres}; majors=\"$majors${b##*/} \"; fi; done\n\
if [ -n \"$majors\" ]; then echo \"postgresql_majors_installed  $majors\"; fi\n";

/// The facts a load starts from (it connects to nothing).
#[derive(Debug, Clone)]
pub enum FactSource {
    /// Each host's inventory `debian_release`/`debian_codename`, else Debian 12: until the run's
    /// first round trip reads the hosts' own.
    Assumed,
    /// Given (tests): each host's facts by name; a host missing here is assumed.
    Given(BTreeMap<String, Vars>),
    /// The same facts for every host (golden renders).
    Every(Vars),
}

impl FactSource {
    /// Every host on Debian `release` (`"12"`) named `codename`.
    pub fn every(release: &str, codename: &str) -> FactSource {
        let mut vars = Vars::new();
        vars.insert(RELEASE_FACT.into(), Json::String(release.into()));
        vars.insert(CODENAME_FACT.into(), Json::String(codename.into()));
        FactSource::Every(vars)
    }
}

/// The facts of every host of `inventory` that `source` gives, the others assumed.
pub fn facts(inventory: &Inventory, source: &FactSource) -> BTreeMap<String, Vars> {
    let known = match source {
        FactSource::Assumed => BTreeMap::new(),
        FactSource::Given(given) => given.clone(),
        FactSource::Every(vars) => inventory.hosts.keys().map(|h| (h.clone(), vars.clone())).collect(),
    };
    complete(inventory, known)
}

/// `known` (facts by host), with every other host of `inventory` assumed: its inventory's
/// `debian_release`/`debian_codename`, else the release most hosts of `known` run.
fn complete(inventory: &Inventory, mut known: BTreeMap<String, Vars>) -> BTreeMap<String, Vars> {
    let fallback = commonest(&known);
    for (name, host) in &inventory.hosts {
        if known.contains_key(name) {
            continue;
        }
        let mut vars = Vars::new();
        for (key, default) in [(RELEASE_FACT, &fallback.0), (CODENAME_FACT, &fallback.1)] {
            let value = host
                .vars
                .get(key)
                .cloned()
                .unwrap_or_else(|| Json::String(default.clone()));
            vars.insert(key.to_string(), value);
        }
        known.insert(name.clone(), vars);
    }
    known
}

impl Engine {
    /// Takes the facts in the pre-flight's answers (`outputs`, by host; the lines before its
    /// records) and renders every host's variables again with them, the others assumed. An
    /// answer that names no Debian release, or facts that a `check` refuses, fail the run before
    /// anything changes.
    pub(super) fn adopt_facts(&self, outputs: &BTreeMap<String, String>) -> Result<()> {
        let mut known = BTreeMap::new();
        let mut refused = Vec::new();
        for (host, stdout) in outputs {
            match parse(stdout) {
                Ok(vars) => {
                    known.insert(host.clone(), vars);
                }
                Err(why) => refused.push(format!("host {host}: {why}")),
            }
        }
        if !refused.is_empty() {
            return Err(miette!("{}", refused.join("\n")));
        }
        let facts = complete(&self.loaded.inventory, known);
        let contexts = self.loaded.with_facts(&facts)?;
        self.contexts
            .set(contexts)
            .map_err(|_| miette!("the facts were read twice"))?;
        Ok(())
    }
}

/// The release (number, codename) most reached hosts run, the first in order on a tie.
fn commonest(hosts: &BTreeMap<String, Vars>) -> (String, String) {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    let mut order = Vec::new();
    for vars in hosts.values() {
        let text = |k: &str| vars.get(k).and_then(Json::as_str).unwrap_or_default().to_string();
        let release = (text(RELEASE_FACT), text(CODENAME_FACT));
        if !order.contains(&release) {
            order.push(release.clone());
        }
        *counts.entry(release).or_default() += 1;
    }
    let mut best: Option<&(String, String)> = None;
    for release in &order {
        if best.is_none_or(|b| counts[release] > counts[b]) {
            best = Some(release);
        }
    }
    best.cloned()
        .unwrap_or_else(|| (UNANSWERED.0.to_string(), UNANSWERED.1.to_string()))
}

/// The facts in the script's output; an error when it names no Debian release.
fn parse(stdout: &str) -> std::result::Result<Vars, String> {
    let mut vars = Vars::new();
    for line in stdout.lines().take_while(|l| !super::preflight::is_mark(l)) {
        if let Some((key, value)) = line.split_once(' ') {
            let value = if key == PG_MAJORS_FACT { value } else { value.trim() };
            vars.insert(key.to_string(), Json::String(value.to_string()));
        }
    }
    let release = vars.get(RELEASE_FACT).and_then(Json::as_str).unwrap_or_default();
    let codename = vars.get(CODENAME_FACT).and_then(Json::as_str).unwrap_or_default();
    let numeric = !release.is_empty() && release.bytes().all(|b| b.is_ascii_digit());
    let word = !codename.is_empty() && codename.bytes().all(|b| b.is_ascii_lowercase());
    if !numeric || !word {
        return Err(format!(
            "/etc/os-release names no Debian release (VERSION_ID `{release}`, VERSION_CODENAME `{codename}`): hactl supports Debian 12 and 13"
        ));
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(number: &str, codename: &str) -> Vars {
        parse(&format!("debian_release {number}\ndebian_codename {codename}\n")).unwrap()
    }

    #[test]
    fn the_release_is_read_from_os_release() {
        let vars = release("13", "trixie");
        assert_eq!(vars[RELEASE_FACT], "13");
        assert_eq!(vars[CODENAME_FACT], "trixie");
        assert!(parse("debian_codename trixie\n").is_err());
        assert!(parse("debian_release 13.1\ndebian_codename trixie\n").is_err());
    }

    #[test]
    fn the_script_reads_os_release_and_the_majors_installed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("os-release");
        std::fs::write(
            &file,
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_ID=\"13\"\nVERSION_CODENAME=trixie\nID=debian\n",
        )
        .unwrap();
        let lib = dir.path().join("postgresql");
        let script = SCRIPT
            .replace("/etc/os-release", file.to_str().unwrap())
            .replace("/usr/lib/postgresql", lib.to_str().unwrap());
        let read = || {
            let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        assert_eq!(read(), "debian_release 13\ndebian_codename trixie\n", "a fresh host");
        for major in ["15", "17"] {
            let bin = lib.join(major).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("postgres"), "").unwrap();
            std::fs::set_permissions(
                bin.join("postgres"),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
        }
        let facts = parse(&read()).unwrap();
        assert_eq!(facts[PG_MAJORS_FACT], " 15 17 ", "padded for the check's ` N `");
    }

    #[test]
    fn an_unreached_host_takes_the_commonest_release() {
        let mut hosts = BTreeMap::new();
        hosts.insert("a".to_string(), release("13", "trixie"));
        hosts.insert("b".to_string(), release("12", "bookworm"));
        hosts.insert("c".to_string(), release("13", "trixie"));
        assert_eq!(commonest(&hosts), ("13".to_string(), "trixie".to_string()));
        assert_eq!(
            commonest(&BTreeMap::new()),
            ("13".to_string(), "trixie".to_string()),
            "none answered: the default"
        );
    }
}
