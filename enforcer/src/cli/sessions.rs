use std::process::ExitCode;

use clap::Subcommand;
use enforcer::proxy::SessionInfo;

use super::client::{Client, ClientArgs, time};

/// Sessions: the workload's connections through enforcer.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Connections open right now (operator).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime()?;
    runtime.block_on(async {
        match cmd {
            SessionsCommand::List { json, client } => {
                let rows: Vec<SessionInfo> = Client::new(&client)?.get("/v1/sessions").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "{:<18} {:<22} {:<9} {:<16} {:<8} {:<16} TO",
                    "ID", "STARTED", "ROUTE", "RULE", "PID", "COMM"
                );
                for s in &rows {
                    println!(
                        "{:<18} {:<22} {:<9} {:<16} {:<8} {:<16} {}",
                        s.id,
                        time(s.started_at),
                        s.route,
                        s.rule.as_deref().unwrap_or("-"),
                        s.process.pid,
                        s.process.comm,
                        s.orig_dst
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
