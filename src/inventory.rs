//! Ansible's YAML inventory: `all`/`children`/`hosts`/`vars`, `group_vars/` and `host_vars/` beside
//! the file, variables merged with Ansible's precedence (all < parent group < child group < host).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use miette::{miette, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A variable map, in file order.
pub type Vars = Map<String, Value>;

/// One group as written in the inventory file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    #[serde(default)]
    hosts: Option<IndexMap<String, Option<Vars>>>,
    #[serde(default)]
    vars: Option<Vars>,
    #[serde(default)]
    children: Option<IndexMap<String, Option<GroupSpec>>>,
}

/// How to reach a host: derived from its merged variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Address or name to connect to (`ansible_host` / `host`, default: the inventory name).
    pub address: String,
    /// SSH user (`ansible_user` / `user`).
    pub user: Option<String>,
    /// SSH port (`ansible_port` / `port`).
    pub port: Option<u16>,
    /// Private key (`ansible_ssh_private_key_file` / `key`), relative to the inventory.
    pub key: Option<PathBuf>,
    /// Run remote scripts through `sudo -n` (`ansible_become` / `become`).
    pub become_root: bool,
    /// known_hosts file to check host keys against (`hactl_known_hosts_file` / `known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// Seconds to keep trying a host that refuses connections or logins, e.g. while it boots
    /// (`hactl_connect_timeout`; default: `--connect-timeout`).
    pub connect_timeout: Option<u64>,
}

/// One host with its merged variables.
#[derive(Debug, Clone)]
pub struct Host {
    /// Inventory name.
    pub name: String,
    /// Variables after precedence merging (connection keys included).
    pub vars: Vars,
    /// Connection settings.
    pub conn: Connection,
}

/// A loaded inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The inventory file.
    pub path: PathBuf,
    /// Hosts in file order.
    pub hosts: IndexMap<String, Host>,
    /// Group name → member hosts (direct and through children), in host order. Includes `all`.
    pub groups: BTreeMap<String, Vec<String>>,
}

/// Flattened group tree while loading.
#[derive(Default)]
struct Tree {
    /// Group → (depth, vars in file order of its definitions).
    groups: IndexMap<String, (usize, Vars)>,
    /// Group → child groups.
    children: BTreeMap<String, BTreeSet<String>>,
    /// Group → directly listed hosts.
    members: BTreeMap<String, Vec<String>>,
    /// Host → inventory-file vars (merged across mentions).
    host_vars: IndexMap<String, Vars>,
}

impl Inventory {
    /// Loads an inventory file and the group_vars/ and host_vars/ beside it.
    pub fn load(path: &Path) -> Result<Self> {
        let source =
            std::fs::read_to_string(path).map_err(|e| miette!("cannot read inventory {}: {e}", path.display()))?;
        let file: IndexMap<String, Option<GroupSpec>> = parse_yaml(&source, path)?;
        let mut tree = Tree::default();
        for (name, spec) in file {
            tree.add_group(&name, spec.unwrap_or_default(), usize::from(name != "all"));
        }
        tree.groups.entry("all".into()).or_insert((0, Vars::new()));
        let all_hosts: Vec<String> = tree.host_vars.keys().cloned().collect();
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut groups = BTreeMap::new();
        for group in tree.groups.keys() {
            let members: BTreeSet<String> = if group == "all" {
                all_hosts.iter().cloned().collect()
            } else {
                tree.hosts_of(group)
            };
            let ordered = all_hosts.iter().filter(|h| members.contains(*h)).cloned().collect();
            groups.insert(group.clone(), ordered);
        }
        let mut hosts = IndexMap::new();
        for name in &all_hosts {
            let vars = merged_vars(&tree, &groups, dir, name)?;
            let conn = connection(name, &vars, dir)?;
            hosts.insert(
                name.clone(),
                Host {
                    name: name.clone(),
                    vars,
                    conn,
                },
            );
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
            groups,
        })
    }

    /// Hosts matching an Ansible-like pattern: names or groups separated by `,` or `:`, `*` globs,
    /// `!x` to exclude, `&x` to intersect. Result in inventory order.
    pub fn select(&self, pattern: &str) -> Result<Vec<String>> {
        let mut chosen: BTreeSet<String> = BTreeSet::new();
        let mut excluded: BTreeSet<String> = BTreeSet::new();
        let mut required: Vec<BTreeSet<String>> = Vec::new();
        for term in pattern.split([',', ':']).map(str::trim).filter(|t| !t.is_empty()) {
            if let Some(t) = term.strip_prefix('!') {
                excluded.extend(self.expand(t));
            } else if let Some(t) = term.strip_prefix('&') {
                required.push(self.expand(t));
            } else {
                let found = self.expand(term);
                if found.is_empty() {
                    return Err(miette!(
                        "pattern `{term}` matches no host or group of {}",
                        self.path.display()
                    ));
                }
                chosen.extend(found);
            }
        }
        Ok(self
            .hosts
            .keys()
            .filter(|h| chosen.contains(*h) && !excluded.contains(*h) && required.iter().all(|r| r.contains(*h)))
            .cloned()
            .collect())
    }

    fn expand(&self, term: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (group, members) in &self.groups {
            if glob_match(term, group) {
                out.extend(members.iter().cloned());
            }
        }
        out.extend(self.hosts.keys().filter(|h| glob_match(term, h)).cloned());
        out
    }
}

impl Tree {
    fn add_group(&mut self, name: &str, spec: GroupSpec, depth: usize) {
        let entry = self.groups.entry(name.to_string()).or_insert((depth, Vars::new()));
        entry.0 = entry.0.min(depth);
        if let Some(vars) = spec.vars {
            entry.1.extend(vars);
        }
        for (host, vars) in spec.hosts.unwrap_or_default() {
            self.host_vars
                .entry(host.clone())
                .or_default()
                .extend(vars.unwrap_or_default());
            self.members.entry(name.to_string()).or_default().push(host);
        }
        for (child, child_spec) in spec.children.unwrap_or_default() {
            self.children.entry(name.to_string()).or_default().insert(child.clone());
            self.add_group(&child, child_spec.unwrap_or_default(), depth + 1);
        }
    }

    fn hosts_of(&self, group: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.members.get(group).into_iter().flatten().cloned().collect();
        for child in self.children.get(group).into_iter().flatten() {
            out.extend(self.hosts_of(child));
        }
        out
    }
}

/// Merges a host's variables: groups by depth then name (inventory vars, then group_vars/ file),
/// then the host's inventory vars, then host_vars/.
fn merged_vars(tree: &Tree, groups: &BTreeMap<String, Vec<String>>, dir: &Path, host: &str) -> Result<Vars> {
    let mut mine: Vec<(usize, &String, &Vars)> = tree
        .groups
        .iter()
        .filter(|(g, _)| groups.get(*g).is_some_and(|m| m.iter().any(|h| h == host)))
        .map(|(g, (depth, vars))| (*depth, g, vars))
        .collect();
    mine.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut vars = Vars::new();
    for (_, group, group_vars) in mine {
        vars.extend(group_vars.clone());
        vars.extend(vars_dir_entry(&dir.join("group_vars"), group)?);
    }
    vars.extend(tree.host_vars.get(host).cloned().unwrap_or_default());
    vars.extend(vars_dir_entry(&dir.join("host_vars"), host)?);
    Ok(vars)
}

/// Reads `DIR/NAME.yml`, `DIR/NAME.yaml`, `DIR/NAME` or every `*.yml` in the directory `DIR/NAME/`.
fn vars_dir_entry(dir: &Path, name: &str) -> Result<Vars> {
    let mut vars = Vars::new();
    let base = dir.join(name);
    let mut files: Vec<PathBuf> = ["yml", "yaml"].iter().map(|e| base.with_extension(e)).collect();
    if base.is_dir() {
        let mut inside: Vec<PathBuf> = std::fs::read_dir(&base)
            .map_err(|e| miette!("{}: {e}", base.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        inside.sort();
        files.extend(inside);
    } else {
        files.push(base);
    }
    for file in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(file).map_err(|e| miette!("{}: {e}", file.display()))?;
        let loaded: Option<Vars> = parse_yaml(&text, file)?;
        vars.extend(loaded.unwrap_or_default());
    }
    Ok(vars)
}

fn connection(name: &str, vars: &Vars, dir: &Path) -> Result<Connection> {
    let get = |keys: &[&str]| keys.iter().find_map(|k| vars.get(*k)).filter(|v| !v.is_null());
    let text = |keys: &[&str]| get(keys).map(scalar_text);
    let port = match get(&["ansible_port", "port"]) {
        None => None,
        Some(v) => Some(
            scalar_text(v)
                .parse::<u16>()
                .map_err(|_| miette!("host {name}: ansible_port `{}` is not a port number", scalar_text(v)))?,
        ),
    };
    let connect_timeout = match get(&["hactl_connect_timeout"]) {
        None => None,
        Some(v) => Some(scalar_text(v).parse::<u64>().map_err(|_| {
            miette!(
                "host {name}: hactl_connect_timeout `{}` is not a number of seconds",
                scalar_text(v)
            )
        })?),
    };
    let become_root = match get(&["ansible_become", "become"]) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => matches!(scalar_text(v).to_ascii_lowercase().as_str(), "yes" | "true" | "1"),
    };
    let relative = |p: String| {
        let p = PathBuf::from(shellexpand_home(&p));
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    Ok(Connection {
        address: text(&["ansible_host", "host"]).unwrap_or_else(|| name.to_string()),
        user: text(&["ansible_user", "user"]),
        port,
        key: text(&["ansible_ssh_private_key_file", "key"]).map(relative),
        become_root,
        known_hosts: text(&["hactl_known_hosts_file", "known_hosts"]).map(relative),
        connect_timeout,
    })
}

fn shellexpand_home(path: &str) -> String {
    match (path.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => path.to_string(),
    }
}

/// A scalar's text (strings without quotes).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Shell-style glob matching of a host or group name (`*`, `?`, `[...]`); a pattern that is not
/// a valid glob matches only itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob::Pattern::new(pattern).map_or(pattern == text, |p| p.matches(text))
}

/// Parses YAML into `T`, turning errors into a report with file, line, column and a snippet in
/// which the values of secret-looking keys are masked (an inventory may hold passwords).
pub fn parse_yaml<T: serde::de::DeserializeOwned>(source: &str, path: &Path) -> Result<T> {
    serde_saphyr::from_str(source).map_err(|e| {
        let location = |e: &serde_saphyr::Error| {
            e.location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default()
        };
        // The error keeps its own copy of the lines around it: the report comes from the same
        // error on the masked text (same structure, same positions).
        let masked = mask_secret_values(source);
        match serde_saphyr::from_str::<T>(&masked) {
            Err(shown) if location(&shown) == location(&e) => serde_saphyr::miette::to_miette_report(
                &shown,
                &masked,
                &path.display().to_string(),
            )
            .wrap_err(format!("{}{}: invalid YAML", path.display(), location(&e))),
            // Masking moved the error: say what it is (its first line, no snippet of the lines
            // around, which may hold a secret) when its own line holds none.
            _ if e.location().is_some_and(|l| {
                let line = l.line().saturating_sub(1) as usize;
                source.lines().nth(line) == masked.lines().nth(line)
            }) =>
            {
                let what = e.to_string();
                let what = what.lines().next().unwrap_or("").trim_start_matches("error: ");
                miette!("{}{}: invalid YAML: {what}", path.display(), location(&e))
            }
            _ => miette!(
                "{}{}: invalid YAML (in a secret's value, not shown)",
                path.display(),
                location(&e)
            ),
        }
    })
}

/// `source` with the value of every key that names a secret (password, secret, token, cookie,
/// fernet or JWT keys) replaced by `_` of the same length (a plain scalar still; `*` would be an alias),
/// so that the structure, lines and columns stay true.
pub fn mask_secret_values(source: &str) -> String {
    static SECRET_KEY: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        let words = crate::secrets::SECRET_NAME_WORDS.join("|");
        regex::Regex::new(&format!(
            r#"(?i)([\w.-]*(?:{words})[\w.-]*["']?\s*:[ \t]*)([^,}}\]\n#]*)"#
        ))
        .expect("a valid pattern")
    });
    SECRET_KEY
        .replace_all(source, |c: &regex::Captures| {
            let value: String = c[2]
                .chars()
                .map(|ch| if ch.is_whitespace() { ch } else { '_' })
                .collect();
            format!("{}{value}", &c[1])
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    const INV: &str = "all:
  vars:
    level: all
    only_all: 1
  hosts:
    n1: {ansible_host: 10.0.0.1, level: host}
    n2:
      host: 10.0.0.2
      user: deploy
      become: true
  children:
    db:
      vars: {level: db, db_only: yes}
      hosts: {n1: {}, n2: {}}
      children:
        db_primary:
          vars: {level: db_primary}
          hosts: {n2: {}}
";

    #[test]
    fn precedence_all_group_child_host() {
        let dir = tempfile::tempdir().unwrap();
        let inv = write(dir.path(), "inv.yml", INV);
        write(dir.path(), "group_vars/db.yml", "from_group_file: 7\nlevel: db-file\n");
        write(dir.path(), "host_vars/n1.yml", "from_host_file: true\n");
        let inv = Inventory::load(&inv).unwrap();
        let n1 = &inv.hosts["n1"].vars;
        let n2 = &inv.hosts["n2"].vars;
        assert_eq!(n1["level"], "host");
        assert_eq!(n2["level"], "db_primary");
        assert_eq!(n2["only_all"], 1);
        assert_eq!(n2["from_group_file"], 7);
        assert_eq!(n1["from_host_file"], true);
        assert_eq!(inv.groups["db"], vec!["n1", "n2"]);
        assert_eq!(inv.groups["db_primary"], vec!["n2"]);
        assert_eq!(inv.hosts["n2"].conn.user.as_deref(), Some("deploy"));
        assert!(inv.hosts["n2"].conn.become_root);
        assert_eq!(inv.hosts["n1"].conn.address, "10.0.0.1");
    }

    #[test]
    fn select_patterns() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::load(&write(dir.path(), "inv.yml", INV)).unwrap();
        assert_eq!(inv.select("all").unwrap(), vec!["n1", "n2"]);
        assert_eq!(inv.select("db:!db_primary").unwrap(), vec!["n1"]);
        assert_eq!(inv.select("n*").unwrap(), vec!["n1", "n2"]);
        assert_eq!(inv.select("db,&db_primary").unwrap(), vec!["n2"]);
        assert!(inv.select("nope").is_err());
    }

    #[test]
    fn secret_values_are_masked_in_error_snippets() {
        let dir = tempfile::tempdir().unwrap();
        let inv = write(
            dir.path(),
            "inv.yml",
            "all:\n  vars:\n    pg_superuser_password: hunter2-is-secret\n    other: {api_token: t0k3n-value, x: 1}\n  hostz: {}\n",
        );
        let err = format!("{:?}", Inventory::load(&inv).unwrap_err());
        assert!(err.contains("hostz"), "{err}");
        assert!(!err.contains("hunter2") && !err.contains("t0k3n"), "{err}");
        assert_eq!(
            mask_secret_values("a_password: abc # note\nname: x\n"),
            "a_password: ___ # note\nname: x\n"
        );
    }

    #[test]
    fn an_error_that_masking_moves_is_still_named_when_its_line_holds_no_secret() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            secrets: BTreeMap<String, BTreeMap<String, u32>>,
            n: u32,
        }
        let text = "secrets:\n  a_password: {length: 8}\nn: many\n";
        let err = parse_yaml::<Doc>(text, Path::new("pb.yml")).unwrap_err().to_string();
        assert!(err.starts_with("pb.yml:3:") && err.contains("invalid YAML: "), "{err}");
        assert!(!err.contains("not shown"), "{err}");
        let secret = "secrets:\n  a_password: {length: many}\nn: 1\n";
        let err = parse_yaml::<Doc>(secret, Path::new("pb.yml")).unwrap_err().to_string();
        assert!(err.contains("not shown") && !err.contains("many"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_with_location() {
        let dir = tempfile::tempdir().unwrap();
        let inv = write(dir.path(), "inv.yml", "all:\n  hosts:\n    n1: {}\n  chilren: {}\n");
        let err = format!("{:?}", Inventory::load(&inv).unwrap_err());
        assert!(err.contains("inv.yml:4:3"), "{err}");
        assert!(err.contains("chilren"), "{err}");
    }
}
