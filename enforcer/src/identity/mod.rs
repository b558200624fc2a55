//! Workload identity: who the enforced job is.
//!
//! A CI system hands each job an OIDC ID token. `enforcer run --identity-token FILE` verifies
//! it against an identity provider named in the policy — signature against the issuer's JWKS,
//! `iss`, `aud`, `exp`, `nbf` with a small clock-skew allowance, and an algorithm allow-list
//! (never `none`, never HMAC: a public key must not verify as a shared secret) — and turns
//! the claims the policy names into attributes of the workload principal. Without a token the
//! principal is the local run.

mod jwks;

pub use jwks::{JwksError, KeySet};

use std::collections::BTreeMap;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::policy::IdentityProvider;

/// The verified identity of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadIdentity {
    /// Name of the identity provider in the policy that vouched for it.
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    /// The claims the provider's `claims` list names, as strings.
    pub attributes: BTreeMap<String, String>,
}

impl WorkloadIdentity {
    /// `<provider>:<subject>`, as decisions and logs name the principal.
    pub fn principal(&self) -> String {
        format!("{}:{}", self.provider, self.subject)
    }
}

/// The principal of a workload that presented no identity token.
pub const LOCAL_PRINCIPAL: &str = "local";

/// Why a token was refused. Each message says what was wrong, never the token itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("not a JWT: {0}")]
    Malformed(String),
    #[error("tokens signed with alg \"none\" are never accepted")]
    AlgNone,
    #[error("alg {0} is refused: HMAC algorithms would let a public key verify as a shared secret")]
    AlgHmac(String),
    #[error("alg {alg} is not in the provider's allow-list ({allowed})")]
    AlgNotAllowed { alg: String, allowed: String },
    #[error("the token's issuer {0:?} is not an identity provider of this policy")]
    UnknownIssuer(String),
    #[error("the token has no `kid` and the issuer has several keys")]
    NoKid,
    #[error("the issuer has no key with kid {0:?} (also after re-fetching its JWKS)")]
    UnknownKid(String),
    #[error("the issuer's key {kid:?} cannot verify {alg}: {reason}")]
    UnusableKey {
        kid: String,
        alg: String,
        reason: String,
    },
    #[error("the signature does not verify: the token was altered or signed by another key")]
    BadSignature,
    #[error("the token expired (exp is in the past, beyond {leeway}s of clock skew)")]
    Expired { leeway: u64 },
    #[error("the token is not valid yet (nbf is in the future, beyond {leeway}s of clock skew)")]
    NotYetValid { leeway: u64 },
    #[error("wrong issuer: expected {expected:?}")]
    WrongIssuer { expected: String },
    #[error("wrong audience: expected {expected:?}")]
    WrongAudience { expected: String },
    #[error("the token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct UnverifiedClaims {
    #[serde(default)]
    iss: Option<String>,
}

/// Verifies tokens against the identity providers of one policy.
pub struct Verifier {
    providers: Vec<(IdentityProvider, KeySet)>,
}

impl Verifier {
    pub fn new(providers: &[IdentityProvider]) -> Result<Verifier, IdentityError> {
        let mut all = Vec::with_capacity(providers.len());
        for p in providers {
            all.push((p.clone(), KeySet::new(p)?));
        }
        Ok(Verifier { providers: all })
    }

    pub async fn verify(&self, token: &str) -> Result<WorkloadIdentity, IdentityError> {
        let token = token.trim();
        let (header, claims) = split(token)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(IdentityError::AlgNone);
        }
        if header.alg.to_ascii_uppercase().starts_with("HS") {
            return Err(IdentityError::AlgHmac(header.alg));
        }
        let issuer = claims.iss.unwrap_or_default();
        // The unverified issuer only picks which provider's rules to apply; everything is then
        // checked against that provider, including the issuer itself.
        let (provider, keys) = self
            .providers
            .iter()
            .find(|(p, _)| p.issuer == issuer)
            .or(match self.providers.as_slice() {
                [only] => Some(only),
                _ => None,
            })
            .ok_or_else(|| IdentityError::UnknownIssuer(issuer.clone()))?;
        let alg: Algorithm = header
            .alg
            .parse()
            .map_err(|_| IdentityError::AlgNotAllowed {
                alg: header.alg.clone(),
                allowed: allowed(provider),
            })?;
        if !provider.algorithms.contains(&alg) {
            return Err(IdentityError::AlgNotAllowed {
                alg: header.alg,
                allowed: allowed(provider),
            });
        }
        let jwk = keys.key(header.kid.as_deref(), alg).await?;
        let kid = header.kid.clone().unwrap_or_default();
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| IdentityError::UnusableKey {
            kid: kid.clone(),
            alg: header.alg.clone(),
            reason: e.to_string(),
        })?;
        let mut validation = Validation::new(alg);
        validation.leeway = provider.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&provider.issuer]);
        validation.set_audience(&[&provider.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => IdentityError::BadSignature,
            ErrorKind::ExpiredSignature => IdentityError::Expired {
                leeway: provider.leeway_secs,
            },
            ErrorKind::ImmatureSignature => IdentityError::NotYetValid {
                leeway: provider.leeway_secs,
            },
            ErrorKind::InvalidIssuer => IdentityError::WrongIssuer {
                expected: provider.issuer.clone(),
            },
            ErrorKind::InvalidAudience => IdentityError::WrongAudience {
                expected: provider.audience.clone(),
            },
            ErrorKind::MissingRequiredClaim(c) => IdentityError::MissingClaim(c.clone()),
            ErrorKind::InvalidAlgorithm => IdentityError::UnusableKey {
                kid: kid.clone(),
                alg: header.alg.clone(),
                reason: "the key is of another type".into(),
            },
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => IdentityError::Malformed(e.to_string()),
            _ => IdentityError::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let mut attributes = BTreeMap::new();
        for name in &provider.claims {
            if let Some(value) = claims.get(name).and_then(scalar) {
                attributes.insert(name.clone(), value);
            }
        }
        Ok(WorkloadIdentity {
            provider: provider.name.clone(),
            issuer: provider.issuer.clone(),
            subject,
            attributes,
        })
    }
}

fn allowed(provider: &IdentityProvider) -> String {
    provider
        .algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The header and the (unverified) issuer, with a clear error for anything that is not the
/// shape of a JWS compact serialization.
fn split(token: &str) -> Result<(RawHeader, UnverifiedClaims), IdentityError> {
    const MAX_TOKEN: usize = 64 * 1024;
    if token.len() > MAX_TOKEN {
        return Err(IdentityError::Malformed(format!(
            "longer than {MAX_TOKEN} bytes"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(IdentityError::Malformed(format!(
            "expected 3 dot-separated parts, found {}",
            parts.len()
        )));
    };
    let decode = |part: &str, what: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .map_err(|_| IdentityError::Malformed(format!("the {what} is not base64url")))
    };
    let header: RawHeader = serde_json::from_slice(&decode(header, "header")?).map_err(|_| {
        IdentityError::Malformed("the header is not a JSON object with `alg`".into())
    })?;
    let claims: UnverifiedClaims = serde_json::from_slice(&decode(payload, "payload")?)
        .map_err(|_| IdentityError::Malformed("the payload is not a JSON object".into()))?;
    // After the header, so that `alg: none` (which comes with no signature) is named as such.
    if !header.alg.eq_ignore_ascii_case("none") {
        if signature.is_empty() {
            return Err(IdentityError::Malformed(
                "the signature part is empty".into(),
            ));
        }
        decode(signature, "signature")?;
    }
    Ok((header, claims))
}

#[cfg(test)]
mod tests;
