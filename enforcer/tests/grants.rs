//! JIT grants and approvals end to end: a daemon enforcing a cgroup, the workload asking with
//! `enforcer grant request` from inside it, an operator deciding with `enforcer approvals` on
//! the host, a webhook hearing of each request, and the audit trail and metrics showing it
//! all. The last case shares a real PostgreSQL between two daemons.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

const CEDAR: &str = r#"
@id("write-needs-approval")
@approval("required")
@max_ttl("15m")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "write" };

@id("no-ddl")
forbid (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "ddl" };
"#;

fn grant_policy(env: &Env, name: &str, timeout: &str, webhook: Option<&str>) -> PathBuf {
    let dir = env.path().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir policy");
    let mut yaml = format!(
        "resources:\n  - name: orders-db\n    protocol: postgres\n    addresses: [\"127.0.0.1:{}\"]\n    credential: {{env: ORDERS_PW}}\napprovals:\n  timeout: {timeout}\n",
        free_port()
    );
    if let Some(url) = webhook {
        yaml.push_str(&format!("  webhook: {url}\n"));
    }
    std::fs::write(dir.join("policy.yaml"), yaml).expect("write yaml");
    std::fs::write(dir.join("grants.cedar"), CEDAR).expect("write cedar");
    dir
}

/// `enforcer …` run inside the enforced cgroup, as the workload.
fn workload(cg: &TestCgroup, admin: &str, args: &[&str]) -> Command {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--admin", admin]);
    let mut cmd = cg.command(ENFORCER, &all);
    cmd.stdin(Stdio::null());
    cmd
}

fn spawn_waiting(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn workload")
}

fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + T;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        assert!(Instant::now() < deadline, "workload did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Accepts HTTP POSTs and keeps their bodies.
struct WebhookSink {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl WebhookSink {
    fn start() -> WebhookSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok()
                    && let Ok(json) = serde_json::from_slice(&body)
                {
                    kept.lock().expect("lock").push(json);
                }
                let mut stream = reader.into_inner();
                let _ = std::io::Write::write_all(
                    &mut stream,
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        WebhookSink { url, bodies }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("lock").clone()
    }
}

fn events(state: &Path, kind: &str) -> Vec<Value> {
    read_json_lines(&state.join("audit.jsonl"))
        .into_iter()
        .map(|mut r| r["event"].take())
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_held_grant_is_approved_by_the_operator_and_never_by_the_workload() {
    let env = Env::new();
    let hook = WebhookSink::start();
    let policy = grant_policy(&env, "policy", "5m", Some(&hook.url));
    let cg = TestCgroup::new("grant-approve");
    let (_daemon, ready) = start_daemon(&env, &policy, &cg.path, "127.0.0.1:0");
    let admin = ready_field(&ready, "admin").to_owned();

    let waiting = spawn_waiting(workload(
        &cg,
        &admin,
        &[
            "grant",
            "request",
            "--resource",
            "orders-db",
            "--access",
            "write",
            "--uses",
            "1",
            "--reason",
            "fix order 42",
            "--wait",
            "--json",
        ],
    ));
    let approval = pending_approval(&admin, &env.state);
    let id = approval["id"].as_str().expect("id").to_owned();
    assert_eq!(approval["kind"], "grant");
    assert!(
        approval["summary"]
            .as_str()
            .is_some_and(|s| s.contains("write") && s.contains("fix order 42")),
        "{approval}"
    );

    // The workload cannot approve its own request, not even holding the operator token.
    let state = env.state.display().to_string();
    let own = output_within(
        workload(
            &cg,
            &admin,
            &["approvals", "approve", &id, "--state", &state],
        ),
        T,
    );
    assert!(!own.status.success(), "{}", describe(&own));
    assert!(
        String::from_utf8_lossy(&own.stderr).contains("never from inside an enforced workload"),
        "{}",
        describe(&own)
    );
    // Nor can someone on the host without the operator token.
    let anonymous = operator(
        &admin,
        &env.path().join("elsewhere"),
        &["approvals", "approve", &id],
    );
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("operator rights"),
        "{}",
        describe(&anonymous)
    );
    let still = pending_approval(&admin, &env.state);
    assert_eq!(still["id"], id.as_str());

    let approved = operator(
        &admin,
        &env.state,
        &["approvals", "approve", &id, "--reason", "ticket OPS-7"],
    );
    assert!(approved.status.success(), "{}", describe(&approved));
    let out = finish(waiting);
    assert!(out.status.success(), "{}", describe(&out));
    let granted: Value = serde_json::from_slice(&out.stdout).expect("grant json");
    assert_eq!(granted["status"], "active");
    assert_eq!(granted["uses_left"], 1);
    assert!(
        granted["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    let grant_id = granted["id"].as_str().expect("grant id").to_owned();

    // The operator sees and revokes it.
    let list = operator(&admin, &env.state, &["grant", "list", "--json"]);
    let list: Vec<Value> = serde_json::from_slice(&list.stdout).expect("list");
    assert!(
        list.iter()
            .any(|g| g["id"] == grant_id.as_str() && g["status"] == "active")
    );
    let revoked = operator(
        &admin,
        &env.state,
        &["grant", "revoke", &grant_id, "--reason", "done"],
    );
    assert!(revoked.status.success(), "{}", describe(&revoked));
    let shown = operator(&admin, &env.state, &["grant", "show", &grant_id]);
    let shown: Value = serde_json::from_slice(&shown.stdout).expect("show");
    assert_eq!(shown["status"], "revoked");
    assert!(
        shown.get("token").is_none(),
        "operators never get the token"
    );

    // Announced once, Slack-compatible.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.bodies().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(bodies[0]["text"].as_str().is_some_and(|t| t.contains(&id)));
    assert_eq!(bodies[0]["approval"]["id"], id.as_str());

    let (status, metrics) = http_get(&admin, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "enforcer_grants_total{event=\"issued\"} 1",
        "enforcer_grants_total{event=\"revoked\"} 1",
        "enforcer_approval_decision_seconds_count{outcome=\"approved\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    drop(_daemon);
    let approvals = events(&env.state, "approval");
    assert_eq!(
        actions(&approvals),
        ["requested", "refused", "approved"],
        "{approvals:?}"
    );
    assert!(
        approvals[1]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("workload:"))
    );
    assert!(
        approvals[2]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("operator:"))
    );
    let grants = events(&env.state, "grant");
    assert_eq!(
        actions(&grants),
        ["requested", "pending", "issued", "revoked"],
        "{grants:?}"
    );
    assert_eq!(grants[0]["reason"], "fix order 42");
    let verify = Command::new(ENFORCER)
        .args(["audit", "verify", "--state"])
        .arg(&env.state)
        .output()
        .expect("audit verify");
    assert!(verify.status.success(), "{}", describe(&verify));
}

#[test]
fn grant_requests_are_forbidden_denied_or_timed_out_with_reasons() {
    let env = Env::new();
    let policy = grant_policy(&env, "policy", "2s", None);
    let cg = TestCgroup::new("grant-deny");
    let (_daemon, ready) = start_daemon(&env, &policy, &cg.path, "127.0.0.1:0");
    let admin = ready_field(&ready, "admin").to_owned();
    let ask = |access: &str| {
        workload(
            &cg,
            &admin,
            &[
                "grant",
                "request",
                "--resource",
                "orders-db",
                "--access",
                access,
                "--reason",
                "why not",
                "--wait",
            ],
        )
    };

    let forbidden = output_within(ask("ddl"), T);
    assert_eq!(forbidden.status.code(), Some(1), "{}", describe(&forbidden));
    assert!(String::from_utf8_lossy(&forbidden.stderr).contains("forbidden by no-ddl"));
    let nothing = output_within(ask("read"), T);
    assert_eq!(nothing.status.code(), Some(1), "{}", describe(&nothing));
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("no policy permits it"));
    let typo = output_within(ask("wirte"), T);
    assert!(!typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("read, write, ddl, admin"),
        "{}",
        describe(&typo)
    );

    let waiting = spawn_waiting(ask("write"));
    let approval = pending_approval(&admin, &env.state);
    let id = approval["id"].as_str().expect("id");
    let denied = operator(
        &admin,
        &env.state,
        &["approvals", "deny", id, "--reason", "not during the freeze"],
    );
    assert!(denied.status.success(), "{}", describe(&denied));
    let out = finish(waiting);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("denied: not during the freeze"),
        "{}",
        describe(&out)
    );
    let again = operator(&admin, &env.state, &["approvals", "approve", id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already denied"));

    // Nobody decides: the timeout denies.
    let started = Instant::now();
    let out = output_within(ask("write"), T);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no operator decided"),
        "{}",
        describe(&out)
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    let all = operator(
        &admin,
        &env.state,
        &["approvals", "list", "--all", "--json"],
    );
    let all: Vec<Value> = serde_json::from_slice(&all.stdout).expect("json");
    let statuses: Vec<&str> = all.iter().filter_map(|a| a["status"].as_str()).collect();
    assert!(
        statuses.contains(&"timed_out") && statuses.contains(&"denied"),
        "{statuses:?}"
    );
}

#[test]
fn an_approval_on_one_host_releases_a_request_waiting_on_another() {
    let env = Env::new();
    let pg = postgres::Postgres::start();
    let url = pg.database("enforcer");
    let policy = grant_policy(&env, "policy", "5m", None);
    let (state_a, state_b) = (env.path().join("state-a"), env.path().join("state-b"));
    let (cg_a, cg_b) = (TestCgroup::new("host-a"), TestCgroup::new("host-b"));
    let store = ["--store", url.as_str()];
    let any = "127.0.0.1:0";
    let (_a, ready_a) = start_daemon_with(&env, &policy, &cg_a.path, any, &state_a, &store);
    let (_b, ready_b) = start_daemon_with(&env, &policy, &cg_b.path, any, &state_b, &store);
    let admin_a = ready_field(&ready_a, "admin").to_owned();
    let admin_b = ready_field(&ready_b, "admin").to_owned();

    let waiting = spawn_waiting(workload(
        &cg_a,
        &admin_a,
        &[
            "grant",
            "request",
            "--resource",
            "orders-db",
            "--access",
            "write",
            "--reason",
            "shared store",
            "--wait",
            "--json",
        ],
    ));
    // Seen and decided through the other host.
    let approval = pending_approval(&admin_b, &state_b);
    let id = approval["id"].as_str().expect("id");
    let approved = operator(&admin_b, &state_b, &["approvals", "approve", id]);
    assert!(approved.status.success(), "{}", describe(&approved));
    let out = finish(waiting);
    assert!(out.status.success(), "{}", describe(&out));
    let granted: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(granted["status"], "active");
    // Each host's workload sees only its own grants.
    let mine = output_within(workload(&cg_b, &admin_b, &["grant", "list", "--json"]), T);
    let mine: Vec<Value> = serde_json::from_slice(&mine.stdout).expect("json");
    assert!(mine.is_empty(), "{mine:?}");
}
