//! `enforcer kubeconfig`: what a workload's kubectl needs to reach a Kubernetes resource
//! through enforcer — the API server's address and enforcer's CA — and no credential
//! (enforcer injects the real one), or a grant token when asked.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Args;
use enforcer::policy::{Policy, Protocol};

/// Print a kubeconfig for a Kubernetes resource of the policy: its API server address,
/// enforcer's CA (from the state directory, created if needed) as the cluster's certificate
/// authority, and a user without credentials. Give it to the workload (KUBECONFIG); its
/// requests are then decided by the policy and sent with the credential the policy names.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Policy directory.
    #[arg(long, value_name = "DIR")]
    policy: PathBuf,
    /// The kubernetes resource of the policy.
    #[arg(long, value_name = "NAME")]
    resource: String,
    /// enforcer's state directory (where its CA is).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/enforcer")]
    state: PathBuf,
    /// A file holding a grant token (`enforcer grant request … --json` prints it as
    /// "token"; `-` reads standard input): the kubeconfig's user presents it, so requests
    /// carry that grant. Without it the user has no credential and the workload's own
    /// grants apply.
    #[arg(long, value_name = "FILE")]
    grant_token: Option<PathBuf>,
    /// Point at the resource's gateway (for a client outside any enforced cgroup) instead of
    /// the API server's address; needs --grant-token, the gateway's only credential.
    #[arg(long, requires = "grant_token")]
    gateway: bool,
}

/// Reads a grant token and checks it has a JWT's shape (its signature and scope are checked
/// by enforcer when it is presented).
fn read_token(path: &std::path::Path) -> Result<String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the grant token from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the grant token {}", path.display()))?
    };
    let token = text.trim();
    let parts: Vec<&str> = token.split('.').collect();
    let base64url = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if parts.len() != 3 || !parts.iter().all(|p| base64url(p)) {
        bail!(
            "{} does not hold a grant token (a JWT: three base64url parts separated by dots)",
            path.display()
        );
    }
    Ok(token.to_owned())
}

pub fn run(args: KubeconfigArgs) -> Result<()> {
    let policy = Policy::load_dir(&args.policy)?;
    let Some(resource) = policy.resources.iter().find(|r| r.name == args.resource) else {
        bail!(
            "the policy has no resource {:?} (its resources: {})",
            args.resource,
            policy
                .resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if resource.protocol != Protocol::Kubernetes {
        bail!(
            "resource {:?} speaks {}, not kubernetes",
            resource.name,
            resource.protocol.as_str()
        );
    }
    let user = match &args.grant_token {
        Some(path) => format!("{{token: {}}}", read_token(path)?),
        None => "{}".to_owned(),
    };
    let addr = if args.gateway {
        let Some(gateway) = resource.gateway else {
            bail!(
                "resource {:?} has no gateway (add `gateway: IP:port` to it in the policy)",
                resource.name
            );
        };
        gateway
    } else {
        let Some(addr) = resource.addresses.first() else {
            bail!("resource {:?} has no address", resource.name);
        };
        *addr
    };
    std::fs::create_dir_all(&args.state)
        .with_context(|| format!("creating {}", args.state.display()))?;
    let authority = enforcer::tls::Authority::load_or_create(&args.state)?;
    let ca = std::fs::read(authority.ca_path())
        .with_context(|| format!("reading {}", authority.ca_path().display()))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let name = &resource.name;
    print!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\nusers:\n- name: enforcer\n  user: {user}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: enforcer\ncurrent-context: {name}\n"
    );
    Ok(())
}
