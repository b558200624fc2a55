//! One file per subcommand.

mod approvals;
mod audit;
mod client;
mod daemon;
mod detach;
mod grant;
mod kubeconfig;
mod logging;
mod policy;
mod run;
mod sessions;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

/// Just-in-time access control between AI agents and the infrastructure they touch.
///
/// enforcer attaches eBPF programs to a workload's cgroup so that every connection any process
/// in it opens goes to enforcer's proxy, which decides per policy: a named resource, an egress
/// rule, or deny (the default). Every decision is logged and kept in a hash-chained audit log.
#[derive(Debug, Parser)]
#[command(
    name = "enforcer",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::RunArgs),
    Daemon(daemon::DaemonArgs),
    Detach(detach::DetachArgs),
    /// Validate policy directories.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Check the tamper-evident audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    #[command(subcommand)]
    Grant(grant::GrantCommand),
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    Kubeconfig(kubeconfig::KubeconfigArgs),
}

/// Options every enforcing command shares.
#[derive(Debug, Args)]
struct EnforceArgs {
    /// Policy directory (*.yaml files). Checked before anything is attached.
    #[arg(long, value_name = "DIR")]
    policy: PathBuf,
    /// Where the audit log and the enforcement log are kept.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/enforcer")]
    state: PathBuf,
    /// Admin API (/healthz, /metrics); must be a loopback address. Port 0 picks one.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9090")]
    admin: SocketAddr,
    /// bpffs mount holding enforcer's pins (mounted there if it is not one yet).
    #[arg(long, value_name = "DIR", default_value = enforcer::redirect::DEFAULT_BPFFS)]
    bpffs: PathBuf,
    /// Proxy port on 127.0.0.1 and ::1; 0 picks a free one.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    proxy_port: u16,
    /// Threads serving the workload's connections, each owning those it accepted; 0 for one
    /// per four CPUs (at least one).
    #[arg(long, value_name = "N", default_value_t = 0)]
    proxy_threads: usize,
    /// OIDC ID token of the job (as the CI issues it), verified against the policy's
    /// identity_providers; its claims become the workload principal's attributes. Without it
    /// the principal is `local`.
    #[arg(long, value_name = "FILE")]
    identity_token: Option<PathBuf>,
    /// Where grants and approvals are kept: SQLite in the state directory by default, or
    /// postgres://USER@HOST/DB shared by several hosts (an approval given on one releases a
    /// request waiting on another).
    #[arg(
        long,
        value_name = "URL",
        env = "ENFORCER_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
}

/// Verifies the workload's identity token, if one was given, against the policy's providers.
async fn verify_identity(
    policy: &enforcer::policy::Policy,
    token_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<enforcer::identity::WorkloadIdentity>> {
    use anyhow::Context;
    let Some(path) = token_file else {
        return Ok(None);
    };
    if policy.identity_providers.is_empty() {
        anyhow::bail!(
            "--identity-token was given but the policy names no identity_providers to verify it against"
        );
    }
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read identity token {}", path.display()))?;
    let verifier = enforcer::identity::Verifier::new(&policy.identity_providers)?;
    let identity = verifier
        .verify(&token)
        .await
        .map_err(|e| anyhow::anyhow!("identity token {} refused: {e}", path.display()))?;
    Ok(Some(identity))
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Detach(args) => detach::run(args),
        Command::Policy(cmd) => policy::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Grant(cmd) => grant::run(cmd),
        Command::Approvals(cmd) => approvals::run(cmd),
        Command::Sessions(cmd) => sessions::run(cmd),
        Command::Kubeconfig(args) => kubeconfig::run(args).map(|()| ExitCode::SUCCESS),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
