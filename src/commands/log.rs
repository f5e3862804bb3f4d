//! `hactl log`: the run journal kept beside an inventory.

use std::path::Path;
use std::process::ExitCode;

use crate::journal;
use crate::report::Format;
use crate::workspace::Workspace;

/// `hactl log`: the runs, one line each, or the last one in detail.
pub fn show_log(inventory: &Path, last: bool, output: Format) -> ExitCode {
    let workspace = Workspace::of(inventory);
    let runs = match journal::read(&workspace) {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if runs.is_empty() {
        eprintln!(
            "error: no run recorded for {} (no {})",
            inventory.display(),
            workspace.journal().display()
        );
        return ExitCode::FAILURE;
    }
    let shown: Vec<(usize, &journal::RunRecord)> = if last {
        vec![(runs.len(), &runs[runs.len() - 1])]
    } else {
        runs.iter().enumerate().map(|(i, r)| (i + 1, r)).collect()
    };
    match output {
        Format::Json => {
            let records: Vec<&journal::RunRecord> = shown.iter().map(|(_, r)| *r).collect();
            println!("{}", serde_json::to_string_pretty(&records).expect("json serialises"));
        }
        Format::Text if last => print!("{}", journal::details(shown[0].0, shown[0].1)),
        Format::Text => {
            for (n, r) in shown {
                println!("{}", journal::list_line(n, r));
            }
        }
    }
    ExitCode::SUCCESS
}
