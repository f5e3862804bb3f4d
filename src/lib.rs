//! hactl's library: the command line, the engine and the lab.
//!
//! Its modules in layers, each using only the layers below it (a test holds them to it):
//!
//! - `cli` parses the command line and dispatches to `commands`, which do what each command
//!   says (`lab` drives the local test nodes);
//! - `engine` runs a playbook's stages over the hosts;
//! - `journal` and `saved_plan` keep what a run did or would do; `report` shows it; `playbook`
//!   reads the stages;
//! - `modules` (what a step does on a host), `ssh` and `pki`;
//! - `render` (templates), `inventory`, `outcome` (results, statuses, summaries, rolling
//!   orders), `inputs` (a run's fingerprints and selectors) and `workspace` (the files kept
//!   beside an inventory);
//! - `secrets` and `stack` (the built-in playbooks and templates);
//! - `quote` (shell words, URL parts) and `fsutil`.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod fsutil;
pub mod inputs;
pub mod inventory;
pub mod journal;
pub mod lab;
pub mod modules;
pub mod outcome;
pub mod pki;
pub mod playbook;
pub mod quote;
pub mod render;
pub mod report;
pub mod saved_plan;
pub mod secrets;
pub mod ssh;
pub mod stack;
pub mod workspace;

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The modules' layers, top first: a module uses (`crate::…`) only modules of layers below its
    /// own, so no import points up and none goes round in a circle.
    const LAYERS: &[&[&str]] = &[
        &["cli"],
        &["commands"],
        &["lab"],
        &["engine"],
        &["journal", "saved_plan", "report", "playbook"],
        &["modules", "ssh", "pki"],
        &["render", "inventory", "outcome", "inputs", "workspace"],
        &["secrets", "stack"],
        &["quote", "fsutil"],
    ];

    /// The layer of a top-level module.
    fn layer(module: &str) -> usize {
        LAYERS
            .iter()
            .position(|l| l.contains(&module))
            .unwrap_or_else(|| panic!("module {module} is in no layer"))
    }

    /// Every `crate::MODULE` the Rust files under `path` name, outside comments.
    fn uses(path: &Path, out: &mut Vec<(String, String)>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                uses(&entry.unwrap().path(), out);
            }
            return;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            return;
        }
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
                out.push((
                    path.display().to_string(),
                    rest[..end.unwrap_or(rest.len())].to_string(),
                ));
            }
        }
    }

    #[test]
    fn modules_use_only_the_layers_below_them() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            let module = path.file_stem().unwrap().to_str().unwrap().to_string();
            if ["lib", "main"].contains(&module.as_str()) {
                continue;
            }
            let mut used = Vec::new();
            uses(&path, &mut used);
            for (file, target) in used.into_iter().filter(|(_, t)| *t != module) {
                assert!(
                    layer(&target) > layer(&module),
                    "{file} uses crate::{target}, which is not below {module}"
                );
            }
        }
    }
}
