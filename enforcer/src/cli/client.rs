//! The CLI's side of the admin API: requests from inside a workload (identified by the
//! daemon through its connection) or from an operator (the token in the state directory).

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Where the admin API is and how to prove operator rights.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The enforcer's admin API. Inside `enforcer run` the workload's environment names it.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        env = "ENFORCER_ADMIN",
        default_value = "127.0.0.1:9090"
    )]
    pub admin: SocketAddr,
    /// The enforcer's state directory: its operator-token file proves operator rights (root
    /// only). Not needed from inside the workload, where the connection itself identifies the
    /// caller.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/enforcer")]
    pub state: PathBuf,
}

/// The admin API said no.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
}

pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        if !args.admin.ip().is_loopback() {
            bail!(
                "--admin {} is not a loopback address; the admin API only listens on loopback",
                args.admin
            );
        }
        let path = args
            .state
            .join(enforcer::admin::caller::OPERATOR_TOKEN_FILE);
        let token = match enforcer::admin::caller::read_token(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            // Not readable as this user (inside the workload): the connection identifies us.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
            Err(e) => bail!("operator token {}: {e}", path.display()),
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        Ok(Client {
            base: format!("http://{}", args.admin),
            token,
            http,
        })
    }

    fn prepare(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")) {
            Ok(user) => req.header(enforcer::admin::caller::OPERATOR_HEADER, user),
            Err(_) => req,
        };
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let req = self.prepare(self.http.get(format!("{}{path}", self.base)));
        self.send(req).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> anyhow::Result<T> {
        let req = self.prepare(self.http.post(format!("{}{path}", self.base)).json(body));
        self.send(req).await
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the enforcer admin API at {} (is enforcer running? --admin or \
                 ENFORCER_ADMIN names it)",
                self.base
            )
        })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .context("reading the admin API's answer")?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ApiFailure {
                status: status.as_u16(),
                message,
            }
            .into());
        }
        serde_json::from_slice(&body).context("the admin API answered something unexpected")
    }
}

/// Text that came from a workload or a token, made safe to print: control characters
/// (escape sequences, carriage returns, fake newlines) are shown escaped.
pub fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Unix milliseconds as RFC 3339 (UTC).
pub fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
