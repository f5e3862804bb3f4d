//! hactl: provisions highly-available Apache Airflow clusters over SSH.

use std::process::ExitCode;

fn main() -> ExitCode {
    hactl::cli::main()
}
