//! The enforcement spine end to end, as root, on a real cgroup with real clients: every
//! connection of the workload is redirected into the proxy and decided by policy.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;

const T: Duration = Duration::from_secs(60);

fn egress_policy(env: &Env, ports: &[u16]) -> std::path::PathBuf {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    env.policy(&format!(
        "egress:\n  - name: loopback-echo\n    to: [127.0.0.0/8, \"::1/128\"]\n    ports: [{}]\n",
        ports.join(", ")
    ))
}

#[test]
fn allowed_egress_reaches_its_server_intact_for_every_client() {
    let env = Env::new();
    let v4 = EchoServer::start("127.0.0.1");
    let v6 = EchoServer::start_on(SocketAddr::new("::1".parse().expect("ip"), v4.port()));
    let port = v4.port().to_string();
    let policy = egress_policy(&env, &[v4.port()]);
    let probe = env.tool("probe.py");

    // python3: IPv4, a second loopback address, IPv4-mapped IPv6, native IPv6
    let mut targets = vec!["127.0.0.1", "::ffff:127.0.0.1"];
    if v6.is_some() {
        targets.push("::1");
    }
    for host in targets {
        let out = env.run(
            &policy,
            &["python3", &probe, "echo", host, &port, "300000"],
            T,
        );
        assert!(
            out.status.success(),
            "python3 to {host}: {}",
            describe(&out)
        );
        let lines = probe_lines(&out);
        assert_eq!(lines.len(), 1, "{}", describe(&out));
        assert_eq!(
            lines[0]["intact"],
            true,
            "data corrupted to {host}: {}",
            describe(&out)
        );
        assert_eq!(
            lines[0]["greeting"],
            port.as_str(),
            "wrong server for {host}"
        );
        // getpeername() shows the original destination, not the proxy.
        assert_eq!(
            lines[0]["peer"][1],
            v4.port(),
            "getpeername for {host}: {}",
            describe(&out)
        );
        let peer_ip = lines[0]["peer"][0].as_str().unwrap_or_default();
        assert!(
            peer_ip.ends_with(host.trim_start_matches("::ffff:")),
            "{peer_ip} vs {host}"
        );
    }

    // curl against a real HTTP server (python's http.server) on the same allowed rule
    let web = HttpServer::start(&env);
    let policy = egress_policy(&env, &[v4.port(), web.port]);
    let out = env.run(
        &policy,
        &[
            "curl",
            "-sS",
            "-m",
            "10",
            &format!("http://127.0.0.1:{}/file.bin", web.port),
        ],
        T,
    );
    assert!(out.status.success(), "curl: {}", describe(&out));
    assert_eq!(
        out.stdout, web.content,
        "curl got different bytes than the server has"
    );

    // nc (OpenBSD netcat), half-closing after stdin
    let out = env.run(
        &policy,
        &[
            "sh",
            "-c",
            &format!("printf 'netcat payload' | nc -N 127.0.0.1 {port}"),
        ],
        T,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{port}\nnetcat payload"),
        "{}",
        describe(&out)
    );

    // A Rust client (std::net)
    let client = env.tool("echo_client");
    let out = env.run(&policy, &[&client, &v4.addr.to_string(), "20", "4"], T);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok=20 mismatched=0 failed=0"),
        "{}",
        describe(&out)
    );

    // Every one of those went through the proxy and was recorded as allowed by the rule.
    let decisions = env.decisions();
    assert!(decisions.len() >= 4 + 20, "{decisions:#?}");
    for d in &decisions {
        assert_eq!(d["decision"], "allow", "{d}");
        assert_eq!(d["rule"], "loopback-echo", "{d}");
        assert_eq!(d["process"]["uid"], 65534, "workload runs as nobody: {d}");
    }
}

#[test]
fn denied_destination_fails_fast_and_the_log_names_the_process() {
    let env = Env::new();
    let allowed = EchoServer::start("127.0.0.1");
    let forbidden = EchoServer::start("127.0.0.2");
    let policy = egress_policy(&env, &[allowed.port()]);
    let probe = env.tool("probe.py");
    let port = forbidden.port().to_string();
    let out = env.run(
        &policy,
        &["python3", &probe, "denied", "127.0.0.2", &port],
        T,
    );
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    let line = &lines[0];
    assert!(
        ["ConnectionResetError", "ConnectionRefusedError", "eof"]
            .contains(&line["outcome"].as_str().unwrap_or("")),
        "{line}"
    );
    assert!(
        line["seconds"].as_f64().unwrap_or(99.0) < 1.0,
        "denial took too long: {line}"
    );
    assert_eq!(
        forbidden.accepted(),
        0,
        "the forbidden server must never see the workload"
    );

    let pid = line["pid"].as_u64().expect("pid");
    let denied: Vec<_> = env
        .log()
        .into_iter()
        .filter(|l| l["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    let entry = &denied[0];
    assert_eq!(entry["pid"], pid, "{entry}");
    assert_eq!(entry["comm"], "python3", "{entry}");
    assert_eq!(entry["uid"], 65534, "{entry}");
    assert_eq!(entry["orig_dst"], format!("127.0.0.2:{port}"), "{entry}");
    assert!(
        entry["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no resource or egress rule"),
        "{entry}"
    );
    assert!(
        entry["timestamp"].is_string() && entry["workload"].is_string(),
        "{entry}"
    );
}

#[test]
fn children_grandchildren_daemons_and_threads_are_all_redirected() {
    let env = Env::new();
    let server = EchoServer::start("127.0.0.1");
    let policy = egress_policy(&env, &[server.port()]);
    let probe = env.tool("probe.py");
    let out = env.run(
        &policy,
        &[
            "python3",
            &probe,
            "tree",
            "127.0.0.1",
            &server.port().to_string(),
        ],
        T,
    );
    let lines = probe_lines(&out);
    let labels: Vec<&str> = lines.iter().filter_map(|l| l["label"].as_str()).collect();
    for label in ["child", "grandchild", "daemon", "thread"] {
        assert!(labels.contains(&label), "no {label} in {}", describe(&out));
    }
    assert_eq!(lines.len(), 7, "{}", describe(&out));
    assert!(
        lines.iter().all(|l| l["intact"] == true),
        "{}",
        describe(&out)
    );
    // The proxy saw each of them with its own pid / tid.
    let decisions = env.decisions();
    assert_eq!(decisions.len(), 7, "{decisions:#?}");
    for line in &lines {
        let (pid, tid) = (&line["pid"], &line["tid"]);
        assert!(
            decisions
                .iter()
                .any(|d| d["process"]["pid"] == *pid && d["process"]["tid"] == *tid),
            "no decision for pid {pid} tid {tid}: {decisions:#?}"
        );
    }
}

#[test]
fn udp_raw_sockets_and_fast_open_never_go_direct() {
    let env = Env::new();
    let server = EchoServer::start("127.0.0.1");
    let policy = egress_policy(&env, &[server.port()]);
    let probe = env.tool("probe.py");
    let udp_target = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    udp_target.set_nonblocking(true).expect("nonblocking");
    let udp_port = udp_target.local_addr().expect("addr").port().to_string();

    let out = env.run(
        &policy,
        &["python3", &probe, "udp", "127.0.0.1", &udp_port],
        T,
    );
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 2, "{}", describe(&out));
    for line in &lines {
        assert_eq!(line["outcome"], "PermissionError", "{line}");
    }
    let mut buf = [0u8; 16];
    assert!(
        udp_target.recv(&mut buf).is_err(),
        "a UDP datagram got through"
    );

    let out = env.run(&policy, &["python3", &probe, "raw"], T);
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 5, "{}", describe(&out));
    for line in &lines {
        // SCTP may be missing from the kernel altogether (EPROTONOSUPPORT); never created.
        assert_ne!(line["outcome"], "created", "{line}");
        if line["probe"] != "sctp" {
            assert_eq!(line["outcome"], "PermissionError", "{line}");
        }
    }

    // TCP Fast Open: the implicit connect in sendto(MSG_FASTOPEN) is redirected too.
    let out = env.run(
        &policy,
        &[
            "python3",
            &probe,
            "tfo",
            "127.0.0.1",
            &server.port().to_string(),
        ],
        T,
    );
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert_eq!(lines[0]["outcome"], "connected", "{}", describe(&out));
    assert_eq!(lines[0]["intact"], true, "{}", describe(&out));
    let decisions = env.decisions();
    assert_eq!(
        decisions.len(),
        1,
        "fast open connect must be decided by the proxy: {decisions:#?}"
    );
    assert_eq!(decisions[0]["decision"], "allow");
}

#[test]
fn two_thousand_concurrent_connects_find_their_original_destination() {
    let env = Env::new();
    let servers: Vec<EchoServer> = (1..=8)
        .map(|i| EchoServer::start(&format!("127.0.0.{i}")))
        .collect();
    let ports: Vec<u16> = servers.iter().map(EchoServer::port).collect();
    let policy = egress_policy(&env, &ports);
    let targets: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    let client = env.tool("echo_client");
    let out = env.run(
        &policy,
        &[&client, &targets.join(","), "2000", "64"],
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("ok=2000 mismatched=0 failed=0"),
        "{}",
        describe(&out)
    );
    let decisions = env.decisions();
    assert_eq!(decisions.len(), 2000);
    let misses = decisions.iter().filter(|d| d["orig_dst"].is_null()).count();
    assert_eq!(misses, 0, "original-destination lookup misses");
    for (server, port) in servers.iter().zip(&ports) {
        assert_eq!(server.accepted(), 250, "server on port {port}");
    }
}

#[test]
fn workload_exit_status_and_cleanup() {
    let env = Env::new();
    let policy = env.policy("egress: []\n");
    let out = env.run(&policy, &["sh", "-c", "exit 7"], T);
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let out = env.run(&policy, &["sh", "-c", "kill -TERM $$"], T);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", describe(&out));
    let out = env.run(
        &policy,
        &[
            "sh",
            "-c",
            "id -u; grep -E '^(NoNewPrivs|CapEff)' /proc/self/status; \
             echo session=$(cut -d' ' -f6 /proc/$$/stat) pid=$$",
        ],
        T,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("65534\n"), "{text}");
    // Its own session: enforcer's terminal is not its controlling terminal.
    let session_line = text
        .lines()
        .find(|l| l.starts_with("session="))
        .unwrap_or_default();
    let (session, pid) = session_line
        .trim_start_matches("session=")
        .split_once(" pid=")
        .unwrap_or_default();
    assert_eq!(session, pid, "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    // Nothing left behind: no pins, no cgroup.
    assert!(!env.bpffs.join("enforcer").exists(), "pins left in bpffs");
    let root = enforcer::redirect::cgroup::find_cgroup2_root().expect("cgroup2");
    let leftovers: Vec<_> = std::fs::read_dir(root.join("enforcer"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        leftovers
            .iter()
            .all(|p| !p.ends_with(format!("run-{}", std::process::id()))),
        "{leftovers:?}"
    );
    // A nonexistent command is a clear error, not a hang.
    let out = env.run(&policy, &["/nonexistent/agent"], T);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot start"),
        "{}",
        describe(&out)
    );
    // Root is refused.
    let out = env.run(&policy, &["true"], T);
    assert!(out.status.success());
    let mut cmd = std::process::Command::new(ENFORCER);
    cmd.args(["run", "--user", "root", "--policy"])
        .arg(&policy)
        .args(["--", "true"]);
    let out = output_within(cmd, T);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must not run as root"),
        "{}",
        describe(&out)
    );
}

#[test]
fn signals_are_passed_on_to_the_workload() {
    let env = Env::new();
    let policy = env.policy("egress: []\n");
    let mut child = std::process::Command::new(ENFORCER)
        .arg("run")
        .arg("--policy")
        .arg(&policy)
        .arg("--state")
        .arg(&env.state)
        .arg("--bpffs")
        .arg(&env.bpffs)
        .args(["--admin", "127.0.0.1:0", "--", "sh", "-c"])
        .arg("trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.1; done")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("enforcer run");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal enforcer");
    let status = child.wait().expect("wait");
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("read");
    assert_eq!(line, "got TERM\n");
    assert_eq!(
        status.code(),
        Some(42),
        "enforcer exits with the workload's status"
    );
}

#[test]
fn a_resource_is_routed_to_its_handler_and_relayed_to_its_upstream() {
    let env = Env::new();
    // The workload asks for 127.0.0.9:<port>; the resource sends it to the real server.
    let real = EchoServer::start("127.0.0.1");
    let asked = free_port();
    let policy = env.policy(&format!(
        "resources:\n  - name: internal-api\n    protocol: http\n    addresses: [\"127.0.0.9:{asked}\"]\n    upstream: \"{}\"\n",
        real.addr
    ));
    let out = env.run(
        &policy,
        &[
            "python3",
            &env.tool("probe.py"),
            "echo",
            "127.0.0.9",
            &asked.to_string(),
            "5000",
        ],
        T,
    );
    let lines = probe_lines(&out);
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert_eq!(lines[0]["intact"], true, "{}", describe(&out));
    assert_eq!(
        lines[0]["greeting"],
        real.port().to_string(),
        "{}",
        describe(&out)
    );
    assert_eq!(real.accepted(), 1);
    let decisions = env.decisions();
    assert_eq!(decisions.len(), 1, "{decisions:#?}");
    assert_eq!(decisions[0]["route"], "resource");
    assert_eq!(decisions[0]["rule"], "internal-api");
    assert_eq!(decisions[0]["orig_dst"], format!("127.0.0.9:{asked}"));
}
