//! The command line as a user meets it: policy check messages, audit verify on a tampered
//! log, help text. No root needed except where a workload runs.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::*;

const T: Duration = Duration::from_secs(60);

fn enforcer(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(ENFORCER);
    cmd.args(args);
    output_within(cmd, T)
}

#[test]
fn shipped_example_policies_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).expect("policies/") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            let out = enforcer(&["policy", "check", &path.display().to_string()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                describe(&out)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the example policies, found {checked}"
    );
}

#[test]
fn each_policy_error_class_gives_a_precise_message_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &str, &str)] = &[
        (
            "unknown key",
            "egress:\n  - name: a\n    to: [127.0.0.1]\n    prots: [80]\n",
            "p.yaml:4:5: unknown field `prots`",
        ),
        (
            "bad CIDR",
            "egress:\n  - name: a\n    to: [10.0.0.0/33]\n",
            "p.yaml:3:10: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            "host bits",
            "egress:\n  - name: a\n    to: [10.1.2.3/8]\n",
            "p.yaml:3:10: CIDR \"10.1.2.3/8\" has host bits set",
        ),
        (
            "duplicate",
            "egress:\n  - name: a\n    to: [10.0.0.0/8]\n  - name: a\n    to: [10.0.0.0/8]\n",
            "p.yaml:4:11: duplicate name \"a\"",
        ),
        (
            "no credential",
            "resources:\n  - name: db\n    protocol: postgres\n    addresses: [\"127.0.0.1:5432\"]\n",
            "p.yaml:2:11: resource \"db\" (postgres) has no credential source",
        ),
        (
            "bad port",
            "egress:\n  - name: a\n    to: [10.0.0.0/8]\n    ports: [99999]\n",
            "p.yaml:4:13: port 99999 is out of range",
        ),
        (
            "bad protocol",
            "resources:\n  - name: a\n    protocol: ftp\n    addresses: [\"127.0.0.1:21\"]\n",
            "p.yaml:3:15: unknown protocol \"ftp\"",
        ),
        (
            "bad address",
            "resources:\n  - name: a\n    protocol: http\n    addresses: [\"db:80\"]\n",
            "p.yaml:4:17: address \"db:80\" is not IP:port",
        ),
        ("broken yaml", "egress: [\n  {name: a\n", "p.yaml:"),
    ];
    for (what, yaml, expected) in cases {
        let case = dir.path().join(what.replace(' ', "-"));
        std::fs::create_dir(&case).expect("mkdir");
        std::fs::write(case.join("p.yaml"), yaml).expect("write");
        let out = enforcer(&["policy", "check", &case.display().to_string()]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("");
        let expected = format!("{}/{expected}", case.display());
        assert!(
            first.starts_with(&expected),
            "{what}: got {first:?}, want {expected:?}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    // Missing and empty directories are errors too.
    let out = enforcer(&["policy", "check", "/nonexistent/policy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read policy directory"),
        "{}",
        describe(&out)
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = enforcer(&["policy", "check", &empty.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no *.yaml file"),
        "{}",
        describe(&out)
    );
}

#[test]
fn audit_verify_detects_tampering_with_a_real_log() {
    let env = Env::new();
    let server = EchoServer::start("127.0.0.1");
    let policy = env.echo_policy(server.port());
    let client = env.tool("echo_client");
    let out = env.run(&policy, &[&client, &server.addr.to_string(), "3", "1"], T);
    assert!(out.status.success(), "{}", describe(&out));
    let out = env.run(
        &policy,
        &["python3", &env.tool("probe.py"), "denied", "127.0.0.3", "9"],
        T,
    );
    assert!(out.status.success(), "{}", describe(&out));

    let state = env.state.display().to_string();
    let out = enforcer(&["audit", "verify", "--state", &state]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("intact, 7 records"),
        "{}",
        describe(&out)
    );

    let audit = env.state.join("audit.jsonl");
    let original = std::fs::read_to_string(&audit).expect("read audit");
    let lines: Vec<&str> = original.lines().collect();
    let tamper = |text: String, expect_line: usize, expect: &str| {
        std::fs::write(&audit, text).expect("write");
        let out = enforcer(&["audit", "verify", "--state", &state]);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("audit.jsonl:{expect_line}: ")),
            "{stderr}"
        );
        assert!(stderr.contains(expect), "{stderr}");
    };
    // The denial, rewritten as an allow.
    let edited = original.replacen("\"decision\":\"deny\"", "\"decision\":\"allow\"", 1);
    let denied_line = lines
        .iter()
        .position(|l| l.contains("\"decision\":\"deny\""))
        .expect("deny")
        + 1;
    tamper(edited, denied_line, "was edited");
    // A record removed from the middle.
    let mut deleted = lines.clone();
    deleted.remove(2);
    tamper(deleted.join("\n") + "\n", 3, "deleted or reordered");
    // Two records swapped.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    tamper(swapped.join("\n") + "\n", 2, "deleted or reordered");
    // The last record cut off.
    tamper(
        lines[..lines.len() - 1].join("\n") + "\n",
        lines.len() - 1,
        "cut off the end",
    );
}

#[test]
fn help_teaches_every_command() {
    let out = enforcer(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "run",
        "daemon",
        "detach",
        "policy",
        "audit",
        "grant",
        "approvals",
        "sessions",
    ] {
        assert!(text.contains(command), "--help lacks {command}: {text}");
    }
    let out = enforcer(&["run", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--policy", "--state", "--user", "--admin", "Example:"] {
        assert!(text.contains(flag), "run --help lacks {flag}: {text}");
    }
    let out = enforcer(&["grant", "request", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--resource",
        "--access",
        "--ttl",
        "--uses",
        "--reason",
        "--wait",
    ] {
        assert!(
            text.contains(flag),
            "grant request --help lacks {flag}: {text}"
        );
    }
    let out = enforcer(&["run", "--policy", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a run without a command is a usage error"
    );
}

#[test]
fn policy_explain_names_the_deciding_policies_and_obligations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/ci-database-readonly");
    let dir = dir.display().to_string();
    let explain = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "explain",
            dir.as_str(),
            "--action",
            "grant:request",
        ];
        args.extend_from_slice(extra);
        enforcer(&args)
    };
    let out = explain(&[
        "--resource",
        "orders-db",
        "--context",
        r#"{"access": "write"}"#,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("decision: allow"), "{text}");
    assert!(
        text.contains("decided by: orders-write-needs-approval (")
            && text.contains("grants.cedar:"),
        "{text}"
    );
    assert!(
        text.contains("obligations: approval required; max ttl 15m"),
        "{text}"
    );

    let out = explain(&[
        "--resource",
        "orders-db",
        "--context",
        r#"{"access": "ddl"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("decision: deny") && text.contains("no-ddl-or-admin"),
        "{text}"
    );

    let out = explain(&[
        "--resource",
        "billing-db",
        "--principal",
        "github:repo:acme/shop",
        "--attr",
        "repository_owner=acme",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme-read"));

    let out = explain(&["--resource", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no resource \"nope\""));
    let out = explain(&["--resource", "orders-db", "--context", "[1]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a JSON object"));
}
