//! Workload identity from a real OIDC provider (npm `oidc-provider`, pinned in tests/oidc with
//! its lockfile, installed by `cargo xtask setup`), verified by `enforcer run --identity-token`.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::*;

const T: Duration = Duration::from_secs(60);

/// The provider on a free loopback port; killed on drop.
fn start_provider() -> (Guard, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "oidc-provider is not installed in {}: run `cargo xtask setup`",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg("provider.js")
        .arg(free_port().to_string())
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node (the machine's Node.js) runs the OIDC provider");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let issuer = line
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("provider said {line:?}"))
        .trim()
        .to_owned();
    (Guard(child), issuer)
}

/// A token from the provider's token endpoint, as a CI job would get one.
fn issue_token(issuer: &str) -> String {
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "-u",
        "ci:ci-secret",
        "-d",
        "grant_type=client_credentials",
        "-d",
        "resource=urn:enforcer",
    ])
    .arg(format!("{issuer}/token"));
    let out = output_within(curl, T);
    let body: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {body}"))
        .to_owned()
}

#[test]
fn a_token_from_a_real_oidc_provider_identifies_the_workload() {
    let env = Env::new();
    let (_provider, issuer) = start_provider();
    let server = EchoServer::start("127.0.0.1");
    let policy = env.policy(&format!(
        "identity_providers:\n  - name: ci\n    issuer: \"{issuer}\"\n    audience: enforcer\n    algorithms: [ES256]\n    claims: [repository, workflow, actor, ref]\n\
         egress:\n  - name: echo\n    to: [127.0.0.1/32]\n    ports: [{}]\n",
        server.port()
    ));
    let token_file = env.path().join("id-token");
    std::fs::write(&token_file, issue_token(&issuer)).expect("write token");
    let token_arg = token_file.display().to_string();

    let (probe, port) = (env.tool("probe.py"), server.port().to_string());
    let echo = |options: &[&str]| {
        let out = env.run_with(
            &policy,
            options,
            &["python3", &probe, "echo", "127.0.0.1", &port, "100"],
            T,
        );
        assert!(out.status.success(), "{}", describe(&out));
    };
    echo(&["--identity-token", &token_arg]);
    let decisions = env.decisions();
    assert_eq!(decisions.len(), 1, "{decisions:#?}");
    let d = &decisions[0];
    assert_eq!(d["principal"], "ci:ci", "{d}");
    assert_eq!(
        d["attributes"],
        serde_json::json!({"repository": "acme/shop", "workflow": "deploy", "actor": "octo", "ref": "refs/heads/main"}),
        "{d}"
    );

    // Without a token the principal is the local run.
    echo(&[]);
    let decisions = env.decisions();
    assert_eq!(decisions[1]["principal"], "local", "{decisions:#?}");
    assert!(decisions[1].get("attributes").is_none());

    // A tampered token is refused before anything is attached or run.
    let token = std::fs::read_to_string(&token_file).expect("token");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    std::fs::write(&token_file, parts.join(".")).expect("write");
    let out = env.run_with(&policy, &["--identity-token", &token_arg], &["true"], T);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("identity token") && stderr.contains("refused"),
        "{stderr}"
    );
    assert_eq!(
        env.decisions().len(),
        2,
        "nothing ran for the refused token"
    );
}
