//! What each command does. `cli` parses the command line and calls one of these; each says what
//! it did and returns the contract's exit code.

mod init;
pub mod lab;
mod log;
mod run;
pub mod secrets;
mod show;

pub use init::init;
pub use log::show_log;
pub use run::{check, plan, provision, verify, RunArgs};
pub use show::show_plan;

/// Sets up diagnostics for a command: logs (filtered by `HACTL_LOG`) on stderr, and every error
/// on one line however long (scripts grep it, and a wrap would split its words).
pub fn set_up_diagnostics() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("HACTL_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
}
