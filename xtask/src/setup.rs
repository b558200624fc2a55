//! `cargo xtask setup`: everything a build or a test needs, installed by the project itself so
//! a fresh machine (and CI) works with no hand steps. Idempotent and quick when done.

use std::{ffi::OsString, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::exec;

/// Debian packages: LLVM 22 for bpf-linker, and the real servers and clients the tests use.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "prometheus",
    "dnsmasq-base",
    "netcat-openbsd",
    "curl",
    "python3",
    "iproute2",
    "postgresql-15",
    "postgresql-client-15",
    "procps",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    if !nix_is_root() {
        bail!(
            "cargo xtask setup installs packages and the tests attach eBPF programs: run it as root"
        );
    }
    apt()?;
    nightly()?;
    bpf_linker()?;
    oidc_provider()
}

/// The real OIDC provider the identity tests start (npm `oidc-provider`, pinned by the
/// lockfile in tests/oidc), installed with the machine's Node.js.
fn oidc_provider() -> Result<()> {
    let dir = crate::root().join("tests/oidc");
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return Ok(());
    }
    exec(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
    )
}

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| o.stdout == b"install ok installed")
}

fn apt() -> Result<()> {
    install(PACKAGES)
}

/// Installs the Debian packages not installed yet.
pub fn install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    exec(Command::new("apt-get").args(["update", "-qq"]))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn nightly() -> Result<()> {
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("rustup")?;
    if !String::from_utf8_lossy(&toolchains.stdout)
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        exec(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("rustup component list")?;
    if !String::from_utf8_lossy(&components.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        exec(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let version = Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path_with_cargo_bin())
        .output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    // Debian's /usr/bin/llvm-config is LLVM 14; bpf-linker must see LLVM 22's first.
    let mut path = OsString::from("/usr/lib/llvm-22/bin:");
    path.push(path_with_cargo_bin());
    exec(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("PATH", path),
    )
}

/// PATH with ~/.cargo/bin in front, where rustup and cargo install put their tools.
pub fn path_with_cargo_bin() -> OsString {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let mut path = home.join("bin").into_os_string();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}
