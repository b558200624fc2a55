//! TLS on both sides of the proxy.
//!
//! Toward the workload, enforcer stands where the real server was, so it presents a
//! certificate for the address (or SNI name) the workload dialled, issued by enforcer's own
//! certificate authority (`<state>/ca.pem`; its key `<state>/ca-key.pem` is 0600). A client
//! that verifies certificates is given that CA to trust. Toward the real server, enforcer is
//! an ordinary verifying client ([`upstream_config`]).

mod stream;

pub use stream::MaybeTls;

use std::{
    collections::HashMap,
    io::Write,
    net::IpAddr,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate authority {path}: {message}")]
    Authority { path: PathBuf, message: String },
    #[error("CA key {path} is readable by others (mode {mode:o}); it must be 0600")]
    KeyExposed { path: PathBuf, mode: u32 },
    #[error("cannot issue a certificate for {name}: {message}")]
    Issue { name: String, message: String },
    #[error("trusted CA file {path}: {message}")]
    TrustFile { path: PathBuf, message: String },
    #[error("client certificate {path}: {message}")]
    Identity { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// How long a certificate enforcer issues to itself stays valid, and when it is renewed.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_RENEW: Duration = Duration::from_secs(24 * 3600);
/// Distinct names a CA keeps certificates for; the workload chooses SNI names, so bounded.
const MAX_LEAVES: usize = 1024;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

/// enforcer's certificate authority, and the server configurations it has issued.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_path: PathBuf,
    leaves: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("ca", &self.ca_path)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "enforcer");
    dn.push(DnType::CommonName, "enforcer workload CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Authority {
    /// Loads the CA from the state directory, creating it on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<Authority, TlsError> {
        let key_path = state_dir.join(CA_KEY);
        let ca_path = state_dir.join(CA_CERT);
        let err = |path: &Path, message: String| TlsError::Authority {
            path: path.to_owned(),
            message,
        };
        let (key, ca_pem) = match std::fs::read_to_string(&key_path) {
            Ok(key_pem) => {
                let meta =
                    std::fs::metadata(&key_path).map_err(|e| err(&key_path, e.to_string()))?;
                let mode = meta.mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(TlsError::KeyExposed {
                        path: key_path,
                        mode,
                    });
                }
                // SAFETY: geteuid has no preconditions.
                let me = unsafe { libc::geteuid() };
                if meta.uid() != me {
                    // Another user could have planted it.
                    return Err(err(
                        &key_path,
                        format!("owned by uid {}, not by enforcer (uid {me})", meta.uid()),
                    ));
                }
                let key = KeyPair::from_pem(&key_pem).map_err(|e| err(&key_path, e.to_string()))?;
                let ca_pem =
                    std::fs::read_to_string(&ca_path).map_err(|e| err(&ca_path, e.to_string()))?;
                (key, ca_pem)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(|e| err(&key_path, e.to_string()))?;
                let mut params = ca_params();
                params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
                params.not_after = params.not_before + time::Duration::days(3650);
                let cert = params
                    .self_signed(&key)
                    .map_err(|e| err(&ca_path, e.to_string()))?;
                write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)
                    .map_err(|e| err(&key_path, e.to_string()))?;
                write_file(&ca_path, cert.pem().as_bytes(), 0o644)
                    .map_err(|e| err(&ca_path, e.to_string()))?;
                (key, cert.pem())
            }
            Err(e) => return Err(err(&key_path, e.to_string())),
        };
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| err(&ca_path, e.to_string()))?;
        // The issuer is read from `ca.pem` itself (its name and key identifier), so a CA the
        // operator placed there with its key works as well as the one enforcer made: what it
        // signs chains to `ca.pem`. A key that is not the certificate's would sign leaves no
        // client could verify: refused here instead.
        let spki = x509_parser::parse_x509_certificate(ca_der.as_ref())
            .map_err(|e| err(&ca_path, format!("not an X.509 certificate: {e}")))?
            .1
            .public_key()
            .raw
            .to_vec();
        if spki != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(err(
                &key_path,
                format!("is not the key of the certificate in {}", ca_path.display()),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der, key)
            .map_err(|e| err(&ca_path, format!("cannot issue with this CA: {e}")))?;
        Ok(Authority {
            issuer,
            ca_der,
            ca_path,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// Where the CA certificate a verifying client should trust is.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// A server configuration presenting a certificate for `sni` if the client sent one,
    /// else for the address it connected to.
    pub fn server_config(
        &self,
        sni: Option<&str>,
        addr: IpAddr,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let name = sni.map_or_else(|| addr.to_string(), str::to_ascii_lowercase);
        let protocols: Vec<_> = alpn.iter().map(|p| String::from_utf8_lossy(p)).collect();
        let key = format!("{name}|{}", protocols.join(","));
        {
            let leaves = match self.leaves.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            if let Some((issued, config)) = leaves.get(&key)
                && issued.elapsed() < LEAF_RENEW
            {
                return Ok(Arc::clone(config));
            }
        }
        let config = Arc::new(self.issue(&name, alpn)?);
        let mut leaves = match self.leaves.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        leaves.insert(key, (Instant::now(), Arc::clone(&config)));
        Ok(config)
    }

    fn issue(&self, name: &str, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let fail = |message: String| TlsError::Issue {
            name: name.to_owned(),
            message,
        };
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                name.try_into()
                    .map_err(|e: rcgen::Error| fail(format!("not a DNS name: {e}")))?,
            ),
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, name.to_owned());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        params.not_after = params.not_before + LEAF_VALIDITY;
        let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail(e.to_string()))?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, private)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A client certificate and its key, presented to a server that authenticates clients by
/// certificate (a Kubernetes API server's `--client-ca-file`).
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads the certificate chain and key, PEM, from the files the policy names (at each
    /// use, so a rotated certificate is picked up).
    pub fn read(certificate: &Path, key: &Path) -> Result<Identity, TlsError> {
        let fail = |path: &Path, message: String| TlsError::Identity {
            path: path.to_owned(),
            message,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
            .map_err(|e| fail(certificate, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| fail(certificate, e.to_string()))?;
        if chain.is_empty() {
            return Err(fail(certificate, "no certificate in it".into()));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(key, e.to_string()))?;
        Ok(Identity { chain, key })
    }
}

/// A verifying client configuration toward a real server: trusting the CA file the policy
/// names, or the system's roots; presenting `identity` when the server authenticates clients
/// by certificate.
pub fn upstream_config(
    ca_file: Option<&Path>,
    alpn: &[&[u8]],
    identity: Option<Identity>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let fail = |message: String| TlsError::TrustFile {
                path: path.to_owned(),
                message,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| fail(e.to_string()))?;
            if certs.is_empty() {
                return Err(fail("no certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system root rustls cannot use is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(Identity { chain, key }) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The name a server's certificate must carry: the configured one, else its address.
pub fn server_name(
    configured: Option<&str>,
    addr: IpAddr,
) -> Result<ServerName<'static>, TlsError> {
    match configured {
        Some(name) => ServerName::try_from(name.to_owned()).map_err(|e| {
            TlsError::Config(rustls::Error::General(format!("server name {name:?}: {e}")))
        }),
        None => Ok(ServerName::IpAddress(addr.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_chain_to_the_stored_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Authority::load_or_create(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .expect("key")
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Reloaded: the same CA, and what it issues verifies against ca.pem.
        let again = Authority::load_or_create(dir.path()).expect("load");
        assert_eq!(first.ca_der, again.ca_der);
        handshake(&again, &dir.path().join(CA_CERT));
    }

    /// A TLS handshake, in memory, between a leaf `authority` issues and a client trusting
    /// only `ca`.
    fn handshake(authority: &Authority, ca: &Path) {
        let server = authority
            .server_config(Some("db.internal"), "127.0.0.1".parse().expect("ip"), &[])
            .expect("issue");
        let client = upstream_config(Some(ca), &[], None).expect("client");
        let mut client = rustls::ClientConnection::new(
            Arc::new(client),
            ServerName::try_from("db.internal").expect("name"),
        )
        .expect("client conn");
        let mut server = rustls::ServerConnection::new(server).expect("server conn");
        // Drive the handshake in memory.
        for _ in 0..8 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).expect("write");
            if !buf.is_empty() {
                server.read_tls(&mut buf.as_slice()).expect("read");
                server.process_new_packets().expect("server accepts");
            }
            let mut buf = Vec::new();
            server.write_tls(&mut buf).expect("write");
            if !buf.is_empty() {
                client.read_tls(&mut buf.as_slice()).expect("read");
                client
                    .process_new_packets()
                    .expect("client verifies the chain");
            }
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
    }

    /// A CA of the operator's (its own name), placed in the state directory with its key:
    /// leaves chain to it; a key that does not match it is refused.
    #[test]
    fn an_operator_supplied_ca_is_used_as_it_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Example Corp");
        dn.push(DnType::CommonName, "Example CI interception CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("self-signed");
        write_file(
            &dir.path().join(CA_KEY),
            key.serialize_pem().as_bytes(),
            0o600,
        )
        .expect("key");
        write_file(&dir.path().join(CA_CERT), cert.pem().as_bytes(), 0o644).expect("cert");
        let authority = Authority::load_or_create(dir.path()).expect("load the operator's CA");
        assert_eq!(authority.ca_der.as_ref(), cert.der().as_ref());
        handshake(&authority, &dir.path().join(CA_CERT));

        let other = KeyPair::generate().expect("key");
        std::fs::remove_file(dir.path().join(CA_KEY)).expect("rm");
        write_file(
            &dir.path().join(CA_KEY),
            other.serialize_pem().as_bytes(),
            0o600,
        )
        .expect("key");
        let refused = Authority::load_or_create(dir.path()).expect_err("mismatched key");
        assert!(
            refused
                .to_string()
                .contains("is not the key of the certificate"),
            "{refused}"
        );
    }

    #[test]
    fn an_exposed_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        Authority::load_or_create(dir.path()).expect("create");
        std::fs::set_permissions(
            dir.path().join(CA_KEY),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(matches!(
            Authority::load_or_create(dir.path()),
            Err(TlsError::KeyExposed { .. })
        ));
    }
}
