//! PostgreSQL at layer 7 against a real PostgreSQL 15 (SCRAM-SHA-256 for the application
//! role) and the real psql, run inside an enforced cgroup with a stale static password.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

const CEDAR: &str = r#"
@id("baseline-read")
permit (principal, action == Enforcer::Action::"sql:read", resource);

@id("granted-writes")
permit (principal, action == Enforcer::Action::"sql:write", resource)
when { context.grant == "write" };

@id("audit-log-inserts-need-approval")
@approval("required")
permit (principal, action == Enforcer::Action::"sql:write", resource)
when { context.tables.contains("audit_notes") };

@id("no-ddl")
forbid (principal, action == Enforcer::Action::"sql:ddl", resource);

@id("writes-by-grant-need-approval")
@approval("required")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "write" };
"#;

struct Shop {
    pg: postgres::Postgres,
    policy: std::path::PathBuf,
}

fn shop(env: &Env) -> Shop {
    shop_with(env, "20s")
}

fn shop_with(env: &Env, approval_timeout: &str) -> Shop {
    let pg = postgres::Postgres::start();
    pg.database("shop");
    pg.scram_role("app", "real-secret");
    pg.psql(
        "shop",
        "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card_number text, note text);
         INSERT INTO customers VALUES
           (1, 'Ada Lovelace', 'ada@example.com', '4111 1111 1111 1111', 'call +44 20 7946 0958'),
           (2, 'Alan Turing', 'alan@example.com', '5500 0000 0000 0004', 'prefers email');
         CREATE TABLE audit_notes (id serial, note text);
         CREATE TABLE staff (id int, salary text);
         INSERT INTO staff VALUES (1, '91000');
         GRANT SELECT ON staff TO app;
         GRANT SELECT, INSERT, UPDATE, DELETE ON customers, audit_notes TO app;
         GRANT USAGE ON SEQUENCE audit_notes_id_seq TO app;
         GRANT CREATE ON SCHEMA public TO app;",
    );
    let dir = env.path().join("pg-policy");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let secret = env.path().join("shop-password");
    std::fs::write(&secret, "real-secret\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(
        dir.join("shop.yaml"),
        format!(
            "resources:
  - name: shop
    protocol: postgres
    addresses: [\"127.0.0.1:{port}\"]
    credential: {{file: {secret}, username: app}}
    upstream_tls: {{ca: {ca}}}
    gateway: \"127.0.0.1:{gateway}\"
    masking:
      columns: [\"card*\", \"staff.salary\"]
      strategy: partial
  - name: gone
    protocol: postgres
    addresses: [\"127.0.0.1:{gone}\"]
    credential: {{file: {secret}, username: app}}
approvals:
  timeout: {approval_timeout}
",
            port = pg.port,
            secret = secret.display(),
            ca = pg.ca.display(),
            gone = free_port(),
            gateway = free_port(),
        ),
    )
    .expect("yaml");
    std::fs::write(dir.join("shop.cedar"), CEDAR).expect("cedar");
    Shop { pg, policy: dir }
}

impl Shop {
    /// The port of the resource `shop`'s gateway (for clients outside the cgroup).
    fn gateway(&self) -> u16 {
        std::fs::read_to_string(self.policy.join("shop.yaml"))
            .expect("yaml")
            .lines()
            .find_map(|l| l.trim().strip_prefix("gateway: \"127.0.0.1:"))
            .and_then(|p| p.trim_end_matches('"').parse().ok())
            .expect("gateway port")
    }
}

/// psql outside any cgroup, to a gateway, with `password`; one session running each of `sql`.
fn gateway_psql(port: u16, password: &str, sql: &[&str]) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "agent", "-d", "shop"]);
    for statement in sql {
        cmd.args(["-c", statement]);
    }
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    output_within(cmd, T)
}

/// psql inside the enforced cgroup, with the agent's stale static password.
fn agent_psql(cg: &TestCgroup, port: u16, sql: &str) -> Output {
    agent_psql_with(cg, port, sql, &[])
}

fn agent_psql_with(cg: &TestCgroup, port: u16, sql: &str, env: &[(&str, &str)]) -> Output {
    let port = port.to_string();
    let mut cmd = cg.command(
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "agent",
            "-d",
            "shop",
            "-c",
            sql,
        ],
    );
    cmd.env("PGPASSWORD", "stale-static-password")
        .env("PGCONNECT_TIMEOUT", "10")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    output_within(cmd, T)
}

/// psql in the background, for statements that will be held.
fn spawn_agent_psql(cg: &TestCgroup, port: u16, sql: &str) -> std::process::Child {
    let port = port.to_string();
    let mut cmd = cg.command(
        "psql",
        &[
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "agent",
            "-d",
            "shop",
            "-c",
            sql,
        ],
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("psql")
}

fn pg_client(env: &Env) -> std::path::PathBuf {
    let client = Path::new(ENFORCER)
        .parent()
        .expect("target dir")
        .join("examples/pg_client");
    let tool = env.path().join("pg_client");
    std::fs::copy(&client, &tool)
        .expect("copy pg_client (build it: cargo build --example pg_client)");
    tool
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn statements(state: &Path) -> Vec<Value> {
    read_json_lines(&state.join("audit.jsonl"))
        .into_iter()
        .map(|mut r| r["event"].take())
        .filter(|e| e["kind"] == "statement")
        .collect()
}

#[test]
fn statements_are_decided_masked_and_recorded() {
    let env = Env::new();
    let shop = shop(&env);
    let port = shop.pg.port;
    let cg = TestCgroup::new("pg");
    let (_daemon, ready) = start_daemon(&env, &shop.policy, &cg.path, "127.0.0.1:0");
    let admin = ready_field(&ready, "admin").to_owned();

    // The stale password is never used: enforcer logs in upstream as the policy's role.
    let who = agent_psql(&cg, port, "SELECT current_user");
    assert!(who.status.success(), "{}", describe(&who));
    assert_eq!(stdout(&who).trim(), "app");

    // Baseline read, masked: card numbers by column rule (partial), emails and phone numbers
    // by content.
    let read = agent_psql(
        &cg,
        port,
        "SELECT id, name, email, card_number, note FROM customers ORDER BY id",
    );
    assert!(read.status.success(), "{}", describe(&read));
    let text = stdout(&read);
    assert!(
        text.contains("1|Ada Lovelace|***@*******.com|**** **** **** 1111|call +** ** **** 0958"),
        "{text}"
    );
    assert!(
        !text.contains("ada@example.com") && !text.contains("4111 1111 1111 1111"),
        "{text}"
    );
    assert!(
        text.contains("2|Alan Turing|****@*******.com|**** **** **** 0004|prefers email"),
        "{text}"
    );

    // Content detectors read text: a timestamp or a 10-digit id is no phone number, even
    // as text; the same digits in a sentence are one.
    let typed = agent_psql(
        &cg,
        port,
        "SELECT timestamp '2026-12-03 15:06:06', 4155550123::bigint, \
         (timestamp '2026-12-03 15:06:06')::text, 'call 415 555 0123'",
    );
    assert!(typed.status.success(), "{}", describe(&typed));
    assert_eq!(
        stdout(&typed).trim(),
        "2026-12-03 15:06:06|4155550123|2026-12-03 15:06:06|call *** *** 0123",
        "{}",
        describe(&typed)
    );

    // A write without a grant: denied with 42501 naming what to do; nothing changed.
    let delete = agent_psql(&cg, port, "DELETE FROM customers WHERE id = 2");
    assert!(!delete.status.success());
    let err = stderr(&delete);
    assert!(
        err.contains("enforcer: sql:write on shop denied: no policy permits it"),
        "{err}"
    );
    assert!(
        err.contains("enforcer grant request --resource shop --access write"),
        "{err}"
    );
    assert_eq!(
        shop.pg
            .psql("shop", "SELECT count(*) FROM customers")
            .trim(),
        "2"
    );

    // In a transaction: the denial aborts it, as PostgreSQL would; nothing half-applied.
    let txn = agent_psql(
        &cg,
        port,
        "BEGIN; UPDATE customers SET name = 'x' WHERE id = 1; COMMIT;",
    );
    assert!(!txn.status.success());
    assert_eq!(
        shop.pg
            .psql("shop", "SELECT name FROM customers WHERE id = 1")
            .trim(),
        "Ada Lovelace"
    );

    // DDL is forbidden outright; unparseable text is denied; side-effect functions in a
    // SELECT are not reads.
    let ddl = agent_psql(&cg, port, "DROP TABLE customers");
    assert!(
        stderr(&ddl).contains("forbidden by no-ddl"),
        "{}",
        describe(&ddl)
    );
    let junk = agent_psql(&cg, port, "SELEC name FROM customers");
    assert!(
        stderr(&junk).contains("cannot be parsed"),
        "{}",
        describe(&junk)
    );
    let sneaky = agent_psql(&cg, port, "SELECT pg_read_file('/etc/passwd')");
    assert!(
        stderr(&sneaky).contains("sql:admin (it calls pg_read_file())"),
        "{}",
        describe(&sneaky)
    );

    // Extended protocol (tokio-postgres: prepared statements, binary formats, pipelining):
    // masked the same way, and a denied statement fails at its place in the pipeline.
    let tool = pg_client(&env);
    let out = output_within(
        cg.command(&tool.display().to_string(), &[&port.to_string()]),
        T,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let steps: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(steps[0]["id"], 1);
    assert_eq!(steps[0]["email"], "***@*******.com");
    assert_eq!(steps[0]["card"], "**** **** **** 1111");
    assert_eq!(steps[1]["count"], 2);
    assert_eq!(steps[1]["email"], "****@*******.com");
    assert_eq!(steps[2]["code"], "42501");
    assert!(
        steps[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("sql:write on shop denied")),
        "{steps:?}"
    );
    assert_eq!(steps[3]["value"], 1);
    // Cancelled through enforcer: the server stopped the statement (57014) long before
    // its 30 seconds.
    assert_eq!(steps[4]["step"], "cancel");
    assert_eq!(steps[4]["code"], "57014", "{steps:?}");
    assert!(
        steps[4]["secs"].as_u64().is_some_and(|s| s < 10),
        "{steps:?}"
    );

    // A held statement: approved by the operator, then it runs.
    let held = {
        let port = port.to_string();
        let mut cmd = cg.command(
            "psql",
            &[
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "agent",
                "-d",
                "shop",
                "-c",
                "INSERT INTO audit_notes (note) VALUES ('checked')",
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("psql")
    };
    let approval = pending_approval(&admin, &env.state);
    assert_eq!(approval["kind"], "operation");
    assert!(
        approval["summary"]
            .as_str()
            .is_some_and(|s| s.contains("audit_notes")),
        "{approval}"
    );
    let id = approval["id"].as_str().expect("id").to_owned();
    let ok = operator(&admin, &env.state, &["approvals", "approve", &id]);
    assert!(ok.status.success(), "{}", describe(&ok));
    let held = held.wait_with_output().expect("psql");
    assert!(held.status.success(), "{}", describe(&held));
    assert!(
        stderr(&held).contains("held for approval"),
        "{}",
        describe(&held)
    );
    assert_eq!(
        shop.pg
            .psql("shop", "SELECT count(*) FROM audit_notes")
            .trim(),
        "1"
    );

    // A grant (approved) for exactly one write.
    let state = env.state.display().to_string();
    let request = {
        let mut cmd = cg.command(
            ENFORCER,
            &[
                "grant",
                "request",
                "--resource",
                "shop",
                "--access",
                "write",
                "--uses",
                "1",
                "--reason",
                "remove a duplicate customer",
                "--wait",
                "--admin",
                &admin,
                "--state",
                &state,
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("grant request")
    };
    let approval = pending_approval(&admin, &env.state);
    let id = approval["id"].as_str().expect("id").to_owned();
    assert!(
        operator(&admin, &env.state, &["approvals", "approve", &id])
            .status
            .success()
    );
    let granted = request.wait_with_output().expect("grant");
    assert!(granted.status.success(), "{}", describe(&granted));
    let first = agent_psql(&cg, port, "DELETE FROM customers WHERE id = 2");
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(
        shop.pg
            .psql("shop", "SELECT count(*) FROM customers")
            .trim(),
        "1"
    );
    let second = agent_psql(&cg, port, "DELETE FROM customers WHERE id = 1");
    assert!(!second.status.success(), "the single use is spent");
    assert_eq!(
        shop.pg
            .psql("shop", "SELECT count(*) FROM customers")
            .trim(),
        "1"
    );

    let (_, metrics) = http_get(&admin, "/metrics");
    for line in [
        "enforcer_statements_total{resource=\"shop\",action=\"sql:write\",decision=\"deny\"}",
        "enforcer_statements_total{resource=\"shop\",action=\"sql:read\",decision=\"allow\"}",
        "enforcer_masked_values_total{detector=\"email\"}",
        "enforcer_hold_seconds_count 1",
        "enforcer_upstream_seconds_count{resource=\"shop\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    drop(_daemon);
    let recorded = statements(&env.state);
    let find = |needle: &str, decision: &str| {
        recorded.iter().any(|e| {
            e["statement"].as_str().is_some_and(|s| s.contains(needle)) && e["decision"] == decision
        })
    };
    assert!(find("DELETE FROM customers WHERE id = 2", "deny"));
    assert!(find("DELETE FROM customers WHERE id = 2", "allow"));
    assert!(find("DROP TABLE customers", "deny"));
    assert!(find("INSERT INTO audit_notes", "allow"));
    let granted_delete = recorded
        .iter()
        .find(|e| e["decision"] == "allow" && e["action"] == "sql:write" && e["grant"].is_string())
        .expect("a write allowed by the grant");
    assert_eq!(granted_delete["policies"][0], "granted-writes");
    // The session, read back from the audit chain.
    let session = granted_delete["connection"]
        .as_u64()
        .expect("connection id")
        .to_string();
    let state = env.state.display().to_string();
    let shown = Command::new(ENFORCER)
        .args(["sessions", "show", &session, "--state", &state])
        .output()
        .expect("sessions show");
    assert!(shown.status.success(), "{}", describe(&shown));
    let text = stdout(&shown);
    assert!(text.contains("connect") && text.contains("psql"), "{text}");
    assert!(
        text.contains("DELETE FROM customers WHERE id = 2") && text.contains("grant g-"),
        "{text}"
    );
    assert!(text.contains("closed"), "{text}");
    assert!(
        text.contains("done     DELETE 1 · 0 rows returned"),
        "{text}"
    );
    let outcomes: Vec<Value> = read_json_lines(&env.state.join("audit.jsonl"))
        .into_iter()
        .map(|mut r| r["event"].take())
        .filter(|e| e["kind"] == "statement_done")
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|e| e["tag"] == "SELECT 2" && e["rows_returned"] == 2),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|e| e["error"].as_str().is_some_and(|m| m.contains("denied"))),
        "{outcomes:?}"
    );
    let denied = recorded
        .iter()
        .find(|e| {
            e["decision"] == "deny"
                && e["statement"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("DROP"))
        })
        .expect("the DROP");
    let replay = Command::new(ENFORCER)
        .args([
            "sessions",
            "replay",
            &denied["connection"].to_string(),
            "--state",
            &state,
        ])
        .output()
        .expect("sessions replay");
    assert!(replay.status.success(), "{}", describe(&replay));
    assert!(
        stdout(&replay).contains("sql:ddl DENIED: forbidden by no-ddl\n-- DROP TABLE customers;"),
        "{}",
        stdout(&replay)
    );

    let audit = read_json_lines(&env.state.join("audit.jsonl"));
    let raw = serde_json::to_string(&audit).expect("json");
    assert!(!raw.contains("real-secret") && !raw.contains("stale-static-password"));
}

/// pgbench drives thousands of statements per second through enforcer in each protocol mode;
/// every one of them must be in the audit chain (backpressure, never loss), even when the
/// daemon is killed right after.
#[test]
fn every_statement_is_recorded_under_load() {
    let env = Env::new();
    let shop = shop(&env);
    let port = shop.pg.port.to_string();
    let cg = TestCgroup::new("pgbench");
    let (daemon, _) = start_daemon(&env, &shop.policy, &cg.path, "127.0.0.1:0");
    let script = env.path().join("bench.sql");
    std::fs::write(&script, "SELECT name FROM customers WHERE id = 1;\n").expect("script");
    let script = script.display().to_string();
    let mut total = 0u64;
    for mode in ["simple", "extended", "prepared"] {
        let mut cmd = cg.command(
            "/usr/lib/postgresql/15/bin/pgbench",
            &[
                "-n",
                "-M",
                mode,
                "-c",
                "4",
                "-j",
                "2",
                "-T",
                "3",
                "-f",
                &script,
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "agent",
                "shop",
            ],
        );
        cmd.env("PGPASSWORD", "stale-static-password")
            .stdin(Stdio::null());
        let out = output_within(cmd, T);
        assert!(out.status.success(), "{}", describe(&out));
        let text = stdout(&out);
        let done: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|n| n.split('/').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no transaction count in {text}"));
        let tps = text
            .lines()
            .find(|l| l.starts_with("tps"))
            .unwrap_or("")
            .to_owned();
        eprintln!("pgbench -M {mode}: {done} statements through enforcer ({tps})");
        assert!(done > 100, "pgbench ran too few statements: {text}");
        total += done;
    }
    drop(daemon);
    let recorded = statements(&env.state)
        .into_iter()
        .filter(|e| {
            e["decision"] == "allow" && e["statement"] == "SELECT name FROM customers WHERE id = 1"
        })
        .count() as u64;
    // The daemon was killed (SIGKILL), not stopped: a statement runs only once its record is
    // in the file, so every statement pgbench completed is there. A statement in flight when
    // a client stopped may be recorded without pgbench counting it (at most one per client).
    assert!(
        recorded >= total && recorded <= total + 3 * 4,
        "pgbench completed {total} statements, the audit chain holds {recorded}"
    );
    let verify = Command::new(ENFORCER)
        .args(["audit", "verify", "--state"])
        .arg(&env.state)
        .output()
        .expect("verify");
    assert!(verify.status.success(), "{}", describe(&verify));
}

/// TLS on both sides, masking by table column whatever the query calls it, COPY output
/// masked, held statements denied or timed out, an unreachable server, and a client that
/// breaks the protocol.
#[test]
fn tls_copy_table_rules_and_failures() {
    let env = Env::new();
    let shop = shop_with(&env, "3s");
    let port = shop.pg.port;
    let cg = TestCgroup::new("pg2");
    let (_daemon, ready) = start_daemon(&env, &shop.policy, &cg.path, "127.0.0.1:0");
    let admin = ready_field(&ready, "admin").to_owned();

    // The client verifies enforcer's certificate for 127.0.0.1 against enforcer's CA; the
    // server sees a TLS connection from enforcer (the role may only log in over TLS).
    let ca = env.state.join("ca.pem").display().to_string();
    let tls = agent_psql_with(
        &cg,
        port,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &ca)],
    );
    assert!(tls.status.success(), "{}", describe(&tls));
    assert_eq!(stdout(&tls).trim(), "t");
    // A client trusting another CA refuses enforcer's certificate.
    let wrong = agent_psql_with(
        &cg,
        port,
        "SELECT 1",
        &[
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", &shop.pg.ca.display().to_string()),
        ],
    );
    assert!(!wrong.status.success(), "{}", describe(&wrong));

    // A table-column rule holds under any label; an expression is no table column, so only
    // content detectors apply to it.
    let aliased = agent_psql(&cg, port, "SELECT salary AS pay, id FROM staff");
    assert!(aliased.status.success(), "{}", describe(&aliased));
    assert_eq!(stdout(&aliased).trim(), "*****|1");

    // COPY out: masked by column rules and detectors, in text and CSV.
    let copy = agent_psql(&cg, port, "COPY customers TO STDOUT");
    assert!(copy.status.success(), "{}", describe(&copy));
    let text = stdout(&copy);
    assert!(
        text.contains("1\tAda Lovelace\t***@*******.com\t**** **** **** 1111\t"),
        "{text}"
    );
    assert!(!text.contains("ada@example.com") && !text.contains("4111 1111 1111 1111"));
    let csv = agent_psql(
        &cg,
        port,
        "COPY (SELECT s.salary, c.email FROM staff s, customers c WHERE c.id = 2) TO STDOUT WITH (FORMAT csv, HEADER)",
    );
    assert!(csv.status.success(), "{}", describe(&csv));
    assert_eq!(
        stdout(&csv),
        "salary,email\n\"*****\",\"****@*******.com\"\n"
    );
    let binary = agent_psql(&cg, port, "COPY customers TO STDOUT WITH (FORMAT binary)");
    assert!(
        stderr(&binary).contains("binary format cannot be masked"),
        "{}",
        describe(&binary)
    );

    // Held, then denied by the operator: the statement fails with the reason, nothing ran.
    let held = spawn_agent_psql(
        &cg,
        port,
        "INSERT INTO audit_notes (note) VALUES ('denied')",
    );
    let approval = pending_approval(&admin, &env.state);
    let id = approval["id"].as_str().expect("id").to_owned();
    let deny = operator(
        &admin,
        &env.state,
        &["approvals", "deny", &id, "--reason", "not today"],
    );
    assert!(deny.status.success(), "{}", describe(&deny));
    let held = held.wait_with_output().expect("psql");
    assert!(!held.status.success());
    assert!(
        stderr(&held).contains(
            "an operator denied it: not today (held by rule audit-log-inserts-need-approval, approval "
        ),
        "{}",
        describe(&held)
    );
    // Held, then nobody decides: the approval timeout (3 s here) denies it.
    let started = std::time::Instant::now();
    let late = agent_psql(&cg, port, "INSERT INTO audit_notes (note) VALUES ('late')");
    assert!(!late.status.success());
    assert!(
        stderr(&late).contains("no operator approved it before the approval timeout"),
        "{}",
        describe(&late)
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        shop.pg
            .psql("shop", "SELECT count(*) FROM audit_notes")
            .trim(),
        "0"
    );

    // The server is down: a clear error naming the resource.
    let gone_port = std::fs::read_to_string(shop.policy.join("shop.yaml"))
        .expect("yaml")
        .lines()
        .filter(|l| l.contains("addresses"))
        .nth(1)
        .and_then(|l| l.rsplit(':').next())
        .map(|p| p.trim_end_matches(['"', ']']).to_owned())
        .expect("gone port");
    let gone = agent_psql(&cg, gone_port.parse().expect("port"), "SELECT 1");
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("enforcer: cannot reach gone"),
        "{}",
        describe(&gone)
    );

    // A client that lies about a message length is told so and disconnected; enforcer
    // serves the next client as before.
    let tool = pg_client(&env);
    let out = output_within(
        cg.command(&tool.display().to_string(), &[&port.to_string(), "garbage"]),
        T,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let garbage: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(garbage["closed"], true, "{garbage}");
    assert_eq!(garbage["error"], true, "{garbage}");
    let after = agent_psql(&cg, port, "SELECT 1");
    assert!(after.status.success(), "{}", describe(&after));

    // A client outside the cgroup, through the gateway: a password that is not a grant token
    // opens nothing; a grant token (asked for inside the workload, approved) is the session's
    // credential, spent as the grant is.
    let gateway = shop.gateway();
    let stale = gateway_psql(gateway, "stale-static-password", &["SELECT 1"]);
    assert!(!stale.status.success());
    assert!(
        stderr(&stale).contains("password authentication failed for resource shop"),
        "{}",
        describe(&stale)
    );
    let state = env.state.display().to_string();
    let request = {
        let mut cmd = cg.command(
            ENFORCER,
            &[
                "grant",
                "request",
                "--resource",
                "shop",
                "--access",
                "write",
                "--uses",
                "1",
                "--reason",
                "one fix from a client outside the cgroup",
                "--wait",
                "--json",
                "--admin",
                &admin,
                "--state",
                &state,
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("grant request")
    };
    let approval = pending_approval(&admin, &env.state);
    let id = approval["id"].as_str().expect("id").to_owned();
    let approve = operator(&admin, &env.state, &["approvals", "approve", &id]);
    assert!(approve.status.success(), "{}", describe(&approve));
    let granted = request.wait_with_output().expect("grant");
    assert!(granted.status.success(), "{}", describe(&granted));
    let granted: Value = serde_json::from_slice(&granted.stdout).expect("grant json");
    let token = granted["token"].as_str().expect("token");
    let grant_id = granted["id"].as_str().expect("grant id");
    let session = gateway_psql(
        gateway,
        token,
        &[
            "SELECT email FROM customers WHERE id = 1",
            "DELETE FROM customers WHERE id = 2",
            "DELETE FROM customers WHERE id = 1",
        ],
    );
    assert!(
        stdout(&session).contains("***@*******.com") && !stdout(&session).contains("ada@"),
        "{}",
        describe(&session)
    );
    assert!(
        stderr(&session).contains("the presented grant token"),
        "the second write finds the single use spent: {}",
        describe(&session)
    );
    assert_eq!(
        shop.pg
            .psql("shop", "SELECT string_agg(id::text, ',') FROM customers")
            .trim(),
        "1"
    );
    let spent = gateway_psql(gateway, token, &["SELECT 1"]);
    assert!(
        !spent.status.success() && stderr(&spent).contains("password authentication failed"),
        "{}",
        describe(&spent)
    );
    let by_token: Vec<Value> = statements(&env.state)
        .into_iter()
        .filter(|s| s["grant"] == grant_id)
        .collect();
    assert_eq!(by_token.len(), 1, "{by_token:?}");
    assert_eq!(by_token[0]["action"], "sql:write");
    assert!(
        by_token[0]["statement"]
            .as_str()
            .is_some_and(|s| s.contains("id = 2"))
    );
}
