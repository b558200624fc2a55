//! `cargo xtask vm-test`: the redirect suite on Debian's 6.1 kernel (the oldest kernel enforcer
//! supports on stock Debian), booted under qemu with software emulation.
//!
//! Nothing is installed system-wide: the kernel and qemu (with the libraries and firmware the
//! machine lacks) are fetched with `apt-get download` and unpacked into `<target>/vm/root`,
//! because Debian's qemu-system-x86 would replace the machine's newer qemu-utils. The
//! initramfs holds two static binaries: `enforcer` and `vm-init` (PID 1, the suite).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, exec, root, setup};

/// qemu and what it needs that a fresh machine lacks (found with ldd, checked by `--version`).
const QEMU_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "libcapstone4",
    "libfdt1",
    "libpmem1",
    "librdmacm1",
    "libibverbs1",
    "libslirp0",
    "libvdeplug2",
    "libndctl6",
    "libdaxctl1",
    "libnl-3-200",
    "libnl-route-3-200",
];

/// The suite takes about a minute under emulation here; a guest that is still running after
/// this is stuck (a soft lockup panics it sooner, with its backtrace).
const BOOT_TIMEOUT: Duration = Duration::from_secs(12 * 60);

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
}

pub fn run() -> Result<()> {
    setup::run()?;
    let vm = target_dir().join("vm");
    let unpacked = vm.join("root");
    fetch(&vm, &unpacked)?;
    let kernel = find_kernel(&unpacked)?;

    let triple = "x86_64-unknown-linux-gnu";
    exec(
        cargo()
            .args([
                "build",
                "--release",
                "--target",
                triple,
                "-p",
                "enforcer",
                "--bin",
                "enforcer",
                "-p",
                "xtask",
                "--bin",
                "vm-init",
            ])
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=debuginfo",
            ),
    )?;
    let bin = target_dir().join(triple).join("release");
    let initramfs = vm.join("initramfs.cpio");
    let image = cpio(&[
        Entry::dir("bin"),
        Entry::dir("dev"),
        Entry::dir("proc"),
        Entry::dir("sys"),
        Entry::dir("tmp"),
        Entry::dir("etc"),
        Entry::file(
            "etc/passwd",
            b"root:x:0:0:root:/:/init\nnobody:x:65534:65534:nobody:/nonexistent:/init\n".to_vec(),
        ),
        Entry::file("etc/group", b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
        Entry::file(
            "init",
            std::fs::read(bin.join("vm-init")).context("vm-init binary")?,
        ),
        Entry::file(
            "bin/enforcer",
            std::fs::read(bin.join("enforcer")).context("enforcer binary")?,
        ),
    ]);
    std::fs::write(&initramfs, image)?;
    boot(&unpacked, &kernel, &initramfs)
}

/// Downloads and unpacks the kernel and qemu once; later runs reuse them.
fn fetch(vm: &Path, unpacked: &Path) -> Result<()> {
    let done = unpacked.join(".complete");
    if done.exists() {
        return Ok(());
    }
    let debs = vm.join("debs");
    std::fs::create_dir_all(&debs)?;
    let depends = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()?;
    let kernel_package = String::from_utf8_lossy(&depends.stdout)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Depends: ")
                .filter(|p| p.starts_with("linux-image-6.1"))
                .map(str::to_owned)
        })
        .context("Debian's linux-image-amd64 does not point at a 6.1 kernel")?;
    exec(
        Command::new("apt-get")
            .args(["download", "-qq"])
            .arg(&kernel_package)
            .args(QEMU_PACKAGES)
            .current_dir(&debs),
    )?;
    for entry in std::fs::read_dir(&debs)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            exec(Command::new("dpkg").arg("-x").arg(&path).arg(unpacked))?;
        }
    }
    std::fs::write(done, kernel_package)?;
    Ok(())
}

fn find_kernel(unpacked: &Path) -> Result<PathBuf> {
    std::fs::read_dir(unpacked.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the unpacked kernel package")
}

fn boot(unpacked: &Path, kernel: &Path, initramfs: &Path) -> Result<()> {
    let libs = format!(
        "{}:{}",
        unpacked.join("usr/lib/x86_64-linux-gnu").display(),
        unpacked.join("lib/x86_64-linux-gnu").display()
    );
    let mut qemu = Command::new(unpacked.join("usr/bin/qemu-system-x86_64"));
    qemu.env("LD_LIBRARY_PATH", libs)
        // The TCG accelerator is a loadable module; its compiled-in directory is not ours.
        .env(
            "QEMU_MODULE_DIR",
            unpacked.join("usr/lib/x86_64-linux-gnu/qemu"),
        )
        .arg("-L")
        .arg(unpacked.join("usr/share/qemu"))
        .arg("-L")
        .arg(unpacked.join("usr/share/seabios"))
        // KVM guests hang on these machines; software emulation works everywhere.
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2048",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        // A soft lockup panics the guest (and so ends the run) with its backtrace, instead of
        // stalling until the boot timeout.
        .args([
            "-append",
            "console=ttyS0 quiet loglevel=4 panic=-1 softlockup_panic=1",
        ])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-nodefaults",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!(
        "xtask: booting {} under qemu (software emulation)",
        kernel.display()
    );
    let mut child = qemu.spawn().context("cannot start qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut summary = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_owned();
                println!("{line}");
                if let Some(rest) = line.strip_prefix("vm-test: ")
                    && rest.contains(" passed, ")
                {
                    summary = Some(rest.to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                let _ = child.kill();
                bail!("the VM did not finish within {BOOT_TIMEOUT:?}");
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let _ = child.wait();
    let summary = summary.context("the VM never printed its summary (did the kernel boot?)")?;
    let failed: u64 = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" failed"))
        .and_then(|n| n.trim().parse().ok())
        .context("unreadable summary")?;
    if failed > 0 {
        bail!("vm-test on Debian 6.1: {summary}");
    }
    println!("vm-test on Debian 6.1: {summary}");
    Ok(())
}

struct Entry {
    name: &'static str,
    mode: u32,
    data: Vec<u8>,
}

impl Entry {
    fn dir(name: &'static str) -> Entry {
        Entry {
            name,
            mode: 0o040755,
            data: Vec::new(),
        }
    }

    fn file(name: &'static str, data: Vec<u8>) -> Entry {
        Entry {
            name,
            mode: 0o100755,
            data,
        }
    }
}

/// A `newc` cpio archive, the format the kernel unpacks as initramfs. Written here because
/// it is thirty lines and the machine's cpio tool may be missing.
fn cpio(entries: &[Entry]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let trailer = Entry {
        name: "TRAILER!!!",
        mode: 0,
        data: Vec::new(),
    };
    for (ino, e) in entries.iter().chain(std::iter::once(&trailer)).enumerate() {
        let fields = [
            ino as u32 + 1,
            e.mode,
            0,
            0,
            if e.mode & 0o040000 != 0 { 2 } else { 1 },
            0,
            e.data.len() as u32,
            0,
            0,
            0,
            0,
            e.name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(e.name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out
}
