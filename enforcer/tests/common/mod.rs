//! Shared harness for the end-to-end suites: a private bpffs, a world-readable temp dir (the
//! workload runs as `nobody`), real servers on loopback with free ports, the enforcer binary,
//! and readers for its logs. Everything started here is stopped on drop.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod kube;
pub mod postgres;

pub const ENFORCER: &str = env!("CARGO_BIN_EXE_enforcer");

/// A test's own corner of the machine.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub bpffs: PathBuf,
    pub state: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the end-to-end suites attach eBPF programs to cgroups and must run as root"
        );
        let dir = tempfile::Builder::new()
            .prefix("enforcer-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let bpffs = dir.path().join("bpffs");
        std::fs::create_dir(&bpffs).expect("mkdir bpffs");
        nix::mount::mount(
            Some("bpf"),
            &bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount a private bpffs");
        let state = dir.path().join("state");
        // Workload tools (python probe, Rust client) copied where `nobody` can run them.
        let tools = dir.path().join("tools");
        std::fs::create_dir(&tools).expect("mkdir tools");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::copy(repo.join("tests/clients/probe.py"), tools.join("probe.py"))
            .expect("copy probe");
        let client = Path::new(ENFORCER)
            .parent()
            .expect("target dir")
            .join("examples/echo_client");
        if client.exists() {
            std::fs::copy(&client, tools.join("echo_client")).expect("copy echo_client");
        }
        Env { dir, bpffs, state }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn tool(&self, name: &str) -> String {
        self.path().join("tools").join(name).display().to_string()
    }

    /// Writes a policy directory holding `yaml` and returns it.
    pub fn policy(&self, yaml: &str) -> PathBuf {
        let dir = self.path().join("policy");
        std::fs::create_dir_all(&dir).expect("mkdir policy");
        std::fs::write(dir.join("policy.yaml"), yaml).expect("write policy");
        dir
    }

    /// A policy allowing only 127.0.0.1:`port` (egress rule `echo`).
    pub fn echo_policy(&self, port: u16) -> PathBuf {
        self.policy(&format!(
            "egress:\n  - name: echo\n    to: [127.0.0.1/32]\n    ports: [{port}]\n"
        ))
    }

    /// `enforcer run` with this env's state and bpffs; waits at most `timeout`.
    pub fn run(&self, policy: &Path, command: &[&str], timeout: Duration) -> Output {
        self.run_with(policy, &[], command, timeout)
    }

    /// `enforcer run` with extra options before the command.
    pub fn run_with(
        &self,
        policy: &Path,
        options: &[&str],
        command: &[&str],
        timeout: Duration,
    ) -> Output {
        let mut cmd = Command::new(ENFORCER);
        cmd.arg("run")
            .arg("--policy")
            .arg(policy)
            .arg("--state")
            .arg(&self.state)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .args(["--admin", "127.0.0.1:0"])
            .args(options)
            .arg("--")
            .args(command);
        output_within(cmd, timeout)
    }

    /// Every event in the audit log, in order.
    pub fn audit_events(&self) -> Vec<Value> {
        read_json_lines(&self.state.join("audit.jsonl"))
            .into_iter()
            .map(|mut record| record["event"].take())
            .collect()
    }

    /// Decision events of the audit log.
    pub fn decisions(&self) -> Vec<Value> {
        self.audit_events()
            .into_iter()
            .filter(|e| e["kind"] == "connection_decided")
            .collect()
    }

    /// The enforcement log (JSON lines). A running enforcer writes it in batches, at most
    /// 50 ms behind its decisions.
    pub fn log(&self) -> Vec<Value> {
        std::thread::sleep(Duration::from_millis(150));
        read_json_lines(&self.state.join("enforcement.log"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.bpffs, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The events of the audit chain at `path` once one of them satisfies `wanted`: outcome
/// records (a request's end, a connection's close) reach the file within 50 ms of
/// happening, so a test that just caused one waits for it (at most 5 s, then returns what
/// is there for the assertion to show).
pub fn audit_events_with(path: &Path, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let events: Vec<Value> = read_json_lines(path)
            .into_iter()
            .map(|mut r| r["event"].take())
            .collect();
        if events.iter().any(&wanted) || std::time::Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn read_json_lines(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// Runs `cmd`, killing it and failing the test if it outlives `timeout`.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
                String::from_utf8_lossy(&stderr.join().unwrap_or_default())
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn drain<R: Read + Send + 'static>(reader: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = reader {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Lines of JSON a probe printed.
pub fn probe_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad probe line {l:?}: {e}")))
        .collect()
}

pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A TCP server that greets each connection with its own port and a newline, then echoes
/// everything back until the client half-closes. Stops on drop.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EchoServer {
    pub fn start(ip: &str) -> EchoServer {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        Self::serve(listener)
    }

    /// Same port as `other`, another address (IPv6 next to IPv4).
    pub fn start_on(addr: SocketAddr) -> Option<EchoServer> {
        TcpListener::bind(addr).ok().map(Self::serve)
    }

    fn serve(listener: TcpListener) -> EchoServer {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        accepted2.fetch_add(1, Ordering::Relaxed);
                        thread::spawn(move || echo(stream, addr.port()));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        EchoServer {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

fn echo(mut stream: TcpStream, port: u16) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    if stream.write_all(format!("{port}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `enforcer daemon` and waits for its `ready` line; returns it with the line's fields.
pub fn start_daemon(env: &Env, policy: &Path, cgroup: &Path, admin: &str) -> (Guard, String) {
    start_daemon_with(env, policy, cgroup, admin, &env.state, &[])
}

/// [`start_daemon`] with its own state directory and extra options.
pub fn start_daemon_with(
    env: &Env,
    policy: &Path,
    cgroup: &Path,
    admin: &str,
    state: &Path,
    extra: &[&str],
) -> (Guard, String) {
    let mut child = Command::new(ENFORCER)
        .arg("daemon")
        .arg("--policy")
        .arg(policy)
        .arg("--cgroup")
        .arg(cgroup)
        .arg("--state")
        .arg(state)
        .arg("--bpffs")
        .arg(&env.bpffs)
        .args(["--admin", admin])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start enforcer daemon");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read ready line");
    assert!(
        line.starts_with("ready "),
        "daemon did not become ready: {line:?}"
    );
    (Guard(child), line)
}

/// A field of the daemon's ready line.
pub fn ready_field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// A cgroup v2 directory made by the test, removed (after killing what is in it) on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> TestCgroup {
        let root = enforcer::redirect::cgroup::find_cgroup2_root().expect("cgroup v2 mounted");
        // Tests of one binary run in parallel threads: the counter keeps their cgroups apart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = root.join(format!("enforcer-test-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// A command that joins this cgroup before exec'ing `program`.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec \"$@\"",
                self.path.display()
            ))
            .arg("sh")
            .arg(program)
            .args(args);
        cmd
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Fetches `path` from an HTTP server on `addr` (plain HTTP/1.1, for /metrics and /healthz).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, dechunk(&body))
}

fn dechunk(body: &str) -> String {
    // axum answers HTTP/1.1 with chunked encoding when it streams; handle both.
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if n == 0 {
            return out;
        }
        if after.len() < n {
            return body.to_owned();
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough for servers we start at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Python's http.server serving one random file, `file.bin`.
pub struct HttpServer {
    pub port: u16,
    pub content: Vec<u8>,
    _child: Guard,
}

impl HttpServer {
    pub fn start(env: &Env) -> HttpServer {
        let root = env.path().join("www");
        std::fs::create_dir_all(&root).expect("mkdir www");
        let content: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        std::fs::write(root.join("file.bin"), &content).expect("write file");
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        HttpServer {
            port,
            content,
            _child: guard,
        }
    }
}

/// The operator on the host: `enforcer …` with the admin address and a state directory.
pub fn operator(admin: &str, state: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(ENFORCER);
    cmd.args(args)
        .args(["--admin", admin])
        .arg("--state")
        .arg(state);
    output_within(cmd, Duration::from_secs(60))
}

/// Polls until one approval is pending and returns it.
pub fn pending_approval(admin: &str, state: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = operator(admin, state, &["approvals", "list", "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
        let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json");
        if let Some(first) = list.into_iter().next() {
            return first;
        }
        assert!(Instant::now() < deadline, "no approval became pending");
        std::thread::sleep(Duration::from_millis(100));
    }
}
