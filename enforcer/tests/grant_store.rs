//! The grant and approval lifecycle through the library, on both stores: SQLite (one host)
//! and a real PostgreSQL shared by two enforcers (two hosts).

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use enforcer::{
    approval::{ApprovalError, Approvals},
    grant::{GrantError, GrantRequest, GrantSigner, Grants, Requester},
    metrics::Metrics,
    policy::{Policy, Principal},
    record::{
        Recorder,
        audit::{self, AuditLog},
    },
    store::{Store, StoreLocation},
};

const YAML: &str = "
resources:
  - name: orders-db
    protocol: postgres
    addresses: [\"127.0.0.1:5432\"]
    credential: {env: ORDERS_PW}
approvals:
  timeout: 1s
";

const CEDAR: &str = r#"
@id("read-freely")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "read" };

@id("write-needs-approval")
@approval("required")
@max_ttl("15m")
permit (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "write" };

@id("no-ddl")
forbid (principal, action == Enforcer::Action::"grant:request", resource)
when { context.access == "ddl" };
"#;

const A: &str = "host-a/run-1";
const B: &str = "host-a/run-2";

struct Host {
    grants: Arc<Grants>,
    _audit: std::thread::JoinHandle<Result<u64, audit::AuditError>>,
}

async fn host(state: &Path, store: &StoreLocation, name: &str) -> Host {
    std::fs::create_dir_all(state).expect("state dir");
    let policy = Policy::from_sources(&[
        ("p.yaml".into(), YAML.into()),
        ("g.cedar".into(), CEDAR.into()),
    ])
    .expect("policy");
    let store = Store::open(store).await.expect("open store");
    let (recorder, audit) = Recorder::start(
        AuditLog::open(&state.join("audit.jsonl")).expect("audit"),
        None,
    )
    .expect("recorder");
    let metrics = Arc::new(Metrics::new());
    let approvals = Arc::new(Approvals::new(
        store.clone(),
        name.into(),
        policy.approvals.timeout,
        None,
        recorder.clone(),
        Arc::clone(&metrics),
    ));
    let grants = Grants::new(
        store,
        GrantSigner::load_or_create(state).expect("key"),
        approvals,
        Arc::new(policy),
        recorder,
        metrics,
        name.into(),
        &[A.to_owned(), B.to_owned()],
    )
    .await
    .expect("grants");
    Host {
        grants: Arc::new(grants),
        _audit: audit,
    }
}

fn who(workload: &str) -> Requester {
    Requester {
        workload: workload.into(),
        principal: Principal::local(),
    }
}

fn ask(access: &str, ttl: Option<u64>, uses: Option<u32>) -> GrantRequest {
    GrantRequest {
        resource: "orders-db".into(),
        access: access.into(),
        ttl_secs: ttl,
        uses,
        reason: "test".into(),
    }
}

/// Everything one host sees, on whichever store `location` names.
async fn lifecycle(location: StoreLocation) {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = host(&dir.path().join("a"), &location, "host-a").await;
    let g = &h.grants;

    // Auto-approved, bound to A: B cannot use it, neither directly nor with its token.
    let read = g
        .request(&who(A), ask("read", None, None))
        .await
        .expect("read");
    assert_eq!(read.status, "active");
    assert_eq!(read.policies, "read-freely");
    let used = g
        .authorize(A, "orders-db", "read")
        .await
        .expect("authorize");
    assert_eq!(used.map(|u| u.grant), Some(read.id.clone()));
    assert_eq!(g.authorize(B, "orders-db", "read").await.expect("b"), None);
    assert_eq!(g.authorize(A, "orders-db", "write").await.expect("w"), None);
    let token = g
        .view(read.clone(), true)
        .expect("view")
        .token
        .expect("token for its owner");
    assert!(g.view(read.clone(), false).expect("view").token.is_none());
    g.authorize_token(&token, Some(&who(A)), "orders-db", "read")
        .await
        .expect("A presents its token");
    assert!(matches!(
        g.authorize_token(&token, Some(&who(B)), "orders-db", "read")
            .await,
        Err(GrantError::OtherWorkload)
    ));
    assert!(matches!(
        g.authorize_token(&token, Some(&who(A)), "orders-db", "write")
            .await,
        Err(GrantError::OtherScope { .. })
    ));

    // Revocation works at once, for the grant and for its token.
    g.revoke(&read.id, "operator:test", Some("done"))
        .await
        .expect("revoke");
    assert_eq!(g.authorize(A, "orders-db", "read").await.expect("r"), None);
    assert!(matches!(
        g.authorize_token(&token, Some(&who(A)), "orders-db", "read")
            .await,
        Err(GrantError::NotActive { .. })
    ));
    assert!(matches!(
        g.revoke(&read.id, "operator:test", None).await,
        Err(GrantError::NotRevocable { .. })
    ));

    // --uses 1: exactly one use.
    let once = g
        .request(&who(A), ask("read", None, Some(1)))
        .await
        .expect("once");
    let first = g.authorize(A, "orders-db", "read").await.expect("first");
    assert_eq!(first.map(|u| u.uses_left), Some(Some(0)));
    assert_eq!(
        g.authorize(A, "orders-db", "read").await.expect("2nd"),
        None
    );
    assert_eq!(g.get(&once.id).await.expect("get").status, "used");

    // TTL expiry: stops at once, then the sweeper marks it.
    let short = g
        .request(&who(A), ask("read", Some(1), None))
        .await
        .expect("short");
    assert!(
        g.authorize(A, "orders-db", "read")
            .await
            .expect("a")
            .is_some()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        g.authorize(A, "orders-db", "read").await.expect("late"),
        None
    );
    g.sweep().await.expect("sweep");
    assert_eq!(g.get(&short.id).await.expect("get").status, "expired");

    // The reason reaches operators' terminals and chat: printable and bounded.
    let mut sneaky = ask("read", None, None);
    sneaky.reason = "ok\x1b[2K\rread only, promise".into();
    assert!(matches!(
        g.request(&who(A), sneaky).await,
        Err(GrantError::BadReason)
    ));
    // Another principal in the same workload (a token stolen into it) cannot use the token.
    let mut impostor = who(A);
    impostor.principal.name = "ci:someone-else".into();
    let fresh = g
        .request(&who(A), ask("read", None, None))
        .await
        .expect("read");
    let token = g.view(fresh, true).expect("view").token.expect("token");
    assert!(matches!(
        g.authorize_token(&token, Some(&impostor), "orders-db", "read")
            .await,
        Err(GrantError::OtherWorkload)
    ));

    // Forbidden, and limits.
    let denied = g.request(&who(A), ask("ddl", None, None)).await;
    assert!(
        matches!(&denied, Err(GrantError::Denied(why)) if why.contains("no-ddl")),
        "{denied:?}"
    );
    assert!(matches!(
        g.request(&who(A), ask("write", Some(3600), None)).await,
        Err(GrantError::Denied(why)) if why.contains("15m")
    ));
    assert!(matches!(
        g.request(&who(A), ask("drop", None, None)).await,
        Err(GrantError::UnknownAccess { .. })
    ));

    // Approval: approve, deny, timeout.
    let held = g
        .request(&who(A), ask("write", None, None))
        .await
        .expect("held");
    assert_eq!(held.status, "pending");
    assert_eq!(g.authorize(A, "orders-db", "write").await.expect("p"), None);
    let approval = held.approval_id.clone().expect("approval id");
    g.decide(&approval, true, "operator:alice", Some("ok"))
        .await
        .expect("approve");
    assert_eq!(g.get(&held.id).await.expect("get").status, "active");
    assert!(
        g.authorize(A, "orders-db", "write")
            .await
            .expect("a")
            .is_some()
    );
    assert!(matches!(
        g.decide(&approval, false, "operator:bob", None).await,
        Err(GrantError::Approval(ApprovalError::AlreadyDecided { .. }))
    ));

    let refused = g
        .request(&who(B), ask("write", None, None))
        .await
        .expect("r");
    g.decide(
        refused.approval_id.as_deref().expect("id"),
        false,
        "operator:alice",
        Some("not today"),
    )
    .await
    .expect("deny");
    let refused = g.get(&refused.id).await.expect("get");
    assert_eq!(refused.status, "denied");
    assert_eq!(refused.decision_reason.as_deref(), Some("not today"));
    assert_eq!(g.authorize(B, "orders-db", "write").await.expect("b"), None);

    let ignored = g
        .request(&who(B), ask("write", None, None))
        .await
        .expect("i");
    let waited = g
        .approvals()
        .wait(
            ignored.approval_id.as_deref().expect("id"),
            Duration::from_secs(10),
        )
        .await
        .expect("wait");
    assert_eq!(waited.status, "timed_out");
    g.sweep().await.expect("sweep");
    let ignored = g.get(&ignored.id).await.expect("get");
    assert_eq!(ignored.status, "denied");
    assert!(
        ignored
            .decision_reason
            .as_deref()
            .is_some_and(|r| r.contains("timeout")),
        "{ignored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_lifecycle_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    lifecycle(StoreLocation::Sqlite(dir.path().join("enforcer.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_lifecycle_on_postgres_and_across_hosts() {
    let pg = common::postgres::Postgres::start();
    lifecycle(StoreLocation::Postgres(pg.database("lifecycle"))).await;

    // Two hosts share one store: a request pending on A is approved through B, A's waiter
    // sees it, and B verifies the token A signed.
    let shared = StoreLocation::Postgres(pg.database("shared"));
    let dir = tempfile::tempdir().expect("tempdir");
    let a = host(&dir.path().join("a"), &shared, "host-a").await;
    let b = host(&dir.path().join("b"), &shared, "host-b").await;
    let held = a
        .grants
        .request(&who(A), ask("write", None, Some(2)))
        .await
        .expect("held");
    let approval = held.approval_id.clone().expect("approval");
    let waiter = {
        let grants = Arc::clone(&a.grants);
        let approval = approval.clone();
        tokio::spawn(async move {
            grants
                .approvals()
                .wait(&approval, Duration::from_secs(10))
                .await
        })
    };
    let pending = b.grants.approvals().list(true).await.expect("list on B");
    assert!(pending.iter().any(|p| p.id == approval));
    b.grants
        .decide(&approval, true, "operator:bob", None)
        .await
        .expect("approve on B");
    let seen = waiter.await.expect("join").expect("wait");
    assert_eq!(seen.status, "approved");
    a.grants.refresh().await.expect("refresh");
    let used = a
        .grants
        .authorize(A, "orders-db", "write")
        .await
        .expect("a");
    assert_eq!(used.map(|u| u.uses_left), Some(Some(1)));
    let row = a.grants.get(&held.id).await.expect("get");
    let token = a
        .grants
        .view(row, true)
        .expect("view")
        .token
        .expect("token");
    // B never saw A's key except through the store; the last use goes through B.
    let last = b
        .grants
        .authorize_token(&token, Some(&who(A)), "orders-db", "write")
        .await
        .expect("B verifies A's token");
    assert_eq!(last.uses_left, Some(0));
    assert!(matches!(
        a.grants
            .authorize_token(&token, Some(&who(A)), "orders-db", "write")
            .await,
        Err(GrantError::NotActive { .. })
    ));
}
