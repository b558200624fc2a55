use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::Args;
use enforcer::{
    policy::{CredentialSource, Policy},
    redirect::{self, cgroup::WorkloadCgroup},
    service::{AttachMode, Service, ServiceConfig},
    workload::{RunAs, Spawn, exit_code},
};
use tokio::signal::unix::{SignalKind, signal};

use super::EnforceArgs;

/// Run a command with every connection it opens enforced by policy.
///
/// Creates a fresh cgroup, attaches the redirect, starts the proxy and the admin API, runs
/// COMMAND inside the cgroup as an unprivileged user (no CAP_NET_RAW, no_new_privs), forwards
/// signals to it, and exits with its status. Afterwards any process it left behind is killed,
/// the programs are detached and the cgroup removed.
///
/// Example: enforcer run --policy policies/ci-egress --state /tmp/enf -- curl http://127.0.0.1:8080/
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    #[command(flatten)]
    enforce: EnforceArgs,
    /// User the command runs as (name or uid). Root is refused.
    #[arg(long, value_name = "NAME", default_value = "nobody")]
    user: String,
    /// The command and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<OsString>,
}

/// Kills what is left of the workload, then removes the programs, then the cgroup: in that
/// order, so no process of the workload ever runs unenforced. Runs on every exit path.
struct Teardown {
    cgroup: WorkloadCgroup,
    pins: PathBuf,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Err(e) = self.cgroup.remove() {
            eprintln!("enforcer: {e}; leaving the programs attached so nothing escapes");
            return;
        }
        if let Err(e) = redirect::remove_pins(&self.pins) {
            eprintln!("enforcer: {e}");
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let policy = Policy::load_dir(&args.enforce.policy)
        .with_context(|| format!("policy {} is not valid", args.enforce.policy.display()))?;
    let run_as = RunAs::resolve(&args.user)?;
    let state = &args.enforce.state;
    std::fs::create_dir_all(state)
        .with_context(|| format!("cannot create state directory {}", state.display()))?;
    super::logging::init()?;
    let runtime = super::runtime()?;
    // Before anything is created: a refused token leaves no trace on the host.
    let identity = runtime.block_on(super::verify_identity(
        &policy,
        args.enforce.identity_token.as_deref(),
    ))?;

    let root = redirect::cgroup::find_cgroup2_root()
        .context("no cgroup v2 hierarchy found at /sys/fs/cgroup or /sys/fs/cgroup/unified")?;
    let name = format!("run-{}", std::process::id());
    let cgroup = WorkloadCgroup::create(&root, &name)?;
    let pins = redirect::pin_dir(&args.enforce.bpffs, cgroup.path())?;
    let teardown = Teardown { cgroup, pins };

    let withheld: Vec<String> = policy
        .resources
        .iter()
        .filter_map(|r| match &r.credential.as_ref()?.source {
            CredentialSource::Env(name) => Some(name.clone()),
            CredentialSource::File(_) | CredentialSource::ClientCertificate { .. } => None,
        })
        .collect();
    // Unique across time on this host (pids are reused): grants are bound to it.
    let workload = format!("{name}-{}", hex::encode(rand::random::<[u8; 4]>()));
    let config = ServiceConfig {
        workload,
        identity,
        policy,
        state_dir: state.clone(),
        cgroup: teardown.cgroup.path().to_owned(),
        bpffs: args.enforce.bpffs.clone(),
        admin: args.enforce.admin,
        proxy_port: args.enforce.proxy_port,
        proxy_threads: args.enforce.proxy_threads,
        mode: AttachMode::Fresh,
        store: args.enforce.store.clone(),
    };
    let procs = teardown.cgroup.procs_file()?;
    let (program, rest) = args.command.split_first().context("no command given")?;

    let outcome = runtime.block_on(async {
        let service = Service::start(config).await?;
        tracing::info!(
            proxy_port = service.proxy_port,
            admin = %service.admin_addr,
            "enforcing workload"
        );
        // How the workload reaches the admin API (grant requests); connections to it are
        // identified as the workload's by the redirect.
        let env = [("ENFORCER_ADMIN".to_owned(), service.admin_addr.to_string())];
        let spawn = Spawn {
            program,
            args: rest,
            run_as,
            cgroup_procs: &procs,
            withheld_env: &withheld,
            env: &env,
        };
        let code = supervise(|| Ok(spawn.spawn()?)).await?;
        anyhow::Ok((code, service.stop()))
    });
    let (code, stopped) = match outcome {
        Ok(done) => done,
        Err(e) => {
            drop(teardown);
            return Err(e);
        }
    };
    drop(teardown);
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    stopped.finish().context("audit log")?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Starts the child and waits for it, passing on the signals a supervisor is sent. The
/// handlers are in place before the child exists, so no signal meant for it is lost (or, by
/// its default action, kills enforcer instead).
async fn supervise(
    start: impl FnOnce() -> anyhow::Result<tokio::process::Child>,
) -> anyhow::Result<i32> {
    let kinds = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    let mut streams = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let sig = nix::sys::signal::Signal::try_from(kind.as_raw_value())?;
        streams.push((signal(kind)?, sig));
    }
    let mut child = start()?;
    let mut forwarders = tokio::task::JoinSet::new();
    if let Some(pid) = child.id().map(|p| nix::unistd::Pid::from_raw(p as i32)) {
        for (mut stream, sig) in streams {
            forwarders.spawn(async move {
                while stream.recv().await.is_some() {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            });
        }
    }
    let status = child.wait().await;
    // The pid is free for reuse from here on: no signal may go to it any more.
    forwarders.abort_all();
    Ok(exit_code(status?))
}
