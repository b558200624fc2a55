//! Every attack case is refused with its own reason; a good token maps its claims.

use std::{path::Path, time::SystemTime};

use base64::Engine;
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use serde_json::json;

use super::*;
use crate::policy::{IdentityProvider, JwksSource};

const ISSUER: &str = "https://ci.example.test";
const AUDIENCE: &str = "enforcer";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture(name)).expect("EC key")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Setup {
    _dir: tempfile::TempDir,
    verifier: Verifier,
    jwks_json: String,
}

fn setup() -> Setup {
    let mut jwk = Jwk::from_encoding_key(&key("issuer-key.pem"), Algorithm::ES256).expect("jwk");
    jwk.common.key_id = Some("k1".into());
    let jwks_json = serde_json::to_string(&JwkSet { keys: vec![jwk] }).expect("jwks");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, &jwks_json).expect("write jwks");
    let provider = IdentityProvider {
        name: "ci".into(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks: JwksSource::File(file),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        leeway_secs: 60,
        claims: vec!["repository".into(), "actor".into(), "run_number".into()],
    };
    Setup {
        _dir: dir,
        verifier: Verifier::new(&[provider]).expect("verifier"),
        jwks_json,
    }
}

fn claims() -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "repo:acme/shop:ref:refs/heads/main",
        "exp": now() + 600,
        "iat": now(),
        "nbf": now() - 5,
        "repository": "acme/shop",
        "actor": "octo",
        "run_number": 42,
    })
}

fn sign(claims: &serde_json::Value, kid: &str, key_file: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &key(key_file)).expect("sign")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn verify(s: &Setup, token: &str) -> Result<WorkloadIdentity, IdentityError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(s.verifier.verify(token))
}

#[test]
fn a_valid_token_maps_its_claims() {
    let s = setup();
    let identity = verify(&s, &sign(&claims(), "k1", "issuer-key.pem")).expect("valid token");
    assert_eq!(identity.provider, "ci");
    assert_eq!(identity.subject, "repo:acme/shop:ref:refs/heads/main");
    assert_eq!(
        identity.attributes.get("repository").map(String::as_str),
        Some("acme/shop")
    );
    assert_eq!(
        identity.attributes.get("actor").map(String::as_str),
        Some("octo")
    );
    assert_eq!(
        identity.attributes.get("run_number").map(String::as_str),
        Some("42")
    );
    assert_eq!(identity.attributes.len(), 3);
}

#[test]
fn alg_none_is_refused() {
    let s = setup();
    let token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(verify(&s, &token), Err(IdentityError::AlgNone));
    let token = format!(
        "{}.{}.",
        b64(br#"{"alg":"None"}"#),
        b64(claims().to_string().as_bytes())
    );
    assert_eq!(verify(&s, &token), Err(IdentityError::AlgNone));
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let s = setup();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(s.jwks_json.as_bytes()),
    )
    .expect("sign");
    assert_eq!(
        verify(&s, &forged),
        Err(IdentityError::AlgHmac("HS256".into()))
    );
}

#[test]
fn algorithms_outside_the_allow_list_are_refused() {
    let s = setup();
    let token = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"ES384","kid":"k1"}"#),
        b64(claims().to_string().as_bytes()),
        b64(b"sig")
    );
    assert!(matches!(
        verify(&s, &token),
        Err(IdentityError::AlgNotAllowed { .. })
    ));
    let token = format!(
        "{}.{}.{}",
        b64(br#"{"alg":"XY999","kid":"k1"}"#),
        b64(claims().to_string().as_bytes()),
        b64(b"sig")
    );
    assert!(matches!(
        verify(&s, &token),
        Err(IdentityError::AlgNotAllowed { .. })
    ));
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let s = setup();
    let mut c = claims();
    c["exp"] = json!(now() - 3600);
    assert_eq!(
        verify(&s, &sign(&c, "k1", "issuer-key.pem")),
        Err(IdentityError::Expired { leeway: 60 })
    );
    c["exp"] = json!(now() - 30);
    assert!(
        verify(&s, &sign(&c, "k1", "issuer-key.pem")).is_ok(),
        "30 s of skew is tolerated"
    );
    let mut c = claims();
    c["nbf"] = json!(now() + 3600);
    assert_eq!(
        verify(&s, &sign(&c, "k1", "issuer-key.pem")),
        Err(IdentityError::NotYetValid { leeway: 60 })
    );
}

#[test]
fn wrong_issuer_and_audience_are_refused() {
    let s = setup();
    let mut c = claims();
    c["iss"] = json!("https://evil.example.test");
    assert_eq!(
        verify(&s, &sign(&c, "k1", "issuer-key.pem")),
        Err(IdentityError::WrongIssuer {
            expected: ISSUER.into()
        })
    );
    let mut c = claims();
    c["aud"] = json!("someone-else");
    assert_eq!(
        verify(&s, &sign(&c, "k1", "issuer-key.pem")),
        Err(IdentityError::WrongAudience {
            expected: AUDIENCE.into()
        })
    );
    let mut c = claims();
    c.as_object_mut().expect("object").remove("sub");
    assert_eq!(
        verify(&s, &sign(&c, "k1", "issuer-key.pem")),
        Err(IdentityError::MissingClaim("sub".into()))
    );
}

#[test]
fn unknown_kid_and_foreign_keys_are_refused() {
    let s = setup();
    assert_eq!(
        verify(&s, &sign(&claims(), "rotated-away", "issuer-key.pem")),
        Err(IdentityError::UnknownKid("rotated-away".into()))
    );
    assert_eq!(
        verify(&s, &sign(&claims(), "k1", "other-key.pem")),
        Err(IdentityError::BadSignature)
    );
}

#[test]
fn tampered_truncated_and_garbage_tokens_are_refused() {
    let s = setup();
    let token = sign(&claims(), "k1", "issuer-key.pem");
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["repository"] = json!("acme/prod-secrets");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(verify(&s, &tampered), Err(IdentityError::BadSignature));
    assert!(matches!(
        verify(&s, &token[..token.len() / 2]),
        Err(IdentityError::Malformed(_))
    ));
    let no_signature = format!("{}.{}.", parts[0], parts[1]);
    assert!(matches!(
        verify(&s, &no_signature),
        Err(IdentityError::Malformed(_))
    ));
    for garbage in [
        "",
        "hello",
        "a.b.c",
        "....",
        "\u{0}\u{1}",
        "eyJ.eyJ.eyJ",
        &"x".repeat(100_000),
    ] {
        assert!(
            matches!(verify(&s, garbage), Err(IdentityError::Malformed(_))),
            "{garbage:?}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_tokens_never_panic(token in "[A-Za-z0-9_.=-]{0,300}") {
        let s = setup();
        proptest::prop_assert!(verify(&s, &token).is_err());
    }
}
