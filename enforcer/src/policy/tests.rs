use std::path::PathBuf;

use super::*;

fn load(text: &str) -> Result<Policy, PolicyError> {
    Policy::from_sources(&[(PathBuf::from("p.yaml"), text.to_owned())])
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(policy) => panic!("expected errors, policy loaded: {policy:?}"),
        Err(PolicyError::Invalid(diags)) => diags.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

const GOOD: &str = "\
resources:
  - name: orders-db
    protocol: postgres
    addresses: [\"127.0.0.1:5432\", \"[::1]:5432\"]
    credential: {env: ORDERS_DB_PASSWORD, username: app}
egress:
  - name: mirror
    to: [127.0.0.0/8]
    ports: [8080, \"9000-9010\"]
  - name: anything-v6
    to: [\"::1/128\"]
dns:
  resolver: 127.0.0.53:53
";

#[test]
fn good_policy_loads_and_routes() {
    let policy = load(GOOD).expect("valid policy");
    let route = |s: &str| policy.route(s.parse().expect("addr"));
    assert_eq!(route("127.0.0.1:5432").rule(), Some("orders-db"));
    assert_eq!(route("[::ffff:127.0.0.1]:5432").rule(), Some("orders-db"));
    assert_eq!(route("[::1]:5432").rule(), Some("orders-db"));
    assert_eq!(route("127.0.0.9:8080").rule(), Some("mirror"));
    assert_eq!(route("127.0.0.9:9005").rule(), Some("mirror"));
    assert_eq!(route("[::ffff:127.0.0.9]:9010").rule(), Some("mirror"));
    assert_eq!(route("[::1]:1234").rule(), Some("anything-v6"));
    assert_eq!(route("127.0.0.9:9011").kind(), "deny");
    assert_eq!(route("10.0.0.5:8080").kind(), "deny");
    assert_eq!(
        policy.dns_resolver,
        Some("127.0.0.53:53".parse().expect("addr"))
    );
}

#[test]
fn unknown_key_names_line_and_column() {
    let errs =
        errors("resources:\n  - name: a\n    protocol: http\n    adresses: [\"127.0.0.1:80\"]\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("p.yaml:4:"), "{errs:?}");
    assert!(errs[0].contains("adresses"), "{errs:?}");
}

#[test]
fn every_semantic_error_is_reported_with_its_position() {
    let text = "\
resources:
  - name: db
    protocol: postgres
    addresses: [\"127.0.0.1:5432\"]
  - name: db
    protocol: gopher
    addresses: [\"localhost:80\"]
egress:
  - name: bad
    to: [10.0.0.1/8, 300.1.1.1/32]
    ports: [0, \"9-1\", 70000, \"x\"]
";
    let errs = errors(text);
    let expect = [
        "p.yaml:2:11: resource \"db\" (postgres) has no credential source",
        "p.yaml:5:11: duplicate name \"db\": already defined at p.yaml:2:11",
        "p.yaml:6:15: unknown protocol \"gopher\"",
        "p.yaml:7:17: address \"localhost:80\" is not IP:port",
        "p.yaml:10:10: CIDR \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?",
        "p.yaml:10:22: \"300.1.1.1/32\" is not a CIDR",
        "p.yaml:11:13: port 0 is out of range",
        "p.yaml:11:16: port range \"9-1\" is reversed",
        "p.yaml:11:23: port 70000 is out of range",
        "p.yaml:11:30: \"x\" is not a port",
    ];
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(expect) {
        assert!(got.starts_with(want), "got {got:?}, want prefix {want:?}");
    }
}

#[test]
fn credential_needs_exactly_one_source() {
    let base =
        "resources:\n  - name: db\n    protocol: mysql\n    addresses: [\"127.0.0.1:3306\"]\n";
    let errs = errors(&format!("{base}    credential: {{}}\n"));
    assert!(errs[0].contains("credential source is missing"), "{errs:?}");
    let errs = errors(&format!("{base}    credential: {{env: A, file: /b}}\n"));
    assert!(errs[0].contains("exactly one"), "{errs:?}");
    let errs = errors(&format!(
        "{base}    credential: {{client_certificate: /c.pem, client_key: /k.pem}}\n"
    ));
    assert!(
        errs[0].contains("client certificates are presented to Kubernetes API servers only"),
        "{errs:?}"
    );
    let cluster = "resources:\n  - name: k\n    protocol: kubernetes\n    addresses: [\"127.0.0.1:6443\"]\n    upstream_tls: {}\n";
    let errs = errors(&format!(
        "{cluster}    credential: {{client_certificate: /c.pem}}\n"
    ));
    assert!(errs[0].contains("needs both"), "{errs:?}");
    let errs = errors(&format!(
        "{cluster}    credential: {{file: /t, client_certificate: /c.pem, client_key: /k.pem}}\n"
    ));
    assert!(errs[0].contains("exactly one source"), "{errs:?}");
    let policy = Policy::from_sources(&[(
        PathBuf::from("k.yaml"),
        format!("{cluster}    credential: {{client_certificate: /c.pem, client_key: /k.pem}}\n"),
    )])
    .expect("a client certificate is a kubernetes credential");
    assert_eq!(
        policy.resources[0].credential.as_ref().map(|c| &c.source),
        Some(&CredentialSource::ClientCertificate {
            certificate: PathBuf::from("/c.pem"),
            key: PathBuf::from("/k.pem"),
        })
    );
}

#[test]
fn duplicates_across_files_and_broken_yaml() {
    let a = (
        PathBuf::from("a.yaml"),
        "egress:\n  - name: x\n    to: [127.0.0.1]\n".to_owned(),
    );
    let b = (
        PathBuf::from("b.yaml"),
        "egress:\n  - name: x\n    to: [127.0.0.2]\n".to_owned(),
    );
    let c = (PathBuf::from("c.yaml"), "egress: [\n".to_owned());
    let Err(PolicyError::Invalid(diags)) = Policy::from_sources(&[a, b, c]) else {
        panic!("expected errors");
    };
    let text: Vec<_> = diags.iter().map(ToString::to_string).collect();
    assert!(
        text[0].starts_with("b.yaml:2:11: duplicate name \"x\": already defined at a.yaml:2:11"),
        "{text:?}"
    );
    assert!(text[1].starts_with("c.yaml:"), "{text:?}");
    assert_eq!(text.len(), 2);
}

#[test]
fn wrong_types_are_errors_not_panics() {
    for text in [
        "resources: 5\n",
        "egress:\n  - name: [1]\n    to: []\n",
        "dns: {resolver: nope}\n",
        "- a\n- b\n",
        "\t\t:\n",
        "egress:\n  - name: x\n    to: [\"::ffff:10.0.0.0/104\"]\n    ports: [-1]\n",
    ] {
        let _ = errors(text);
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = load(&text);
    }

    #[test]
    fn cedar_like_text_never_panics(text in "(permit|forbid|when|unless|principal|action|resource|context|Enforcer::|Action|Resource|@id|@approval|@max_ttl|hasTag|getTag|[-()\\[\\]{};,=!&|<>\" \n0-9a-z:.é])*") {
        let _ = with_cedar(&text);
    }

    #[test]
    fn yaml_like_text_never_panics(text in "(resources|egress|dns|name|to|ports|[-:\\[\\]{}, \n0-9a-z./\"])*") {
        let _ = load(&text);
    }
}

#[test]
fn identity_providers_load_with_defaults_and_refuse_weak_settings() {
    let policy = load(
        "identity_providers:\n  - name: ci\n    issuer: https://ci.example.test/\n    audience: enforcer\n    claims: [repository]\n",
    )
    .expect("valid");
    let p = &policy.identity_providers[0];
    assert_eq!(p.issuer, "https://ci.example.test");
    assert_eq!(
        p.jwks,
        JwksSource::Discovery("https://ci.example.test".into())
    );
    assert_eq!(p.leeway_secs, 60);
    assert_eq!(p.algorithms.len(), 3);

    let errs = errors(
        "identity_providers:
  - name: ci
    issuer: http://ci.example.test
    audience: \"\"
    algorithms: [HS256, none, ES256]
    leeway: 3600
    jwks_file: /a
    jwks_url: https://ci.example.test/jwks
",
    );
    let expect = [
        "p.yaml:3:13: issuer \"http://ci.example.test\" must use https",
        "p.yaml:4:15: audience must not be empty",
        "p.yaml:8:15: give `jwks_file` or `jwks_url`, not both",
        "p.yaml:5:18: HS256 is refused",
        "p.yaml:5:25: unknown algorithm \"none\"",
        "p.yaml:6:13: leeway 3600s is more than the 300s allowed",
    ];
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    for (got, want) in errs.iter().zip(expect) {
        assert!(got.starts_with(want), "got {got:?}, want prefix {want:?}");
    }
    // Loopback issuers may use http (local test providers).
    assert!(load("identity_providers:\n  - {name: local, issuer: \"http://127.0.0.1:8080\", audience: a}\n").is_ok());
}

fn with_cedar(cedar: &str) -> Result<Policy, PolicyError> {
    Policy::from_sources(&[
        (PathBuf::from("p.yaml"), GOOD.to_owned()),
        (PathBuf::from("g.cedar"), cedar.to_owned()),
    ])
}

fn cedar_errors(cedar: &str) -> Vec<String> {
    match with_cedar(cedar) {
        Ok(_) => panic!("expected errors"),
        Err(PolicyError::Invalid(diags)) => diags.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[test]
fn cedar_syntax_errors_point_at_the_token() {
    let errors = cedar_errors("permit (principal, action, resource)\nwhen { 1 + };\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("g.cedar:2:12: "), "{errors:?}");
}

#[test]
fn cedar_schema_violations_and_bad_annotations_have_positions() {
    let errors = cedar_errors(
        "@id(\"typo\")\n\
         permit (principal, action == Enforcer::Action::\"grant:request\", resource)\n\
         when { context.acess == \"read\" };\n\
         \n\
         @approval(\"maybe\")\n\
         @max_ttl(\"forever\")\n\
         @colour(\"red\")\n\
         permit (principal, action == Enforcer::Action::\"sql:read\", resource)\n\
         when { principal.getTag(\"repository\") == \"acme/shop\" };\n\
         \n\
         permit (principal, action, resource == Enforcer::Resource::\"no-such-db\");\n\
         permit (principal, action == Enforcer::Action::\"sql:drop\", resource);\n",
    );
    let find = |needle: &str| {
        errors
            .iter()
            .find(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("no error about {needle:?} in {errors:?}"))
            .clone()
    };
    assert!(find("did you mean `access`").starts_with("g.cedar:3:"));
    assert!(find("@approval(\"maybe\")").starts_with("g.cedar:5:1:"));
    assert!(find("@max_ttl(\"forever\")").starts_with("g.cedar:6:1:"));
    assert!(find("unknown annotation @colour").starts_with("g.cedar:7:1:"));
    assert!(find("hasTag").starts_with("g.cedar:9:"));
    assert!(find("\"no-such-db\" is not defined").starts_with("g.cedar:11:"));
    assert!(find("sql:drop").starts_with("g.cedar:12:"));
}

#[test]
fn duplicate_policy_ids_are_refused() {
    let errors = cedar_errors(
        "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);\n",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("g.cedar:2:1: duplicate policy id \"a\": already used at g.cedar:1"),
        "{errors:?}"
    );
}

#[test]
fn cedar_decides_with_obligations_and_names_the_deciders() {
    let policy = with_cedar(
        "@id(\"acme-writes\")\n@approval(\"required\")\n@max_ttl(\"15m\")\n\
         permit (principal, action == Enforcer::Action::\"grant:request\", resource == Enforcer::Resource::\"orders-db\")\n\
         when { context.access == \"write\" && principal.hasTag(\"repository\") && principal.getTag(\"repository\") like \"acme/*\" };\n\
         @max_ttl(\"10m\")\n\
         permit (principal, action == Enforcer::Action::\"grant:request\", resource) when { context.access == \"write\" };\n\
         @id(\"no-ddl\")\n\
         forbid (principal, action, resource) when { context has access && context.access == \"ddl\" };\n",
    )
    .expect("valid");
    let orders = &policy.resources[0];
    let ask = |access: &str| serde_json::json!({"access": access, "ttl_secs": 60, "uses": 0, "reason": "r"});
    let mut acme = Principal::local();
    acme.name = "ci:acme".into();
    acme.tags.insert("repository".into(), "acme/shop".into());
    let d = policy
        .authz
        .decide(&acme, "grant:request", orders, ask("write"))
        .expect("decide");
    assert!(d.allowed && d.approval_required);
    assert_eq!(d.policies, ["acme-writes", "g.cedar:6"]);
    assert_eq!(d.max_ttl, Some(Duration::from_secs(600)));
    // Without the claim only the unannotated permit applies: no approval.
    let d = policy
        .authz
        .decide(&Principal::local(), "grant:request", orders, ask("write"))
        .expect("decide");
    assert!(d.allowed && !d.approval_required);
    let d = policy
        .authz
        .decide(&acme, "grant:request", orders, ask("ddl"))
        .expect("decide");
    assert!(!d.allowed);
    assert_eq!(d.explain(), "forbidden by no-ddl");
    let d = policy
        .authz
        .decide(&acme, "grant:request", orders, ask("read"))
        .expect("decide");
    assert_eq!(d.explain(), "no policy permits it");
    assert!(
        policy
            .authz
            .decide(
                &acme,
                "grant:request",
                orders,
                serde_json::json!({"access": 1})
            )
            .is_err()
    );
    assert!(
        policy
            .authz
            .decide(&acme, "sql:drop", orders, serde_json::json!({}))
            .is_err()
    );
}

#[test]
fn approvals_and_grants_sections_are_validated() {
    let errors = errors(
        "approvals:\n  timeout: soon\n  webhook: http://example.com/hook\ngrants:\n  default_ttl: 2h\n  max_ttl: 1h\n",
    );
    assert_eq!(
        errors,
        [
            "p.yaml:2:12: approval timeout \"soon\" is not a duration like \"90s\", \"15m\" or \"2h\"",
            "p.yaml:3:12: webhook \"http://example.com/hook\" must use https (http only to a loopback host)",
            "p.yaml:5:3: grants: default_ttl is longer than max_ttl",
        ]
    );
}

#[test]
fn kubernetes_requests_are_decided_by_verb_and_what_they_touch() {
    use crate::protocol::kubernetes::request::{Kind, parse};
    let policy = with_cedar(
        "@id(\"baseline-read\")\n\
         permit (principal, action in [Enforcer::Action::\"k8s:get\", Enforcer::Action::\"k8s:list\", Enforcer::Action::\"k8s:watch\"], resource)\n\
         when { context.access == \"read\" };\n\
         @id(\"secrets-need-a-grant\")\n\
         @approval(\"required\")\n\
         permit (principal, action == Enforcer::Action::\"k8s:get\", resource)\n\
         when { context.resource == \"secrets\" && context.grant == \"admin\" };\n\
         @id(\"no-exec-in-prod\")\n\
         forbid (principal, action == Enforcer::Action::\"k8s:create\", resource)\n\
         when { context.subresource == \"exec\" && context.namespace == \"prod\" };\n",
    )
    .expect("valid");
    let resource = &policy.resources[0];
    let context = |method: &str, path: &str, grant: &str| {
        let req = parse(method, path, None).expect("request");
        let access = req.access().as_str();
        let verb = format!("k8s:{}", req.verb);
        let Kind::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
            ..
        } = req.kind
        else {
            panic!("resource request")
        };
        (
            verb,
            serde_json::json!({
                "group": group, "resource": resource, "subresource": subresource,
                "namespace": namespace, "name": name, "path": "", "access": access, "grant": grant,
            }),
        )
    };
    let decide = |method: &str, path: &str, grant: &str| {
        let (verb, ctx) = context(method, path, grant);
        policy
            .authz
            .decide(&Principal::local(), &verb, resource, ctx)
            .expect("decide")
    };
    assert!(decide("GET", "/api/v1/namespaces/default/pods", "").allowed);
    let secret = decide("GET", "/api/v1/namespaces/default/secrets/db", "");
    assert!(!secret.allowed);
    assert_eq!(secret.explain(), "no policy permits it");
    let granted = decide("GET", "/api/v1/namespaces/default/secrets/db", "admin");
    assert!(granted.allowed && granted.approval_required);
    assert_eq!(granted.policies, ["secrets-need-a-grant"]);
    let exec = decide("POST", "/api/v1/namespaces/prod/pods/web-0/exec", "exec");
    assert_eq!(exec.explain(), "forbidden by no-exec-in-prod");
    assert!(
        !decide(
            "DELETE",
            "/apis/apps/v1/namespaces/default/deployments/web",
            ""
        )
        .allowed
    );
}

#[test]
fn gateways_route_to_their_resource_and_are_validated() {
    let policy = load(
        "resources:
  - name: db
    protocol: postgres
    addresses: [\"127.0.0.1:5432\"]
    credential: {env: P}
    gateway: \"127.0.0.1:15432\"
",
    )
    .expect("valid policy");
    let gateway: SocketAddr = "127.0.0.1:15432".parse().expect("addr");
    assert_eq!(policy.route(gateway).rule(), Some("db"));
    let db = &policy.resources[0];
    assert!(db.is_gateway(gateway));
    assert_eq!(
        db.upstream_for(gateway),
        "127.0.0.1:5432".parse::<SocketAddr>().expect("addr")
    );
    let errs = errors(
        "resources:
  - name: db
    protocol: postgres
    addresses: [\"127.0.0.1:5432\"]
    credential: {env: P}
    gateway: \"127.0.0.1:5432\"
  - name: other
    protocol: postgres
    addresses: [\"127.0.0.1:5433\"]
    credential: {env: P}
    gateway: \"127.0.0.1:5432\"
  - name: web
    protocol: http
    addresses: [\"127.0.0.1:80\"]
    gateway: \"127.0.0.1:8080\"
  - name: nowhere
    protocol: postgres
    addresses: [\"127.0.0.1:5434\"]
    credential: {env: P}
    gateway: \"0.0.0.0:6000\"
",
    );
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(errs[0].contains("p.yaml:6:") && errs[0].contains("not one of the resource's own"));
    assert!(
        errs[1].contains("already used by resource \"db\""),
        "{errs:?}"
    );
    assert!(
        errs[2].contains("only served for postgres and kubernetes"),
        "{errs:?}"
    );
    assert!(errs[3].contains("specific address"), "{errs:?}");
}

/// Remembered decisions answer as Cedar would: what a policy reads of the context is part of
/// the key, what none reads is not.
#[test]
fn remembered_decisions_follow_what_policies_read() {
    let policy = with_cedar(
        "@id(\"reads\")\npermit (principal, action == Enforcer::Action::\"sql:read\", resource);\n\
         @id(\"orders-writes\")\npermit (principal, action == Enforcer::Action::\"sql:write\", resource)\n\
           when { context.tables.contains(\"orders\") && context has grant && context.grant == \"write\" };\n",
    )
    .expect("valid");
    let authz = &policy.authz;
    assert_eq!(
        authz
            .reads
            .attributes
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["grant", "tables"]
    );
    assert!(!authz.reads.whole);
    let principal = crate::policy::Principal::local();
    let db = &policy.resources[0];
    let decide = |action: &str, tables: &[&str], statement: &str, grant: &str| {
        let context = serde_json::json!({"tables": tables, "statement": statement, "grant": grant});
        let remembered = authz
            .decide_trusted(&principal, action, db, context.clone())
            .expect("decides");
        let fresh = authz
            .decide_with(&principal, action, db, context, false)
            .expect("decides");
        assert_eq!(remembered, fresh, "{action} {tables:?} {grant}");
        remembered.allowed
    };
    for _ in 0..2 {
        assert!(decide("sql:read", &["t"], "SELECT 1", ""));
        assert!(decide("sql:read", &["t"], "SELECT 2", ""));
        assert!(!decide("sql:write", &["orders"], "DELETE FROM orders", ""));
        assert!(decide(
            "sql:write",
            &["orders"],
            "DELETE FROM orders",
            "write"
        ));
        assert!(!decide(
            "sql:write",
            &["customers"],
            "DELETE FROM customers",
            "write"
        ));
    }
    // Statements differ but nothing reads them: one entry per (action, tables, grant).
    assert_eq!(authz.decisions.lock().expect("lock").len(), 4);

    let whole = with_cedar(
        "permit (principal, action == Enforcer::Action::\"sql:read\", resource) when { context == {\"tables\": [\"t\"], \"statement\": \"x\", \"grant\": \"\"} };\n",
    )
    .expect("valid");
    assert!(whole.authz.reads.whole);
    let statement = with_cedar(
        "permit (principal, action == Enforcer::Action::\"sql:read\", resource) when { context.statement like \"SELECT*\" };\n",
    )
    .expect("valid");
    let context = serde_json::json!({"tables": [], "statement": "SELECT 1", "grant": ""});
    assert_eq!(statement.authz.reads.key(&context), None);
    assert!(
        statement
            .authz
            .decide_trusted(&principal, "sql:read", &statement.resources[0], context)
            .expect("decides")
            .allowed
    );
    let denied = serde_json::json!({"tables": [], "statement": "DELETE FROM t", "grant": ""});
    assert!(
        !statement
            .authz
            .decide_trusted(&principal, "sql:read", &statement.resources[0], denied)
            .expect("decides")
            .allowed
    );
}
