//! A `kube` (kube-rs) client for the Kubernetes suite, run inside the enforced cgroup with
//! the kubeconfig `enforcer kubeconfig` printed: lists pods, reads a Secret, tries to delete
//! a Deployment. With `streams` after the kubeconfig it instead runs `cat` in a pod over
//! exec (stdin in, stdout back) and sends a line through a port-forward. Prints one JSON
//! line per step.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: kube_client KUBECONFIG")?;
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    if std::env::args().nth(2).as_deref() == Some("streams") {
        return streams(client).await;
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    println!("{}", json!({"step": "pods", "names": names}));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let secret = secrets.get("db-creds").await?;
    let data: serde_json::Map<String, serde_json::Value> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, json!(String::from_utf8_lossy(&v.0))))
        .collect();
    println!("{}", json!({"step": "secret", "data": data}));

    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    match deployments.delete("web", &DeleteParams::default()).await {
        Ok(_) => println!("{}", json!({"step": "delete", "error": null})),
        Err(kube::Error::Api(status)) => println!(
            "{}",
            json!({"step": "delete", "code": status.code, "reason": status.reason, "message": status.message})
        ),
        Err(e) => println!("{}", json!({"step": "delete", "error": e.to_string()})),
    }
    Ok(())
}

async fn streams(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    use kube::api::AttachParams;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let params = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(false);
    match pods.exec("web-0", ["cat"], &params).await {
        Ok(mut process) => {
            let mut stdin = process.stdin().ok_or("no stdin")?;
            let mut stdout = process.stdout().ok_or("no stdout")?;
            stdin.write_all(b"hello through kube\n").await?;
            // The end of stdin (v5's close signal); dropping a split half alone would not say it.
            stdin.shutdown().await?;
            let mut out = String::new();
            stdout.read_to_string(&mut out).await?;
            let status = process.take_status().ok_or("no status")?.await;
            println!(
                "{}",
                json!({"step": "exec", "stdout": out, "status": status.and_then(|s| s.status)})
            );
        }
        Err(e) => println!("{}", json!({"step": "exec", "error": e.to_string()})),
    }
    match pods.portforward("web-0", &[8080]).await {
        Ok(mut forwarder) => {
            let mut port = forwarder.take_stream(8080).ok_or("no stream")?;
            port.write_all(b"ping").await?;
            let mut echo = [0u8; 4];
            port.read_exact(&mut echo).await?;
            println!(
                "{}",
                json!({"step": "portforward", "echo": String::from_utf8_lossy(&echo)})
            );
            drop(port);
            forwarder.abort();
        }
        Err(e) => println!("{}", json!({"step": "portforward", "error": e.to_string()})),
    }
    Ok(())
}
