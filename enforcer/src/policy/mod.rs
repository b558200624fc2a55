//! Policy: the reviewed-like-code description of what a workload may reach.
//!
//! A policy is a directory of `*.yaml` files. Loading parses every file, validates every entry
//! and reports *all* problems at once as `file:line:col: message`, so a reviewer fixes a policy in
//! one round. The validated [`Policy`] is what the proxy routes with ([`route`]).

pub mod cedar;
mod file;
mod route;

pub use cedar::{Authz, Decision, Principal};
pub use route::{Route, RouteTarget};

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};

/// One complaint about a policy, pointing at where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read policy file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy directory {0} holds no *.yaml file")]
    Empty(PathBuf),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

/// The protocol a resource speaks; decides which handler the proxy gives its connections to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    Mysql,
    Kubernetes,
    Ssh,
    Http,
}

impl Protocol {
    const NAMES: &'static [&'static str] = &["postgres", "mysql", "kubernetes", "ssh", "http"];

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "postgres" => Protocol::Postgres,
            "mysql" => Protocol::Mysql,
            "kubernetes" => Protocol::Kubernetes,
            "ssh" => Protocol::Ssh,
            "http" => Protocol::Http,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Kubernetes => "kubernetes",
            Protocol::Ssh => "ssh",
            Protocol::Http => "http",
        }
    }

    /// Protocols where enforcer authenticates upstream and so must know the real secret.
    fn needs_credential(self) -> bool {
        !matches!(self, Protocol::Http)
    }
}

/// Where the real secret for a resource comes from. Read by enforcer only, at use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Env(String),
    File(PathBuf),
    /// A client certificate (PEM chain) and its key (Kubernetes API servers).
    ClientCertificate {
        certificate: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub source: CredentialSource,
    pub username: Option<String>,
}

impl Credential {
    /// The secret, read now from its source (never logged); `Err` says what is missing
    /// without the value.
    pub fn read_secret(&self, resource: &str) -> Result<String, String> {
        match &self.source {
            CredentialSource::Env(name) => std::env::var(name).map_err(|_| {
                format!(
                    "environment variable {name} (credential of {resource}) is not set for enforcer"
                )
            }),
            CredentialSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| {
                    format!(
                        "cannot read {} (credential of {resource}): {}",
                        path.display(),
                        e.kind()
                    )
                }),
            CredentialSource::ClientCertificate { .. } => Err(format!(
                "the credential of {resource} is a client certificate, not a secret"
            )),
        }
    }
}

/// TLS toward a resource's real server: verified against `ca` (or the system's roots), for
/// `server_name` (or the upstream address).
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub config: Arc<rustls::ClientConfig>,
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca && self.server_name == other.server_name
    }
}

impl Eq for UpstreamTls {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub protocol: Protocol,
    pub addresses: Vec<SocketAddr>,
    pub hosts: Vec<String>,
    pub upstream: Option<SocketAddr>,
    pub credential: Option<Credential>,
    /// Masking applied to what the resource answers; the default profile (every detector,
    /// redact) when the policy says nothing.
    pub masking: crate::mask::Profile,
    pub upstream_tls: Option<UpstreamTls>,
    /// Whether a workload asking for TLS gets it (from enforcer's CA) or is declined.
    pub client_tls: bool,
    /// Where enforcer listens for clients that present a grant token instead of being
    /// redirected from an enforced cgroup.
    pub gateway: Option<SocketAddr>,
}

impl Resource {
    /// The server enforcer connects to for a client that dialled `dialled`: the configured
    /// upstream, else the address dialled, except that a gateway stands for the resource's
    /// first address.
    pub fn upstream_for(&self, dialled: SocketAddr) -> SocketAddr {
        match self.upstream {
            Some(upstream) => upstream,
            None if self.gateway == Some(canonical_addr(dialled)) => {
                self.addresses.first().copied().unwrap_or(dialled)
            }
            None => dialled,
        }
    }

    /// Whether a connection to `dialled` came through the resource's gateway.
    pub fn is_gateway(&self, dialled: SocketAddr) -> bool {
        self.gateway == Some(canonical_addr(dialled))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    pub name: String,
    pub to: Vec<IpNet>,
    /// Inclusive ranges; empty means every port.
    pub ports: Vec<(u16, u16)>,
}

impl EgressRule {
    pub fn matches(&self, dst: &SocketAddr) -> bool {
        let ip = canonical_ip(dst.ip());
        self.to.iter().any(|net| net.contains(&ip))
            && (self.ports.is_empty()
                || self
                    .ports
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&dst.port())))
    }
}

/// Where an identity provider's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
    /// `<issuer>/.well-known/openid-configuration` → `jwks_uri`.
    Discovery(String),
}

/// An OIDC issuer whose tokens identify workloads (a CI system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProvider {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub leeway_secs: u64,
    pub claims: Vec<String>,
}

/// A validated policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub resources: Vec<Resource>,
    pub egress: Vec<EgressRule>,
    /// Resolver UDP/53 is sent to; `None` denies DNS.
    pub dns_resolver: Option<SocketAddr>,
    pub identity_providers: Vec<IdentityProvider>,
    /// The Cedar policies (`*.cedar`): what workloads may ask for and do.
    pub authz: Authz,
    pub approvals: ApprovalSettings,
    pub grants: GrantLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSettings {
    /// A pending request not decided within this is denied.
    pub timeout: Duration,
    pub webhook: Option<String>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            timeout: Duration::from_secs(600),
            webhook: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantLimits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for GrantLimits {
    fn default() -> Self {
        GrantLimits {
            default_ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(8 * 3600),
        }
    }
}

/// Access levels a grant may name, per protocol.
impl Protocol {
    pub fn access_levels(self) -> &'static [&'static str] {
        match self {
            Protocol::Postgres | Protocol::Mysql => &["read", "write", "ddl", "admin"],
            Protocol::Kubernetes => &["read", "write", "exec", "admin"],
            Protocol::Ssh => &["shell", "exec", "forward"],
            Protocol::Http => &["read", "write"],
        }
    }
}

/// IPv4 addresses in v4-mapped IPv6 form compare as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

impl Policy {
    /// Loads and validates every `*.yaml`/`*.yml` file in `dir` (sorted, so errors come in a
    /// stable order).
    pub fn load_dir(dir: &Path) -> Result<Policy, PolicyError> {
        let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| PolicyError::ReadDir {
                path: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            let wanted = path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "cedar");
            if wanted && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        if !files.iter().any(|f| !is_cedar(f)) {
            return Err(PolicyError::Empty(dir.to_owned()));
        }
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::ReadFile {
                path: path.clone(),
                source,
            })?;
            sources.push((path, text));
        }
        Self::from_sources(&sources)
    }

    /// Validates policy text already in memory; `(file name, text)` pairs.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Policy, PolicyError> {
        let mut v = Validator::default();
        let mut cedar = cedar::CedarLoader::default();
        for (path, text) in sources {
            if is_cedar(path) {
                cedar.file(path, text);
            } else {
                v.file(path, text);
            }
        }
        // Cedar is checked against the resources, so after all YAML.
        let (authz, mut diagnostics) = cedar.finish(&v.policy.resources);
        v.diagnostics.append(&mut diagnostics);
        if let Some(authz) = authz {
            v.policy.authz = authz;
        }
        v.finish()
    }
}

fn is_cedar(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "cedar")
}

#[derive(Default)]
struct Validator {
    diagnostics: Vec<Diagnostic>,
    policy: Policy,
    /// name → where it was first defined, across all files.
    names: HashMap<String, (PathBuf, Location)>,
    dns_seen: Option<(PathBuf, Location)>,
    /// Sections that may appear once across all files → where first seen.
    sections: HashMap<String, (PathBuf, Location)>,
    current: PathBuf,
}

impl Validator {
    fn error(&mut self, at: Location, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            file: self.current.clone(),
            line: at.line().max(1),
            column: at.column().max(1),
            message: message.into(),
        });
    }

    fn file(&mut self, path: &Path, text: &str) {
        self.current = path.to_owned();
        if text.trim().is_empty() {
            return;
        }
        let parsed: file::PolicyFile = match serde_saphyr::from_str(text) {
            Ok(parsed) => parsed,
            Err(err) => {
                let at = err.location().unwrap_or(Location::UNKNOWN);
                let message = plain_message(&err);
                self.error(at, message);
                return;
            }
        };
        for resource in parsed.resources {
            self.resource(resource);
        }
        for rule in parsed.egress {
            self.egress(rule);
        }
        if let Some(dns) = parsed.dns {
            self.dns(dns);
        }
        for provider in parsed.identity_providers {
            self.identity_provider(provider);
        }
        if let Some(approvals) = parsed.approvals {
            self.approvals(approvals);
        }
        if let Some(grants) = parsed.grants {
            self.grants(grants);
        }
    }

    fn once(&mut self, section: &str, at: Location) -> bool {
        if let Some((file, first)) = self.sections.get(section) {
            let message = format!(
                "{section} is already configured at {}:{}:{}",
                file.display(),
                first.line(),
                first.column()
            );
            self.error(at, message);
            return false;
        }
        self.sections
            .insert(section.to_owned(), (self.current.clone(), at));
        true
    }

    fn duration(&mut self, text: &Spanned<String>, what: &str) -> Option<Duration> {
        // Bounded so that times in milliseconds never overflow anywhere downstream.
        const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);
        match humantime::parse_duration(text.value.trim()) {
            Ok(d) if d > LONGEST => {
                self.error(
                    text.referenced,
                    format!("{what} {:?} is longer than the 30 days allowed", text.value),
                );
                None
            }
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                self.error(
                    text.referenced,
                    format!(
                        "{what} {:?} is not a duration like \"90s\", \"15m\" or \"2h\"",
                        text.value
                    ),
                );
                None
            }
        }
    }

    fn approvals(&mut self, spec: Spanned<file::ApprovalsSpec>) {
        if !self.once("approvals", spec.referenced) {
            return;
        }
        let spec = spec.value;
        if let Some(t) = &spec.timeout
            && let Some(d) = self.duration(t, "approval timeout")
        {
            self.policy.approvals.timeout = d;
        }
        if let Some(url) = &spec.webhook {
            let text = url.value.trim();
            if let Err(message) = check_url(text, "webhook") {
                self.error(url.referenced, message);
            } else {
                self.policy.approvals.webhook = Some(text.to_owned());
            }
        }
    }

    fn grants(&mut self, spec: Spanned<file::GrantsSpec>) {
        if !self.once("grants", spec.referenced) {
            return;
        }
        let at = spec.referenced;
        let spec = spec.value;
        if let Some(t) = &spec.default_ttl
            && let Some(d) = self.duration(t, "default_ttl")
        {
            self.policy.grants.default_ttl = d;
        }
        if let Some(t) = &spec.max_ttl
            && let Some(d) = self.duration(t, "max_ttl")
        {
            self.policy.grants.max_ttl = d;
        }
        if self.policy.grants.default_ttl > self.policy.grants.max_ttl {
            self.error(at, "grants: default_ttl is longer than max_ttl");
        }
    }

    fn identity_provider(&mut self, spec: file::IdentityProviderSpec) {
        use jsonwebtoken::Algorithm;
        let name_ok = self.unique_name(&spec.name, "identity provider");
        let issuer = spec.issuer.value.trim().trim_end_matches('/').to_owned();
        if let Err(message) = check_url(&issuer, "issuer") {
            self.error(spec.issuer.referenced, message);
        }
        if self
            .policy
            .identity_providers
            .iter()
            .any(|p| p.issuer == issuer)
        {
            self.error(
                spec.issuer.referenced,
                format!("issuer {issuer:?} is already an identity provider"),
            );
        }
        if spec.audience.value.trim().is_empty() {
            self.error(spec.audience.referenced, "audience must not be empty");
        }
        let jwks = match (&spec.jwks_file, &spec.jwks_url) {
            (Some(_), Some(url)) => {
                self.error(url.referenced, "give `jwks_file` or `jwks_url`, not both");
                JwksSource::Discovery(issuer.clone())
            }
            (Some(file), None) => JwksSource::File(PathBuf::from(file.value.trim())),
            (None, Some(url)) => {
                if let Err(message) = check_url(url.value.trim(), "jwks_url") {
                    self.error(url.referenced, message);
                }
                JwksSource::Url(url.value.trim().to_owned())
            }
            (None, None) => JwksSource::Discovery(issuer.clone()),
        };
        let mut algorithms = Vec::new();
        for alg in &spec.algorithms {
            let text = alg.value.trim();
            match text.parse::<Algorithm>() {
                Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => self.error(
                    alg.referenced,
                    format!("{text} is refused: HMAC would let a public key verify as a shared secret"),
                ),
                Ok(a) => algorithms.push(a),
                Err(_) => self.error(
                    alg.referenced,
                    format!("unknown algorithm {text:?}; expected RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
                ),
            }
        }
        if spec.algorithms.is_empty() {
            algorithms = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
        }
        let leeway_secs = match &spec.leeway {
            Some(l) if l.value > 300 => {
                self.error(
                    l.referenced,
                    format!("leeway {}s is more than the 300s allowed", l.value),
                );
                300
            }
            Some(l) => l.value,
            None => 60,
        };
        if name_ok {
            self.policy.identity_providers.push(IdentityProvider {
                name: spec.name.value.trim().to_owned(),
                issuer,
                audience: spec.audience.value.trim().to_owned(),
                jwks,
                algorithms,
                leeway_secs,
                claims: spec.claims,
            });
        }
    }

    fn unique_name(&mut self, name: &Spanned<String>, what: &str) -> bool {
        let value = name.value.trim();
        if value.is_empty() {
            self.error(name.referenced, format!("{what} name must not be empty"));
            return false;
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            self.error(
                name.referenced,
                format!("{what} name {value:?} may only hold letters, digits, '-', '_' and '.'"),
            );
            return false;
        }
        if let Some((file, at)) = self.names.get(value) {
            let message = format!(
                "duplicate name {value:?}: already defined at {}:{}:{}",
                file.display(),
                at.line(),
                at.column()
            );
            self.error(name.referenced, message);
            return false;
        }
        self.names
            .insert(value.to_owned(), (self.current.clone(), name.referenced));
        true
    }

    fn socket_addr(&mut self, text: &Spanned<String>, what: &str) -> Option<SocketAddr> {
        match text.value.trim().parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.error(
                    text.referenced,
                    format!("{what} {:?} has port 0", text.value),
                );
                None
            }
            Ok(addr) => Some(canonical_addr(addr)),
            Err(_) => {
                self.error(
                    text.referenced,
                    format!(
                        "{what} {:?} is not IP:port (use [IPv6]:port for IPv6; host names go in `hosts`)",
                        text.value
                    ),
                );
                None
            }
        }
    }

    fn resource(&mut self, spec: file::ResourceSpec) {
        let name_ok = self.unique_name(&spec.name, "resource");
        let protocol = Protocol::parse(spec.protocol.value.trim());
        if protocol.is_none() {
            self.error(
                spec.protocol.referenced,
                format!(
                    "unknown protocol {:?}; expected one of: {}",
                    spec.protocol.value,
                    Protocol::NAMES.join(", ")
                ),
            );
        }
        if spec.addresses.value.is_empty() {
            self.error(
                spec.addresses.referenced,
                "resource needs at least one address",
            );
        }
        let addresses: Vec<_> = spec
            .addresses
            .value
            .iter()
            .filter_map(|a| self.socket_addr(a, "address"))
            .collect();
        let upstream = spec
            .upstream
            .as_ref()
            .and_then(|u| self.socket_addr(u, "upstream"));
        let credential = match (&spec.credential, protocol) {
            (Some(cred), _) => self.credential(cred, protocol),
            (None, Some(p)) if p.needs_credential() => {
                self.error(
                    spec.name.referenced,
                    format!(
                        "resource {:?} ({}) has no credential source: add `credential: {{env: VAR}}` or `credential: {{file: PATH}}`",
                        spec.name.value,
                        p.as_str()
                    ),
                );
                None
            }
            (None, _) => None,
        };
        for host in &spec.hosts {
            if host.value.trim().is_empty() || host.value.contains(char::is_whitespace) {
                self.error(
                    host.referenced,
                    format!("host name {:?} is not valid", host.value),
                );
            }
        }
        let masking = spec
            .masking
            .as_ref()
            .map(|m| self.masking(m))
            .unwrap_or_default();
        let upstream_tls = spec
            .upstream_tls
            .as_ref()
            .and_then(|t| self.upstream_tls(t));
        if protocol == Some(Protocol::Kubernetes) && spec.upstream_tls.is_none() {
            self.error(
                spec.name.referenced,
                format!(
                    "resource {:?} (kubernetes) needs `upstream_tls: {{ca: FILE}}`: enforcer talks to API servers over verified TLS",
                    spec.name.value
                ),
            );
        }
        let gateway = spec.gateway.as_ref().and_then(|g| {
            let addr = self.socket_addr(g, "gateway")?;
            if protocol.is_some_and(|p| !matches!(p, Protocol::Postgres | Protocol::Kubernetes)) {
                self.error(
                    g.referenced,
                    format!(
                        "resource {:?}: a gateway is only served for postgres and kubernetes resources so far",
                        spec.name.value
                    ),
                );
                return None;
            }
            if addr.port() == 0 || addresses.contains(&addr) || addr.ip().is_unspecified() {
                self.error(
                    g.referenced,
                    format!(
                        "resource {:?}: the gateway {addr} must be a specific address with a port, not one of the resource's own addresses",
                        spec.name.value
                    ),
                );
                return None;
            }
            if let Some(other) = self
                .policy
                .resources
                .iter()
                .find(|r| r.addresses.contains(&addr) || r.gateway == Some(addr))
            {
                self.error(
                    g.referenced,
                    format!(
                        "resource {:?}: the gateway {addr} is already used by resource {:?}",
                        spec.name.value, other.name
                    ),
                );
                return None;
            }
            if upstream.is_none() && addresses.is_empty() {
                self.error(
                    g.referenced,
                    format!(
                        "resource {:?}: a gateway needs an `upstream` or an address to connect to",
                        spec.name.value
                    ),
                );
                return None;
            }
            Some(addr)
        });
        if let (true, Some(protocol)) = (name_ok, protocol) {
            self.policy.resources.push(Resource {
                masking,
                upstream_tls,
                client_tls: spec.client_tls.unwrap_or(true),
                gateway,
                name: spec.name.value.trim().to_owned(),
                protocol,
                addresses,
                hosts: spec.hosts.into_iter().map(|h| h.value).collect(),
                upstream,
                credential,
            });
        }
    }

    fn upstream_tls(&mut self, spec: &Spanned<file::UpstreamTlsSpec>) -> Option<UpstreamTls> {
        let ca = spec
            .value
            .ca
            .as_ref()
            .map(|c| (c.referenced, PathBuf::from(c.value.trim())));
        let server_name = spec
            .value
            .server_name
            .as_ref()
            .map(|n| (n.referenced, n.value.trim().to_owned()));
        if let Some((at, name)) = &server_name
            && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            self.error(
                *at,
                format!("server_name {name:?} is not a DNS name or IP address"),
            );
            return None;
        }
        match crate::tls::upstream_config(ca.as_ref().map(|(_, p)| p.as_path()), &[], None) {
            Ok(config) => Some(UpstreamTls {
                ca: ca.map(|(_, p)| p),
                server_name: server_name.map(|(_, n)| n),
                config: Arc::new(config),
            }),
            Err(e) => {
                self.error(ca.map_or(spec.referenced, |(at, _)| at), e.to_string());
                None
            }
        }
    }

    fn masking(&mut self, spec: &Spanned<file::MaskingSpec>) -> crate::mask::Profile {
        use crate::mask::{Detector, Detectors, Profile, Strategy};
        let mut profile = Profile::default();
        for key in &spec.value.keys {
            let text = key.value.trim().to_ascii_lowercase();
            if text.is_empty() {
                self.error(key.referenced, "key pattern must not be empty");
            } else {
                profile.keys.push(text);
            }
        }
        for column in &spec.value.columns {
            let text = column.value.trim().to_ascii_lowercase();
            if text.is_empty() {
                self.error(column.referenced, "column pattern must not be empty");
            } else {
                profile.columns.push(text);
            }
        }
        if let Some(names) = &spec.value.detectors {
            profile.detectors = Detectors::default();
            for name in names {
                match Detector::parse(name.value.trim()) {
                    Some(d) => profile.detectors.insert(d),
                    None => self.error(
                        name.referenced,
                        format!(
                            "unknown detector {:?}; expected one of: {}",
                            name.value,
                            Detector::ALL.map(Detector::name).join(", ")
                        ),
                    ),
                }
            }
        }
        if let Some(strategy) = &spec.value.strategy {
            match Strategy::parse(strategy.value.trim()) {
                Some(s) => profile.strategy = s,
                None => self.error(
                    strategy.referenced,
                    format!(
                        "unknown masking strategy {:?}; expected redact, partial or hash",
                        strategy.value
                    ),
                ),
            }
        }
        profile
    }

    fn credential(
        &mut self,
        cred: &Spanned<file::CredentialSpec>,
        protocol: Option<Protocol>,
    ) -> Option<Credential> {
        let given = |v: &Option<Spanned<String>>| {
            v.as_ref()
                .map(|s| s.value.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let spec = &cred.value;
        let source = match (
            given(&spec.env),
            given(&spec.file),
            given(&spec.client_certificate),
            given(&spec.client_key),
        ) {
            (Some(env), None, None, None) => CredentialSource::Env(env),
            (None, Some(file), None, None) => CredentialSource::File(PathBuf::from(file)),
            (None, None, Some(certificate), Some(key)) => {
                if protocol.is_some_and(|p| p != Protocol::Kubernetes) {
                    self.error(
                        cred.referenced,
                        "client certificates are presented to Kubernetes API servers only; use `env` or `file` for this protocol",
                    );
                    return None;
                }
                CredentialSource::ClientCertificate {
                    certificate: PathBuf::from(certificate),
                    key: PathBuf::from(key),
                }
            }
            (None, None, Some(_), None) | (None, None, None, Some(_)) => {
                self.error(
                    cred.referenced,
                    "a client certificate needs both `client_certificate: PATH` and `client_key: PATH`",
                );
                return None;
            }
            (None, None, None, None) => {
                self.error(
                    cred.referenced,
                    "credential source is missing: give `env: VAR`, `file: PATH`, or `client_certificate` with `client_key`",
                );
                return None;
            }
            _ => {
                self.error(
                    cred.referenced,
                    "credential takes exactly one source: `env`, `file`, or `client_certificate` with `client_key`",
                );
                return None;
            }
        };
        Some(Credential {
            source,
            username: cred.value.username.clone(),
        })
    }

    fn egress(&mut self, spec: file::EgressSpec) {
        let name_ok = self.unique_name(&spec.name, "egress rule");
        if spec.to.value.is_empty() {
            self.error(
                spec.to.referenced,
                "egress rule needs at least one CIDR in `to`",
            );
        }
        let mut to = Vec::new();
        for cidr in &spec.to.value {
            let text = cidr.value.trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map(|net| match net {
                    IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                        Some(v4) if v6.prefix_len() >= 96 => {
                            IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                                .unwrap_or(IpNet::V6(v6))
                        }
                        _ => IpNet::V6(v6),
                    },
                    v4 => v4,
                });
            match parsed {
                Ok(net) if net.trunc() != net => self.error(
                    cidr.referenced,
                    format!(
                        "CIDR {text:?} has host bits set; did you mean {}?",
                        net.trunc()
                    ),
                ),
                Ok(net) => to.push(net),
                Err(_) => self.error(
                    cidr.referenced,
                    format!("{text:?} is not a CIDR (like 10.0.0.0/8 or ::1/128) or an IP address"),
                ),
            }
        }
        let mut ports = Vec::new();
        for port in &spec.ports {
            match parse_ports(&port.value) {
                Ok(range) => ports.push(range),
                Err(message) => self.error(port.referenced, message),
            }
        }
        if name_ok {
            self.policy.egress.push(EgressRule {
                name: spec.name.value.trim().to_owned(),
                to,
                ports,
            });
        }
    }

    fn dns(&mut self, spec: file::DnsSpec) {
        if let Some((file, at)) = &self.dns_seen {
            let message = format!(
                "dns is already configured at {}:{}:{}",
                file.display(),
                at.line(),
                at.column()
            );
            self.error(spec.resolver.referenced, message);
            return;
        }
        self.dns_seen = Some((self.current.clone(), spec.resolver.referenced));
        self.policy.dns_resolver = self.socket_addr(&spec.resolver, "dns resolver");
    }

    fn finish(self) -> Result<Policy, PolicyError> {
        if self.diagnostics.is_empty() {
            Ok(self.policy)
        } else {
            Err(PolicyError::Invalid(self.diagnostics))
        }
    }
}

/// https, or http to a loopback host (local test issuers).
fn check_url(url: &str, what: &str) -> Result<(), String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback && !rest.starts_with("[::1]") {
            return Err(format!(
                "{what} {url:?} must use https (http only to a loopback host)"
            ));
        }
        rest
    } else {
        return Err(format!("{what} {url:?} is not an https:// URL"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{what} {url:?} has no host"));
    }
    Ok(())
}

fn parse_ports(spec: &file::PortSpec) -> Result<(u16, u16), String> {
    let one = |n: u64| -> Result<u16, String> {
        u16::try_from(n)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {n} is out of range 1-65535"))
    };
    match spec {
        file::PortSpec::One(n) => one(*n).map(|p| (p, p)),
        file::PortSpec::Range(text) => {
            let parse = |s: &str| -> Result<u16, String> {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{text:?} is not a port or a range like 8000-8100"))
                    .and_then(one)
            };
            let (lo, hi) = match text.split_once('-') {
                Some((lo, hi)) => (parse(lo)?, parse(hi)?),
                None => {
                    let p = parse(text)?;
                    (p, p)
                }
            };
            if lo > hi {
                return Err(format!("port range {text:?} is reversed"));
            }
            Ok((lo, hi))
        }
    }
}

/// serde-saphyr's message without its own position suffix or source snippet: the diagnostic
/// carries the position in `file:line:col` form.
fn plain_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}

#[cfg(test)]
mod tests;
