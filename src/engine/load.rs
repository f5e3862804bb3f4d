//! Loading a run's inputs: the inventory, the playbook, the secrets, and each host's template
//! context (variables rendered the way Ansible renders them).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use miette::{miette, Result};
use minijinja::value::Value;
use serde_json::Value as Json;

use crate::inventory::{Inventory, Vars};
use crate::playbook::Playbook;
use crate::render::Renderer;
use crate::secrets::{secrets_path, Missing, Redactor, Secrets};

/// Everything loaded before connecting: inventory, playbook, secrets, per-host contexts.
pub struct Loaded {
    /// The inventory.
    pub inventory: Inventory,
    /// The playbook.
    pub playbook: Playbook,
    /// Values of the secrets (for redaction).
    pub redactor: Redactor,
    pub(super) contexts: HashMap<String, Value>,
    pub(super) renderer: Renderer,
}

/// Loads inventory, playbook and secrets (`missing` says what to do about secrets not made yet).
/// `playbook` `None` is the built-in site playbook.
pub fn load(inventory: &Path, playbook: Option<&Path>, missing: Missing) -> Result<Loaded> {
    let inventory = Inventory::load(inventory)?;
    let playbook = match playbook {
        Some(path) => Playbook::load(path)?,
        None => Playbook::built_in()?,
    };
    check_required_groups(&inventory, &playbook)?;
    let given = |name: &str| inventory.hosts.values().any(|h| h.vars.contains_key(name));
    let secrets = Secrets::load_or_generate(&secrets_path(&inventory.path), &playbook.secrets, &given, missing)?;
    // Secrets: generated ones, the declared ones the inventory sets, and any variable whose name
    // says it is one (every password's key contains `password`), wherever it is set.
    let mut values: Vec<&str> = secrets.values.values().map(|s| s.expose()).collect();
    let named_secret = |k: &str| playbook.secrets.contains_key(k) || crate::secrets::is_secret_name(k);
    let given_secrets: Vec<String> = inventory
        .hosts
        .values()
        .flat_map(|h| h.vars.iter())
        .chain(playbook.vars.iter())
        .filter(|(k, v)| named_secret(k) && v.is_string())
        .map(|(_, v)| crate::inventory::scalar_text(v))
        .collect();
    values.extend(given_secrets.iter().map(String::as_str));
    let redactor = Redactor::new(values);
    let hostvars: BTreeMap<String, Vars> = inventory
        .hosts
        .values()
        .map(|h| {
            let mut vars = playbook.vars.clone();
            for (k, v) in &secrets.values {
                vars.insert(k.clone(), Json::String(v.expose().to_string()));
            }
            vars.extend(h.vars.clone());
            vars.insert("inventory_hostname".into(), Json::String(h.name.clone()));
            vars.entry("ansible_host".to_string())
                .or_insert_with(|| Json::String(h.conn.address.clone()));
            (h.name.clone(), vars)
        })
        .collect();
    let renderer = Renderer::new(&playbook.templates);
    let hostvars = render_templated_vars(&renderer, hostvars, &inventory.groups)?;
    let contexts = contexts(&hostvars, &inventory.groups);
    Ok(Loaded {
        inventory,
        playbook,
        redactor,
        contexts,
        renderer,
    })
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
/// Ansible does, in each host's context; repeated so that variables may refer to each other.
fn render_templated_vars(
    renderer: &Renderer,
    mut hostvars: BTreeMap<String, Vars>,
    groups: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, Vars>> {
    let is_template = |v: &Json| v.as_str().is_some_and(|s| s.contains("{{") || s.contains("{%"));
    for _ in 0..5 {
        if !hostvars.values().any(|vars| vars.values().any(is_template)) {
            return Ok(hostvars);
        }
        let ctxs = contexts(&hostvars, groups);
        for (host, vars) in hostvars.iter_mut() {
            for (name, value) in vars.iter_mut().filter(|(_, v)| is_template(v)) {
                let origin = format!("variable `{name}` of host {host}");
                *value = renderer.render_value(&origin, value.as_str().expect("a string"), &ctxs[host])?;
            }
        }
    }
    Err(miette!(
        "variables still contain templates after 5 rounds of rendering: do they refer to each other in a loop?"
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
