//! The Kubernetes API at layer 7, with the real kubectl 1.32 inside an enforced cgroup and an
//! API-server double (tests/common/kube.rs) as the cluster: TLS terminated with enforcer's
//! CA, requests decided per verb and resource, Forbidden answers kubectl prints like RBAC
//! denials, Secret values redacted, and the agent's own token never reaching the cluster.

mod common;

use std::{process::Output, time::Duration};

use common::*;

const T: Duration = Duration::from_secs(60);

const CEDAR: &str = r#"
@id("baseline-read")
permit (principal, action in [Enforcer::Action::"k8s:get", Enforcer::Action::"k8s:list", Enforcer::Action::"k8s:watch"], resource)
when { context.access == "read" };

@id("service-accounts-need-approval")
@approval("required")
permit (principal, action == Enforcer::Action::"k8s:create", resource)
when { context.resource == "serviceaccounts" && context.namespace == "default" };

@id("deletes-by-grant")
permit (principal, action == Enforcer::Action::"k8s:delete", resource)
when { context.grant == "write" && context.resource == "deployments" };

@id("write-grants")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "write" };

@id("admin-grants")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "admin" };

@id("secret-writes-by-admin-grant")
permit (principal, action in [Enforcer::Action::"k8s:create", Enforcer::Action::"k8s:patch", Enforcer::Action::"k8s:update"], resource)
when { context.grant == "admin" && context.resource == "secrets" };

@id("default-secrets-readable-redacted")
permit (principal, action in [Enforcer::Action::"k8s:get", Enforcer::Action::"k8s:list", Enforcer::Action::"k8s:watch"], resource)
when { context.resource == "secrets" && context.namespace == "default" };
"#;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A cluster (the API double) behind enforcer, and kubectl in the enforced cgroup with the
/// kubeconfig enforcer hands out, to which the agent added its stale cluster-admin token.
struct Cluster {
    _daemon: Guard,
    cg: TestCgroup,
    api: kube::ApiServer,
    policy: std::path::PathBuf,
    admin: String,
    gateway: u16,
    config: std::path::PathBuf,
    cache: std::path::PathBuf,
    env: Env,
    /// The resource's name in the policy.
    name: &'static str,
}

impl Cluster {
    fn start(cedar: &str) -> Cluster {
        Cluster::start_with(cedar, false, "cluster", "masking: {keys: [\"*password*\"]}")
    }

    /// `client_certificate`: enforcer authenticates with the double's client certificate
    /// instead of a bearer token. `name` is the resource's, `masking` its profile (YAML).
    fn start_with(
        cedar: &str,
        client_certificate: bool,
        name: &'static str,
        masking: &str,
    ) -> Cluster {
        let env = Env::new();
        let api = kube::ApiServer::start();
        let gateway = free_port();
        let policy = env.path().join("k8s-policy");
        std::fs::create_dir_all(&policy).expect("mkdir");
        let token = env.path().join("cluster-token");
        std::fs::write(&token, "real-cluster-token\n").expect("token");
        let credential = if client_certificate {
            format!(
                "{{client_certificate: {}, client_key: {}}}",
                api.client_certificate.display(),
                api.client_key.display()
            )
        } else {
            format!("{{file: {}}}", token.display())
        };
        std::fs::write(
            policy.join("cluster.yaml"),
            format!(
                "resources:\n  - name: {name}\n    protocol: kubernetes\n    addresses: [\"127.0.0.1:{}\"]\n    credential: {}\n    upstream_tls: {{ca: {}}}\n    {masking}\n    gateway: \"127.0.0.1:{}\"\n",
                api.port,
                credential,
                api.ca.display(),
                gateway,
            ),
        )
        .expect("yaml");
        std::fs::write(policy.join("cluster.cedar"), cedar).expect("cedar");
        let cg = TestCgroup::new("k8s");
        let (daemon, ready) = start_daemon(&env, &policy, &cg.path, "127.0.0.1:0");
        let admin = ready_field(&ready, "admin").to_owned();

        // The kubeconfig enforcer hands out: the cluster's address, enforcer's CA, no user
        // credential. The agent's copy also carries its stale cluster-admin token.
        let kubeconfig = output_within(
            {
                let mut c = std::process::Command::new(ENFORCER);
                c.args(["kubeconfig", "--resource", name, "--policy"])
                    .arg(&policy)
                    .arg("--state")
                    .arg(&env.state);
                c
            },
            T,
        );
        assert!(kubeconfig.status.success(), "{}", describe(&kubeconfig));
        let text = stdout(&kubeconfig);
        assert!(
            text.contains(&format!("server: https://127.0.0.1:{}", api.port)),
            "{text}"
        );
        assert!(text.contains("certificate-authority-data: "), "{text}");
        let stale = text.replace(
            "  user: {}",
            "  user:\n    token: stale-cluster-admin-token",
        );
        let config = env.path().join("kubeconfig");
        std::fs::write(&config, stale).expect("kubeconfig");
        let cache = env.path().join("kube-cache");
        Cluster {
            _daemon: daemon,
            cg,
            api,
            policy,
            admin,
            gateway,
            config,
            cache,
            env,
            name,
        }
    }

    /// kubectl in the cgroup, with `env` (`NAME=value`) set for it.
    fn kubectl(&self, args: &[&str], env: &[&str]) -> Output {
        let mut all = env.to_vec();
        all.extend([
            "/usr/bin/kubectl",
            "--kubeconfig",
            self.config.to_str().expect("utf-8"),
            "--cache-dir",
            self.cache.to_str().expect("utf-8"),
            "--request-timeout=20s",
        ]);
        all.extend_from_slice(args);
        output_within(self.cg.command("env", &all), T)
    }

    /// A grant for this workload, as `enforcer grant request --json` prints it.
    fn grant(&self, access: &str, uses: &str, reason: &str) -> serde_json::Value {
        let granted = output_within(self.grant_request(access, uses, reason), T);
        assert!(granted.status.success(), "{}", describe(&granted));
        serde_json::from_slice(&granted.stdout).expect("json")
    }

    /// `enforcer grant request --json --wait` in the workload's cgroup, not yet run.
    fn grant_request(&self, access: &str, uses: &str, reason: &str) -> std::process::Command {
        let state = self.env.state.display().to_string();
        self.cg.command(
            ENFORCER,
            &[
                "grant",
                "request",
                "--resource",
                self.name,
                "--access",
                access,
                "--uses",
                uses,
                "--reason",
                reason,
                "--json",
                "--wait",
                "--admin",
                &self.admin,
                "--state",
                &state,
            ],
        )
    }
}

#[test]
fn kubectl_requests_are_decided_redacted_and_sent_with_the_injected_token() {
    let cluster = Cluster::start(CEDAR);
    let (env, api, policy, cg, admin, config, cache, gateway) = (
        &cluster.env,
        &cluster.api,
        &cluster.policy,
        &cluster.cg,
        &cluster.admin,
        &cluster.config,
        &cluster.cache,
        cluster.gateway,
    );
    let kubectl = |args: &[&str]| cluster.kubectl(args, &[]);

    // Reading pods: allowed at baseline, through discovery and a Table.
    let pods = kubectl(&["get", "pods", "-n", "default"]);
    assert!(pods.status.success(), "{}", describe(&pods));
    assert!(
        stdout(&pods).contains("web-0") && stdout(&pods).contains("web-1"),
        "{}",
        describe(&pods)
    );
    // kubectl found the API through aggregated discovery (one answer for /api, one for
    // /apis), which came through unchanged: it asked for no group version's list.
    let seen = api.seen();
    assert!(
        seen.iter().any(|s| s.path == "/apis"
            && s.accept
                .as_deref()
                .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"))),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.path == "/api/v1" || s.path == "/apis/apps/v1"),
        "{seen:?}"
    );

    // Secrets in default are readable, but their values never arrive.
    let secrets = kubectl(&["get", "secrets", "-n", "default", "-o", "json"]);
    assert!(secrets.status.success(), "{}", describe(&secrets));
    let text = stdout(&secrets);
    assert!(!text.contains(kube::SECRET_VALUE), "{text}");
    assert!(
        text.contains("\"password\"") && text.contains("W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ=="),
        "{text}"
    );
    assert!(!text.contains("super-secret"), "{text}");
    // As YAML, a single Secret and a list: the same values redacted, the annotation with the
    // last applied configuration too.
    for args in [
        &["get", "secret", "db-creds", "-n", "default", "-o", "yaml"][..],
        &["get", "secrets", "-n", "default", "-o", "yaml"][..],
    ] {
        let yaml = kubectl(args);
        assert!(yaml.status.success(), "{}", describe(&yaml));
        let text = stdout(&yaml);
        assert!(!text.contains(kube::SECRET_VALUE), "{text}");
        assert!(!text.contains("c3VwZXIt"), "{text}");
        assert!(
            text.contains("password: W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ==")
                && text.contains("last-applied-configuration"),
            "{text}"
        );
    }
    // Watching: `get secret -w` (Tables, event by event) and `-w -o yaml` (whole objects).
    // The double's stream ends after two events; kubectl has printed them by then.
    let watched = kubectl(&["get", "secret", "db-creds", "-n", "default", "-w"]);
    let text = stdout(&watched);
    assert!(
        text.lines().filter(|l| l.starts_with("db-creds")).count() >= 2,
        "{}",
        describe(&watched)
    );
    let watch_request = api
        .seen()
        .into_iter()
        .rfind(|s| s.path == "/api/v1/namespaces/default/secrets")
        .expect("the watch reached the cluster");
    assert!(
        watch_request.query.contains("watch=true")
            && watch_request
                .query
                .contains("fieldSelector=metadata.name%3Ddb-creds"),
        "{watch_request:?}"
    );
    assert!(
        watch_request
            .accept
            .as_deref()
            .is_some_and(|a| a.contains("as=Table") && !a.contains("protobuf")),
        "{watch_request:?}"
    );
    let watched = kubectl(&[
        "get", "secret", "db-creds", "-n", "default", "-w", "-o", "yaml",
    ]);
    let text = stdout(&watched);
    // The first get, then the events kubectl prints (not the ADDED one it already has).
    assert!(watched.status.success(), "{}", describe(&watched));
    assert!(
        text.matches("password: W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ==")
            .count()
            >= 2
            && text.contains("resourceVersion: \"8\""),
        "{}",
        describe(&watched)
    );
    assert!(!text.contains(kube::SECRET_VALUE), "{text}");
    // The Table watch kubectl reads, as bytes: each row's object (its metadata, or all of it
    // with includeObject=Object) is redacted.
    let ca_pem = env.state.join("ca.pem");
    for include in ["Metadata", "Object"] {
        let tables = output_within(
            cg.command(
                "curl",
                &[
                    "-sS",
                    "--cacert",
                    ca_pem.to_str().expect("utf-8"),
                    "-H",
                    "Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
                    &format!(
                        "https://127.0.0.1:{}/api/v1/namespaces/default/secrets?watch=true&includeObject={include}",
                        api.port
                    ),
                ],
            ),
            T,
        );
        assert!(tables.status.success(), "{}", describe(&tables));
        let text = stdout(&tables);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("\"kind\":\"Table\""), "{text}");
        assert!(!text.contains(kube::SECRET_VALUE), "{text}");
        assert!(!text.contains("c3VwZXIt"), "{text}");
        assert!(
            text.contains("W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ=="),
            "{include}: {text}"
        );
    }

    // Whatever form the agent asks for (protobuf, YAML, CBOR, metadata only, the old watch
    // path), enforcer asks the cluster for JSON, uncompressed, and redacts it.
    let secrets_url = format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/secrets",
        api.port
    );
    let fetch = |accept: &str, url: &str| -> String {
        let out = output_within(
            cg.command(
                "curl",
                &[
                    "-sS",
                    "--compressed",
                    "--cacert",
                    ca_pem.to_str().expect("utf-8"),
                    "-H",
                    &format!("Accept: {accept}"),
                    url,
                ],
            ),
            T,
        );
        assert!(out.status.success(), "{}", describe(&out));
        stdout(&out)
    };
    for accept in [
        "application/vnd.kubernetes.protobuf",
        "application/yaml",
        "application/cbor",
        "application/vnd.kubernetes.protobuf,application/json",
        "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
    ] {
        let text = fetch(accept, &secrets_url);
        assert!(!text.contains(kube::SECRET_VALUE), "{accept}: {text}");
        assert!(!text.contains("c3VwZXIt"), "{accept}: {text}");
        assert!(
            text.contains("W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ=="),
            "{accept}: {text}"
        );
    }
    let text = fetch(
        "application/json",
        &format!(
            "https://127.0.0.1:{}/api/v1/watch/namespaces/default/secrets",
            api.port
        ),
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains(kube::SECRET_VALUE), "{text}");
    let asked: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/secrets"))
        .collect();
    assert!(
        asked.iter().all(|s| s.accept_encoding.is_none()
            && s.accept.as_deref().is_some_and(|a| a
                .split(',')
                .all(|t| t.trim().starts_with("application/json")))),
        "{asked:?}"
    );

    // Writing Secrets needs an admin grant. With one, the answer (the Secret as stored) is
    // redacted too; a JSON patch that copies, moves or tests a value, and a write carrying
    // the placeholder the agent was shown, are refused before they reach the cluster.
    let admin_grant = cluster.grant("admin", "10", "rotate the database password");
    let bearer = format!(
        "Authorization: Bearer {}",
        admin_grant["token"].as_str().expect("token")
    );
    let write = |method: &str, content_type: &str, body: &str, url: &str| -> (String, String) {
        let out = output_within(
            cg.command(
                "curl",
                &[
                    "-sS",
                    "-X",
                    method,
                    "--cacert",
                    ca_pem.to_str().expect("utf-8"),
                    "-H",
                    &bearer,
                    "-H",
                    &format!("Content-Type: {content_type}"),
                    "--data-binary",
                    body,
                    "-w",
                    "\n%{http_code}",
                    url,
                ],
            ),
            T,
        );
        assert!(out.status.success(), "{}", describe(&out));
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (code.to_owned(), body.to_owned())
    };
    let db_creds = format!("{secrets_url}/db-creds");
    let writes_before = api.seen().len();
    let (code, body) = write(
        "PATCH",
        "application/merge-patch+json",
        r#"{"data":{"password":"bmV3LXBhc3N3b3Jk"}}"#,
        &db_creds,
    );
    assert_eq!(code, "200", "{body}");
    assert!(!body.contains(kube::SECRET_VALUE), "{body}");
    assert!(body.contains("W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ=="), "{body}");
    let (code, body) = write(
        "POST",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db-creds"},"stringData":{"password":"fresh"}}"#,
        &secrets_url,
    );
    assert_eq!(code, "201", "{body}");
    assert!(!body.contains(kube::SECRET_VALUE), "{body}");
    let (code, body) = write(
        "PATCH",
        "application/json-patch+json",
        r#"[{"op":"copy","from":"/data/password","path":"/metadata/annotations/x"}]"#,
        &format!("{db_creds}?dryRun=All"),
    );
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("may only add, remove or replace (not copy)"),
        "{body}"
    );
    let (code, body) = write(
        "PUT",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"db-creds"},"data":{"password":"W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ=="}}"#,
        &db_creds,
    );
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("redaction placeholder"), "{body}");
    // The same for a ConfigMap whose keys the profile masks (`get -o yaml | replace -f -`).
    let (code, body) = write(
        "PUT",
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"app-config"},"data":{"db_password":"[redacted by enforcer]"}}"#,
        &format!(
            "{}/app-config",
            secrets_url.replace("/secrets", "/configmaps")
        ),
    );
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("redaction placeholder"), "{body}");
    let writes: Vec<_> = api.seen()[writes_before..]
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(
        writes,
        ["PATCH", "POST"],
        "only the two clean writes arrived"
    );

    // RBAC: bindings are readable; making one is a change to RBAC (admin access), refused
    // without a grant (the decision is the request line's, whatever the body's encoding).
    let bindings = kubectl(&["get", "rolebindings", "-n", "default"]);
    assert!(bindings.status.success(), "{}", describe(&bindings));
    assert!(
        stdout(&bindings).contains("ci-bot-view"),
        "{}",
        describe(&bindings)
    );
    let bind = kubectl(&[
        "create",
        "rolebinding",
        "ci-bot-admin",
        "--clusterrole=admin",
        "--serviceaccount=default:ci-bot",
        "-n",
        "default",
    ]);
    assert!(!bind.status.success(), "{}", describe(&bind));
    assert!(
        stderr(&bind).contains("failed to create rolebinding: rolebindings.rbac.authorization.k8s.io is forbidden: enforcer: k8s:create (admin) on cluster denied: no policy permits it; ask for a grant: enforcer grant request --resource cluster --access admin"),
        "{}",
        describe(&bind)
    );
    assert!(
        !api.seen()
            .iter()
            .any(|s| s.method == "POST" && s.path.ends_with("/rolebindings")),
        "the binding never reached the cluster"
    );

    // The profile's keys mask ConfigMap values too.
    let cm = kubectl(&[
        "get",
        "configmap",
        "app-config",
        "-n",
        "default",
        "-o",
        "json",
    ]);
    assert!(cm.status.success(), "{}", describe(&cm));
    let text = stdout(&cm);
    assert!(!text.contains("plain-text-password"), "{text}");
    assert!(
        text.contains("\"db_password\": \"[redacted by enforcer]\""),
        "{text}"
    );
    assert!(text.contains("\"log_level\": \"debug\""), "{text}");
    // A watch stream is redacted event by event.
    let watched = kubectl(&["get", "--raw", "/api/v1/namespaces/default/secrets?watch=1"]);
    assert!(watched.status.success(), "{}", describe(&watched));
    let text = stdout(&watched);
    // Per event: two data values and the one in the last-applied annotation.
    assert_eq!(
        text.matches("W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ==").count(),
        6,
        "{text}"
    );
    assert!(!text.contains(kube::SECRET_VALUE), "{text}");

    // HTTP/2 (what kubectl negotiates too): curl sends two requests at once on one
    // connection; both are decided and answered, the Secret list redacted.
    let base = format!("https://127.0.0.1:{}/api/v1/namespaces/default", api.port);
    let ca = env.state.join("ca.pem");
    let h2 = output_within(
        cg.command(
            "curl",
            &[
                "-sS",
                "--http2",
                "--parallel",
                "--cacert",
                ca.to_str().expect("utf-8"),
                "-H",
                "Authorization: Bearer stale-cluster-admin-token",
                "-w",
                "\n%{http_version} %{response_code} %{num_connects}\n",
                &format!("{base}/pods"),
                &format!("{base}/secrets"),
            ],
        ),
        T,
    );
    assert!(h2.status.success(), "{}", describe(&h2));
    let text = stdout(&h2);
    // One connection for both: the second request was a stream of the first's connection.
    assert!(
        text.contains("\n2 200 1\n") && text.contains("\n2 200 0\n"),
        "{text}"
    );
    assert!(
        text.contains("\"PodList\"") && text.contains("\"SecretList\""),
        "{text}"
    );
    assert!(!text.contains(kube::SECRET_VALUE), "{text}");

    // Changing a deployment is refused as the API server refuses: kubectl prints it like an
    // RBAC denial, naming the rule and how to ask for a grant; the cluster never sees it.
    let delete = kubectl(&["delete", "deployment", "web", "-n", "default"]);
    assert!(!delete.status.success());
    let err = stderr(&delete);
    assert!(
        err.contains("Error from server (Forbidden): deployments.apps \"web\" is forbidden: enforcer: k8s:delete (write) on cluster denied: no policy permits it"),
        "{err}"
    );
    assert!(
        err.contains("enforcer grant request --resource cluster --access write"),
        "{err}"
    );
    // Impersonation would make an allowed request run as someone else: refused.
    let as_admin = kubectl(&["get", "pods", "-n", "default", "--as", "system:admin"]);
    assert!(!as_admin.status.success());
    assert!(
        stderr(&as_admin).contains("may not impersonate (the impersonate-user header)"),
        "{}",
        describe(&as_admin)
    );
    // A proxied GET is not a read: it reaches whatever the pod serves.
    let proxied = kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web-0/proxy/env",
    ]);
    assert!(!proxied.status.success(), "{}", describe(&proxied));
    assert!(
        stderr(&proxied).contains("(exec)"),
        "{}",
        describe(&proxied)
    );
    // exec is refused before any stream is opened.
    let exec = kubectl(&["exec", "web-0", "-n", "default", "--", "ls"]);
    assert!(!exec.status.success(), "{}", describe(&exec));
    assert!(
        stderr(&exec).contains("enforcer: k8s:create (exec) on cluster denied")
            && stderr(&exec).contains("--access exec"),
        "{}",
        describe(&exec)
    );

    // `kubectl auth can-i` is answered by enforcer from its own policy, not by the cluster
    // for the injected credential.
    let can = kubectl(&["auth", "can-i", "list", "pods", "-n", "default"]);
    assert!(can.status.success(), "{}", describe(&can));
    assert_eq!(stdout(&can).trim(), "yes");
    let cannot = kubectl(&["auth", "can-i", "delete", "deployments", "-n", "default"]);
    assert!(!cannot.status.success(), "{}", describe(&cannot));
    assert!(
        stdout(&cannot).starts_with("no - enforcer: k8s:delete (write): no policy permits it"),
        "{}",
        describe(&cannot)
    );
    let held = kubectl(&[
        "auth",
        "can-i",
        "create",
        "serviceaccounts",
        "-n",
        "default",
    ]);
    assert_eq!(stdout(&held).trim(), "yes", "{}", describe(&held));

    // Creating a ServiceAccount is held for an operator: approved, it reaches the cluster;
    // denied, kubectl prints the operator's reason.
    let spawn_create = |name: &str| {
        let mut cmd = cg.command(
            "/usr/bin/kubectl",
            &[
                "--kubeconfig",
                config.to_str().expect("utf-8"),
                "--cache-dir",
                cache.to_str().expect("utf-8"),
                "create",
                "serviceaccount",
                name,
                "-n",
                "default",
            ],
        );
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("kubectl")
    };
    let held = spawn_create("ci-bot");
    let approval = pending_approval(admin, &env.state);
    assert_eq!(approval["kind"], "operation");
    assert!(
        approval["summary"]
            .as_str()
            .is_some_and(|s| s.contains("k8s:create") && s.contains("serviceaccounts")),
        "{approval}"
    );
    let id = approval["id"].as_str().expect("id").to_owned();
    let ok = operator(admin, &env.state, &["approvals", "approve", &id]);
    assert!(ok.status.success(), "{}", describe(&ok));
    let created = held.wait_with_output().expect("kubectl");
    assert!(created.status.success(), "{}", describe(&created));
    assert!(
        stdout(&created).contains("serviceaccount/ci-bot created"),
        "{}",
        describe(&created)
    );
    let held = spawn_create("other-bot");
    let approval = pending_approval(admin, &env.state);
    let id = approval["id"].as_str().expect("id").to_owned();
    let no = operator(
        admin,
        &env.state,
        &["approvals", "deny", &id, "--reason", "use the shared bot"],
    );
    assert!(no.status.success(), "{}", describe(&no));
    let refused = held.wait_with_output().expect("kubectl");
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("serviceaccounts is forbidden: enforcer: k8s:create on cluster denied: an operator denied it: use the shared bot (held by rule service-accounts-need-approval, approval "),
        "{}",
        describe(&refused)
    );

    // Requests the API server would read differently, or whose headers never end, are refused
    // before anything is decided.
    let ca = env.state.join("ca.pem").display().to_string();
    let curl = |extra: &[&str]| -> String {
        let url_base = format!("https://127.0.0.1:{}", api.port);
        let mut args = vec![
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca.as_str(),
        ];
        args.extend_from_slice(extra);
        let mut owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(last) = owned.last_mut()
            && last.starts_with('/')
        {
            *last = format!("{url_base}{last}");
        }
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        stdout(&output_within(cg.command("curl", &refs), T))
    };
    assert_eq!(
        curl(&["/api/v1/namespaces/default/secrets%2Fdb-creds"]),
        "400"
    );
    assert_eq!(
        curl(&[
            "--path-as-is",
            "/api/v1/namespaces/default/../kube-system/secrets"
        ]),
        "400"
    );
    // A header section larger than enforcer reads (64 KiB): 431, and nothing forwarded.
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile='{ca}')\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='127.0.0.1')\n\
         try:\n\
         \x20   s.sendall(b'GET /api/v1/namespaces/default/pods HTTP/1.1\\r\\nHost: x\\r\\nX-Filler: ' + b'a' * 200000 + b'\\r\\n\\r\\n')\n\
         \x20   data = s.recv(100)\n\
         \x20   print(data.split(b' ')[1].decode() if data else 'closed')\n\
         except OSError:\n\
         \x20   print('reset')\n",
        port = api.port
    );
    let before = api.seen().len();
    let big = output_within(cg.command("python3", &["-c", &script]), T);
    // 431 when the answer arrives before the connection is torn down; a reset otherwise (the
    // client was still sending). Never an answer from the cluster.
    assert!(
        ["431", "reset", "closed"].contains(&stdout(&big).trim()),
        "{}",
        describe(&big)
    );
    assert_eq!(
        api.seen().len(),
        before,
        "the oversized request was not forwarded"
    );

    // The kube crate, through the same kubeconfig: the same decisions and redaction.
    let client = std::path::Path::new(ENFORCER)
        .parent()
        .expect("target dir")
        .join("examples/kube_client");
    let tool = env.path().join("kube_client");
    std::fs::copy(&client, &tool).expect("copy kube_client (cargo build --example kube_client)");
    let out = output_within(
        cg.command(
            tool.to_str().expect("utf-8"),
            &[config.to_str().expect("utf-8")],
        ),
        T,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let steps: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(steps[0]["names"], serde_json::json!(["web-0", "web-1"]));
    assert_eq!(steps[1]["data"]["password"], "[redacted by enforcer]");
    assert_eq!(steps[2]["code"], 403, "{steps:?}");
    assert_eq!(steps[2]["reason"], "Forbidden", "{steps:?}");

    let seen = api.seen();
    assert!(!seen.is_empty());
    assert_eq!(
        seen.iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/serviceaccounts"))
            .count(),
        1,
        "only the approved ServiceAccount reached the cluster: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer real-cluster-token")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|s| s.method == "DELETE"), "{seen:?}");
    assert!(!seen.iter().any(|s| s.path.ends_with("/exec")), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|s| s.path.ends_with("/selfsubjectaccessreviews")),
        "{seen:?}"
    );

    // Every request is in the audit chain with its decision.
    let decided: Vec<_> = read_json_lines(&env.state.join("audit.jsonl"))
        .into_iter()
        .map(|mut r| r["event"].take())
        .filter(|e| e["kind"] == "statement")
        .collect();
    let find = |action: &str, decision: &str| {
        decided
            .iter()
            .any(|e| e["action"] == action && e["decision"] == decision)
    };
    assert!(find("k8s:list", "allow"), "{decided:#?}");
    assert!(find("k8s:delete", "deny"), "{decided:#?}");
    assert!(find("k8s:watch", "allow"), "{decided:#?}");
    // What each request names is in its record, as the API server reads it.
    assert!(
        decided.iter().any(|e| e["action"] == "k8s:delete"
            && e["object"]
                == serde_json::json!({"group": "apps", "resource": "deployments",
                    "subresource": "", "namespace": "default", "name": "web"})),
        "{decided:#?}"
    );
    // Each allowed request's end: its status, the bytes of its body and the time to the
    // body's end.
    let answered = |e: &serde_json::Value| {
        e["kind"] == "statement_done"
            && e["tag"] == "HTTP 200"
            && e["bytes"].as_u64().is_some_and(|b| b > 100)
            && e["duration_us"].as_u64().is_some_and(|d| d > 0)
    };
    let events = audit_events_with(&env.state.join("audit.jsonl"), answered);
    assert!(events.iter().any(answered), "{events:#?}");
    // Each end names its request by connection and number, and that request's decision is
    // the one record with that pair: HTTP/2's interleaved requests are told apart.
    let pair = |e: &serde_json::Value| (e["connection"].as_u64(), e["request"].as_u64());
    for done in events.iter().filter(|e| e["kind"] == "statement_done") {
        let (connection, request) = pair(done);
        assert!(connection.is_some() && request.is_some(), "{done}");
        let decisions = events
            .iter()
            .filter(|e| e["kind"] == "statement" && pair(e) == (connection, request))
            .count();
        assert_eq!(decisions, 1, "{done} in {events:#?}");
    }
    assert!(
        events.iter().any(|e| e["kind"] == "statement_done"
            && e["request"] == 2
            && events.iter().any(|o| o["kind"] == "statement_done"
                && o["request"] == 1
                && o["connection"] == e["connection"])),
        "two requests ended on one connection (HTTP/2): {events:#?}"
    );

    // SREs see the same decisions by verb, and the redactions by what they redacted.
    let (_, metrics) = http_get(admin, "/metrics");
    for line in [
        "enforcer_statements_total{resource=\"cluster\",action=\"k8s:list\",decision=\"allow\"}",
        "enforcer_statements_total{resource=\"cluster\",action=\"k8s:watch\",decision=\"allow\"}",
        "enforcer_statements_total{resource=\"cluster\",action=\"k8s:delete\",decision=\"deny\"}",
        "enforcer_statements_total{resource=\"cluster\",action=\"k8s:create\",decision=\"deny\"}",
        "enforcer_hold_seconds_count 2",
        "enforcer_upstream_seconds_count{resource=\"cluster\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    for detector in ["kubernetes_secret", "kubernetes_key"] {
        assert!(
            metrics.contains(&format!(
                "enforcer_masked_values_total{{detector=\"{detector}\"}}"
            )),
            "{detector}: {metrics}"
        );
    }

    // A grant token in the kubeconfig: the request carrying it has that grant (one delete);
    // the cluster still sees only the injected credential. Spent, the token opens nothing.
    let granted = cluster.grant("write", "1", "remove the old web deployment");
    let token_file = env.path().join("grant-token");
    std::fs::write(&token_file, granted["token"].as_str().expect("token")).expect("token");
    let with_token = output_within(
        {
            let mut c = std::process::Command::new(ENFORCER);
            c.args(["kubeconfig", "--resource", "cluster", "--policy"])
                .arg(policy)
                .arg("--state")
                .arg(&env.state)
                .arg("--grant-token")
                .arg(&token_file);
            c
        },
        T,
    );
    assert!(with_token.status.success(), "{}", describe(&with_token));
    assert!(stdout(&with_token).contains("  user: {token: ey"));
    std::fs::write(config, stdout(&with_token)).expect("kubeconfig");
    let before = api.seen().len();
    let delete = kubectl(&[
        "delete",
        "deployment",
        "web",
        "-n",
        "default",
        "--wait=false",
    ]);
    assert!(delete.status.success(), "{}", describe(&delete));
    let again = kubectl(&[
        "delete",
        "deployment",
        "web",
        "-n",
        "default",
        "--wait=false",
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("You must be logged in to the server (enforcer: the grant token")
            && stderr(&again).contains("is used"),
        "{}",
        describe(&again)
    );
    let seen = api.seen();
    let deletes: Vec<_> = seen[before..]
        .iter()
        .filter(|s| s.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{seen:?}");
    assert!(
        seen[before..]
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer real-cluster-token")),
        "{seen:?}"
    );
    let decided: Vec<_> = read_json_lines(&env.state.join("audit.jsonl"))
        .into_iter()
        .map(|mut r| r["event"].take())
        .filter(|e| e["kind"] == "statement" && e["action"] == "k8s:delete")
        .collect();
    assert!(
        decided
            .iter()
            .any(|e| e["decision"] == "allow" && e["grant"] == granted["id"]),
        "{decided:#?}"
    );

    // Outside the cgroup, kubectl reaches the cluster only through the gateway, and only
    // with a grant token: its grant and the baseline, as the token's workload.
    let granted = cluster.grant("write", "1", "clean up from the operator's laptop");
    std::fs::write(&token_file, granted["token"].as_str().expect("token")).expect("token");
    let outside_config = |with_token: bool| {
        let mut c = std::process::Command::new(ENFORCER);
        c.args([
            "kubeconfig",
            "--resource",
            "cluster",
            "--gateway",
            "--policy",
        ])
        .arg(policy)
        .arg("--state")
        .arg(&env.state)
        .arg("--grant-token")
        .arg(&token_file);
        let out = output_within(c, T);
        assert!(out.status.success(), "{}", describe(&out));
        let text = stdout(&out);
        assert!(
            text.contains(&format!("server: https://127.0.0.1:{gateway}")),
            "{text}"
        );
        let path = env.path().join(format!("outside-{with_token}"));
        let text = if with_token {
            text
        } else {
            text.lines()
                .map(|l| {
                    if l.starts_with("  user: {token:") {
                        "  user: {token: stale-cluster-admin-token}"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        std::fs::write(&path, text).expect("kubeconfig");
        path
    };
    let outside = |config: &std::path::Path, args: &[&str]| -> Output {
        let mut c = std::process::Command::new("/usr/bin/kubectl");
        c.arg("--kubeconfig")
            .arg(config)
            .arg("--cache-dir")
            .arg(env.path().join("outside-cache"))
            .arg("--request-timeout=20s")
            .args(args);
        output_within(c, T)
    };
    let seen_before = api.seen().len();
    let anonymous = outside(&outside_config(false), &["get", "pods", "-n", "default"]);
    assert!(!anonymous.status.success());
    assert!(
        stderr(&anonymous).contains("You must be logged in to the server"),
        "{}",
        describe(&anonymous)
    );
    assert_eq!(
        api.seen().len(),
        seen_before,
        "a stale token through the gateway reaches nothing"
    );
    let config = outside_config(true);
    let pods = outside(&config, &["get", "pods", "-n", "default"]);
    assert!(pods.status.success(), "{}", describe(&pods));
    assert!(stdout(&pods).contains("web-0"), "{}", describe(&pods));
    let before = api.seen().len();
    let delete = outside(
        &config,
        &[
            "delete",
            "deployment",
            "web",
            "-n",
            "default",
            "--wait=false",
        ],
    );
    assert!(delete.status.success(), "{}", describe(&delete));
    let seen = api.seen();
    assert_eq!(
        seen[before..]
            .iter()
            .filter(|s| s.method == "DELETE")
            .count(),
        1,
        "{seen:?}"
    );
    assert!(
        seen[before..]
            .iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer real-cluster-token")),
        "{seen:?}"
    );
}

const STREAMS_CEDAR: &str = r#"
@id("baseline-read")
permit (principal, action in [Enforcer::Action::"k8s:get", Enforcer::Action::"k8s:list", Enforcer::Action::"k8s:watch"], resource)
when { context.access == "read" };

@id("streams-by-grant")
permit (principal, action == Enforcer::Action::"k8s:create", resource)
when { context.grant == "exec" && ["exec", "attach", "portforward"].contains(context.subresource) };

@id("exec-grants")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "exec" };
"#;

#[test]
fn exec_and_port_forward_streams_are_relayed_with_a_grant_and_recorded() {
    let cluster = Cluster::start(STREAMS_CEDAR);
    let exec = |args: &[&str], env: &[&str]| {
        let mut all = vec!["exec", "web-0", "-n", "default"];
        all.extend_from_slice(args);
        cluster.kubectl(&all, env)
    };

    // Without a grant the stream is refused as RBAC would refuse it, naming the grant to ask
    // for (kubectl's fallback to SPDY gets the same answer); the cluster sees no exec.
    let refused = exec(&["--", "env"], &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("pods \"web-0\" is forbidden (subresource exec): enforcer: k8s:create (exec) on cluster denied")
            && stderr(&refused).contains("enforcer grant request --resource cluster --access exec"),
        "{}",
        describe(&refused)
    );
    assert!(
        !cluster.api.seen().iter().any(|s| s.path.ends_with("/exec")),
        "{:?}",
        cluster.api.seen()
    );

    // With a grant of four uses: kubectl's streams over WebSocket, stdin in and stdout back.
    let attach = cluster.kubectl(&["attach", "web-0", "-n", "default"], &[]);
    assert!(!attach.status.success());
    assert!(
        stderr(&attach).contains("pods \"web-0\" is forbidden (subresource attach): enforcer: k8s:create (exec) on cluster denied"),
        "{}",
        describe(&attach)
    );
    let granted = cluster.grant("exec", "5", "debug the web pod");
    // SPDY, forced, is refused (its streams are not read, so not recorded); no use is taken.
    let spdy = exec(&["--", "env"], &["KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"]);
    assert!(!spdy.status.success());
    assert!(
        stderr(&spdy).contains("relayed over WebSocket only"),
        "{}",
        describe(&spdy)
    );
    let input = cluster.env.path().join("stdin");
    std::fs::write(&input, "hello from kubectl\n").expect("stdin");
    let cat = output_within(
        cluster.cg.command(
            "sh",
            &[
                "-c",
                &format!(
                    "exec /usr/bin/kubectl --kubeconfig {} --cache-dir {} --request-timeout=20s exec -i web-0 -n default -- cat < {}",
                    cluster.config.display(),
                    cluster.cache.display(),
                    input.display()
                ),
            ],
        ),
        T,
    );
    assert!(cat.status.success(), "{}", describe(&cat));
    assert_eq!(stdout(&cat), "hello from kubectl\n", "{}", describe(&cat));
    let ran = exec(&["--", "env"], &[]);
    assert!(ran.status.success(), "{}", describe(&ran));
    assert_eq!(stdout(&ran), "ran: env\n");
    let attached = cluster.kubectl(&["attach", "web-0", "-n", "default"], &[]);
    assert!(attached.status.success(), "{}", describe(&attached));
    assert_eq!(
        stdout(&attached),
        "attached to web\n",
        "{}",
        describe(&attached)
    );

    // The kube crate: exec with stdin, and a port-forward carrying bytes both ways.
    let client = std::path::Path::new(ENFORCER)
        .parent()
        .expect("target dir")
        .join("examples/kube_client");
    let tool = cluster.env.path().join("kube_client");
    std::fs::copy(&client, &tool).expect("copy kube_client (cargo build --example kube_client)");
    let out = output_within(
        cluster.cg.command(
            tool.to_str().expect("utf-8"),
            &[cluster.config.to_str().expect("utf-8"), "streams"],
        ),
        T,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let steps: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(steps[0]["stdout"], "hello through kube\n", "{steps:?}");
    assert_eq!(steps[0]["status"], "Success", "{steps:?}");
    assert_eq!(steps[1]["echo"], "ping", "{steps:?}");

    // The grant's five uses are spent: the next stream is refused.
    let spent = exec(&["--", "env"], &[]);
    assert!(!spent.status.success());
    assert!(
        stderr(&spent).contains("is forbidden"),
        "{}",
        describe(&spent)
    );
    let seen = cluster.api.seen();
    assert_eq!(
        seen.iter()
            .filter(|s| s.path.ends_with("/exec")
                || s.path.ends_with("/portforward")
                || s.path.ends_with("/attach"))
            .count(),
        5,
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some("Bearer real-cluster-token")),
        "{seen:?}"
    );

    // Every message is in the audit chain, under the grant's decision; the streams' ends
    // follow within 50 ms.
    let events = audit_events_with(&cluster.env.state.join("audit.jsonl"), |e| {
        e["kind"] == "statement_done"
            && e["tag"]
                .as_str()
                .is_some_and(|t| t.starts_with("HTTP 101 v5.channel.k8s.io"))
    });
    let frame = |direction: &str, channel: &str, text: &str| {
        events.iter().find(|e| {
            e["kind"] == "stream_frame"
                && e["direction"] == direction
                && e["channel"] == channel
                && e["text"] == text
        })
    };
    let stdin = frame("to_container", "stdin", "hello from kubectl\n").expect("stdin recorded");
    assert!(frame("from_container", "stdout", "hello from kubectl\n").is_some());
    assert!(frame("from_container", "stdout", "ran: env\n").is_some());
    assert!(frame("to_container", "stdin", "hello through kube\n").is_some());
    assert!(frame("to_container", "port #0 data", "ping").is_some());
    assert!(frame("from_container", "port #0 data", "ping").is_some());
    let allowed = events
        .iter()
        .filter(|e| {
            e["kind"] == "statement"
                && e["action"] == "k8s:create"
                && e["decision"] == "allow"
                && e["grant"] == granted["id"]
        })
        .count();
    assert_eq!(allowed, 5, "{events:#?}");
    assert!(frame("from_container", "stdout", "attached to web\n").is_some());
    let connection = stdin["connection"].as_u64().expect("connection");
    assert!(
        events.iter().any(|e| e["kind"] == "statement_done"
            && e["connection"] == connection
            && e["tag"]
                .as_str()
                .is_some_and(|t| t.starts_with("HTTP 101 v5.channel.k8s.io"))),
        "{events:#?}"
    );
    let show = output_within(
        {
            let mut c = std::process::Command::new(ENFORCER);
            c.args(["sessions", "show", &connection.to_string(), "--state"])
                .arg(&cluster.env.state);
            c
        },
        T,
    );
    assert!(show.status.success(), "{}", describe(&show));
    assert!(
        stdout(&show).contains("stream   → stdin 19 bytes  hello from kubectl\\n"),
        "{}",
        describe(&show)
    );
}

#[test]
fn a_client_certificate_can_be_the_injected_credential() {
    let cluster = Cluster::start_with(CEDAR, true, "cluster", "masking: {keys: [\"*password*\"]}");
    let pods = cluster.kubectl(&["get", "pods", "-n", "default"], &[]);
    assert!(pods.status.success(), "{}", describe(&pods));
    assert!(stdout(&pods).contains("web-0"), "{}", describe(&pods));
    // The cluster authenticated enforcer by its certificate; no token at all was sent (the
    // agent's stale one least of all).
    let seen = cluster.api.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|s| s.client_certificate && s.authorization.is_none()),
        "{seen:?}"
    );
    // An API server whose certificate the resource's CA did not sign is not spoken to: the
    // policy's CA is now another one (enforcer's own), read anew for each connection.
    let cluster_ca = std::fs::read(&cluster.api.ca).expect("read ca");
    std::fs::copy(cluster.env.state.join("ca.pem"), &cluster.api.ca).expect("swap ca");
    let impostor = cluster.kubectl(&["get", "pods", "-n", "default"], &[]);
    assert!(!impostor.status.success(), "{}", describe(&impostor));
    assert!(
        stderr(&impostor).contains("Error from server (ServiceUnavailable)")
            && stderr(&impostor).contains("certificate"),
        "{}",
        describe(&impostor)
    );
    assert_eq!(
        cluster.api.seen().len(),
        seen.len(),
        "no request went to a server enforcer could not verify"
    );
    std::fs::write(&cluster.api.ca, cluster_ca).expect("restore ca");
    // A credential that cannot be read is told to the client in the API server's terms.
    std::fs::remove_file(&cluster.api.client_key).expect("remove key");
    let broken = cluster.kubectl(&["get", "pods", "-n", "default"], &[]);
    assert!(!broken.status.success());
    assert!(
        stderr(&broken).contains("Error from server (ServiceUnavailable)")
            && stderr(&broken).contains(
                "enforcer cannot authenticate to the API server of cluster: credential: client certificate"
            ),
        "{}",
        describe(&broken)
    );
    assert_eq!(
        cluster.api.seen().len(),
        seen.len(),
        "nothing reached the cluster"
    );
}

#[test]
fn a_watch_held_open_is_redacted_as_it_streams_and_pod_environments_are_masked() {
    let cluster = Cluster::start(CEDAR);
    let api = &cluster.api;

    // The profile's keys (`*password*`) mask environment variables wherever a pod spec
    // sits: a Deployment's template, each pod of a list, one pod.
    for args in [
        &["get", "deployment", "web", "-n", "default", "-o", "json"][..],
        &["get", "pods", "-n", "default", "-o", "yaml"][..],
        &[
            "get",
            "pod",
            "web-0",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.containers[0].env}",
        ][..],
    ] {
        let out = cluster.kubectl(args, &[]);
        assert!(out.status.success(), "{}", describe(&out));
        let text = stdout(&out);
        assert!(!text.contains(kube::POD_PASSWORD), "{args:?}: {text}");
        assert!(
            text.contains("DB_PASSWORD") && text.contains("[redacted by enforcer]"),
            "{args:?}: {text}"
        );
        assert!(
            text.contains("debug"),
            "LOG_LEVEL is not a key the profile names: {text}"
        );
    }

    // A watch that the cluster holds open: the change kubectl prints arrives redacted
    // while the stream is still open, not when it ends.
    let mut watch = cluster.cg.command(
        "/usr/bin/kubectl",
        &[
            "--kubeconfig",
            cluster.config.to_str().expect("utf-8"),
            "--cache-dir",
            cluster.cache.to_str().expect("utf-8"),
            "get",
            "secrets",
            "-n",
            "default",
            "-l",
            "hold=open",
            "-w",
            "-o",
            "yaml",
        ],
    );
    watch
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = Guard(watch.spawn().expect("kubectl"));
    let out = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut text = String::new();
    let deadline = std::time::Instant::now() + T;
    while !text.contains("resourceVersion: \"9\"") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
            }
            Err(_) => panic!("the watched change did not arrive: {text}"),
        }
    }
    assert_eq!(
        api.open_watches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the cluster still serves the watch"
    );
    let event = text
        .rsplit("\n---\n")
        .next()
        .expect("the last object kubectl printed");
    assert!(event.contains("resourceVersion: \"9\""), "{text}");
    assert!(
        event.contains("password: W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ=="),
        "{text}"
    );
    assert!(!text.contains(kube::SECRET_VALUE), "{text}");
    assert!(!text.contains("c3VwZXIt"), "{text}");
    // The agent leaves: enforcer ends the watch upstream too, not at the cluster's next
    // event (there is none coming).
    drop(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api.open_watches.load(std::sync::atomic::Ordering::SeqCst) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch upstream outlived its client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // HEAD asks for no body: nothing to redact, answered as the cluster answers it.
    let ca = cluster.env.state.join("ca.pem");
    let head = output_within(
        cluster.cg.command(
            "curl",
            &[
                "-sS",
                "-I",
                "--cacert",
                ca.to_str().expect("utf-8"),
                &format!(
                    "https://127.0.0.1:{}/api/v1/namespaces/default/secrets/db-creds",
                    api.port
                ),
            ],
        ),
        T,
    );
    assert!(head.status.success(), "{}", describe(&head));
    assert!(
        stdout(&head).starts_with("HTTP/2 200") || stdout(&head).starts_with("HTTP/1.1 200"),
        "{}",
        describe(&head)
    );

    // An HTTP/2 header list larger than enforcer takes is refused, and nothing forwarded.
    let before = api.seen().len();
    let filler = format!("X-Filler: {}", "a".repeat(100_000));
    let big = output_within(
        cluster.cg.command(
            "curl",
            &[
                "-sv",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                "--cacert",
                ca.to_str().expect("utf-8"),
                "-H",
                &filler,
                &format!(
                    "https://127.0.0.1:{}/api/v1/namespaces/default/pods",
                    api.port
                ),
            ],
        ),
        T,
    );
    // h2 refuses the stream (REFUSED_STREAM; curl tries once more on a new connection and
    // gives up): the client is told, the connection was not left hanging.
    assert!(
        stdout(&big) == "2 431" || stderr(&big).contains("REFUSED_STREAM"),
        "{}",
        describe(&big)
            .lines()
            .filter(|l| !l.to_ascii_lowercase().contains("x-filler"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        api.seen().len(),
        before,
        "the oversized request was not forwarded"
    );
}

/// The example policy the project ships for Kubernetes, as an operator would deploy it.
const SHIPPED: &str = include_str!("../../policies/ci-kubernetes/cluster.cedar");

#[test]
fn the_shipped_policy_keeps_the_agent_read_only_until_a_person_approves() {
    let cluster = Cluster::start_with(SHIPPED, false, "prod-cluster", "");
    let kubectl = |args: &[&str]| cluster.kubectl(args, &[]);
    let refused = |out: &Output, wanted: &str| {
        assert!(!out.status.success(), "{}", describe(out));
        assert!(stderr(out).contains(wanted), "{wanted}: {}", describe(out));
    };

    // Baseline: ordinary reads.
    let pods = kubectl(&["get", "pods", "-n", "default"]);
    assert!(pods.status.success(), "{}", describe(&pods));
    assert!(stdout(&pods).contains("web-0"), "{}", describe(&pods));
    // Not at baseline: Secrets, changes, streams into pods, new identities, RBAC.
    refused(
        &kubectl(&["get", "secrets", "-n", "default"]),
        "secrets is forbidden: enforcer: k8s:list (admin) on prod-cluster denied",
    );
    refused(
        &kubectl(&["annotate", "deployment", "web", "-n", "default", "note=x"]),
        "enforcer grant request --resource prod-cluster --access write",
    );
    refused(
        &kubectl(&["exec", "web-0", "-n", "default", "--", "ls"]),
        "enforcer grant request --resource prod-cluster --access exec",
    );
    refused(
        &kubectl(&["create", "serviceaccount", "ci-bot", "-n", "default"]),
        "serviceaccounts is forbidden: enforcer: k8s:create (admin) on prod-cluster denied",
    );
    refused(
        &kubectl(&[
            "create",
            "rolebinding",
            "ci-bot-admin",
            "--clusterrole=admin",
            "--serviceaccount=default:ci-bot",
            "-n",
            "default",
        ]),
        "rolebindings.rbac.authorization.k8s.io is forbidden",
    );

    // A write grant waits for a person; approved, it lets the agent change a deployment.
    let mut request = cluster.grant_request("write", "5", "annotate the web deployment");
    request
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let held = request.spawn().expect("grant request");
    let approval = pending_approval(&cluster.admin, &cluster.env.state);
    assert_eq!(approval["kind"], "grant", "{approval}");
    let id = approval["id"].as_str().expect("id").to_owned();
    let ok = operator(
        &cluster.admin,
        &cluster.env.state,
        &["approvals", "approve", &id],
    );
    assert!(ok.status.success(), "{}", describe(&ok));
    let granted = held.wait_with_output().expect("grant request");
    assert!(granted.status.success(), "{}", describe(&granted));
    let grant: serde_json::Value = serde_json::from_slice(&granted.stdout).expect("json");
    let annotated = kubectl(&["annotate", "deployment", "web", "-n", "default", "note=x"]);
    assert!(annotated.status.success(), "{}", describe(&annotated));
    assert!(
        stdout(&annotated).contains("deployment.apps/web annotated"),
        "{}",
        describe(&annotated)
    );
    // The write grant is for deployments: Secrets and streams stay shut.
    refused(
        &kubectl(&["get", "secrets", "-n", "default"]),
        "secrets is forbidden",
    );
    refused(
        &kubectl(&["exec", "web-0", "-n", "default", "--", "ls"]),
        "is forbidden",
    );
    // Wiping a collection is forbidden whatever the grant (the agent's grant token on the
    // request): the forbid rule names itself.
    let ca = cluster.env.state.join("ca.pem");
    let wipe = output_within(
        cluster.cg.command(
            "curl",
            &[
                "-sS",
                "-X",
                "DELETE",
                "--cacert",
                ca.to_str().expect("utf-8"),
                "-H",
                &format!(
                    "Authorization: Bearer {}",
                    grant["token"].as_str().expect("token")
                ),
                "-w",
                "\n%{http_code}",
                &format!(
                    "https://127.0.0.1:{}/apis/apps/v1/namespaces/default/deployments",
                    cluster.api.port
                ),
            ],
        ),
        T,
    );
    let text = stdout(&wipe);
    assert!(text.ends_with("\n403"), "{}", describe(&wipe));
    assert!(text.contains("no-deletecollection"), "{text}");

    let seen = cluster.api.seen();
    let changes: Vec<_> = seen
        .iter()
        .filter(|s| s.method != "GET")
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        changes,
        [("PATCH", "/apis/apps/v1/namespaces/default/deployments/web")],
        "only the granted change reached the cluster"
    );
    assert!(
        !seen.iter().any(|s| s.path.contains("/secrets")),
        "{seen:?}"
    );
}
