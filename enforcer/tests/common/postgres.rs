//! A real PostgreSQL 15 (Debian's), initialised in a fresh directory and listening on a free
//! loopback port; stopped on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    pub port: u16,
    /// The CA that issued the server's TLS certificate (for 127.0.0.1 and localhost).
    pub ca: PathBuf,
}

/// A CA of the test's own and a server certificate it issued, written where PostgreSQL
/// reads them (key owned by postgres, 0600).
fn server_tls(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    use std::os::unix::fs::PermissionsExt;
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test database CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        SanType::DnsName("localhost".try_into().expect("dns")),
    ];
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let ca_path = dir.join("db-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("ca");
    std::fs::write(dir.join("server.crt"), cert.pem()).expect("crt");
    let key_path = dir.join("server.key");
    std::fs::write(&key_path, key.serialize_pem()).expect("key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    ca_path
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join(program));
    cmd
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("enforcer-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir data");
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path()));
        run(as_postgres("initdb")
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(&data)
            .stdout(Stdio::null()));
        let ca = server_tls(dir.path());
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path()));
        // A port found free can be taken by a parallel test before the server binds it:
        // another port is tried then.
        let mut attempts = 0;
        let port = loop {
            let port = super::free_port();
            let out = as_postgres("pg_ctl")
                .args(["start", "-w", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                    dir = dir.path().display()
                ))
                .stdout(Stdio::null())
                .output()
                .expect("pg_ctl");
            attempts += 1;
            if out.status.success() {
                break port;
            }
            assert!(
                attempts < 3,
                "pg_ctl start: {}{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
        };
        Postgres {
            _dir: dir,
            data,
            port,
            ca,
        }
    }

    /// As a client over loopback TCP as the superuser (trust on this server).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Requires TLS and a SCRAM-SHA-256 password for `role` over TCP from now on (other
    /// users keep trust), with the role created with `password`.
    pub fn scram_role(&self, role: &str, password: &str) {
        self.psql(
            "postgres",
            &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
        );
        let hba = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba");
        std::fs::write(
            &hba,
            format!(
                "hostssl all {role} 127.0.0.1/32 scram-sha-256\nhostssl all {role} ::1/128 scram-sha-256\nhost all {role} all reject\n{old}"
            ),
        )
        .expect("write pg_hba");
        self.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// Creates a database and returns its URL.
    pub fn database(&self, name: &str) -> String {
        run(Command::new("psql")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-c", &format!("CREATE DATABASE {name}")]));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
