//! `hactl init DIR`: the built-in playbooks, templates and example inventories written out to
//! be changed.

use std::path::Path;
use std::process::ExitCode;

use crate::stack;

/// Writes the built-in files into `dir` (`force`: overwriting those that differ) and says
/// what it wrote.
pub fn init(dir: &Path, force: bool) -> ExitCode {
    match stack::init(dir, force) {
        Ok(written) => {
            for path in &written {
                println!("wrote {}", dir.join(path).display());
            }
            println!(
                "init: {} files written under {}; provision with -p {}",
                written.len(),
                dir.display(),
                dir.join(stack::SITE).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
