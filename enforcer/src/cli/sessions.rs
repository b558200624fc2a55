use std::process::ExitCode;

use clap::Subcommand;
use enforcer::proxy::SessionInfo;

use super::client::{Client, ClientArgs, clean, time};

/// Sessions: the workload's connections through enforcer.
///
/// `list` asks the running enforcer for the connections open now; `show` and `replay` read a
/// session (by the connection id the enforcement log and `list` give) back from the
/// hash-chained audit log in the state directory.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// The timeline of one session: the connection, each statement with its decision, the end.
    Show {
        id: u64,
        /// The enforcer's state directory (where audit.jsonl is).
        #[arg(long, value_name = "DIR", default_value = "/var/lib/enforcer")]
        state: std::path::PathBuf,
    },
    /// Re-renders a session as the script it ran: each statement, with its decision as a
    /// comment, denied ones commented out.
    Replay {
        id: u64,
        #[arg(long, value_name = "DIR", default_value = "/var/lib/enforcer")]
        state: std::path::PathBuf,
    },
    /// Connections open right now (operator).
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SessionsCommand::Show { id, state } => return show(id, &state, false),
        SessionsCommand::Replay { id, state } => return show(id, &state, true),
        SessionsCommand::List { .. } => {}
    }
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
            _ => Ok(ExitCode::SUCCESS),
        }
    })
}

/// The events of one connection, from the audit log (verified first: a replay of a tampered
/// record would be a lie).
fn show(id: u64, state: &std::path::Path, replay: bool) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use std::io::BufRead;
    let path = enforcer::service::audit_path(state);
    if let enforcer::record::audit::Verdict::Broken { line, problem } =
        enforcer::record::audit::verify(&path)?
    {
        anyhow::bail!(
            "the audit log {} is not intact (line {line}: {problem}); refusing to show it",
            path.display()
        );
    }
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut found = false;
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let event = &record["event"];
        if event["connection"].as_u64() != Some(id) {
            continue;
        }
        found = true;
        let at = record["time"].as_str().unwrap_or("");
        let text = |k: &str| clean(event[k].as_str().unwrap_or(""));
        match (event["kind"].as_str().unwrap_or(""), replay) {
            ("connection_decided", false) => println!(
                "{at}  connect  {} pid {} ({}) uid {} → {}  {} {}",
                text("principal"),
                event["process"]["pid"],
                clean(event["process"]["comm"].as_str().unwrap_or("")),
                event["process"]["uid"],
                text("orig_dst"),
                text("decision"),
                text("rule")
            ),
            ("connection_decided", true) => println!(
                "-- session {id}: {} ({}) to {} at {at}",
                text("principal"),
                clean(event["process"]["comm"].as_str().unwrap_or("")),
                text("rule")
            ),
            ("statement", false) => println!(
                "{at}  {:<5}    {:<9} {}  [{}{}{}]",
                text("decision"),
                text("action"),
                text("statement"),
                event["policies"]
                    .as_array()
                    .map(|p| p
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
                event["grant"]
                    .as_str()
                    .map_or(String::new(), |g| format!(" grant {g}")),
                event["reason"]
                    .as_str()
                    .map_or(String::new(), |r| format!(" {}", clean(r)))
            ),
            ("statement", true) => {
                let statement = text("statement");
                if event["decision"] == "allow" {
                    println!("-- {at} {} allowed\n{statement};", text("action"));
                } else {
                    println!(
                        "-- {at} {} DENIED: {}\n-- {};",
                        text("action"),
                        text("reason"),
                        statement.replace('\n', "\n-- ")
                    );
                }
            }
            ("statement_done", false) => println!(
                "{at}  done     {}{}, {} µs{}",
                event["tag"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map_or(String::new(), |t| format!("{} · ", clean(t))),
                match event["bytes"].as_u64() {
                    Some(bytes) => format!("{bytes} bytes sent"),
                    None => format!("{} rows returned", event["rows_returned"]),
                },
                event["duration_us"],
                event["error"]
                    .as_str()
                    .map_or(String::new(), |e| format!(" · error: {}", clean(e)))
            ),
            ("stream_frame", replay) => {
                let content = event["text"]
                    .as_str()
                    .map_or_else(|| format!("(base64) {}", text("base64")), clean);
                let truncated = if event["truncated"] == true {
                    " …"
                } else {
                    ""
                };
                let arrow = if event["direction"] == "to_container" {
                    "→"
                } else {
                    "←"
                };
                if replay {
                    println!("-- {arrow} {}: {content}{truncated}", text("channel"));
                } else {
                    println!(
                        "{at}  stream   {arrow} {} {} bytes  {content}{truncated}",
                        text("channel"),
                        event["bytes"]
                    );
                }
            }
            ("connection_closed", false) => println!(
                "{at}  closed   {} bytes to the server, {} to the client, {} ms{}",
                event["bytes_to_upstream"],
                event["bytes_to_client"],
                event["duration_ms"],
                event["error"]
                    .as_str()
                    .map_or(String::new(), |e| format!(", {}", clean(e)))
            ),
            _ => {}
        }
    }
    if !found {
        anyhow::bail!("no session {id} in {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
