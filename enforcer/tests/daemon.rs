//! `enforcer daemon` on a cgroup managed by someone else: fail closed when the daemon dies,
//! resume on restart, metrics for SREs, detach as the only way out.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

const T: Duration = Duration::from_secs(60);

fn probe_in(cgroup: &TestCgroup, env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let probe = env.tool("probe.py");
    let mut all = vec![probe.as_str()];
    all.extend_from_slice(args);
    let out = output_within(cgroup.command("python3", &all), T);
    let lines = probe_lines(&out);
    assert!(
        !lines.is_empty(),
        "probe printed nothing: {}",
        describe(&out)
    );
    lines
}

#[test]
fn fail_closed_when_the_daemon_dies_resume_on_restart_detach_to_end() {
    let env = Env::new();
    let cgroup = TestCgroup::new("daemon");
    let server = EchoServer::start("127.0.0.1");
    let port = server.port().to_string();
    let policy = env.echo_policy(server.port());

    let (mut daemon, ready) = start_daemon(&env, &policy, &cgroup.path, "127.0.0.1:0");
    assert_eq!(ready_field(&ready, "resumed"), "false", "{ready}");
    let proxy = ready_field(&ready, "proxy").to_owned();
    let lines = probe_in(&cgroup, &env, &["echo", "127.0.0.1", &port, "10000"]);
    assert_eq!(lines[0]["intact"], true, "{lines:?}");
    assert_eq!(server.accepted(), 1);

    // kill -9: the programs stay pinned, so the workload is cut off, not let through.
    daemon.0.kill().expect("kill -9 daemon");
    daemon.0.wait().expect("reap daemon");
    for _ in 0..3 {
        let lines = probe_in(&cgroup, &env, &["denied", "127.0.0.1", &port]);
        assert_eq!(lines[0]["outcome"], "ConnectionRefusedError", "{lines:?}");
    }
    assert_eq!(
        server.accepted(),
        1,
        "a connection went direct while the daemon was dead"
    );

    // Restart: resumes the pinned programs on the same proxy port.
    let (daemon, ready) = start_daemon(&env, &policy, &cgroup.path, "127.0.0.1:0");
    assert_eq!(ready_field(&ready, "resumed"), "true", "{ready}");
    assert_eq!(ready_field(&ready, "proxy"), proxy, "{ready}");
    let lines = probe_in(&cgroup, &env, &["echo", "127.0.0.1", &port, "10000"]);
    assert_eq!(lines[0]["intact"], true, "{lines:?}");
    assert_eq!(server.accepted(), 2);

    // SIGTERM stops the daemon but does not detach either.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("sigterm");
    drop(daemon);
    let lines = probe_in(&cgroup, &env, &["denied", "127.0.0.1", &port]);
    assert_eq!(lines[0]["outcome"], "ConnectionRefusedError", "{lines:?}");

    // Detach is the way out: the same connection now goes direct, unrecorded.
    let decisions_before = env.decisions().len();
    let mut detach = Command::new(ENFORCER);
    detach
        .args(["detach", "--cgroup"])
        .arg(&cgroup.path)
        .arg("--bpffs")
        .arg(&env.bpffs);
    let out = output_within(detach, T);
    assert!(out.status.success(), "{}", describe(&out));
    let lines = probe_in(&cgroup, &env, &["echo", "127.0.0.1", &port, "100"]);
    assert_eq!(lines[0]["intact"], true, "{lines:?}");
    assert_eq!(server.accepted(), 3);
    assert_eq!(env.decisions().len(), decisions_before);
    assert!(!env.bpffs.join("enforcer").exists(), "pins left behind");
    let mut again = Command::new(ENFORCER);
    again
        .args(["detach", "--cgroup"])
        .arg(&cgroup.path)
        .arg("--bpffs")
        .arg(&env.bpffs);
    let out = output_within(again, T);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enforced"),
        "{}",
        describe(&out)
    );

    // The audit chain covers both daemon lifetimes and verifies.
    let mut verify = Command::new(ENFORCER);
    verify.args(["audit", "verify", "--state"]).arg(&env.state);
    let out = output_within(verify, T);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn metrics_are_valid_prometheus_and_count_kernel_denials() {
    let env = Env::new();
    let cgroup = TestCgroup::new("metrics");
    let server = EchoServer::start("127.0.0.1");
    let port = server.port().to_string();
    let policy = env.echo_policy(server.port());
    let (_daemon, ready) = start_daemon(&env, &policy, &cgroup.path, "127.0.0.1:0");
    let admin = ready_field(&ready, "admin").to_owned();

    probe_in(&cgroup, &env, &["echo", "127.0.0.1", &port, "5000"]);
    probe_in(&cgroup, &env, &["denied", "127.0.0.1", "9"]);
    // As root inside the cgroup (CAP_NET_RAW and all): only the kernel program stands
    // between it and a raw socket.
    let raw = probe_in(&cgroup, &env, &["raw"]);
    for line in raw.iter().filter(|l| l["probe"] != "sctp") {
        assert_eq!(
            line["outcome"], "PermissionError",
            "root got a raw socket: {line}"
        );
    }
    let udp = probe_in(&cgroup, &env, &["udp", "127.0.0.1", "9"]);
    assert!(
        udp.iter().all(|l| l["outcome"] == "PermissionError"),
        "{udp:?}"
    );

    let (status, health) = http_get(&admin, "/healthz");
    assert_eq!((status, health.as_str()), (200, "ok\n"));
    let (status, metrics) = http_get(&admin, "/metrics");
    assert_eq!(status, 200);
    let value = |needle: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in\n{metrics}"))
    };
    assert_eq!(
        value("enforcer_connections_total{route=\"egress\",decision=\"allow\",rule=\"echo\"}"),
        1.0
    );
    assert_eq!(
        value("enforcer_connections_total{route=\"deny\",decision=\"deny\",rule=\"\"}"),
        1.0
    );
    // raw ICMP, raw TCP, raw ICMPv6 (ping sockets are refused by ping_group_range first).
    assert!(
        value("enforcer_redirect_events_total{event=\"socket_denied\"}") >= 3.0,
        "{metrics}"
    );
    assert_eq!(
        value("enforcer_redirect_events_total{event=\"udp_denied\"}"),
        2.0
    );
    assert_eq!(
        value("enforcer_redirect_events_total{event=\"tcp_redirected\"}"),
        2.0
    );
    assert_eq!(
        value("enforcer_redirect_events_total{event=\"rekey_miss\"}"),
        0.0
    );
    assert_eq!(value("enforcer_orig_dst_lookup_misses_total"), 0.0);
    assert_eq!(value("enforcer_active_connections"), 0.0);
    assert_eq!(
        value("enforcer_relay_bytes_total{direction=\"to_upstream\"}"),
        5000.0
    );
    assert_eq!(value("enforcer_proxy_accept_latency_seconds_count"), 2.0);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) must be installed by `cargo xtask setup`");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{metrics}",
        describe(&out)
    );
}

#[test]
fn dns_goes_to_the_policy_resolver_or_nowhere() {
    let env = Env::new();
    let (_dnsmasq, dns_port) = start_dnsmasq(&env);
    let probe = env.tool("probe.py");
    // The workload hard-codes a resolver; its queries still go to the policy's one, and the
    // reply comes back looking like it came from the address it asked.
    let policy = env.policy(&format!("dns:\n  resolver: 127.0.0.1:{dns_port}\n"));
    let out = env.run(
        &policy,
        &["python3", &probe, "dns", "127.0.0.99", "agent.example.test"],
        T,
    );
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert_eq!(lines[0]["outcome"], "answered", "{}", describe(&out));
    assert_eq!(lines[0]["address"], "127.0.0.7", "{}", describe(&out));
    assert_eq!(lines[0]["id_matches"], true);
    assert_eq!(
        lines[0]["source"],
        serde_json::json!(["127.0.0.99", 53]),
        "reply address not restored"
    );

    // The same query from a socket carrying IP options never reaches the resolver: the
    // egress program drops packets with options (source routing would use them to steer a
    // packet past the rewritten address).
    let out = env.run(
        &policy,
        &[
            "python3",
            &probe,
            "dns-ipopts",
            "127.0.0.99",
            "agent.example.test",
        ],
        T,
    );
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert!(
        ["PermissionError", "TimeoutError"].contains(&lines[0]["outcome"].as_str().unwrap_or("")),
        "a packet with IP options got through: {}",
        describe(&out)
    );

    // Without a resolver in the policy, DNS is denied outright.
    let policy = env.policy("egress: []\n");
    let out = env.run(
        &policy,
        &["python3", &probe, "dns", "127.0.0.99", "agent.example.test"],
        T,
    );
    let lines = probe_lines(&out);
    assert_eq!(lines[0]["outcome"], "PermissionError", "{}", describe(&out));
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("udp port")
        .port()
}

/// dnsmasq on a free port (it also binds TCP on it, so a port taken there means another try).
fn start_dnsmasq(env: &Env) -> (Guard, u16) {
    for _ in 0..5 {
        let port = free_udp_port();
        let log = std::fs::File::create(env.path().join("dnsmasq.log")).expect("dnsmasq log");
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                &format!("--port={port}"),
                "--address=/agent.example.test/127.0.0.7",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq (Debian's dnsmasq-base) must be installed by `cargo xtask setup`");
        let guard = Guard(child);
        if answers(port) {
            return (guard, port);
        }
    }
    let log = std::fs::read_to_string(env.path().join("dnsmasq.log")).unwrap_or_default();
    panic!("dnsmasq did not answer on any port; its last words:\n{log}");
}

/// Whether the resolver answers a query sent straight to it (from outside the workload).
fn answers(port: u16) -> bool {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05agent\x07example\x04test\x00\x00\x01\x00\x01";
    let mut buf = [0u8; 512];
    for _ in 0..25 {
        let _ = socket.send_to(query, ("127.0.0.1", port));
        if socket.recv(&mut buf).is_ok() {
            return true;
        }
    }
    false
}
