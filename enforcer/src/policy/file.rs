//! The YAML shape of a policy file, exactly as written by people. Every field that validation may
//! complain about is `Spanned` so the complaint can name its line and column.

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
    #[serde(default)]
    pub egress: Vec<EgressSpec>,
    #[serde(default)]
    pub dns: Option<DnsSpec>,
    #[serde(default)]
    pub identity_providers: Vec<IdentityProviderSpec>,
    #[serde(default)]
    pub approvals: Option<Spanned<ApprovalsSpec>>,
    #[serde(default)]
    pub grants: Option<Spanned<GrantsSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSpec {
    /// How long a request waits for an operator before it is denied; default 10m.
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// URL every new approval request is POSTed to (JSON, with a Slack-compatible `text`).
    #[serde(default)]
    pub webhook: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSpec {
    /// TTL of a grant requested without --ttl; default 15m.
    #[serde(default)]
    pub default_ttl: Option<Spanned<String>>,
    /// No grant lives longer, whatever is asked; default 8h.
    #[serde(default)]
    pub max_ttl: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderSpec {
    pub name: Spanned<String>,
    /// Exact `iss` of the tokens; also where discovery starts.
    pub issuer: Spanned<String>,
    /// Required `aud`.
    pub audience: Spanned<String>,
    /// A JWKS file (air-gapped hosts) instead of the issuer's discovery document.
    #[serde(default)]
    pub jwks_file: Option<Spanned<String>>,
    /// A JWKS URL instead of the issuer's discovery document.
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    /// Signature algorithms accepted; default RS256, ES256, EdDSA.
    #[serde(default)]
    pub algorithms: Vec<Spanned<String>>,
    /// Clock skew allowed on exp/nbf, seconds; default 60, at most 300.
    #[serde(default)]
    pub leeway: Option<Spanned<u64>>,
    /// Claims that become attributes of the workload principal.
    #[serde(default)]
    pub claims: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    pub name: Spanned<String>,
    pub protocol: Spanned<String>,
    /// `IP:port` or `[IPv6]:port` the workload connects to.
    pub addresses: Spanned<Vec<Spanned<String>>>,
    /// Host names the resource answers to (TLS SNI, HTTP Host), for the protocol handlers.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// Where enforcer connects; defaults to the address the workload asked for.
    #[serde(default)]
    pub upstream: Option<Spanned<String>>,
    #[serde(default)]
    pub credential: Option<Spanned<CredentialSpec>>,
    /// What never reaches the workload from this resource's answers.
    #[serde(default)]
    pub masking: Option<Spanned<MaskingSpec>>,
    /// TLS toward the real server, always verified.
    #[serde(default)]
    pub upstream_tls: Option<Spanned<UpstreamTlsSpec>>,
    /// Whether a client asking for TLS gets it (with a certificate from enforcer's CA);
    /// `false` declines and the client goes on in plaintext on loopback. Default true.
    #[serde(default)]
    pub client_tls: Option<bool>,
    /// `IP:port` where enforcer also listens for clients outside any enforced cgroup: they
    /// present a grant token (password, bearer token) and get exactly what it grants.
    #[serde(default)]
    pub gateway: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSpec {
    /// PEM file of the CA(s) to trust; the system's roots when absent.
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    /// The name the server's certificate must carry; its address when absent.
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingSpec {
    /// Column name patterns masked whole (`*` matches any run of characters).
    #[serde(default)]
    pub columns: Vec<Spanned<String>>,
    /// Content detectors run over every text value; default all of them.
    #[serde(default)]
    pub detectors: Option<Vec<Spanned<String>>>,
    /// redact | partial | hash; default redact.
    #[serde(default)]
    pub strategy: Option<Spanned<String>>,
    /// Kubernetes: ConfigMap data keys and container environment variable names whose values
    /// are masked (`*` matches any run of characters).
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// Name of an environment variable of the enforcer process.
    #[serde(default)]
    pub env: Option<Spanned<String>>,
    /// Path of a file readable by enforcer (not by the workload).
    #[serde(default)]
    pub file: Option<Spanned<String>>,
    /// User name presented upstream with the secret, where the protocol has one.
    #[serde(default)]
    pub username: Option<String>,
    /// PEM certificate (chain) enforcer presents to a Kubernetes API server, with
    /// `client_key`, instead of a bearer token.
    #[serde(default)]
    pub client_certificate: Option<Spanned<String>>,
    /// PEM private key of `client_certificate`.
    #[serde(default)]
    pub client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressSpec {
    pub name: Spanned<String>,
    /// CIDRs (or single addresses) the rule allows.
    pub to: Spanned<Vec<Spanned<String>>>,
    /// Ports or inclusive ranges such as `8000-8100`; empty or absent means every port.
    #[serde(default)]
    pub ports: Vec<Spanned<PortSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PortSpec {
    One(u64),
    Range(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// `IP:port` of the resolver UDP/53 is sent to. Without a `dns` section DNS is denied.
    pub resolver: Spanned<String>,
}
