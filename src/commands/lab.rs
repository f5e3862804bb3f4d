//! `hactl lab`: local Debian 12 or 13 test nodes under systemd-nspawn (see [`crate::lab`]).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::lab::{Lab, LabError, Release, Subnet, UpOptions};

/// `lab up`: boots (or repairs) `nodes` nodes of `release` (none: the running lab's, or the
/// default) on `subnet` and writes their inventory (by default the lab's own).
pub fn up(nodes: usize, release: Option<Release>, inventory: Option<PathBuf>, subnet: &str) -> ExitCode {
    let lab = Lab::new();
    let mut log = |line: &str| eprintln!("lab: {line}");
    exit(Subnet::parse(subnet, nodes).and_then(|subnet| {
        let inventory = inventory.unwrap_or_else(|| lab.default_inventory());
        let changes = lab.up(
            &UpOptions {
                nodes,
                inventory: inventory.clone(),
                subnet,
                release,
            },
            &mut log,
        )?;
        for change in &changes {
            println!("{change}");
        }
        let release = lab.state()?.map_or_else(String::new, |s| format!(" {}", s.release));
        println!(
            "lab up: {nodes}{release} nodes, {} changes, inventory {}",
            changes.len(),
            inventory.display()
        );
        Ok(())
    }))
}

/// `lab down`: removes everything `up` made.
pub fn down() -> ExitCode {
    exit(Lab::new().down().map(|done| {
        for line in &done {
            println!("{line}");
        }
        println!("lab down: {} actions", done.len());
    }))
}

/// `lab status`: the nodes and whether they answer SSH.
pub fn status() -> ExitCode {
    exit(
        Lab::new()
            .status()
            .map(|lines| lines.iter().for_each(|l| println!("{l}"))),
    )
}

/// `lab stop NODE`: stops one node's machine.
pub fn stop(node: &str) -> ExitCode {
    exit(Lab::new().stop_node(node).map(|stopped| {
        println!("{node}: {}", if stopped { "stopped" } else { "was not running" });
    }))
}

/// `lab kill NODE`: crashes one node's machine.
pub fn kill(node: &str) -> ExitCode {
    exit(Lab::new().kill_node(node).map(|killed| {
        println!(
            "{node}: {}",
            if killed {
                "crashed (every process killed at once)"
            } else {
                "was not running"
            }
        );
    }))
}

/// `lab link NODE up|down`: restores (`up`) or cuts a node's network link.
pub fn link(node: &str, up: bool) -> ExitCode {
    exit(
        Lab::new()
            .set_link(node, up)
            .map(|()| println!("{node}: link {}", if up { "up" } else { "cut" })),
    )
}

/// The exit code of a lab action: its error, if any, said on stderr.
fn exit(outcome: Result<(), LabError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
