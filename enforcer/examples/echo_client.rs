//! A Rust client for the end-to-end tests, run inside an enforced workload.
//!
//! `echo_client TARGET[,TARGET…] CONNECTIONS THREADS` opens CONNECTIONS connections spread over
//! THREADS threads and over the targets (round robin). Each target's server greets with its own
//! port; a greeting naming another port means the proxy sent the connection to the wrong
//! destination. Prints `ok=N mismatched=N failed=N` and the first failures.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

fn one(target: SocketAddr, n: usize) -> Result<bool, String> {
    let stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting).map_err(|e| e.to_string())?;
    let payload = format!("connection {n} to {target}\n");
    let mut writer = stream;
    writer
        .write_all(payload.as_bytes())
        .map_err(|e| e.to_string())?;
    writer
        .shutdown(Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut echoed = String::new();
    reader
        .read_to_string(&mut echoed)
        .map_err(|e| e.to_string())?;
    if echoed != payload {
        return Err(format!("echo corrupted: sent {payload:?}, got {echoed:?}"));
    }
    Ok(greeting.trim() == target.port().to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: echo_client TARGET[,TARGET...] CONNECTIONS THREADS");
        std::process::exit(2);
    }
    let targets: Vec<SocketAddr> = args[1]
        .split(',')
        .map(|t| {
            t.parse()
                .unwrap_or_else(|e| panic!("bad target {t:?}: {e}"))
        })
        .collect();
    let connections: usize = args[2].parse().unwrap_or_else(|e| panic!("bad count: {e}"));
    let threads: usize = args[3]
        .parse()
        .unwrap_or_else(|e| panic!("bad thread count: {e}"));
    let next = AtomicUsize::new(0);
    let (ok, mismatched, failed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= connections {
                        break;
                    }
                    match one(targets[n % targets.len()], n) {
                        Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(false) => mismatched.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if let Ok(mut errors) = errors.lock() {
                                errors.push(e);
                            }
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
    });
    println!(
        "ok={} mismatched={} failed={}",
        ok.load(Ordering::Relaxed),
        mismatched.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    if let Ok(errors) = errors.lock() {
        for e in errors.iter().take(5) {
            println!("error: {e}");
        }
    }
}
