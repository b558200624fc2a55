//! The Kubernetes benchmark client: a kubectl-equivalent request loop over one kept-alive TLS
//! connection. `bench_kube URL CA_FILE PATH ACCEPT COUNT` prints `p50_us=… p99_us=…
//! per_sec=… bytes=…` (bytes of the last answer).

use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, ca, path, accept, count] = args.as_slice() else {
        return Err("usage: bench_kube URL CA_FILE PATH ACCEPT COUNT".into());
    };
    let count: usize = count.parse()?;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .http1_only()
        .build()?;
    let target = format!("{url}{path}");
    let mut times = Vec::with_capacity(count);
    let mut bytes = 0;
    let started = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let response = client
            .get(&target)
            .header("Accept", accept.as_str())
            .header("Authorization", "Bearer stale-token")
            .send()
            .await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)).into());
        }
        bytes = body.len();
        times.push(t.elapsed().as_micros() as u64);
    }
    let total = started.elapsed().as_secs_f64();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "p50_us={} p99_us={} per_sec={:.1} bytes={bytes}",
        at(0.5),
        at(0.99),
        count as f64 / total
    );
    Ok(())
}
