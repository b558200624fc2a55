//! `cargo xtask bench`: enforcer against its baseline (the same client, same server, no
//! enforcer) in one run, release builds, loopback only. Prints a table with the targets from
//! the spine issue.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{cargo, exec, root, setup};

/// Greets with its port, then reads and discards until the client closes.
fn start_sink() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    // std listens with a backlog of 128: a connect loop would overflow it and measure SYN
    // retransmits instead of connects. Listening again only raises the backlog.
    // SAFETY: a valid listening socket fd.
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                if stream
                    .write_all(format!("{}\n", addr.port()).as_bytes())
                    .is_err()
                {
                    return;
                }
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

struct Bench {
    enforcer: PathBuf,
    client: PathBuf,
    dir: PathBuf,
    policy: PathBuf,
}

impl Bench {
    fn direct(&self, args: &[String]) -> Result<String> {
        output(Command::new(&self.client).args(args))
    }

    /// `key` from the same client run without and with enforcer.
    fn both(&self, args: &[String], key: &str) -> Result<(f64, f64)> {
        Ok((
            field(&self.direct(args)?, key)?,
            field(&self.enforced(args)?, key)?,
        ))
    }

    fn enforced(&self, args: &[String]) -> Result<String> {
        output(
            Command::new(&self.enforcer)
                .arg("run")
                .arg("--policy")
                .arg(&self.policy)
                .arg("--state")
                .arg(self.dir.join("state"))
                .args(["--admin", "127.0.0.1:0", "--"])
                .arg(&self.client)
                .args(args),
        )
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field(text: &str, key: &str) -> Result<f64> {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .with_context(|| format!("no {key} in {text:?}"))
}

pub fn run(only: &[String]) -> Result<()> {
    const KINDS: [&str; 8] = [
        "connect",
        "latency",
        "throughput",
        "memory",
        "grants",
        "postgres",
        "postgres-masking",
        "kubernetes",
    ];
    if let Some(bad) = only.iter().find(|o| !KINDS.contains(&o.as_str())) {
        bail!(
            "unknown measurement {bad:?}; choose from {}",
            KINDS.join(", ")
        );
    }
    setup::run()?;
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "enforcer",
        "--bin",
        "enforcer",
        "--example",
        "bench_client",
        "--example",
        "bench_grants",
        "--example",
        "kube_double",
        "--example",
        "bench_kube",
    ]))?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let dir = std::env::temp_dir().join(format!("enforcer-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("policy"))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let client = dir.join("bench_client");
    std::fs::copy(target.join("release/examples/bench_client"), &client)?;
    let wanted = |kind: &str| only.is_empty() || only.iter().any(|o| o == kind);
    if wanted("grants") {
        grants(&target.join("release/examples/bench_grants"))?;
    }
    if wanted("kubernetes") {
        let programs = crate::bench_kube::Programs {
            enforcer: target.join("release/enforcer"),
            double: target.join("release/examples/kube_double"),
            client: target.join("release/examples/bench_kube"),
        };
        let result = crate::bench_kube::run(&programs, &dir);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result?;
    }
    // `postgres-masking` is the wide result alone (a minute, not ten); `postgres` has it too.
    let masking_only = only.iter().any(|o| o == "postgres-masking");
    if wanted("postgres") || masking_only {
        let pgbench = only.is_empty() || only.iter().any(|o| o == "postgres");
        let result = crate::bench_pg::run(&target.join("release/enforcer"), &dir, pgbench);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result?;
    }
    let network = ["connect", "latency", "throughput", "memory"]
        .iter()
        .any(|k| wanted(k));
    if !network {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let result = bench(
        Bench {
            enforcer: target.join("release/enforcer"),
            client,
            policy: dir.join("policy"),
            dir: dir.clone(),
        },
        &wanted,
    );
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(b: Bench, wanted: &dyn Fn(&str) -> bool) -> Result<()> {
    let sink = start_sink()?;
    std::fs::write(
        b.policy.join("bench.yaml"),
        format!(
            "egress:\n  - name: sink\n    to: [127.0.0.1/32]\n    ports: [{}]\n",
            sink.port()
        ),
    )?;
    let t = sink.to_string();
    let mut rows = Vec::new();

    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if wanted("connect") {
        eprintln!("bench: connect()+close() rate, 5 s, 4 threads");
        let (direct, enforced) = b.both(&args(&["connect", &t, "5", "4"]), "connects_per_sec")?;
        rows.push(row(
            "connect()+close() per second",
            direct,
            enforced,
            format!("{:.2}x", enforced / direct),
            "≥ 0.9x",
            enforced / direct >= 0.9,
        ));
    }

    if wanted("latency") {
        eprintln!("bench: connection setup latency (connect + first byte), 2000 sequential");
        let d = b.direct(&args(&["latency", &t, "2000"]))?;
        let e = b.enforced(&args(&["latency", &t, "2000"]))?;
        let (d50, e50) = (field(&d, "p50_us")?, field(&e, "p50_us")?);
        let (d99, e99) = (field(&d, "p99_us")?, field(&e, "p99_us")?);
        rows.push(row(
            "setup latency p50 (µs)",
            d50,
            e50,
            format!("+{:.0} µs", e50 - d50),
            "≤ +100 µs",
            e50 - d50 <= 100.0,
        ));
        rows.push(row(
            "setup latency p99 (µs)",
            d99,
            e99,
            format!("+{:.0} µs", e99 - d99),
            "-",
            true,
        ));
    }

    if wanted("throughput") {
        eprintln!("bench: relay throughput, 1 GiB on one connection");
        let gib = (1u64 << 30).to_string();
        let (direct, enforced) = b.both(&args(&["throughput", &t, &gib]), "mib_per_sec")?;
        rows.push(row(
            "relay throughput (MiB/s)",
            direct,
            enforced,
            format!("{:.2}x", enforced / direct),
            "≥ 0.8x",
            enforced / direct >= 0.8,
        ));
    }

    if wanted("memory") {
        eprintln!("bench: daemon RSS idle and with 1,000 idle connections");
        let (idle, loaded) = rss(&b, sink)?;
        let per_conn = (loaded - idle) / 1000.0;
        rows.push(row(
            "daemon RSS idle (MiB)",
            f64::NAN,
            idle / 1024.0,
            String::new(),
            "≤ 32 MiB",
            idle / 1024.0 <= 32.0,
        ));
        rows.push(row(
            "RSS per idle connection (KiB)",
            f64::NAN,
            per_conn,
            String::new(),
            "≤ 64 KiB",
            per_conn <= 64.0,
        ));
    }

    println!("\n| measurement | without enforcer | with enforcer | change | target | met |");
    println!("|---|---:|---:|---:|---|---|");
    for r in &rows {
        println!("{r}");
    }
    Ok(())
}

fn row(what: &str, direct: f64, enforced: f64, change: String, target: &str, met: bool) -> String {
    let direct = if direct.is_nan() {
        "-".to_owned()
    } else {
        format!("{direct:.0}")
    };
    format!(
        "| {what} | {direct} | {enforced:.1} | {change} | {target} | {} |",
        if met { "yes" } else { "NO" }
    )
}

/// RSS of `enforcer daemon` (KiB) idle and holding 1,000 idle relayed connections.
fn rss(b: &Bench, sink: SocketAddr) -> Result<(f64, f64)> {
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
        .context("no cgroup v2")?;
    let cgroup = root.join(format!("enforcer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cgroup)?;
    let result = rss_in(b, sink, &cgroup);
    let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
    thread::sleep(Duration::from_millis(200));
    let _ = Command::new(&b.enforcer)
        .arg("detach")
        .arg("--cgroup")
        .arg(&cgroup)
        .status();
    let _ = std::fs::remove_dir(&cgroup);
    result
}

fn rss_in(b: &Bench, sink: SocketAddr, cgroup: &Path) -> Result<(f64, f64)> {
    let mut daemon = Command::new(&b.enforcer)
        .arg("daemon")
        .arg("--policy")
        .arg(&b.policy)
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--state")
        .arg(b.dir.join("state-daemon"))
        .args(["--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    BufReader::new(daemon.stdout.take().context("stdout")?).read_line(&mut ready)?;
    let pid = daemon.id();
    let measure = || -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")
    };
    thread::sleep(Duration::from_secs(1));
    let idle = measure()?;
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            cgroup.display()
        ))
        .arg("sh")
        .arg(&b.client)
        .args(["hold", &sink.to_string(), "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(holder.stdout.take().context("stdout")?).read_line(&mut line)?;
    if line.trim() != "held=1000" {
        bail!("holder said {line:?}");
    }
    thread::sleep(Duration::from_secs(1));
    let loaded = measure()?;
    drop(holder.stdin.take());
    let _ = holder.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();
    Ok((idle, loaded))
}

/// The grant path, measured in-process on the default store (see examples/bench_grants.rs).
fn grants(program: &Path) -> Result<()> {
    eprintln!("bench: grants (Cedar decisions, grant checks, issuance, approval round trip)");
    let text = output(&mut Command::new(program))?;
    let f = |key: &str| field(&text, key);
    println!("\n| grant path | p50 | p99 / rate | target | met |");
    println!("|---|---:|---:|---|---|");
    let (d50, d99) = (f("decision_p50_us")?, f("decision_p99_us")?);
    println!("| Cedar decision (grant:request, 3 policies) | {d50:.1} µs | {d99:.1} µs | - | - |");
    let (c50, c99) = (f("check_p50_us")?, f("check_p99_us")?);
    println!(
        "| grant check, hot path (uncounted grant) | {c50:.2} µs | {c99:.2} µs | <= 10 µs p50 | {} |",
        if c50 <= 10.0 { "yes" } else { "NO" }
    );
    println!(
        "| grant check, counted grant (takes a use in the store) | {:.0} µs | - | - | - |",
        f("counted_check_p50_us")?
    );
    println!(
        "| grant issuance (auto-approved, stored + audited) | - | {:.0} /s | - | - |",
        f("issued_per_sec")?
    );
    println!(
        "| approval round trip (request → approve → waiter released) | {:.0} µs | - | - | - |",
        f("approval_round_trip_p50_us")?
    );
    Ok(())
}
