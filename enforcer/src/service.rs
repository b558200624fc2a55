//! The enforcing service shared by `enforcer run` and `enforcer daemon`: redirect attached (or
//! resumed), proxy listening, admin API up, audit writer running.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::task::JoinHandle;

use crate::{
    admin::{self, AdminError, AdminState, OperatorToken, caller::TokenFileError},
    approval::{Approvals, Webhook},
    grant::{GrantError, GrantSigner, Grants, TokenError},
    metrics::Metrics,
    policy::Policy,
    proxy::{AdminRoute, Listeners, Proxy, ProxyError, Sessions},
    record::{
        Recorder,
        audit::{AuditError, AuditLog},
    },
    redirect::{Redirect, RedirectConfig, RedirectError},
    store::{Store, StoreError, StoreLocation},
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "enforcer itself runs in cgroup {0}: enforcing it would redirect the proxy into itself"
    )]
    OwnCgroup(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error(transparent)]
    SigningKey(#[from] TokenError),
    #[error(transparent)]
    OperatorToken(#[from] TokenFileError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("approval webhook: {0}")]
    Webhook(String),
}

/// How to come by the kernel programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Attach anew; fails if the cgroup is already enforced.
    Fresh,
    /// Re-use what is pinned (a restarted daemon), attach anew if nothing is.
    ResumeOrFresh,
}

pub struct ServiceConfig {
    pub workload: String,
    /// The verified identity token of the workload, if it presented one.
    pub identity: Option<crate::identity::WorkloadIdentity>,
    pub policy: Policy,
    pub state_dir: PathBuf,
    pub cgroup: PathBuf,
    pub bpffs: PathBuf,
    pub admin: SocketAddr,
    pub proxy_port: u16,
    /// Threads serving connections; 0 for [`crate::proxy::default_threads`].
    pub proxy_threads: usize,
    pub mode: AttachMode,
    /// `--store` URL; SQLite in the state directory without it.
    pub store: Option<String>,
}

/// A running service. Stop it by dropping the runtime it runs on, then [`Stopped::finish`].
pub struct Service {
    pub redirect: Arc<Mutex<Redirect>>,
    pub proxy_port: u16,
    pub admin_addr: SocketAddr,
    pub resumed: bool,
    /// `<host>/<workload>`: what grants are bound to.
    pub workload: String,
    pub grants: Arc<Grants>,
    shards: crate::proxy::Shards,
    sweeper: JoinHandle<()>,
    admin_task: JoinHandle<std::io::Result<()>>,
    audit: std::thread::JoinHandle<Result<u64, AuditError>>,
}

impl Service {
    pub async fn start(cfg: ServiceConfig) -> Result<Service, ServiceError> {
        ensure_not_own_cgroup(&cfg.cgroup)?;
        std::fs::create_dir_all(&cfg.state_dir).map_err(|source| ServiceError::StateDir {
            path: cfg.state_dir.clone(),
            source,
        })?;
        let audit_log = AuditLog::open(&audit_path(&cfg.state_dir))?;
        // Everything that can fail on bad configuration fails before the kernel programs are
        // attached.
        let host = hostname();
        let resume = cfg.mode == AttachMode::ResumeOrFresh
            && crate::redirect::is_attached(&cfg.bpffs, &cfg.cgroup)?;
        // A fresh attachment is a new workload (the next CI job in the same cgroup must not
        // inherit the last one's grants); a resumed one (a restarted daemon) is the same.
        let nonce = workload_nonce(&cfg.state_dir, &cfg.cgroup, resume)?;
        let workload = format!("{host}/{}#{nonce}", cfg.workload);
        let location = StoreLocation::parse(cfg.store.as_deref(), &cfg.state_dir)?;
        let store = Store::open(&location).await?;
        let signer = GrantSigner::load_or_create(&cfg.state_dir)?;
        let operator_token = OperatorToken::load_or_create(&cfg.state_dir)?;
        let authority = Arc::new(crate::tls::Authority::load_or_create(&cfg.state_dir)?);
        let webhook = cfg
            .policy
            .approvals
            .webhook
            .clone()
            .map(Webhook::new)
            .transpose()
            .map_err(|e| ServiceError::Webhook(e.to_string()))?;

        let gateways = crate::proxy::bind_gateways(&cfg.policy)?;
        let (redirect, mut listeners) = if resume {
            let mut redirect = Redirect::resume(&cfg.bpffs, &cfg.cgroup)?;
            // Same port as before: the kernel programs already send the workload there.
            let mut kernel = redirect.config()?;
            let listeners = Listeners::bind(kernel.proxy_port)?;
            kernel.dns_resolver = cfg.policy.dns_resolver;
            redirect.set_config(kernel)?;
            (redirect, listeners)
        } else {
            let listeners = Listeners::bind(cfg.proxy_port)?;
            let config = RedirectConfig {
                proxy_port: listeners.port,
                dns_resolver: cfg.policy.dns_resolver,
            };
            (
                Redirect::attach(&cfg.bpffs, &cfg.cgroup, config)?,
                listeners,
            )
        };
        listeners.gateways = gateways;
        let proxy_port = listeners.port;
        let redirect = Arc::new(Mutex::new(redirect));

        let admin_listener = admin::bind(cfg.admin).await?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| AdminError::Bind {
                addr: cfg.admin,
                source,
            })?;

        let (recorder, audit) =
            Recorder::start(audit_log, Some(&enforcement_log_path(&cfg.state_dir)))?;
        let metrics = Arc::new(Metrics::new());
        let policy = Arc::new(cfg.policy);
        let approvals = Arc::new(Approvals::new(
            store.clone(),
            host.clone(),
            policy.approvals.timeout,
            webhook,
            recorder.clone(),
            Arc::clone(&metrics),
        ));
        let grants = Arc::new(
            Grants::new(
                store,
                signer,
                approvals,
                Arc::clone(&policy),
                recorder.clone(),
                Arc::clone(&metrics),
                host,
                std::slice::from_ref(&workload),
            )
            .await?,
        );
        let sweeper = tokio::spawn(sweep(Arc::clone(&grants)));
        let sessions = Arc::new(Sessions::default());
        let state = AdminState {
            metrics: Arc::clone(&metrics),
            redirect: Arc::clone(&redirect),
            grants: Some(Arc::clone(&grants)),
            sessions: Arc::clone(&sessions),
            operator_token: Some(operator_token),
        };
        let workload_router = admin::workload_router(state.clone());
        let router = admin::router(state);
        let proxy = Arc::new(Proxy::new(
            workload.clone(),
            cfg.identity,
            policy,
            Arc::clone(&redirect),
            recorder,
            Arc::clone(&metrics),
            proxy_port,
            sessions,
            Some(AdminRoute {
                addr: admin_addr,
                workload_router,
            }),
            Some(Arc::clone(&grants)),
            Arc::new(crate::protocol::Shared {
                tls: Some(authority),
                ..Default::default()
            }),
        ));
        let shards = crate::proxy::Shards::start(&proxy, listeners, cfg.proxy_threads)?;
        drop(proxy);
        let admin_task = tokio::spawn(admin::serve(admin_listener, router));
        Ok(Service {
            redirect,
            proxy_port,
            admin_addr,
            resumed: resume,
            workload,
            grants,
            shards,
            sweeper,
            admin_task,
            audit,
        })
    }

    /// Stops accepting and ends every connection (the proxy's threads drop them); the audit
    /// writer finishes once the last recorder is gone.
    pub fn stop(mut self) -> Stopped {
        self.shards.stop();
        self.admin_task.abort();
        self.sweeper.abort();
        Stopped {
            shards: self.shards,
            audit: self.audit,
        }
    }
}

pub struct Stopped {
    shards: crate::proxy::Shards,
    audit: std::thread::JoinHandle<Result<u64, AuditError>>,
}

impl Stopped {
    /// Waits for the proxy's threads to end and the audit writer to flush everything; call
    /// after the runtime is gone.
    pub fn finish(self) -> Result<u64, AuditError> {
        self.shards.join();
        self.audit.join().unwrap_or_else(|_| {
            Err(AuditError::Write {
                path: PathBuf::from("audit"),
                source: std::io::Error::other("audit writer panicked"),
            })
        })
    }
}

/// Times out approvals and expires grants, twice a second.
async fn sweep(grants: Arc<Grants>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = grants.sweep().await {
            tracing::error!("grant and approval sweep failed: {e}");
        }
    }
}

/// The per-attachment part of the workload id, kept in the state directory by cgroup inode.
fn workload_nonce(state_dir: &Path, cgroup: &Path, resume: bool) -> Result<String, ServiceError> {
    use std::os::unix::fs::MetadataExt;
    let err = |source| ServiceError::StateDir {
        path: state_dir.to_owned(),
        source,
    };
    let inode = std::fs::metadata(cgroup).map_err(err)?.ino();
    let path = state_dir.join(format!("workload-{inode}"));
    if resume
        && let Ok(kept) = std::fs::read_to_string(&path)
        && kept.trim().len() == 16
        && kept.trim().chars().all(|c| c.is_ascii_hexdigit())
    {
        return Ok(kept.trim().to_owned());
    }
    let nonce = hex::encode(rand::random::<[u8; 8]>());
    std::fs::write(&path, &nonce).map_err(err)?;
    Ok(nonce)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub fn audit_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.jsonl")
}

pub fn enforcement_log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("enforcement.log")
}

/// Refuses to enforce the cgroup enforcer itself is in (or one above it).
fn ensure_not_own_cgroup(cgroup: &Path) -> Result<(), ServiceError> {
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Ok(());
    };
    let Some(own_v2) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Ok(());
    };
    let Some(root) = crate::redirect::cgroup::find_cgroup2_root() else {
        return Ok(());
    };
    let own_path = root.join(own_v2.trim_start_matches('/'));
    let target = std::fs::canonicalize(cgroup).unwrap_or_else(|_| cgroup.to_owned());
    if own_path.starts_with(&target) {
        return Err(ServiceError::OwnCgroup(target));
    }
    Ok(())
}
