//! Project automation. Every command sets up what it needs first, so each works on a fresh
//! Debian machine as root: `cargo xtask demo`, `cargo xtask test`.

mod bench;
mod bench_kube;
mod bench_pg;
mod demo;
mod pg;
mod setup;
mod vm;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "enforcer's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything builds and tests need (idempotent): Debian packages (LLVM 22, the
    /// test servers and clients), nightly rust-src, bpf-linker 0.13 built against LLVM 22.
    Setup,
    /// Build only the kernel programs (nightly, bpfel-unknown-none) and report their size.
    BuildEbpf,
    /// Set up, build, and run every test (fmt, clippy, unit, end-to-end as root).
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the redirect suite on Debian's 6.1 kernel under qemu.
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Set up, build, and show enforcement on a real workload against a real PostgreSQL.
    Demo,
    /// Run the redirect suite inside Debian's 6.1 kernel under qemu (software emulation).
    VmTest,
    /// Measure connect rate, proxy setup latency, relay throughput, memory and the grant path
    /// (decisions, checks, issuance, approvals); print tables.
    Bench {
        /// Only these measurements (connect, latency, throughput, memory); default all.
        only: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Test {
            no_lint,
            no_vm,
            args,
        } => test(no_lint, no_vm, &args),
        Cmd::Demo => demo::run(),
        Cmd::VmTest => vm::run(),
        Cmd::Bench { only } => bench::run(&only),
    }
}

/// The workspace root.
fn root() -> PathBuf {
    // `cargo run` sets the variable at run time too: prefer it, so that a binary built in a
    // shared target directory from another checkout still works on this one.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("..")
}

/// Runs a command to completion, failing with its name if it fails.
fn exec(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", display(cmd));
    }
    Ok(())
}

fn display(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    // bpf-linker and the nightly toolchain live in ~/.cargo/bin.
    cmd.env("PATH", setup::path_with_cargo_bin());
    cmd
}

fn build_ebpf() -> Result<()> {
    setup::run()?;
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    exec(
        cargo()
            .args([
                "+nightly",
                "build",
                "-p",
                "enforcer-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "-Cdebuginfo=2\u{1f}-Clink-arg=--btf",
            ),
    )?;
    let object = target_dir.join("bpfel-unknown-none/release/enforcer");
    let size = std::fs::metadata(&object)
        .with_context(|| format!("no object at {}", object.display()))?
        .len();
    println!("{}: {size} bytes", object.display());
    Ok(())
}

fn test(no_lint: bool, no_vm: bool, args: &[String]) -> Result<()> {
    setup::run()?;
    if !no_lint {
        exec(cargo().args(["fmt", "--all", "--check"]))?;
        exec(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    }
    let vm = if no_vm || !args.is_empty() {
        None
    } else {
        Some(vm::run())
    };
    // cargo test's summary comes last: it is the line CI reads.
    let tests = cargo_test(args);
    if let Some(vm) = vm {
        vm.context("vm-test")?;
    }
    tests
}

/// Runs `cargo test`, passing its output through, and ends with one summary line over every
/// test binary (`tests: N passed, N failed`), so the last line speaks for the whole run.
fn cargo_test(args: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut cmd = cargo();
    cmd.arg("test")
        .args(args)
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: {}", display(&cmd));
    let mut child = cmd.spawn().context("cannot start cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .trim_start_matches("ok. ")
                            .trim_start_matches("FAILED. ")
                            .strip_suffix(word)
                    })
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok(())
}
