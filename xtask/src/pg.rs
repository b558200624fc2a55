//! A throwaway PostgreSQL 15 (Debian's) for the demo and the benchmarks: initialised in a
//! directory of the caller's, listening on a free loopback port, stopped on drop. The role
//! `app` (created by [`Postgres::app_role`]) logs in with a SCRAM password over TCP, as in
//! production; the superuser has trust over the Unix socket.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Result;

use crate::exec;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    data: PathBuf,
    sock: PathBuf,
    pub port: u16,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn free_port(ip: &str) -> Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

impl Postgres {
    pub fn start(dir: &Path, settings: &str) -> Result<Postgres> {
        let data = dir.join("pgdata");
        let sock = dir.join("pgsock");
        std::fs::create_dir_all(&sock)?;
        std::fs::create_dir_all(&data)?;
        exec(
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&sock)
                .arg(&data),
        )?;
        exec(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/initdb"))
                .args(["-U", "postgres", "--auth=trust", "-D"])
                .arg(&data)
                .stdout(Stdio::null()),
        )?;
        let hba = data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!("host all app 127.0.0.1/32 scram-sha-256\n{old}"),
        )?;
        let port = free_port("127.0.0.1")?;
        let pg = Postgres {
            data: data.clone(),
            sock: sock.clone(),
            port,
        };
        exec(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/pg_ctl"))
                .args(["start", "-w", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(sock.join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 {settings}",
                    sock.display()
                ))
                .stdout(Stdio::null()),
        )?;
        Ok(pg)
    }

    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }

    /// Runs SQL as the superuser over the Unix socket.
    pub fn psql(&self, database: &str, sql: &str) -> Result<()> {
        exec(
            Command::new("psql")
                .args(["-q", "-h"])
                .arg(&self.sock)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-c",
                    sql,
                ]),
        )
    }

    pub fn app_role(&self, password: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE app LOGIN PASSWORD '{password}'"
            ),
        )
    }
}
