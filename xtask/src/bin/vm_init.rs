//! PID 1 of the `cargo xtask vm-test` initramfs: runs the redirect suite against the kernel the
//! VM booted (Debian's 6.1), using the real `enforcer` binary, then powers off.
//!
//! The workload side is this same binary started as `/init client CASE ARGS…` inside
//! `enforcer run`, so the VM needs nothing but the two static binaries. Results go to the
//! serial console, ending with `vm-test: N passed, M failed`.

use std::{
    ffi::CString,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

const ENFORCER: &str = "/bin/enforcer";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("client") {
        let verdict = client(&args[2..]);
        match verdict {
            Ok(()) => println!("client: ok"),
            Err(e) => println!("client: fail: {e}"),
        }
        return;
    }
    if let Err(e) = boot() {
        println!("vm-test: cannot set up the VM: {e}");
        println!("vm-test: 0 passed, 1 failed");
    } else {
        suite();
    }
    // SAFETY: plain syscalls; we are PID 1 and done.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}

fn mount(source: &str, target: &str, fstype: &str) -> Result<(), String> {
    std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
    let (s, t, f) = (cstr(source), cstr(target), cstr(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn boot() -> Result<(), String> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    mount("tmpfs", "/tmp", "tmpfs")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2")?;
    mount("bpf", "/sys/fs/bpf", "bpf")?;
    loopback_up()?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("vm-test: kernel {}", release.trim());
    Ok(())
}

/// `ip link set lo up`, by ioctl.
fn loopback_up() -> Result<(), String> {
    // SAFETY: a throwaway socket for interface ioctls; ifreq is zeroed then filled.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if fd < 0 {
            return Err("socket for ioctl".into());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(format!("SIOCGIFFLAGS: {}", std::io::Error::last_os_error()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(format!("SIOCSIFFLAGS: {}", std::io::Error::last_os_error()));
        }
        libc::close(fd);
    }
    // ::1 appears a moment after lo comes up.
    for _ in 0..50 {
        if TcpListener::bind("[::1]:0").is_ok() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Greets each connection with its port, echoes until the client half-closes.
fn echo_server(addr: &str) -> Option<(u16, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind(addr).ok()?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::Relaxed);
            thread::spawn(move || {
                let mut stream = stream;
                if stream.write_all(format!("{port}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    Some((port, accepted))
}

struct Results {
    passed: usize,
    failed: usize,
}

impl Results {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("vm-test: {name} ... ok");
            }
            Err(e) => {
                self.failed += 1;
                println!("vm-test: {name} ... FAILED: {e}");
            }
        }
    }
}

fn enforced(policy: &str, client_args: &[&str]) -> Result<String, String> {
    let out = Command::new(ENFORCER)
        .args([
            "run",
            "--policy",
            policy,
            "--state",
            "/tmp/state",
            "--user",
            "65534",
            "--admin",
            "127.0.0.1:0",
            "--",
            "/init",
            "client",
        ])
        .args(client_args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run enforcer: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "enforcer run: {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    client_verdict(&stdout)
}

fn client_verdict(stdout: &str) -> Result<String, String> {
    match stdout.lines().rev().find(|l| l.starts_with("client: ")) {
        Some("client: ok") => Ok(stdout.to_owned()),
        Some(line) => Err(line.to_owned()),
        None => Err(format!("client said nothing: {stdout}")),
    }
}

fn suite() {
    let mut r = Results {
        passed: 0,
        failed: 0,
    };
    let (Some((port, accepted)), Some((forbidden, forbidden_accepted))) =
        (echo_server("127.0.0.1:0"), echo_server("127.0.0.2:0"))
    else {
        r.check("start echo servers on loopback", Err("cannot bind".into()));
        println!("vm-test: {} passed, {} failed", r.passed, r.failed);
        return;
    };
    let v6 = echo_server(&format!("[::1]:{port}")).is_some();
    let policy = "/tmp/policy";
    let _ = std::fs::create_dir_all(policy);
    let yaml = format!(
        "egress:\n  - name: echo\n    to: [127.0.0.1/32, \"::1/128\"]\n    ports: [{port}]\n"
    );
    if let Err(e) = std::fs::write(format!("{policy}/policy.yaml"), yaml) {
        r.check("write policy", Err(e.to_string()));
    }
    let p = port.to_string();
    r.check(
        "tcp ipv4 redirected, data intact, getpeername restored",
        enforced(policy, &["echo", &format!("127.0.0.1:{p}")]).map(drop),
    );
    r.check(
        "tcp v4-mapped ipv6 redirected",
        enforced(policy, &["echo", &format!("[::ffff:127.0.0.1]:{p}")]).map(drop),
    );
    if v6 {
        r.check(
            "tcp ipv6 redirected",
            enforced(policy, &["echo", &format!("[::1]:{p}")]).map(drop),
        );
    }
    let before = forbidden_accepted.load(Ordering::Relaxed);
    r.check(
        "denied destination fails fast",
        enforced(policy, &["denied", &format!("127.0.0.2:{forbidden}")]).map(drop),
    );
    r.check(
        "denied destination never reached",
        if forbidden_accepted.load(Ordering::Relaxed) == before {
            Ok(())
        } else {
            Err("the forbidden server saw a connection".into())
        },
    );
    r.check(
        "udp to a non-dns port refused",
        enforced(policy, &["udp", "127.0.0.1:9"]).map(drop),
    );
    r.check(
        "raw and icmp sockets refused",
        enforced(policy, &["raw"]).map(drop),
    );
    r.check(
        "tcp fast open redirected",
        enforced(policy, &["tfo", &format!("127.0.0.1:{p}")]).map(drop),
    );
    let before = accepted.load(Ordering::Relaxed);
    r.check(
        "2000 concurrent connects, 0 mismatched",
        enforced(policy, &["many", &format!("127.0.0.1:{p}"), "2000", "64"]).map(drop),
    );
    r.check("every concurrent connect reached the server", {
        let n = accepted.load(Ordering::Relaxed) - before;
        if n == 2000 {
            Ok(())
        } else {
            Err(format!("{n} connections reached the server"))
        }
    });
    r.check(
        "daemon: root cannot open raw sockets, fail closed on kill -9, resume on restart",
        fail_closed(policy, port),
    );
    println!("vm-test: {} passed, {} failed", r.passed, r.failed);
}

/// `enforcer daemon` on a cgroup: works, kill -9 cuts the workload off, restart resumes.
fn fail_closed(policy: &str, port: u16) -> Result<(), String> {
    let cgroup = "/sys/fs/cgroup/vmtest";
    std::fs::create_dir_all(cgroup).map_err(|e| e.to_string())?;
    let start = || -> Result<std::process::Child, String> {
        let mut daemon = Command::new(ENFORCER)
            .args([
                "daemon",
                "--policy",
                policy,
                "--cgroup",
                cgroup,
                "--state",
                "/tmp/state-daemon",
                "--admin",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        let stdout = daemon.stdout.take().ok_or("no stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if !line.starts_with("ready ") {
            return Err(format!("daemon not ready: {line:?}"));
        }
        Ok(daemon)
    };
    let in_cgroup = |case: &str| -> Result<String, String> {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("{cgroup}/cgroup.procs"))
            .map_err(|e| e.to_string())?;
        let fd = procs.as_raw_fd();
        let mut cmd = Command::new("/init");
        cmd.args(["client", case, &format!("127.0.0.1:{port}")]);
        // SAFETY: only an async-signal-safe write between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        client_verdict(&String::from_utf8_lossy(&out.stdout))
    };
    let mut daemon = start()?;
    in_cgroup("echo")?;
    // As root inside the cgroup (CAP_NET_RAW and all), only the kernel program refuses.
    in_cgroup("raw").map_err(|e| format!("root in the cgroup: {e}"))?;
    daemon.kill().map_err(|e| e.to_string())?;
    let _ = daemon.wait();
    in_cgroup("refused").map_err(|e| format!("with the daemon dead: {e}"))?;
    let mut daemon = start()?;
    in_cgroup("echo").map_err(|e| format!("after restart: {e}"))?;
    let _ = daemon.kill();
    let _ = daemon.wait();
    let detach = Command::new(ENFORCER)
        .args(["detach", "--cgroup", cgroup])
        .output()
        .map_err(|e| e.to_string())?;
    if !detach.status.success() {
        return Err(format!(
            "detach: {}",
            String::from_utf8_lossy(&detach.stderr)
        ));
    }
    let _ = std::fs::remove_dir(cgroup);
    Ok(())
}

// ---- the workload side ----

fn client(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .ok_or_else(|| format!("missing argument {i}"))
    };
    let addr =
        || -> Result<SocketAddr, String> { arg(1)?.parse().map_err(|e| format!("address: {e}")) };
    match arg(0)?.as_str() {
        "echo" => echo(addr()?),
        "denied" => {
            let start = Instant::now();
            let outcome =
                TcpStream::connect_timeout(&addr()?, Duration::from_secs(5)).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let mut buf = [0u8; 16];
                    s.read(&mut buf)
                });
            match outcome {
                Ok(n) if n > 0 => Err("got data from a denied destination".into()),
                _ if start.elapsed() > Duration::from_secs(1) => {
                    Err(format!("took {:?}", start.elapsed()))
                }
                _ => Ok(()),
            }
        }
        "refused" => match TcpStream::connect_timeout(&addr()?, Duration::from_secs(5)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            Err(e) => Err(format!("expected refused, got {e}")),
            Ok(_) => Err("connected with the daemon dead".into()),
        },
        "udp" => {
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
            match socket.send_to(b"x", addr()?) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                other => return Err(format!("sendto: {other:?}")),
            }
            match socket.connect(addr()?) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
                other => Err(format!("connect: {other:?}")),
            }
        }
        "raw" => {
            for (family, kind, proto) in [
                (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
                (libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6),
                (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            ] {
                // SAFETY: plain socket creation; closed at once if it succeeds.
                let fd = unsafe { libc::socket(family, kind, proto) };
                if fd >= 0 {
                    // SAFETY: fd was just returned by socket().
                    unsafe { libc::close(fd) };
                    return Err(format!("socket({family}, {kind}, {proto}) was created"));
                }
            }
            Ok(())
        }
        "tfo" => tfo(addr()?),
        "many" => {
            let target = addr()?;
            let count: usize = arg(2)?.parse().map_err(|e| format!("count: {e}"))?;
            let threads: usize = arg(3)?.parse().map_err(|e| format!("threads: {e}"))?;
            let next = AtomicUsize::new(0);
            let failures = std::sync::Mutex::new(Vec::new());
            thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        while next.fetch_add(1, Ordering::Relaxed) < count {
                            if let Err(e) = echo(target)
                                && let Ok(mut f) = failures.lock()
                            {
                                f.push(e);
                            }
                        }
                    });
                }
            });
            let failures = failures.into_inner().unwrap_or_default();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(format!("{} failed, first: {}", failures.len(), failures[0]))
            }
        }
        other => Err(format!("unknown case {other}")),
    }
}

fn echo(target: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))
        .map_err(|e| format!("connect {target}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    if peer.port() != target.port() {
        return Err(format!("getpeername says {peer}, asked for {target}"));
    }
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).map_err(|e| e.to_string())?;
    if greeting.trim() != target.port().to_string() {
        return Err(format!(
            "reached the server of port {}, asked for {target}",
            greeting.trim()
        ));
    }
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    stream.write_all(&payload).map_err(|e| e.to_string())?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut back = Vec::new();
    reader.read_to_end(&mut back).map_err(|e| e.to_string())?;
    if back != payload {
        Err(format!(
            "echo corrupted: {} bytes back of {}",
            back.len(),
            payload.len()
        ))
    } else {
        Ok(())
    }
}

fn tfo(target: SocketAddr) -> Result<(), String> {
    let SocketAddr::V4(v4) = target else {
        return Err("tfo case takes an IPv4 address".into());
    };
    // SAFETY: a plain TCP socket; the sockaddr is built field by field; fd owned by TcpStream.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let msg = b"fast open";
        let n = libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            libc::MSG_FASTOPEN,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if n < 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("sendto(MSG_FASTOPEN): {e}"));
        }
        <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).map_err(|e| e.to_string())?;
    if greeting.trim() != target.port().to_string() {
        return Err(format!("fast open reached {greeting:?}"));
    }
    Ok(())
}
