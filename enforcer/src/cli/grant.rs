use std::{io::IsTerminal, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use enforcer::{grant::GrantView, store::GrantRow};
use serde_json::json;

use super::client::{ApiFailure, Client, ClientArgs, clean, time};

/// Just-in-time grants: elevated access to one resource, for a while.
///
/// From inside the workload (`enforcer run` sets ENFORCER_ADMIN for it), `request` asks for a
/// grant: the daemon knows which workload asks from its connection, decides by the Cedar
/// policies, and binds the grant to that workload. Where the policy says
/// @approval("required"), the request waits for an operator (`enforcer approvals`).
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Ask for a grant (from inside the workload).
    Request(RequestArgs),
    /// List grants: every grant for an operator, the workload's own from inside it.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one grant (with its token, for its own workload while active).
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a grant now: it stops working at once.
    Revoke {
        id: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The resource, by its name in the policy.
    #[arg(long)]
    resource: String,
    /// Access level: read|write|ddl|admin (databases), read|write|exec|admin (kubernetes),
    /// shell|exec|forward (ssh), read|write (http).
    #[arg(long)]
    access: String,
    /// How long the grant lives once issued, e.g. 15m, 1h (default: the policy's default_ttl).
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
    /// Uses before the grant is gone (one statement or request each); default: until expiry.
    #[arg(long)]
    uses: Option<u32>,
    /// What the grant is for; shown to the approver and kept in the audit trail.
    #[arg(long)]
    reason: String,
    /// If the request needs approval, wait for the decision (or the timeout, a denial).
    #[arg(long)]
    wait: bool,
    /// Print the grant as JSON (with its token) instead of a sentence.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(cmd: GrantCommand) -> anyhow::Result<ExitCode> {
    let runtime = super::runtime()?;
    runtime.block_on(async {
        match cmd {
            GrantCommand::Request(args) => request(args).await,
            GrantCommand::List { client, json } => {
                let rows: Vec<GrantRow> = Client::new(&client)?.get("/v1/grants").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    print_table(&rows);
                }
                Ok(ExitCode::SUCCESS)
            }
            GrantCommand::Show { id, client } => {
                let view: GrantView = Client::new(&client)?
                    .get(&format!("/v1/grants/{}", path_segment(&id)?))
                    .await?;
                println!("{}", serde_json::to_string_pretty(&view)?);
                Ok(ExitCode::SUCCESS)
            }
            GrantCommand::Revoke { id, reason, client } => {
                let view: GrantView = Client::new(&client)?
                    .post(
                        &format!("/v1/grants/{}/revoke", path_segment(&id)?),
                        &json!({ "reason": reason }),
                    )
                    .await?;
                println!("grant {} revoked", view.grant.id);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Ids go into URL paths: only the characters ids are made of.
pub fn path_segment(id: &str) -> anyhow::Result<&str> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(id)
    } else {
        anyhow::bail!("{id:?} is not a grant or approval id (like g-0123abcd…)")
    }
}

async fn request(args: RequestArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let answer: anyhow::Result<GrantView> = client
        .post(
            "/v1/grants",
            &json!({
                "resource": args.resource,
                "access": args.access,
                "ttl_secs": args.ttl.map(|d| d.as_secs().max(1)),
                "uses": args.uses,
                "reason": args.reason,
            }),
        )
        .await;
    let mut view = match answer {
        Ok(view) => view,
        // The policy said no: a decision, not a failure of the tool.
        Err(e)
            if e.downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.status == 403) =>
        {
            eprintln!("enforcer: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.context("grant request failed")),
    };
    if view.grant.status == "pending" && args.wait {
        view = wait(&client, view).await?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!("{}", describe(&view.grant));
    }
    Ok(match view.grant.status.as_str() {
        "active" | "pending" => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

async fn wait(client: &Client, mut view: GrantView) -> anyhow::Result<GrantView> {
    let tty = std::io::stderr().is_terminal();
    let approval = view.grant.approval_id.clone().unwrap_or_default();
    let started = std::time::Instant::now();
    eprintln!(
        "waiting for an operator: enforcer approvals approve {approval}   (or deny {approval})"
    );
    while view.grant.status == "pending" {
        if tty {
            eprint!(
                "\r\x1b[2Kgrant {} pending approval {approval}: {}s",
                view.grant.id,
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        view = client
            .get(&format!("/v1/grants/{}", path_segment(&view.grant.id)?))
            .await?;
    }
    if tty {
        eprintln!();
    }
    Ok(view)
}

fn describe(g: &GrantRow) -> String {
    let uses = g
        .uses_left
        .map_or(String::new(), |u| format!(", {u} use(s) left"));
    match g.status.as_str() {
        "active" => format!(
            "grant {} active: {} on {} until {}{uses}",
            g.id,
            g.access,
            g.resource,
            g.expires_at.map_or_else(|| "?".into(), time)
        ),
        "pending" => format!(
            "grant {} pending: approval {} must be decided by an operator",
            g.id,
            g.approval_id.as_deref().unwrap_or("?")
        ),
        other => format!(
            "grant {} {other}{}",
            g.id,
            g.decision_reason
                .as_deref()
                .map_or(String::new(), |r| format!(": {}", clean(r)))
        ),
    }
}

fn print_table(rows: &[GrantRow]) {
    println!(
        "{:<20} {:<8} {:<16} {:<6} {:<22} {:<6} {:<30} REASON",
        "ID", "STATUS", "RESOURCE", "ACCESS", "EXPIRES", "USES", "WORKLOAD"
    );
    for g in rows {
        println!(
            "{:<20} {:<8} {:<16} {:<6} {:<22} {:<6} {:<30} {}",
            g.id,
            g.status,
            g.resource,
            g.access,
            g.expires_at.map_or_else(|| "-".into(), time),
            g.uses_left.map_or_else(|| "-".into(), |u| u.to_string()),
            clean(&g.workload),
            clean(&g.reason)
        );
    }
}
