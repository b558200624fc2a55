use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use enforcer::{
    policy::Policy,
    service::{AttachMode, Service, ServiceConfig},
};
use tokio::signal::unix::{SignalKind, signal};

use super::EnforceArgs;

/// Enforce policy on an existing cgroup managed elsewhere (a CI runner's job cgroup).
///
/// Attaches the redirect (or resumes what a previous daemon pinned, on the same proxy port)
/// and serves until SIGTERM/SIGINT. Stopping the daemon does NOT detach: the workload's
/// connections then fail until a daemon runs again (fail closed). `enforcer detach` ends
/// enforcement.
///
/// On start it prints one line to stdout: `ready proxy=ADDR admin=ADDR cgroup=PATH resumed=BOOL`.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct DaemonArgs {
    #[command(flatten)]
    enforce: EnforceArgs,
    /// The cgroup v2 directory to enforce.
    #[arg(long, value_name = "PATH")]
    cgroup: PathBuf,
}

pub fn run(args: DaemonArgs) -> anyhow::Result<ExitCode> {
    let policy = Policy::load_dir(&args.enforce.policy)
        .with_context(|| format!("policy {} is not valid", args.enforce.policy.display()))?;
    let state = &args.enforce.state;
    std::fs::create_dir_all(state)
        .with_context(|| format!("cannot create state directory {}", state.display()))?;
    super::logging::init()?;
    let cgroup = std::fs::canonicalize(&args.cgroup)
        .with_context(|| format!("cgroup {} does not exist", args.cgroup.display()))?;
    let runtime = super::runtime()?;
    let identity = runtime.block_on(super::verify_identity(
        &policy,
        args.enforce.identity_token.as_deref(),
    ))?;
    let config = ServiceConfig {
        workload: cgroup.display().to_string(),
        identity,
        policy,
        state_dir: state.clone(),
        cgroup: cgroup.clone(),
        bpffs: args.enforce.bpffs.clone(),
        admin: args.enforce.admin,
        proxy_port: args.enforce.proxy_port,
        proxy_threads: args.enforce.proxy_threads,
        mode: AttachMode::ResumeOrFresh,
        store: args.enforce.store.clone(),
    };
    let stopped = runtime.block_on(async {
        let service = Service::start(config).await?;
        println!(
            "ready proxy=127.0.0.1:{} admin={} cgroup={} resumed={}",
            service.proxy_port,
            service.admin_addr,
            cgroup.display(),
            service.resumed
        );
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(service.stop())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    stopped.finish().context("audit log")?;
    Ok(ExitCode::SUCCESS)
}
