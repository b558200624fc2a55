//! Measures the grant path in-process, on the default store (SQLite in a temp dir): Cedar
//! decision latency, the hot-path grant check, counted-grant checks (a store round trip),
//! grant issuance rate, and the approval round trip (request → operator decision → waiter
//! released). Prints `key=value` lines for `cargo xtask bench grants`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use enforcer::{
    approval::Approvals,
    grant::{GrantRequest, GrantSigner, Grants, Requester},
    metrics::Metrics,
    policy::{Policy, Principal},
    record::{Recorder, audit::AuditLog},
    store::{Store, StoreLocation},
};

const YAML: &str = "
resources:
  - name: orders-db
    protocol: postgres
    addresses: [\"127.0.0.1:5432\"]
    credential: {env: ORDERS_PW}
";

const CEDAR: &str = r#"
@id("acme-read")
@max_ttl("1h")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "read" && principal.hasTag("repository_owner") && principal.getTag("repository_owner") == "acme" };

@id("write-needs-approval")
@approval("required")
@max_ttl("15m")
permit (principal, action == Enforcer::Action::"grant:request", resource == Enforcer::Resource::"orders-db")
when { context.access == "write" };

@id("no-ddl")
forbid (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "ddl" || context.access == "admin" };
"#;

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1e6
}

fn ask(access: &str, uses: Option<u32>) -> GrantRequest {
    GrantRequest {
        resource: "orders-db".into(),
        access: access.into(),
        ttl_secs: Some(600),
        uses,
        reason: "bench".into(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let policy = Policy::from_sources(&[
        ("p.yaml".into(), YAML.into()),
        ("g.cedar".into(), CEDAR.into()),
    ])?;
    let store = Store::open(&StoreLocation::Sqlite(dir.path().join("enforcer.db"))).await?;
    let (recorder, writer) =
        Recorder::start(AuditLog::open(&dir.path().join("audit.jsonl"))?, None)?;
    let metrics = Arc::new(Metrics::new());
    let approvals = Arc::new(Approvals::new(
        store.clone(),
        "bench".into(),
        Duration::from_secs(600),
        None,
        recorder.clone(),
        Arc::clone(&metrics),
    ));
    let workload = "bench/run-1".to_owned();
    let grants = Grants::new(
        store,
        GrantSigner::load_or_create(dir.path())?,
        approvals,
        Arc::new(policy.clone()),
        recorder,
        metrics,
        "bench".into(),
        std::slice::from_ref(&workload),
    )
    .await?;
    let mut principal = Principal::local();
    principal.name = "ci:repo:acme/shop".into();
    principal
        .tags
        .insert("repository_owner".into(), "acme".into());
    let who = Requester {
        workload: workload.clone(),
        principal: principal.clone(),
    };

    // Cedar decision.
    let resource = &policy.resources[0];
    let mut samples = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let access = ["read", "write", "ddl"][i % 3];
        let context =
            serde_json::json!({"access": access, "ttl_secs": 600, "uses": 0, "reason": "bench"});
        let start = Instant::now();
        let decision =
            policy
                .authz
                .decide_trusted(&principal, "grant:request", resource, context)?;
        samples.push(start.elapsed());
        std::hint::black_box(decision);
    }
    println!("decision_p50_us={:.2}", percentile(&mut samples, 0.5));
    println!("decision_p99_us={:.2}", percentile(&mut samples, 0.99));

    // Issuance rate (auto-approved, each one stored and audited).
    let n = 2_000;
    let start = Instant::now();
    for _ in 0..n {
        grants.request(&who, ask("read", None)).await?;
    }
    println!(
        "issued_per_sec={:.0}",
        n as f64 / start.elapsed().as_secs_f64()
    );

    // Hot-path check of an uncounted grant.
    let mut samples = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let start = Instant::now();
        let used = grants.authorize(&workload, "orders-db", "read").await?;
        samples.push(start.elapsed());
        assert!(used.is_some());
    }
    println!("check_p50_us={:.2}", percentile(&mut samples, 0.5));
    println!("check_p99_us={:.2}", percentile(&mut samples, 0.99));
    let mut samples = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let start = Instant::now();
        let used = grants.authorize(&workload, "orders-db", "admin").await?;
        samples.push(start.elapsed());
        assert!(used.is_none());
    }
    println!("check_miss_p50_us={:.2}", percentile(&mut samples, 0.5));

    // Approval round trip: pending → operator decides → the waiter is released.
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let start = Instant::now();
        let held = grants.request(&who, ask("write", Some(1))).await?;
        let approval = held.approval_id.clone().unwrap_or_default();
        let waiter = grants.approvals().wait(&approval, Duration::from_secs(10));
        let decide = grants.decide(&approval, true, "operator:bench", None);
        let (seen, decided) = tokio::join!(waiter, decide);
        decided?;
        assert_eq!(seen?.status, "approved");
        samples.push(start.elapsed());
    }
    println!(
        "approval_round_trip_p50_us={:.0}",
        percentile(&mut samples, 0.5)
    );
    // Counted grants: every check takes a use in the store.
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let start = Instant::now();
        let used = grants.authorize(&workload, "orders-db", "write").await?;
        samples.push(start.elapsed());
        assert!(used.is_some());
    }
    println!("counted_check_p50_us={:.0}", percentile(&mut samples, 0.5));
    drop(grants);
    drop(writer);
    Ok(())
}
