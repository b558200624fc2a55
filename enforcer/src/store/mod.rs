//! Where grants, approvals and the grant-signing public keys live: SQLite in the state
//! directory for one host, PostgreSQL (`--store postgres://…`) for several hosts that share
//! grants and approvals. One set of migrations and one code path serve both (sqlx's `Any`
//! driver, portable SQL only: TEXT and BIGINT columns, `$n` placeholders, `RETURNING`).

mod rows;

pub use rows::{ApprovalRow, GrantRow};

use std::path::{Path, PathBuf};

use sqlx::{
    AnyPool, Row,
    any::{AnyPoolOptions, AnyRow},
};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!();

/// File name of the default SQLite store inside the state directory.
pub const SQLITE_FILE: &str = "enforcer.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store URL {0:?} is neither sqlite:PATH nor postgres://…; give --store postgres://USER@HOST/DB"
    )]
    Url(String),
    #[error("cannot open the store {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot migrate the store {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("the store holds a malformed row: {0}")]
    Corrupt(String),
}

/// Which store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreLocation {
    /// `--store` as given; without it, SQLite in the state directory.
    pub fn parse(url: Option<&str>, state_dir: &Path) -> Result<StoreLocation, StoreError> {
        match url {
            None => Ok(StoreLocation::Sqlite(state_dir.join(SQLITE_FILE))),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(StoreLocation::Postgres(u.to_owned()))
            }
            Some(u) => match u.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => Ok(StoreLocation::Sqlite(PathBuf::from(
                    path.trim_start_matches("//"),
                ))),
                _ => Err(StoreError::Url(u.to_owned())),
            },
        }
    }

    /// The URL with any password removed, for messages.
    pub fn display(&self) -> String {
        match self {
            StoreLocation::Sqlite(p) => format!("sqlite:{}", p.display()),
            StoreLocation::Postgres(u) => redact_password(u),
        }
    }
}

fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// A connection pool to the store, migrated.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    pub location: String,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    pub async fn open(location: &StoreLocation) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let shown = location.display();
        let (url, max) = match location {
            StoreLocation::Sqlite(path) => {
                // sqlite:// URLs take the path verbatim; a relative path stays relative.
                (format!("sqlite://{}?mode=rwc", path.display()), 4)
            }
            StoreLocation::Postgres(url) => (url.clone(), 8),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        // WAL: readers (the CLI, a second process) never block the writer.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        // In WAL mode NORMAL survives an enforcer crash and syncs at
                        // checkpoints: FULL's fsync per commit capped issuance at ~100
                        // grants/s here. A power cut may lose the last grants (they then
                        // no longer work: fail closed); the audit log keeps its own fsync.
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Open {
                url: shown.clone(),
                source,
            })?;
        if let StoreLocation::Sqlite(path) = location {
            restrict_mode(path);
        }
        MIGRATIONS
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Store {
            pool,
            location: shown,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- grants ----

    pub async fn insert_grant(&self, g: &GrantRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO grants (id, workload, principal, resource, access, reason, status, \
             requested_at, ttl_ms, issued_at, expires_at, uses_left, approval_id, decided_by, \
             decision_reason, policies, host) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&g.id)
        .bind(&g.workload)
        .bind(&g.principal)
        .bind(&g.resource)
        .bind(&g.access)
        .bind(&g.reason)
        .bind(&g.status)
        .bind(g.requested_at)
        .bind(g.ttl_ms)
        .bind(g.issued_at)
        .bind(g.expires_at)
        .bind(g.uses_left)
        .bind(&g.approval_id)
        .bind(&g.decided_by)
        .bind(&g.decision_reason)
        .bind(&g.policies)
        .bind(&g.host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn grant(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM grants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(GrantRow::from_row).transpose()
    }

    /// Grants, newest first; of one workload if given.
    pub async fn grants(&self, workload: Option<&str>) -> Result<Vec<GrantRow>, StoreError> {
        let rows = match workload {
            Some(w) => {
                sqlx::query("SELECT * FROM grants WHERE workload = $1 ORDER BY requested_at DESC")
                    .bind(w)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM grants ORDER BY requested_at DESC")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(GrantRow::from_row).collect()
    }

    /// Active grants of one workload that have not expired at `now`.
    pub async fn active_grants(
        &self,
        workload: &str,
        now: i64,
    ) -> Result<Vec<GrantRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM grants WHERE workload = $1 AND status = 'active' AND expires_at > $2",
        )
        .bind(workload)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(GrantRow::from_row).collect()
    }

    /// pending → active, if still pending. Returns whether this call activated it.
    pub async fn activate_grant(
        &self,
        id: &str,
        now: i64,
        decided_by: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE grants SET status = 'active', issued_at = $2, expires_at = $2 + ttl_ms, \
             decided_by = $3, decision_reason = $4 WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(now)
        .bind(decided_by)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// pending → denied, if still pending.
    pub async fn deny_grant(
        &self,
        id: &str,
        decided_by: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE grants SET status = 'denied', decided_by = $2, decision_reason = $3 \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(decided_by)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// pending or active → revoked.
    pub async fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE grants SET status = 'revoked', decided_by = $2, decision_reason = $3 \
             WHERE id = $1 AND status IN ('pending', 'active')",
        )
        .bind(id)
        .bind(by)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes one use of a counted grant, atomically: two enforcers racing for the last use
    /// cannot both get it. Returns the uses left after this one, or `None` if none was left
    /// (or the grant is no longer active / has expired).
    pub async fn consume_use(&self, id: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "UPDATE grants SET uses_left = uses_left - 1, \
             status = CASE WHEN uses_left = 1 THEN 'used' ELSE status END \
             WHERE id = $1 AND status = 'active' AND uses_left > 0 AND expires_at > $2 \
             RETURNING uses_left",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<i64, _>("uses_left")?),
            None => None,
        })
    }

    /// active grants past their expiry → expired; returns them.
    pub async fn expire_grants(&self, now: i64) -> Result<Vec<GrantRow>, StoreError> {
        let rows = sqlx::query(
            "UPDATE grants SET status = 'expired' WHERE status = 'active' AND expires_at <= $1 \
             RETURNING *",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(GrantRow::from_row).collect()
    }

    // ---- approvals ----

    pub async fn insert_approval(&self, a: &ApprovalRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approvals (id, kind, subject, summary, workload, principal, resource, \
             status, requested_at, deadline, decided_at, decided_by, reason, host) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&a.id)
        .bind(&a.kind)
        .bind(&a.subject)
        .bind(&a.summary)
        .bind(&a.workload)
        .bind(&a.principal)
        .bind(&a.resource)
        .bind(&a.status)
        .bind(a.requested_at)
        .bind(a.deadline)
        .bind(a.decided_at)
        .bind(&a.decided_by)
        .bind(&a.reason)
        .bind(&a.host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ApprovalRow::from_row).transpose()
    }

    /// Approvals, newest first; only pending ones if asked.
    pub async fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows = if pending_only {
            sqlx::query(
                "SELECT * FROM approvals WHERE status = 'pending' ORDER BY requested_at DESC",
            )
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query("SELECT * FROM approvals ORDER BY requested_at DESC")
                .fetch_all(&self.pool)
                .await?
        };
        rows.iter().map(ApprovalRow::from_row).collect()
    }

    /// pending → `status` (approved | denied), if still pending and not past its deadline.
    /// Exactly one decision wins, whichever host it comes from.
    pub async fn decide_approval(
        &self,
        id: &str,
        status: &str,
        by: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE approvals SET status = $2, decided_by = $3, reason = $4, decided_at = $5 \
             WHERE id = $1 AND status = 'pending' AND deadline > $5",
        )
        .bind(id)
        .bind(status)
        .bind(by)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Decided approvals whose grant is still pending: the decision was taken (or timed out)
    /// by a host that did not get to apply it to the grant.
    pub async fn unapplied_grant_decisions(&self) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.* FROM approvals a JOIN grants g ON g.approval_id = a.id \
             WHERE g.status = 'pending' AND a.status <> 'pending'",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ApprovalRow::from_row).collect()
    }

    /// pending approvals past their deadline → timed_out; returns them.
    pub async fn time_out_approvals(&self, now: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows = sqlx::query(
            "UPDATE approvals SET status = 'timed_out', decided_at = $1, decided_by = 'timeout' \
             WHERE status = 'pending' AND deadline <= $1 RETURNING *",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ApprovalRow::from_row).collect()
    }

    pub async fn pending_approvals_of(&self, workload: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND workload = $1",
        )
        .bind(workload)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn pending_approvals(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    // ---- signing keys ----

    pub async fn publish_key(&self, kid: &str, jwk: &str, host: &str) -> Result<(), StoreError> {
        let existing = self.key(kid).await?;
        if existing.is_some() {
            return Ok(());
        }
        let inserted = sqlx::query(
            "INSERT INTO signing_keys (kid, jwk, host, added_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(kid)
        .bind(jwk)
        .bind(host)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // Another host published the same key between our check and insert.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn key(&self, kid: &str) -> Result<Option<String>, StoreError> {
        let row: Option<AnyRow> = sqlx::query("SELECT jwk FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("jwk")?),
            None => None,
        })
    }
}

/// The SQLite file holds who may do what: only its owner reads it.
fn restrict_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in [
        path.to_owned(),
        PathBuf::from(format!("{}-wal", path.display())),
        PathBuf::from(format!("{}-shm", path.display())),
    ] {
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse() {
        let state = Path::new("/var/lib/enforcer");
        assert_eq!(
            StoreLocation::parse(None, state).ok(),
            Some(StoreLocation::Sqlite(state.join(SQLITE_FILE)))
        );
        assert_eq!(
            StoreLocation::parse(Some("sqlite:///tmp/x.db"), state).ok(),
            Some(StoreLocation::Sqlite("/tmp/x.db".into()))
        );
        assert!(matches!(
            StoreLocation::parse(Some("postgres://u:pw@h/db"), state),
            Ok(StoreLocation::Postgres(_))
        ));
        assert!(StoreLocation::parse(Some("mysql://h/db"), state).is_err());
        assert!(StoreLocation::parse(Some("sqlite:"), state).is_err());
    }

    #[test]
    fn passwords_never_shown() {
        let shown =
            StoreLocation::Postgres("postgres://agent:s3cret@127.0.0.1:5432/db".into()).display();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("agent:***@127.0.0.1:5432/db"), "{shown}");
    }
}
