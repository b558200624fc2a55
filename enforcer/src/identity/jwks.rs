//! An issuer's signing keys: from a file (air-gapped hosts), a JWKS URL, or the issuer's OIDC
//! discovery document; cached, and fetched again when a token names a key we do not know
//! (the issuer rotated), at most every [`REFETCH_AFTER`].

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm,
    jwk::{Jwk, JwkSet},
};
use tokio::sync::Mutex;

use super::IdentityError;
use crate::policy::{IdentityProvider, JwksSource};

const REFETCH_AFTER: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS or discovery document larger than this is refused.
const MAX_DOCUMENT: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("cannot read JWKS file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot fetch {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{what} is not valid: {reason}")]
    Parse { what: String, reason: String },
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
}

struct Cached {
    set: JwkSet,
    fetched: Instant,
}

/// The keys of one identity provider.
pub struct KeySet {
    source: JwksSource,
    client: reqwest::Client,
    cache: Mutex<Option<Cached>>,
}

impl KeySet {
    pub fn new(provider: &IdentityProvider) -> Result<KeySet, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| JwksError::Client(e.to_string()))?;
        Ok(KeySet {
            source: provider.jwks.clone(),
            client,
            cache: Mutex::new(None),
        })
    }

    /// The key a token with `kid` and `alg` must verify against.
    pub(super) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, IdentityError> {
        let mut cache = self.cache.lock().await;
        let fresh_fetch = cache.is_none();
        if fresh_fetch {
            *cache = Some(Cached {
                set: self.fetch().await?,
                fetched: Instant::now(),
            });
        }
        let found = cache
            .as_ref()
            .map(|c| find(&c.set, kid, alg))
            .transpose()?
            .flatten();
        if let Some(jwk) = found {
            return Ok(jwk);
        }
        let stale = cache
            .as_ref()
            .is_some_and(|c| c.fetched.elapsed() >= REFETCH_AFTER);
        if !fresh_fetch && stale {
            *cache = Some(Cached {
                set: self.fetch().await?,
                fetched: Instant::now(),
            });
            if let Some(jwk) = cache
                .as_ref()
                .map(|c| find(&c.set, kid, alg))
                .transpose()?
                .flatten()
            {
                return Ok(jwk);
            }
        }
        Err(IdentityError::UnknownKid(
            kid.unwrap_or_default().to_owned(),
        ))
    }

    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        match &self.source {
            JwksSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| JwksError::Read {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                parse_jwks(&text, &path.display().to_string())
            }
            JwksSource::Url(url) => parse_jwks(&self.get(url).await?, url),
            JwksSource::Discovery(issuer) => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let text = self.get(&url).await?;
                #[derive(serde::Deserialize)]
                struct Discovery {
                    jwks_uri: String,
                }
                let discovery: Discovery =
                    serde_json::from_str(&text).map_err(|e| JwksError::Parse {
                        what: format!("discovery document {url}"),
                        reason: e.to_string(),
                    })?;
                parse_jwks(&self.get(&discovery.jwks_uri).await?, &discovery.jwks_uri)
            }
        }
    }

    async fn get(&self, url: &str) -> Result<String, JwksError> {
        let fail = |reason: String| JwksError::Fetch {
            url: url.to_owned(),
            reason,
        };
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
        if body.len() > MAX_DOCUMENT {
            return Err(fail(format!("larger than {MAX_DOCUMENT} bytes")));
        }
        String::from_utf8(body.to_vec()).map_err(|_| fail("not UTF-8".into()))
    }
}

fn parse_jwks(text: &str, what: &str) -> Result<JwkSet, JwksError> {
    serde_json::from_str(text).map_err(|e| JwksError::Parse {
        what: format!("JWKS {what}"),
        reason: e.to_string(),
    })
}

/// The key for `kid`; without a kid, the only key that can verify `alg`.
fn find(set: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Result<Option<Jwk>, IdentityError> {
    if let Some(kid) = kid {
        return Ok(set.find(kid).cloned());
    }
    let family = alg.family();
    let mut candidates = set.keys.iter().filter(|k| {
        let key_family = match &k.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                Some(jsonwebtoken::AlgorithmFamily::Ec)
            }
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => {
                Some(jsonwebtoken::AlgorithmFamily::Rsa)
            }
            jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => {
                Some(jsonwebtoken::AlgorithmFamily::Ed)
            }
            // Shared secrets never verify workload tokens; unknown key types neither.
            _ => None,
        };
        key_family == Some(family)
    });
    match (candidates.next(), candidates.next()) {
        (Some(only), None) => Ok(Some(only.clone())),
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(IdentityError::NoKid),
    }
}
