//! `cargo xtask bench postgres`: pgbench through enforcer (statement classification, Cedar
//! decision, masking and recording all on) side by side, in one run, with the same pgbench
//! straight to PostgreSQL, through haproxy in TCP mode and through pgbouncer; and the cost
//! of masking a wide result.

use std::{
    net::TcpStream,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    exec,
    pg::{PG_BIN, Postgres, free_port},
    setup,
};

const SECRET: &str = "bench-secret";
const SECONDS: &str = "10";
const ROUNDS: usize = 3;
/// The wide result's runs are short (about a second each): more rounds steady its medians.
const WIDE_ROUNDS: usize = 7;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

/// One pgbench run's figures.
struct Run {
    tps: f64,
    /// Median transaction latency (µs), from pgbench's per-transaction log.
    p50_us: f64,
    /// Mean latency (ms) as pgbench reports it.
    latency_ms: f64,
}

struct Setup<'a> {
    enforcer: &'a Path,
    dir: &'a Path,
}

impl Setup<'_> {
    /// pgbench with `args` against `port`, directly or under `enforcer run` with `policy`.
    fn pgbench(&self, port: u16, args: &[&str], policy: Option<&Path>) -> Result<Run> {
        let logs = self.dir.join(format!("logs-{}", rand_suffix()));
        std::fs::create_dir_all(&logs)?;
        std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777))?;
        let prefix = logs.join("tx");
        // A fresh state directory per run: one run's session records and audit log do not
        // weigh on the next.
        let state = self.dir.join(format!("state-{}", rand_suffix()));
        let mut cmd = match policy {
            Some(policy) => {
                let mut c = Command::new(self.enforcer);
                c.arg("run")
                    .arg("--policy")
                    .arg(policy)
                    .arg("--state")
                    .arg(&state)
                    .args(["--admin", "127.0.0.1:0", "--"])
                    .arg(format!("{PG_BIN}/pgbench"));
                c
            }
            None => Command::new(format!("{PG_BIN}/pgbench")),
        };
        cmd.args([
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
        ])
        .arg("-l")
        .arg(format!("--log-prefix={}", prefix.display()))
        .args(args)
        .arg("bench")
        .env(
            "PGPASSWORD",
            if policy.is_some() { "stale" } else { SECRET },
        )
        // Plaintext on loopback for every contender alike.
        .env("PGSSLMODE", "disable")
        .current_dir(&logs)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
        let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("{cmd:?} failed: {text}");
        }
        let number = |prefix: &str| -> Result<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no {prefix:?} in pgbench output: {text}"))
        };
        let mut latencies = Vec::new();
        for entry in std::fs::read_dir(&logs)? {
            let log = std::fs::read_to_string(entry?.path())?;
            latencies.extend(
                log.lines()
                    .filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok()),
            );
        }
        latencies.sort_by(f64::total_cmp);
        let _ = std::fs::remove_dir_all(&logs);
        let _ = std::fs::remove_dir_all(&state);
        Ok(Run {
            tps: number("tps = ")?,
            p50_us: latencies
                .get(latencies.len() / 2)
                .copied()
                .unwrap_or(f64::NAN),
            latency_ms: number("latency average = ")?,
        })
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn haproxy(dir: &Path, pg: u16) -> Result<(Killed, u16)> {
    let port = free_port("127.0.0.1")?;
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1m\n  timeout server 1m\nlisten pg\n  bind 127.0.0.1:{port}\n  server db 127.0.0.1:{pg}\n"
        ),
    )?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("haproxy")?;
    let child = Killed(child);
    wait_listening(port)?;
    Ok((child, port))
}

fn pgbouncer(dir: &Path, pg: u16) -> Result<(Killed, u16)> {
    let port = free_port("127.0.0.1")?;
    let bouncer = dir.join("pgbouncer");
    std::fs::create_dir_all(&bouncer)?;
    std::fs::write(
        bouncer.join("userlist.txt"),
        format!("\"app\" \"{SECRET}\"\n"),
    )?;
    let ini = bouncer.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\nbench = host=127.0.0.1 port={pg} dbname=bench\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 20\nlogfile = {log}\npidfile = {pid}\n",
            users = bouncer.join("userlist.txt").display(),
            log = bouncer.join("pgbouncer.log").display(),
            pid = bouncer.join("pgbouncer.pid").display(),
        ),
    )?;
    exec(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&bouncer),
    )?;
    // pgbouncer refuses to run as root. Started as the postgres user directly, not through
    // runuser: killing runuser would leave pgbouncer running after the bench.
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .context("the postgres user's ids")
    };
    let child = Command::new("pgbouncer")
        .arg(&ini)
        .uid(id("-u")?)
        .gid(id("-g")?)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("pgbouncer")?;
    let child = Killed(child);
    wait_listening(port)?;
    Ok((child, port))
}

fn policy(dir: &Path, name: &str, pg: u16, masking: &str) -> Result<PathBuf> {
    let policy = dir.join(name);
    std::fs::create_dir_all(&policy)?;
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET)?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(
        policy.join("bench.yaml"),
        format!(
            "resources:\n  - name: bench\n    protocol: postgres\n    addresses: [\"127.0.0.1:{pg}\"]\n    credential: {{file: {}, username: app}}\n{masking}",
            secret.display()
        ),
    )?;
    std::fs::write(
        policy.join("bench.cedar"),
        "permit (principal, action == Enforcer::Action::\"sql:read\", resource);\n",
    )?;
    Ok(policy)
}

/// The whole comparison; with `pgbench: false`, the wide result alone.
pub fn run(enforcer: &Path, dir: &Path, pgbench: bool) -> Result<()> {
    setup::install(&["haproxy", "pgbouncer"])?;
    eprintln!("bench: PostgreSQL with pgbench -s 10 and a 10-column, 100,000-row table");
    let pg = Postgres::start(dir, "-c max_connections=200 -c shared_buffers=256MB")?;
    pg.psql("postgres", "CREATE DATABASE bench")?;
    pg.app_role(SECRET)?;
    exec(
        Command::new(format!("{PG_BIN}/pgbench"))
            .args(["-i", "-q", "-s", "10", "-h"])
            .arg(pg.socket_dir())
            .args(["-p", &pg.port.to_string(), "-U", "postgres", "bench"]),
    )?;
    pg.psql(
        "bench",
        "CREATE TABLE wide AS SELECT i AS id, 'Customer ' || i AS name,
            'user' || i || '@example.com' AS email, '4111 1111 1111 1111' AS card,
            md5(i::text) AS token, 'plain note ' || i AS note, (i * 7)::text AS amount,
            'Street ' || i AS street, 'City ' || (i % 100) AS city, now()::text AS created
          FROM generate_series(1, 100000) i;
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO app;",
    )?;
    // Masking on as a production policy would have it: every detector, and a column rule
    // (which makes enforcer name each result column's table through the catalog).
    let masked = policy(
        dir,
        "masked",
        pg.port,
        "    masking:\n      columns: [\"wide.card\", \"pgbench_accounts.filler\"]\n      strategy: partial\n",
    )?;
    let unmasked = policy(
        dir,
        "unmasked",
        pg.port,
        "    masking:\n      detectors: []\n",
    )?;
    let columns_only = policy(
        dir,
        "columns-only",
        pg.port,
        "    masking:\n      columns: [\"wide.card\", \"wide.email\"]\n      detectors: []\n      strategy: partial\n",
    )?;
    let s = Setup { enforcer, dir };
    if pgbench {
        compare_pgbench(&s, pg.port, &masked)?;
    }
    wide_result(&s, pg.port, [&unmasked, &masked, &columns_only])
}

/// pgbench -S at 8 and 1 clients: direct, through haproxy, pgbouncer and enforcer.
fn compare_pgbench(s: &Setup, pg: u16, masked: &Path) -> Result<()> {
    let (_haproxy, haproxy_port) = haproxy(s.dir, pg)?;
    let (_bouncer, bouncer_port) = pgbouncer(s.dir, pg)?;
    // One sample per contender says little on a shared machine (neighbours' load moves
    // every figure by tens of percent): contenders take turns, round after round, and each
    // figure is the median of its rounds.
    let contenders = [
        ("direct", pg, None),
        ("haproxy (TCP)", haproxy_port, None),
        ("pgbouncer (session)", bouncer_port, None),
        ("enforcer", pg, Some(masked)),
    ];
    let mut samples: Vec<(&str, &str, Vec<Run>)> = Vec::new();
    for round in 1..=ROUNDS {
        for clients in ["8", "1"] {
            let args = [
                "-S",
                "-T",
                SECONDS,
                "-c",
                clients,
                "-j",
                if clients == "1" { "1" } else { "2" },
            ];
            for (name, port, policy) in contenders {
                eprintln!("bench: round {round}/{ROUNDS}: pgbench -S -c {clients}: {name}");
                let run = s.pgbench(port, &args, policy)?;
                match samples
                    .iter_mut()
                    .find(|(c, n, _)| *c == clients && *n == name)
                {
                    Some((_, _, runs)) => runs.push(run),
                    None => samples.push((clients, name, vec![run])),
                }
            }
        }
    }
    println!(
        "\n| pgbench -S ({SECONDS} s, median of {ROUNDS} rounds) | clients | TPS | TPS per round | p50 latency (µs) |"
    );
    println!("|---|---:|---:|---|---:|");
    let mut results = Vec::new();
    for (clients, name, runs) in &samples {
        let tps = median(runs.iter().map(|r| r.tps));
        let p50 = median(runs.iter().map(|r| r.p50_us));
        let each: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.tps)).collect();
        println!(
            "| {name} | {clients} | {tps:.0} | {} | {p50:.0} |",
            each.join(" / ")
        );
        results.push((*clients, *name, tps, p50));
    }
    let get = |c: &str, n: &str| {
        results
            .iter()
            .find(|(cc, nn, _, _)| *cc == c && *nn == n)
            .map(|(_, _, tps, p50)| (*tps, *p50))
    };
    if let (Some(e8), Some(h8), Some(d8), Some(e1), Some(d1)) = (
        get("8", "enforcer"),
        get("8", "haproxy (TCP)"),
        get("8", "direct"),
        get("1", "enforcer"),
        get("1", "direct"),
    ) {
        let vs_haproxy = e8.0 / h8.0;
        let vs_direct = e8.0 / d8.0;
        let added = e1.1 - d1.1;
        println!("\n| target | measured | met |\n|---|---:|---|");
        println!(
            "| -c8 TPS ≥ 1.0× haproxy | {vs_haproxy:.2}× | {} |",
            yes(vs_haproxy >= 1.0)
        );
        println!(
            "| -c8 TPS ≥ 0.75× direct | {vs_direct:.2}× | {} |",
            yes(vs_direct >= 0.75)
        );
        println!(
            "| -c1 added p50 latency ≤ 50 µs | +{added:.0} µs | {} |",
            yes(added <= 50.0)
        );
        // What one more TCP hop costs on this machine, whatever relays it.
        if let Some(h1) = get("1", "haproxy (TCP)") {
            println!(
                "| (for scale: haproxy's added p50 at -c1) | +{:.0} µs | |",
                h1.1 - d1.1
            );
        }
    }

    Ok(())
}

/// A 10-column, 100k-row result with masking off, by column rules and by detectors.
fn wide_result(s: &Setup, pg: u16, [unmasked, masked, columns_only]: [&Path; 3]) -> Result<()> {
    let dir = s.dir;
    // A 10-column, 100k-row result, read whole ten times a run (fewer are too noisy on a
    // shared 2-core machine to compare configurations).
    let script = dir.join("wide.sql");
    std::fs::write(&script, "SELECT * FROM wide;\n")?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644))?;
    let script = format!("-f{}", script.display());
    let wide = ["-c", "1", "-t", "10", script.as_str()];
    let configurations = [
        ("direct", None),
        ("masking off", Some(unmasked)),
        ("content detectors", Some(masked)),
        ("column rules", Some(columns_only)),
    ];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); configurations.len()];
    for round in 1..=WIDE_ROUNDS {
        for (i, (name, policy)) in configurations.iter().enumerate() {
            eprintln!("bench: round {round}/{WIDE_ROUNDS}: 10-column, 100k-row result: {name}");
            latencies[i].push(s.pgbench(pg, &wide, *policy)?.latency_ms);
        }
    }
    let [direct, plain, masked_run, columns_run] =
        [0, 1, 2, 3].map(|i| median(latencies[i].iter().copied()));
    let rows = |latency_ms: f64| 100_000.0 / (latency_ms / 1000.0);
    let ratio = rows(masked_run) / rows(plain);
    println!("\n| 100k rows × 10 columns (median of {WIDE_ROUNDS} rounds) | rows/s |\n|---|---:|");
    println!("| direct | {:.0} |", rows(direct));
    println!("| enforcer, masking off | {:.0} |", rows(plain));
    let columns_ratio = rows(columns_run) / rows(plain);
    println!(
        "| enforcer, column rules only (2 columns masked) | {:.0} ({columns_ratio:.2}× masking off; target ≥ 0.8×: {}) |",
        rows(columns_run),
        yes(columns_ratio >= 0.8)
    );
    println!(
        "| enforcer, content detectors on every value + column rule | {:.0} ({ratio:.2}× masking off; target ≥ 0.8×: {}) |",
        rows(masked_run),
        yes(ratio >= 0.8)
    );
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut all: Vec<f64> = values.collect();
    all.sort_by(f64::total_cmp);
    all.get(all.len() / 2).copied().unwrap_or(f64::NAN)
}

fn yes(met: bool) -> &'static str {
    if met { "yes" } else { "NO" }
}
