//! Load generator for `cargo xtask bench`, run both directly and inside `enforcer run` so the
//! two can be compared in one run.
//!
//! ```text
//! bench_client connect    TARGET SECS THREADS   connect()+close() as fast as possible
//! bench_client latency    TARGET COUNT          connect + first byte from the server, one at a time
//! bench_client throughput TARGET BYTES          send BYTES on one connection
//! bench_client hold       TARGET COUNT          open COUNT idle connections until stdin closes
//! ```
//! Each prints one `key=value` line.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Close with RST: no TIME_WAIT, so a connect loop does not run out of ephemeral ports.
fn abort(stream: TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger);
    drop(stream);
}

fn greet(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => continue,
            Ok(_) => return,
            Err(e) => panic!("reading greeting: {e}"),
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i} must be {what}; see the source for usage"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let target: SocketAddr = arg(&args, 2, "TARGET (ip:port)");
    match mode {
        "connect" => {
            let secs: u64 = arg(&args, 3, "SECS");
            let threads: usize = arg(&args, 4, "THREADS");
            let (count, failed, stop) =
                (AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false));
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        while !stop.load(Ordering::Relaxed) {
                            match TcpStream::connect(target) {
                                Ok(stream) => {
                                    abort(stream);
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(_) => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    });
                }
                std::thread::sleep(Duration::from_secs(secs));
                stop.store(true, Ordering::Relaxed);
            });
            let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
            println!(
                "connects_per_sec={rate:.0} failed={}",
                failed.load(Ordering::Relaxed)
            );
        }
        "latency" => {
            let count: usize = arg(&args, 3, "COUNT");
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let start = Instant::now();
                let mut stream =
                    TcpStream::connect(target).unwrap_or_else(|e| panic!("connect: {e}"));
                greet(&mut stream);
                samples.push(start.elapsed().as_micros() as u64);
                abort(stream);
            }
            samples.sort_unstable();
            let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
            println!("p50_us={} p90_us={} p99_us={}", p(0.5), p(0.9), p(0.99));
        }
        "throughput" => {
            let bytes: u64 = arg(&args, 3, "BYTES");
            let mut stream = TcpStream::connect(target).unwrap_or_else(|e| panic!("connect: {e}"));
            greet(&mut stream);
            let chunk = vec![0x5au8; 256 * 1024];
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < bytes {
                let n = chunk.len().min((bytes - sent) as usize);
                stream
                    .write_all(&chunk[..n])
                    .unwrap_or_else(|e| panic!("send: {e}"));
                sent += n as u64;
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .unwrap_or_else(|e| panic!("shutdown: {e}"));
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            let secs = start.elapsed().as_secs_f64();
            println!("mib_per_sec={:.0}", sent as f64 / (1024.0 * 1024.0) / secs);
        }
        "hold" => {
            let count: usize = arg(&args, 3, "COUNT");
            let mut held = Vec::with_capacity(count);
            for _ in 0..count {
                let mut stream =
                    TcpStream::connect(target).unwrap_or_else(|e| panic!("connect: {e}"));
                greet(&mut stream);
                held.push(stream);
            }
            println!("held={}", held.len());
            let _ = std::io::stdout().flush();
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        _ => {
            eprintln!("usage: bench_client connect|latency|throughput|hold TARGET ...");
            std::process::exit(2);
        }
    }
}
