use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use enforcer::record::audit::{Verdict, verify};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; reports the first broken link and exits 1.
    Verify {
        /// State directory holding audit.jsonl.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/enforcer")]
        state: PathBuf,
        /// An audit file to check instead of the state directory's.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { state, file } => {
            let path = file.unwrap_or_else(|| enforcer::service::audit_path(&state));
            match verify(&path)? {
                Verdict::Intact { records, head } => {
                    println!("{}: intact, {records} records, head {head}", path.display());
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Broken { line, problem } => {
                    eprintln!("{}:{line}: {problem}", path.display());
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
