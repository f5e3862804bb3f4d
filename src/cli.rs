//! The command line: argument parsing and dispatch (see ../shared/CONTRACT.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::lab::{Lab, Subnet, UpOptions, DEFAULT_SUBNET};

/// Provisions highly-available Apache Airflow clusters over SSH.
#[derive(Debug, Parser)]
#[command(name = "hactl", version, about)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Commands,
}

/// hactl's commands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Local Debian 12 test nodes under systemd-nspawn.
    Lab {
        /// What to do with the lab.
        #[command(subcommand)]
        action: LabAction,
    },
}

/// `hactl lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabAction {
    /// Boot (or repair) the lab and write its inventory.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Where to write the inventory (default: /var/lib/hactl/lab/inventory.yml).
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// The bridge's IPv4 subnet.
        #[arg(long, default_value = DEFAULT_SUBNET)]
        subnet: String,
    },
    /// Remove everything `up` made.
    Down,
    /// Show the nodes and whether they answer SSH.
    Status,
    /// Stop one node's machine (for failover tests); `lab up` starts it again.
    Stop {
        /// The node, e.g. node2.
        node: String,
    },
}

/// Parses the arguments, runs the command and maps the outcome to the contract's exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Lab { action } => run_lab(action),
    }
}

fn run_lab(action: LabAction) -> ExitCode {
    let lab = Lab::new();
    let mut log = |line: &str| eprintln!("lab: {line}");
    let outcome = match action {
        LabAction::Up { nodes, inventory, subnet } => Subnet::parse(&subnet, nodes).and_then(|subnet| {
            let inventory = inventory.unwrap_or_else(|| lab.default_inventory());
            let changes = lab.up(&UpOptions { nodes, inventory: inventory.clone(), subnet }, &mut log)?;
            for change in &changes {
                println!("{change}");
            }
            println!("lab up: {nodes} nodes, {} changes, inventory {}", changes.len(), inventory.display());
            Ok(())
        }),
        LabAction::Down => lab.down().map(|done| {
            for line in &done {
                println!("{line}");
            }
            println!("lab down: {} actions", done.len());
        }),
        LabAction::Status => lab.status().map(|lines| lines.iter().for_each(|l| println!("{l}"))),
        LabAction::Stop { node } => lab.stop_node(&node).map(|stopped| {
            println!("{node}: {}", if stopped { "stopped" } else { "was not running" });
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
