//! `cargo xtask demo`: enforcer on a real workload against a real local PostgreSQL.
//!
//! An "agent" shell script runs under `enforcer run` as `nobody`. It reads the orders database
//! (a resource the policy names: allowed, relayed, recorded) and then calls a hard-coded address
//! the policy does not name (refused). Then the enforcement log and the audit chain show who
//! did what.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    cargo, exec,
    pg::{Postgres, free_port},
    root, setup,
};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_postgres(dir: &Path) -> Result<Postgres> {
    let pg = Postgres::start(dir, "")?;
    pg.psql("postgres", "CREATE DATABASE demo;")?;
    pg.app_role("real-secret")?;
    pg.psql(
        "demo",
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card_number text);
        INSERT INTO customers VALUES (1, 'Ada Lovelace', 'ada@example.com', '4111 1111 1111 1111'),
                                     (2, 'Alan Turing', 'alan@example.com', '5500 0000 0000 0004'),
                                     (3, 'Alan Turing', 'alan@example.com', '5500 0000 0000 0004');
        GRANT SELECT, INSERT, UPDATE, DELETE ON customers TO app;",
    )?;
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
        "# The agent may reach the orders database and nothing else. It holds no password:\n\
         # enforcer logs in as `app` with the secret from its own environment.\n\
         resources:\n  - name: orders-db\n    protocol: postgres\n    addresses: [\"127.0.0.1:{}\"]\n    credential: {{env: ORDERS_DB_PASSWORD, username: app}}\n    masking:\n      columns: [\"card*\"]\n      strategy: partial\n\
         approvals:\n  timeout: 2m\n",
        pg.port
    );
    let cedar_text = "// Reading is the baseline; writing needs a grant, and a grant needs a person.\n\
         @id(\"baseline-read\")\n\
         permit (principal, action == Enforcer::Action::\"sql:read\", resource);\n\n\
         @id(\"granted-writes\")\n\
         permit (principal, action == Enforcer::Action::\"sql:write\", resource)\n\
         when { context.grant == \"write\" };\n\n\
         @id(\"write-grants-need-approval\")\n\
         @approval(\"required\")\n\
         @max_ttl(\"15m\")\n\
         permit (principal, action == Enforcer::Action::\"grant:request\", resource)\n\
         when { context.access == \"write\" };\n\n\
         @id(\"no-ddl\")\n\
         forbid (principal, action == Enforcer::Action::\"sql:ddl\", resource);\n";
    std::fs::write(policy.join("policy.yaml"), &policy_text)?;
    std::fs::write(policy.join("access.cedar"), cedar_text)?;
    println!(
        "\n== Policy ({}):\n{}\n{}",
        policy.display(),
        indent(&policy_text),
        indent(cedar_text)
    );
    exec(
        Command::new(enforcer)
            .arg("policy")
            .arg("check")
            .arg(&policy),
    )?;

    // The agent runs as `nobody`: give it its own copy of the CLI.
    let cli = dir.join("enforcer");
    std::fs::copy(enforcer, &cli)?;
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755))?;
    let agent = dir.join("agent.sh");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\n\
             export PGPASSWORD=stale-static-password PGCONNECT_TIMEOUT=10\n\
             q() {{ psql -X -h 127.0.0.1 -p {pg} -U agent -d demo -c \"$1\"; }}\n\
             echo \"[agent] I am $(id -un), pid $$, holding a stale static password\"\n\
             echo '[agent] SELECT * FROM customers'\n\
             q 'SELECT id, name, email, card_number FROM customers ORDER BY id'\n\
             echo '[agent] DELETE FROM customers WHERE id = 3   (a duplicate)'\n\
             q 'DELETE FROM customers WHERE id = 3' && {{ echo '[agent] it worked?!'; exit 1; }}\n\
             echo '[agent] asking for a one-time write grant'\n\
             {cli} grant request --resource orders-db --access write --uses 1 --reason 'remove duplicate customer 3' --wait || exit 1\n\
             q 'DELETE FROM customers WHERE id = 3' || exit 1\n\
             echo '[agent] and once more (the grant was for one statement)'\n\
             q 'DELETE FROM customers WHERE id = 2' && {{ echo '[agent] it worked?!'; exit 1; }}\n\
             echo '[agent] calling a hard-coded address the policy does not allow (127.0.0.2:{fp})'\n\
             if curl -sS -m 5 -o /dev/null http://127.0.0.2:{fp}/; then echo '[agent] it answered?!'; exit 1; fi\n\
             echo '[agent] refused'\n",
            pg = pg.port,
            fp = forbidden_port,
            cli = cli.display(),
        ),
    )?;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;

    let state = dir.join("state");
    let admin = format!("127.0.0.1:{}", free_port("127.0.0.1")?);
    println!(
        "\n== enforcer run --policy {} --state {} -- {}",
        policy.display(),
        state.display(),
        agent.display()
    );
    // The operator: approves what the agent asks for, as a person would after reading it.
    let operator = {
        let (enforcer, admin, state) = (enforcer.to_owned(), admin.clone(), state.clone());
        std::thread::spawn(move || approve_first_request(&enforcer, &admin, &state))
    };
    let status = Command::new(enforcer)
        .arg("run")
        .arg("--policy")
        .arg(&policy)
        .arg("--state")
        .arg(&state)
        .args(["--admin", &admin, "--"])
        .arg(&agent)
        .env("RUST_LOG", "error")
        .env("ORDERS_DB_PASSWORD", "real-secret")
        .status()?;
    let _ = operator.join();
    if !status.success() {
        bail!("the demo agent failed: {status}");
    }
    println!("\n== What the database holds now (as the DBA sees it)");
    exec(Command::new("psql").args([
        "-X",
        "-q",
        "-h",
        "127.0.0.1",
        "-p",
        &pg.port.to_string(),
        "-U",
        "postgres",
        "-d",
        "demo",
        "-c",
        "SELECT id, name, email, card_number FROM customers ORDER BY id",
    ]))?;

    println!("\n== Statements, as recorded");
    let log = std::fs::read_to_string(state.join("enforcement.log"))?;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["event"] != "statement" {
            continue;
        }
        println!(
            "   {:<6} {:<10} {:<45} {}",
            v["decision"].as_str().unwrap_or(""),
            v["action"].as_str().unwrap_or(""),
            v["statement"].as_str().unwrap_or(""),
            [
                v["policies"].as_str().unwrap_or(""),
                v["grant"].as_str().unwrap_or("")
            ]
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
        );
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
        "\nDone. The stale password opened nothing; reads were masked; the DELETE ran once, by an\n\
         approved one-time grant; the forbidden call never left the host; everything is in the\n\
         hash-chained audit log."
    );
    Ok(())
}

/// Waits for the agent's grant request and approves it through the operator CLI.
fn approve_first_request(enforcer: &Path, admin: &str, state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let listed = Command::new(enforcer)
            .args(["approvals", "list", "--json", "--admin", admin, "--state"])
            .arg(state)
            .output();
        let pending: Vec<serde_json::Value> = listed
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default();
        if let Some(id) = pending.first().and_then(|a| a["id"].as_str()) {
            println!(
                "[operator] approving {id}: {}",
                pending[0]["summary"].as_str().unwrap_or("")
            );
            let _ = Command::new(enforcer)
                .args([
                    "approvals",
                    "approve",
                    id,
                    "--reason",
                    "duplicate confirmed",
                    "--admin",
                    admin,
                    "--state",
                ])
                .arg(state)
                .status();
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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
