//! The tests' Kubernetes API-server double as a program, for `cargo xtask bench kubernetes`:
//! `kube_double PODS SECRETS` prints `port=… ca=…` and serves until stdin closes.

#[path = "../tests/common/kube.rs"]
#[allow(dead_code)]
mod kube;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let pods = args
        .next()
        .ok_or("usage: kube_double PODS SECRETS")?
        .parse()?;
    let secrets = args
        .next()
        .ok_or("usage: kube_double PODS SECRETS")?
        .parse()?;
    let server = kube::ApiServer::start_with(kube::Sizes { pods, secrets });
    println!("port={} ca={}", server.port, server.ca.display());
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink)? > 0 {}
    Ok(())
}
