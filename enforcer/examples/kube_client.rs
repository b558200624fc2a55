//! A `kube` (kube-rs) client for the Kubernetes suite, run inside the enforced cgroup with
//! the kubeconfig `enforcer kubeconfig` printed: lists pods, reads a Secret, tries to delete
//! a Deployment. Prints one JSON line per step.

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
