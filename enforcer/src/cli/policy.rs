use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use enforcer::policy::{Policy, PolicyError};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory; prints every error as FILE:LINE:COL: MESSAGE and exits 1.
    Check {
        /// The policy directory.
        dir: PathBuf,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { dir } => match Policy::load_dir(&dir) {
            Ok(policy) => {
                println!(
                    "{}: ok ({} resources, {} egress rules, {} identity providers, DNS {})",
                    dir.display(),
                    policy.resources.len(),
                    policy.egress.len(),
                    policy.identity_providers.len(),
                    policy
                        .dns_resolver
                        .map_or_else(|| "denied".to_owned(), |r| format!("via {r}"))
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(PolicyError::Invalid(diagnostics)) => {
                for d in &diagnostics {
                    eprintln!("{d}");
                }
                eprintln!("{}: {} error(s)", dir.display(), diagnostics.len());
                Ok(ExitCode::from(1))
            }
            Err(other) => {
                eprintln!("{other}");
                Ok(ExitCode::from(1))
            }
        },
    }
}
