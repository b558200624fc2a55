use std::process::ExitCode;

use clap::Subcommand;
use enforcer::store::ApprovalRow;
use serde_json::json;

use super::{
    client::{Client, ClientArgs, clean, time},
    grant::path_segment,
};

/// Decide what waits for a human: grant requests and held operations.
///
/// Run by an operator on the host (the operator token in the state directory proves it);
/// never accepted from inside an enforced workload. With a shared PostgreSQL store an
/// approval given here releases a request waiting on another host.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List pending requests (all, with --all).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a pending request.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deny a pending request; the reason is shown to the workload.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime()?;
    runtime.block_on(async {
        match cmd {
            ApprovalsCommand::List { all, json, client } => {
                let path = if all {
                    "/v1/approvals?all=true"
                } else {
                    "/v1/approvals"
                };
                let rows: Vec<ApprovalRow> = Client::new(&client)?.get(path).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!(
                        "{:<20} {:<9} {:<22} {:<22} {:<30} SUMMARY",
                        "ID", "STATUS", "REQUESTED", "DEADLINE", "PRINCIPAL"
                    );
                    for a in &rows {
                        println!(
                            "{:<20} {:<9} {:<22} {:<22} {:<30} {}",
                            a.id,
                            a.status,
                            time(a.requested_at),
                            time(a.deadline),
                            clean(&a.principal),
                            clean(&a.summary)
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            ApprovalsCommand::Approve { id, reason, client } => {
                decide(&client, &id, "approve", reason).await
            }
            ApprovalsCommand::Deny { id, reason, client } => {
                decide(&client, &id, "deny", reason).await
            }
        }
    })
}

async fn decide(
    client: &ClientArgs,
    id: &str,
    verb: &str,
    reason: Option<String>,
) -> anyhow::Result<ExitCode> {
    let row: ApprovalRow = Client::new(client)?
        .post(
            &format!("/v1/approvals/{}/{verb}", path_segment(id)?),
            &json!({ "reason": reason }),
        )
        .await?;
    println!(
        "approval {} {}: {}",
        row.id,
        row.status,
        clean(&row.summary)
    );
    Ok(ExitCode::SUCCESS)
}
