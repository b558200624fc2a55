//! Grants as signed JWTs (ES256). The signing key is generated at first start in the state
//! directory with mode 0600 and refused if anyone but its owner can read it.

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    errors::ErrorKind,
    jwk::{Jwk, JwkSet},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `iss` of every grant token.
pub const GRANT_ISSUER: &str = "enforcer";
/// `aud` of every grant token: a grant is only ever presented back to enforcer.
pub const GRANT_AUDIENCE: &str = "enforcer-grant";
const KEY_FILE: &str = "grant-signing-key.p8";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("cannot read or create the grant signing key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the grant signing key {path} is readable by others (mode {mode:o}); it must be 0600")]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("cannot sign the grant: {0}")]
    Sign(String),
    #[error("not a grant token: {0}")]
    Malformed(String),
    #[error("the grant token's signature does not verify")]
    BadSignature,
    #[error("the grant has expired")]
    Expired,
    #[error("the token is not an enforcer grant (wrong issuer or audience)")]
    NotAGrant,
}

/// What a grant token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    pub iss: String,
    pub aud: String,
    /// The principal the grant is bound to.
    pub sub: String,
    /// The grant id.
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    pub resource: String,
    pub access: String,
    /// The workload the grant is bound to: an enforced workload other than this one cannot
    /// use it.
    #[serde(default)]
    pub wl: String,
    /// Uses left when issued; `None` means until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// Signs and verifies grant tokens with this enforcer's key.
pub struct GrantSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Jwk,
    kid: String,
}

impl GrantSigner {
    /// Loads the key from `state_dir`, generating it on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<GrantSigner, TokenError> {
        let path = state_dir.join(KEY_FILE);
        let key_err = |reason: String| TokenError::Key {
            path: path.clone(),
            reason,
        };
        // O_NOFOLLOW and checks on the opened file itself: a symlink or a key planted by
        // someone else in the state directory must not become the key grants are signed with.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let pkcs8 = match opened {
            Ok(mut file) => {
                use std::{io::Read, os::unix::fs::MetadataExt};
                let meta = file.metadata().map_err(|e| key_err(e.to_string()))?;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(TokenError::KeyExposed { path, mode });
                }
                // SAFETY: geteuid has no preconditions.
                let me = unsafe { libc::geteuid() };
                if meta.uid() != me {
                    return Err(key_err(format!(
                        "owned by uid {}, not by enforcer (uid {me})",
                        meta.uid()
                    )));
                }
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)
                    .map_err(|e| key_err(e.to_string()))?;
                bytes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let document = EcdsaKeyPair::generate_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &SystemRandom::new(),
                )
                .map_err(|_| key_err("key generation failed".into()))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| key_err(e.to_string()))?;
                file.write_all(document.as_ref())
                    .map_err(|e| key_err(e.to_string()))?;
                file.sync_all().map_err(|e| key_err(e.to_string()))?;
                document.as_ref().to_vec()
            }
            Err(e) => return Err(key_err(e.to_string())),
        };
        Self::from_pkcs8(&pkcs8).map_err(key_err)
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Result<GrantSigner, String> {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        let encoding = EncodingKey::from_ec_der(pkcs8);
        let mut jwk =
            Jwk::from_encoding_key(&encoding, Algorithm::ES256).map_err(|e| e.to_string())?;
        let public = serde_json::to_vec(&jwk.algorithm).map_err(|e| e.to_string())?;
        let kid = hex::encode(&Sha256::digest(&public)[..8]);
        jwk.common.key_id = Some(kid.clone());
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
        Ok(GrantSigner {
            encoding,
            decoding,
            jwk,
            kid,
        })
    }

    /// The public key, for enforcers that verify grants issued here.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (JSON), published in the store for other enforcers.
    pub fn public_jwk(&self) -> Result<String, TokenError> {
        serde_json::to_string(&self.jwk).map_err(|e| TokenError::Sign(e.to_string()))
    }

    pub fn issue(&self, claims: &GrantClaims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Checks signature, issuer, audience and expiry (no leeway: grants are short-lived and
    /// issued by the same clock domain).
    pub fn verify(&self, token: &str) -> Result<GrantClaims, TokenError> {
        verify_with(token, &self.decoding)
    }
}

/// The `kid` a token names, read before verification to pick the key.
pub fn token_kid(token: &str) -> Result<Option<String>, TokenError> {
    jsonwebtoken::decode_header(token.trim())
        .map(|h| h.kid)
        .map_err(|e| TokenError::Malformed(e.to_string()))
}

/// Verifies a grant token against a published JWK (another enforcer's key).
pub fn verify_with_jwk(token: &str, jwk_json: &str) -> Result<GrantClaims, TokenError> {
    let jwk: Jwk = serde_json::from_str(jwk_json)
        .map_err(|e| TokenError::Malformed(format!("published key: {e}")))?;
    let key = DecodingKey::from_jwk(&jwk)
        .map_err(|e| TokenError::Malformed(format!("published key: {e}")))?;
    verify_with(token, &key)
}

fn verify_with(token: &str, key: &DecodingKey) -> Result<GrantClaims, TokenError> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = 0;
    validation.set_issuer(&[GRANT_ISSUER]);
    validation.set_audience(&[GRANT_AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "jti"]);
    jsonwebtoken::decode::<GrantClaims>(token.trim(), key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::NotAGrant,
            _ => TokenError::Malformed(e.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64) -> GrantClaims {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        GrantClaims {
            iss: GRANT_ISSUER.into(),
            aud: GRANT_AUDIENCE.into(),
            sub: "ci:repo:acme/shop".into(),
            jti: "g-1".into(),
            iat: now,
            exp: now.saturating_add_signed(exp_in),
            resource: "orders-db".into(),
            access: "write".into(),
            wl: "host/run-1".into(),
            uses: Some(1),
        }
    }

    #[test]
    fn issued_grants_verify_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = GrantSigner::load_or_create(dir.path()).expect("create key");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = signer.issue(&claims(300)).expect("issue");
        assert_eq!(signer.verify(&token), Ok(claims(300)));
        // Another enforcer with the same state (or a restart) verifies it too.
        let again = GrantSigner::load_or_create(dir.path()).expect("load key");
        assert_eq!(again.verify(&token).map(|c| c.jti), Ok("g-1".into()));
        assert_eq!(again.jwks().keys.len(), 1);
    }

    #[test]
    fn forged_expired_foreign_and_garbage_grants_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = GrantSigner::load_or_create(dir.path()).expect("key");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = GrantSigner::load_or_create(other_dir.path()).expect("key");
        assert_eq!(
            signer.verify(&other.issue(&claims(300)).expect("issue")),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            signer.verify(&signer.issue(&claims(-10)).expect("issue")),
            Err(TokenError::Expired)
        );
        let mut foreign = claims(300);
        foreign.aud = "enforcer".into();
        assert_eq!(
            signer.verify(&signer.issue(&foreign).expect("issue")),
            Err(TokenError::NotAGrant)
        );
        let token = signer.issue(&claims(300)).expect("issue");
        let parts: Vec<&str> = token.split('.').collect();
        let mut upgraded = claims(300);
        upgraded.uses = None;
        let payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&upgraded).expect("json"),
        );
        assert_eq!(
            signer.verify(&format!("{}.{payload}.{}", parts[0], parts[2])),
            Err(TokenError::BadSignature)
        );
        for garbage in ["", "x", "a.b.c", &token[..10]] {
            assert!(
                matches!(signer.verify(garbage), Err(TokenError::Malformed(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_symlinked_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        GrantSigner::load_or_create(elsewhere.path()).expect("key");
        std::os::unix::fs::symlink(elsewhere.path().join(KEY_FILE), dir.path().join(KEY_FILE))
            .expect("symlink");
        assert!(matches!(
            GrantSigner::load_or_create(dir.path()),
            Err(TokenError::Key { .. })
        ));
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        GrantSigner::load_or_create(dir.path()).expect("key");
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            GrantSigner::load_or_create(dir.path()),
            Err(TokenError::KeyExposed { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, b"not a key").expect("write");
        assert!(matches!(
            GrantSigner::load_or_create(dir.path()),
            Err(TokenError::Key { .. })
        ));
    }
}
