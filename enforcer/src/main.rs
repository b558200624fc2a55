//! The `enforcer` command line. The library does the work; this is the edge where errors
//! become messages and exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("enforcer: {err:#}");
            ExitCode::from(2)
        }
    }
}
