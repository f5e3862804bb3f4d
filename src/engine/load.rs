//! Loading a run's inputs: the inventory, the playbook, the secrets, and each host's template
//! context (variables rendered the way Ansible renders them).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use miette::{miette, Result};
use minijinja::value::Value;
use serde_json::Value as Json;

use super::facts::{facts, FactSource};
use super::preflight::Preflight;
use crate::inventory::{Inventory, Vars};
use crate::pki::Wanted;
use crate::playbook::{Condition, Playbook};
use crate::render::Renderer;
use crate::secrets::{digest, digest_record, History, Missing, Redactor, Secrets};
use crate::workspace::Workspace;

/// Everything loaded before connecting: inventory, playbook, secrets, per-host contexts.
pub struct Loaded {
    /// The inventory.
    pub inventory: Inventory,
    /// The playbook.
    pub playbook: Playbook,
    /// Values of the secrets (for redaction).
    pub redactor: Redactor,
    /// The playbook's warnings that hold for this inventory (each message once).
    pub warnings: Vec<String>,
    pub(super) contexts: HashMap<String, Value>,
    pub(super) renderer: Renderer,
    pub(super) preflight: Preflight,
    /// Each host's variables before rendering (the assumed facts in them), for
    /// [`Loaded::with_facts`].
    unrendered: BTreeMap<String, Vars>,
    /// Each host's certificate variables (`tls_*`), added after rendering.
    tls_vars: BTreeMap<String, Vars>,
}

/// The variable holding a node's secret digest record (stage base writes it).
pub const DIGESTS_VAR: &str = "hactl_secret_digests";
/// The variable holding the secrets file's text (stage base keeps a copy on the `postgres` hosts
/// for `hactl secrets recover`).
pub const SECRETS_COPY_VAR: &str = "hactl_secrets_copy";

/// Loads inventory, playbook, secrets (`missing` says what to do about secrets not made yet) and
/// the hosts' facts (`source`). `playbook` `None` is the built-in site playbook.
pub fn load(inventory: &Path, playbook: Option<&Path>, missing: Missing, source: &FactSource) -> Result<Loaded> {
    load_rotating(inventory, playbook, missing, &BTreeSet::new(), source)
}

/// [`load`], with the secrets in `rotate` generated anew (`--rotate`; `ca` starts a rotation of
/// the cluster CA, see [`crate::pki`]). Nothing is written
/// beside the inventory here: the run's pre-flight writes what this made once the nodes agree.
pub fn load_rotating(
    inventory: &Path,
    playbook: Option<&Path>,
    missing: Missing,
    rotate: &BTreeSet<String>,
    source: &FactSource,
) -> Result<Loaded> {
    let inventory = Inventory::load(inventory)?;
    let playbook = match playbook {
        Some(path) => Playbook::load(path)?,
        None => Playbook::built_in()?,
    };
    check_required_groups(&inventory, &playbook)?;
    let facts = facts(&inventory, source);
    let workspace = Workspace::of(&inventory.path);
    let given = |name: &str| inventory.hosts.values().any(|h| h.vars.contains_key(name));
    // `--rotate ca` is the CA's (crate::pki), every other name a secret's.
    let rotate_ca = rotate.contains(crate::pki::ROTATE_CA);
    if rotate_ca && !playbook.pki {
        return Err(miette!(
            "--rotate {}: this playbook keeps no cluster CA",
            crate::pki::ROTATE_CA
        ));
    }
    let rotate: BTreeSet<String> = rotate.iter().filter(|n| *n != crate::pki::ROTATE_CA).cloned().collect();
    let secrets = Secrets::load_or_generate(&workspace.secrets(), &playbook.secrets, &given, missing, &rotate)?;
    // Secrets: generated ones, the declared ones the inventory sets, and any variable whose name
    // says it is one (every password's key contains `password`), wherever it is set.
    let mut values: Vec<String> = secrets.values.values().map(|s| s.expose().to_string()).collect();
    let named_secret = |k: &str| playbook.secrets.contains_key(k) || crate::secrets::is_secret_name(k);
    values.extend(
        inventory
            .hosts
            .values()
            .flat_map(|h| h.vars.iter())
            .chain(playbook.vars.iter())
            .filter(|(k, v)| named_secret(k) && v.is_string())
            .map(|(_, v)| crate::inventory::scalar_text(v)),
    );
    let digests: BTreeMap<String, String> = secrets
        .recorded
        .iter()
        .filter_map(|n| secrets.values.get(n).map(|v| (n.clone(), digest(n, v.expose()))))
        .collect();
    let copy = crate::secrets::to_yaml(
        &secrets
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect(),
    )?;
    let hostvars: BTreeMap<String, Vars> = inventory
        .hosts
        .values()
        .map(|h| {
            let mut vars = playbook.vars.clone();
            for (k, v) in &secrets.values {
                vars.insert(k.clone(), Json::String(v.expose().to_string()));
            }
            vars.insert(DIGESTS_VAR.into(), Json::String(digest_record(&digests)));
            vars.insert(SECRETS_COPY_VAR.into(), Json::String(copy.clone()));
            vars.extend(h.vars.clone());
            vars.extend(facts[&h.name].clone());
            vars.insert("inventory_hostname".into(), Json::String(h.name.clone()));
            // The port hactl connects on (ansible_port, else ~/.ssh/config's): the firewall keeps it open.
            vars.insert("hactl_ssh_port".into(), Json::from(crate::ssh::effective_port(&h.conn)));
            vars.entry("ansible_host".to_string())
                .or_insert_with(|| Json::String(h.conn.address.clone()));
            (h.name.clone(), vars)
        })
        .collect();
    let renderer = Renderer::new(&playbook.templates);
    let unrendered = hostvars.clone();
    let mut hostvars = render_templated_vars(&renderer, hostvars, &inventory.groups)?;
    let mut tls_vars: BTreeMap<String, Vars> = BTreeMap::new();
    let (history, history_write) =
        History::load(&workspace.secret_history())?.with(&secrets.replaced, &workspace.secret_history())?;
    let mut preflight = Preflight {
        secrets_file: workspace.secrets(),
        digests,
        generated: secrets.generated,
        rotate,
        history,
        // The history grows only with the secrets file (a plan without --out writes neither).
        history_write: history_write.filter(|_| secrets.pending.is_some()),
        secrets_write: secrets.pending,
        ..Preflight::default()
    };
    if playbook.pki {
        let wanted = pki_wanted(&inventory.path, &hostvars)?;
        let pki = crate::pki::ensure(&workspace.pki_dir(), &wanted, missing, rotate_ca)?;
        preflight.ca = Some((pki.ca_cert.clone(), pki.ca_new));
        for (host, vars) in hostvars.iter_mut() {
            let cert = &pki.hosts[host];
            values.push(cert.key.expose().to_string());
            let mut tls = Vars::new();
            tls.insert("tls_ca_cert".into(), Json::String(pki.ca_cert.clone()));
            tls.insert("tls_cert".into(), Json::String(cert.cert.clone()));
            tls.insert("tls_key".into(), Json::String(cert.key.expose().to_string()));
            for (role, cert) in &pki.roles[host] {
                values.push(cert.key.expose().to_string());
                tls.insert(format!("tls_{role}_cert"), Json::String(cert.cert.clone()));
                tls.insert(format!("tls_{role}_key"), Json::String(cert.key.expose().to_string()));
            }
            vars.extend(tls.clone());
            tls_vars.insert(host.clone(), tls);
        }
        preflight.pki = Some(pki);
    }
    let redactor = Redactor::new(values.iter().map(String::as_str));
    let contexts = contexts(&hostvars, &inventory.groups);
    check(&renderer, &playbook, &inventory, &contexts)?;
    let warnings = holding(&renderer, &playbook.warnings, &contexts)?;
    Ok(Loaded {
        inventory,
        playbook,
        redactor,
        warnings,
        contexts,
        renderer,
        preflight,
        unrendered,
        tls_vars,
    })
}

impl Loaded {
    /// The step of a CA rotation this run does, if one is under way.
    pub fn ca_rotation(&self) -> Option<&crate::pki::RotationStep> {
        self.preflight.pki.as_ref()?.rotation.as_ref()
    }

    /// Every host's template context again with `facts` (by host) in place of the assumed ones,
    /// after the playbook's `checks` (one error with each that holds).
    pub fn with_facts(&self, facts: &BTreeMap<String, Vars>) -> Result<HashMap<String, Value>> {
        let mut hostvars = self.unrendered.clone();
        for (host, vars) in hostvars.iter_mut() {
            vars.extend(facts.get(host).cloned().unwrap_or_default());
        }
        let mut hostvars = render_templated_vars(&self.renderer, hostvars, &self.inventory.groups)?;
        for (host, vars) in hostvars.iter_mut() {
            vars.extend(self.tls_vars.get(host).cloned().unwrap_or_default());
        }
        let contexts = contexts(&hostvars, &self.inventory.groups);
        check(&self.renderer, &self.playbook, &self.inventory, &contexts)?;
        Ok(contexts)
    }
}

/// The playbook's `checks` on every host's context: one error with each that holds.
fn check(
    renderer: &Renderer,
    playbook: &Playbook,
    inventory: &Inventory,
    contexts: &HashMap<String, Value>,
) -> Result<()> {
    let failed = holding(renderer, &playbook.checks, contexts)?;
    if failed.is_empty() {
        return Ok(());
    }
    Err(miette!(
        "{}: {}",
        inventory.path.display(),
        failed.join(&format!("\n{}: ", inventory.path.display()))
    ))
}

/// A host's `tls_roles`: the roles it gets a certificate of its own for (`tls_ROLE_cert`,
/// `tls_ROLE_key`), each a name of lower-case letters, digits and underscores.
fn tls_roles(host: &str, vars: &Vars) -> Result<Vec<String>> {
    let valid = |r: &str| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match vars.get("tls_roles") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(roles)) => roles
            .iter()
            .map(|r| match r.as_str() {
                Some(r) if valid(r) => Ok(r.to_string()),
                _ => Err(miette!(
                    "host {host}: `tls_roles` holds {r}: a role is a name of lower-case letters, digits and underscores"
                )),
            })
            .collect(),
        Some(other) => Err(miette!("host {host}: `tls_roles` must be a list of roles, not {other}")),
    }
}

/// What each host's certificate must name: its inventory name, its address and its
/// `tls_extra_names`; or the certificate and key files its `tls_cert_file` and `tls_key_file`
/// give (relative to the inventory); and the roles it gets certificates for (`tls_roles`).
fn pki_wanted(inventory: &Path, hostvars: &BTreeMap<String, Vars>) -> Result<BTreeMap<String, Wanted>> {
    let base = inventory.parent().unwrap_or(Path::new("."));
    let text = |vars: &Vars, key: &str| {
        vars.get(key)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    hostvars
        .iter()
        .map(|(host, vars)| {
            let mut names = vec![host.clone()];
            names.extend(text(vars, "ansible_host"));
            match vars.get("tls_extra_names") {
                None | Some(Json::Null) => {}
                Some(Json::Array(extra)) => names.extend(
                    extra
                        .iter()
                        .filter_map(Json::as_str)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                ),
                Some(other) => {
                    return Err(miette!(
                        "host {host}: `tls_extra_names` must be a list of names, not {other}"
                    ))
                }
            }
            names.sort();
            names.dedup();
            let given = match (text(vars, "tls_cert_file"), text(vars, "tls_key_file")) {
                (Some(c), Some(k)) => Some((base.join(c), base.join(k))),
                (None, None) => None,
                _ => {
                    return Err(miette!(
                        "host {host}: give both `tls_cert_file` and `tls_key_file`, or neither"
                    ))
                }
            };
            let roles = tls_roles(host, vars)?;
            Ok((host.clone(), Wanted { names, given, roles }))
        })
        .collect()
}

/// The messages of the conditions that hold on some host (each once, in playbook order).
fn holding(renderer: &Renderer, conditions: &[Condition], contexts: &HashMap<String, Value>) -> Result<Vec<String>> {
    let mut hosts: Vec<&String> = contexts.keys().collect();
    hosts.sort();
    let mut messages = Vec::new();
    for (i, condition) in conditions.iter().enumerate() {
        for host in &hosts {
            let origin = format!("condition {} (`{}`) on host {host}", i + 1, condition.when);
            let ctx = &contexts[host.as_str()];
            if renderer.eval_bool(&origin, &condition.when, ctx)? {
                let msg = renderer.render_str(&origin, &condition.msg, ctx)?;
                if !messages.contains(&msg) {
                    messages.push(msg);
                }
            }
        }
    }
    Ok(messages)
}

/// Every group the playbook requires has a host in the inventory; otherwise one error naming
/// the groups missing (nothing has been connected to or changed).
fn check_required_groups(inventory: &Inventory, playbook: &Playbook) -> Result<()> {
    let empty: Vec<&str> = playbook
        .required_groups
        .iter()
        .filter(|g| inventory.groups.get(*g).is_none_or(|hosts| hosts.is_empty()))
        .map(String::as_str)
        .collect();
    if empty.is_empty() {
        return Ok(());
    }
    Err(miette!(
        "{} has no host in group{} `{}`; {} needs at least one host in each of its role groups ({})",
        inventory.path.display(),
        if empty.len() > 1 { "s" } else { "" },
        empty.join("`, `"),
        playbook.path.display(),
        playbook.required_groups.join(", ")
    ))
}

/// Each host's template context: its variables plus `hostvars` and `groups`.
fn contexts(hostvars: &BTreeMap<String, Vars>, groups: &BTreeMap<String, Vec<String>>) -> HashMap<String, Value> {
    let all = serde_json::to_value(hostvars).expect("vars serialise");
    let groups = serde_json::to_value(groups).expect("groups serialise");
    hostvars
        .iter()
        .map(|(name, vars)| {
            let mut ctx = vars.clone();
            ctx.insert("hostvars".into(), all.clone());
            ctx.insert("groups".into(), groups.clone());
            (name.clone(), Value::from(minijinja::value::Serde(Json::Object(ctx))))
        })
        .collect()
}

/// Renders variables whose values are templates (e.g. `etcd_endpoints: "{% for h in ... %}"`), as
/// Ansible does, in each host's context; repeated so that variables may refer to each other. A
/// variable waits for the ones it refers to (a filter must not see another's template text),
/// unless no variable is ready (then all render, and a loop ends in an error).
fn render_templated_vars(
    renderer: &Renderer,
    mut hostvars: BTreeMap<String, Vars>,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vars>> {
    let is_template = |v: &Json| v.as_str().is_some_and(|s| s.contains("{{") || s.contains("{%"));
    // What a template refers to, parsed once per text (the same for every host and round).
    let mut references: HashMap<String, HashSet<String>> = HashMap::new();
    for _ in 0..10 {
        if !hostvars.values().any(|vars| vars.values().any(is_template)) {
            return Ok(hostvars);
        }
        let ctxs = contexts(&hostvars, groups);
        for (host, vars) in hostvars.iter_mut() {
            let pending: Vec<String> = vars
                .iter()
                .filter(|(_, v)| is_template(v))
                .map(|(k, _)| k.clone())
                .collect();
            let ready: Vec<String> = pending
                .iter()
                .filter(|name| {
                    let source = vars[name.as_str()].as_str().unwrap_or("");
                    let refs = references
                        .entry(source.to_string())
                        .or_insert_with(|| renderer.referenced_variables(source));
                    !pending.iter().any(|other| refs.contains(other))
                })
                .cloned()
                .collect();
            let now = if ready.is_empty() { pending } else { ready };
            for (name, value) in vars.iter_mut().filter(|(k, _)| now.contains(k)) {
                let origin = format!("variable `{name}` of host {host}");
                *value = renderer.render_value(&origin, value.as_str().expect("a string"), &ctxs[host])?;
            }
        }
    }
    Err(miette!(
        "variables still contain templates after 10 rounds of rendering: do they refer to each other in a loop?"
    ))
}

/// Renders every string in a JSON value as a template.
pub(super) fn render_json(renderer: &Renderer, origin: &str, value: Json, ctx: &Value) -> Result<Json> {
    Ok(match value {
        Json::String(s) => renderer.render_value(origin, &s, ctx)?,
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .map(|v| render_json(renderer, origin, v, ctx))
                .collect::<Result<_>>()?,
        ),
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| Ok((k, render_json(renderer, origin, v, ctx)?)))
                .collect::<Result<_>>()?,
        ),
        other => other,
    })
}
