//! `cargo xtask demo`: enforcer on a real workload against a real local PostgreSQL.
//!
//! An "agent" shell script runs under `enforcer run` as `nobody`. It reads the orders database
//! (a resource the policy names: allowed, relayed, recorded) and then calls a hard-coded address
//! the policy does not name (refused). Then the enforcement log and the audit chain show who
//! did what.

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, exec, root, setup};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Postgres {
    data: PathBuf,
    port: u16,
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

fn free_port(ip: &str) -> Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

fn start_postgres(dir: &Path) -> Result<Postgres> {
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
    let port = free_port("127.0.0.1")?;
    let pg = Postgres {
        data: data.clone(),
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
                "-p {port} -k {} -c listen_addresses=127.0.0.1",
                sock.display()
            ))
            .stdout(Stdio::null()),
    )?;
    let sql = "CREATE DATABASE demo;";
    exec(Command::new("psql").args(["-q", "-h"]).arg(&sock).args([
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-c",
        sql,
    ]))?;
    let sql = "CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
        INSERT INTO customers VALUES (1, 'Ada Lovelace', 'ada@example.com'),
                                     (2, 'Alan Turing', 'alan@example.com');
        GRANT SELECT ON customers TO PUBLIC;";
    exec(Command::new("psql").args(["-q", "-h"]).arg(&sock).args([
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        "demo",
        "-c",
        sql,
    ]))?;
    Ok(pg)
}

pub fn run() -> Result<()> {
    setup::run()?;
    exec(cargo().args(["build", "-p", "enforcer", "--bin", "enforcer"]))?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let enforcer = target.join("debug/enforcer");

    let dir = std::env::temp_dir().join(format!("enforcer-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let result = demo(&enforcer, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(enforcer: &Path, dir: &Path) -> Result<()> {
    println!("\n== Starting a real PostgreSQL 15 on loopback (the agent's database)");
    let pg = start_postgres(dir)?;
    println!("   PostgreSQL listening on 127.0.0.1:{}", pg.port);

    let forbidden_port = free_port("127.0.0.2")?;
    let _forbidden = Killed(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &forbidden_port.to_string(),
                "--bind",
                "127.0.0.2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("python3 -m http.server")?,
    );
    wait_listening("127.0.0.2", forbidden_port)?;
    println!("   A service the agent must not reach: 127.0.0.2:{forbidden_port}");

    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy)?;
    let policy_text = format!(
        "# The agent may reach the orders database and nothing else.\n\
         resources:\n  - name: orders-db\n    protocol: postgres\n    addresses: [\"127.0.0.1:{}\"]\n    credential: {{env: ORDERS_DB_PASSWORD, username: agent_ro}}\n",
        pg.port
    );
    std::fs::write(policy.join("policy.yaml"), &policy_text)?;
    println!(
        "\n== Policy ({}):\n{}",
        policy.display(),
        indent(&policy_text)
    );
    exec(
        Command::new(enforcer)
            .arg("policy")
            .arg("check")
            .arg(&policy),
    )?;

    let agent = dir.join("agent.sh");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\n\
             echo \"[agent] I am $(id -un), pid $$\"\n\
             echo '[agent] reading customers from the orders database at 127.0.0.1:{pg}'\n\
             psql -h 127.0.0.1 -p {pg} -U postgres -d demo -c 'SELECT id, name FROM customers ORDER BY id'\n\
             echo '[agent] calling a hard-coded address the policy does not allow (127.0.0.2:{fp})'\n\
             if curl -sS -m 5 -o /dev/null http://127.0.0.2:{fp}/; then echo '[agent] it answered?!'; exit 1; fi\n\
             echo '[agent] refused'\n",
            pg = pg.port,
            fp = forbidden_port
        ),
    )?;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;

    let state = dir.join("state");
    println!(
        "\n== enforcer run --policy {} --state {} -- {}",
        policy.display(),
        state.display(),
        agent.display()
    );
    let status = Command::new(enforcer)
        .arg("run")
        .arg("--policy")
        .arg(&policy)
        .arg("--state")
        .arg(&state)
        .args(["--admin", "127.0.0.1:0", "--"])
        .arg(&agent)
        .env("RUST_LOG", "error")
        .status()?;
    if !status.success() {
        bail!("the demo agent failed: {status}");
    }

    println!(
        "\n== Enforcement log ({}): who did what",
        state.join("enforcement.log").display()
    );
    let log = std::fs::read_to_string(state.join("enforcement.log"))?;
    println!(
        "   {:<8} {:<8} {:<6} {:<22} {:<7} rule / reason",
        "pid", "comm", "uid", "destination", "verdict"
    );
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["event"] != "connection_decided" {
            continue;
        }
        let why = if v["decision"] == "deny" {
            v["reason"].as_str()
        } else {
            v["rule"].as_str()
        };
        println!(
            "   {:<8} {:<8} {:<6} {:<22} {:<7} {}",
            v["pid"].to_string(),
            v["comm"].as_str().unwrap_or(""),
            v["uid"].to_string(),
            v["orig_dst"].as_str().unwrap_or(""),
            v["decision"].as_str().unwrap_or(""),
            why.unwrap_or("")
        );
    }
    println!("\n== Audit chain");
    exec(
        Command::new(enforcer)
            .args(["audit", "verify", "--state"])
            .arg(&state),
    )?;
    println!(
        "\nDone. The database read was allowed and recorded; the forbidden call never left the host.\n\
         (Credential injection, statement policy and masking for PostgreSQL come with the protocol issue;\n\
         today resources are relayed as TCP.)"
    );
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn wait_listening(ip: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((ip, port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {ip}:{port}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
