//! `cargo xtask bench kubernetes`: a kubectl-equivalent request loop (`get pods`, 100 pods, as
//! a Table) and lists of 1,000 Secrets, straight to the API-server double and through
//! enforcer (TLS terminated and re-originated, each request decided and recorded, Secrets
//! redacted); ConfigMap lists of the same size through enforcer show the pass-through cost.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

fn field(text: &str, key: &str) -> Result<f64> {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .with_context(|| format!("no {key} in {text:?}"))
}

pub struct Programs {
    pub enforcer: PathBuf,
    pub double: PathBuf,
    pub client: PathBuf,
}

pub fn run(p: &Programs, dir: &Path) -> Result<()> {
    let mut double = Command::new(&p.double)
        .args(["100", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("kube_double")?;
    let mut line = String::new();
    BufReader::new(double.stdout.take().context("double stdout")?).read_line(&mut line)?;
    let port = field(&line, "port")? as u16;
    let double_ca = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("ca="))
        .context("no ca")?
        .to_owned();
    let result = measure(p, dir, port, &double_ca);
    drop(double.stdin.take());
    let _ = double.kill();
    let _ = double.wait();
    result
}

fn measure(p: &Programs, dir: &Path, port: u16, double_ca: &str) -> Result<()> {
    let policy = dir.join("k8s-policy");
    std::fs::create_dir_all(&policy)?;
    let token = dir.join("k8s-token");
    std::fs::write(&token, "bench-token\n")?;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(
        policy.join("cluster.yaml"),
        format!(
            "resources:\n  - name: cluster\n    protocol: kubernetes\n    addresses: [\"127.0.0.1:{port}\"]\n    credential: {{file: {}}}\n    upstream_tls: {{ca: {double_ca}}}\n",
            token.display()
        ),
    )?;
    std::fs::write(
        policy.join("cluster.cedar"),
        "permit (principal, action in [Enforcer::Action::\"k8s:get\", Enforcer::Action::\"k8s:list\"], resource);\n",
    )?;
    let state = dir.join("k8s-state");
    // Creates enforcer's CA, which the enforced client (running as nobody) must trust.
    let out = Command::new(&p.enforcer)
        .args(["kubeconfig", "--resource", "cluster", "--policy"])
        .arg(&policy)
        .arg("--state")
        .arg(&state)
        .output()?;
    if !out.status.success() {
        bail!(
            "enforcer kubeconfig: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let enforcer_ca = dir.join("enforcer-ca.pem");
    std::fs::copy(state.join("ca.pem"), &enforcer_ca)?;
    std::fs::set_permissions(&enforcer_ca, std::fs::Permissions::from_mode(0o644))?;
    let client = dir.join("bench_kube");
    std::fs::copy(&p.client, &client)?;
    let url = format!("https://127.0.0.1:{port}");
    let run = |enforced: bool, path: &str, accept: &str, count: &str| -> Result<String> {
        let mut cmd = if enforced {
            let mut c = Command::new(&p.enforcer);
            c.arg("run")
                .arg("--policy")
                .arg(&policy)
                .arg("--state")
                .arg(&state)
                .args(["--admin", "127.0.0.1:0", "--"])
                .arg(&client);
            c
        } else {
            Command::new(&client)
        };
        let ca = if enforced {
            enforcer_ca.display().to_string()
        } else {
            double_ca.to_owned()
        };
        let out = cmd
            .args([url.as_str(), ca.as_str(), path, accept, count])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!(
                "bench_kube failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    eprintln!("bench: kubernetes get pods (100, Table) x 2000, direct and through enforcer");
    let pods = "/api/v1/namespaces/default/pods?limit=500";
    let direct = run(false, pods, TABLE, "2000")?;
    let enforced = run(true, pods, TABLE, "2000")?;
    let (d50, e50) = (field(&direct, "p50_us")?, field(&enforced, "p50_us")?);
    let (d99, e99) = (field(&direct, "p99_us")?, field(&enforced, "p99_us")?);
    println!("\n| kubernetes | direct | through enforcer | change | target | met |");
    println!("|---|---:|---:|---:|---|---|");
    println!(
        "| get pods (100, Table) p50 µs | {d50:.0} | {e50:.0} | +{:.0} µs | ≤ +1000 µs | {} |",
        e50 - d50,
        if e50 - d50 <= 1000.0 { "yes" } else { "NO" }
    );
    println!(
        "| get pods p99 µs | {d99:.0} | {e99:.0} | +{:.0} µs | - | - |",
        e99 - d99
    );
    // Lists are read in turns, three rounds, each figure the median: one sample per
    // configuration moves by tens of percent on a shared machine.
    let secrets = "/api/v1/namespaces/default/secrets";
    let configmaps = "/api/v1/namespaces/default/configmaps";
    let configurations = [
        ("Secrets, direct", false, secrets),
        ("Secrets, through enforcer (redacted)", true, secrets),
        ("ConfigMaps, direct", false, configmaps),
        (
            "ConfigMaps, through enforcer (pass-through)",
            true,
            configmaps,
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); configurations.len()];
    for round in 1..=3 {
        for (i, (name, enforced, path)) in configurations.iter().enumerate() {
            eprintln!("bench: round {round}/3: list 1,000 {name} x 50");
            let out = run(*enforced, path, "application/json", "50")?;
            rates[i].push(field(&out, "per_sec")?);
        }
    }
    let [sd, sr, cd, cp] = [0, 1, 2, 3].map(|i| {
        let mut all = rates[i].clone();
        all.sort_by(f64::total_cmp);
        all.get(all.len() / 2).copied().unwrap_or(f64::NAN)
    });
    println!(
        "| list 1,000 Secrets per second (redacted) | {sd:.1} | {sr:.1} | {:.2}x direct | - | - |",
        sr / sd
    );
    println!(
        "| list 1,000 ConfigMaps per second (pass-through) | {cd:.1} | {cp:.1} | {:.2}x direct | - | - |",
        cp / cd
    );
    println!(
        "| redacted Secrets vs pass-through ConfigMaps, through enforcer | - | - | {:.2}x | - | - |",
        sr / cp
    );
    Ok(())
}
