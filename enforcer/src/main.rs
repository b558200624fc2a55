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
            eprintln!("enforcer: {}", describe(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, skipping a cause whose text its parent already includes (our
/// error enums spell out their source).
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
