//! Who is calling the admin API.
//!
//! A workload never reaches the admin listener directly: its connection is redirected to the
//! proxy, which serves the API in-process and attaches what the kernel recorded about the
//! connection ([`WorkloadCaller`]). Whatever such a request carries, it has workload rights
//! only. A direct connection is an operator if it presents the operator token (a file in the
//! state directory readable by its owner only), else anonymous (health and metrics).

use std::{
    io::{Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{grant::Requester, record::Process};

pub const OPERATOR_TOKEN_FILE: &str = "operator-token";
/// Informational: the operator's login name, recorded as who decided.
pub const OPERATOR_HEADER: &str = "x-enforcer-operator";

/// Attached by the proxy to requests from inside the enforced workload.
#[derive(Debug, Clone)]
pub struct WorkloadCaller {
    pub requester: Requester,
    pub process: Process,
}

#[derive(Debug, Clone)]
pub enum Caller {
    Operator { name: String },
    Workload(WorkloadCaller),
    Anonymous,
}

impl Caller {
    /// How the caller is named in the audit trail.
    pub fn label(&self) -> String {
        match self {
            Caller::Operator { name } => format!("operator:{name}"),
            Caller::Workload(w) => format!(
                "workload:{} (pid {} {})",
                w.requester.workload, w.process.pid, w.process.comm
            ),
            Caller::Anonymous => "anonymous".into(),
        }
    }
}

/// The operator token, compared in constant time.
#[derive(Clone)]
pub struct OperatorToken(String);

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(…)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("operator token {path}: {reason}")]
pub struct TokenFileError {
    pub path: PathBuf,
    pub reason: String,
}

impl OperatorToken {
    /// Reads `<state>/operator-token`, creating it (0600) on first start. Refused if anyone but
    /// its owner may read it or it is a symlink.
    pub fn load_or_create(state_dir: &Path) -> Result<OperatorToken, TokenFileError> {
        let path = state_dir.join(OPERATOR_TOKEN_FILE);
        let err = |reason: String| TokenFileError {
            path: path.clone(),
            reason,
        };
        match read_token(&path) {
            Ok(token) => Ok(OperatorToken(token)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = hex::encode(rand::random::<[u8; 32]>());
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| err(e.to_string()))?;
                file.write_all(token.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Ok(OperatorToken(token))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    pub fn matches(&self, presented: &str) -> bool {
        use aws_lc_rs::constant_time::verify_slices_are_equal;
        verify_slices_are_equal(self.0.as_bytes(), presented.trim().as_bytes()).is_ok()
    }
}

/// Reads a token file the way both the daemon and the CLI do: no symlinks, owner-only.
pub fn read_token(path: &Path) -> std::io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "readable by others (mode {:o}); it must be 0600",
            meta.permissions().mode() & 0o777
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    let mut token = String::new();
    file.take(4096).read_to_string(&mut token)?;
    Ok(token.trim().to_owned())
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(w) = parts.extensions.get::<WorkloadCaller>() {
            return Ok(Caller::Workload(w.clone()));
        }
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let token = parts.extensions.get::<OperatorToken>();
        if let (Some(presented), Some(token)) = (presented, token)
            && token.matches(presented)
        {
            let name = parts
                .headers
                .get(OPERATOR_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= 64
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
                })
                .unwrap_or("root")
                .to_owned();
            return Ok(Caller::Operator { name });
        }
        Ok(Caller::Anonymous)
    }
}
