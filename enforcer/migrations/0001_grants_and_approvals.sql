-- One schema for SQLite and PostgreSQL: only portable types (TEXT, BIGINT) and statements.
-- Times are unix milliseconds.

CREATE TABLE grants (
    id              TEXT PRIMARY KEY,
    workload        TEXT NOT NULL,
    principal       TEXT NOT NULL,
    resource        TEXT NOT NULL,
    access          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    -- pending | active | denied | expired | revoked | used
    status          TEXT NOT NULL,
    requested_at    BIGINT NOT NULL,
    ttl_ms          BIGINT NOT NULL,
    issued_at       BIGINT,
    expires_at      BIGINT,
    -- NULL: any number of uses until expiry
    uses_left       BIGINT,
    approval_id     TEXT,
    decided_by      TEXT,
    decision_reason TEXT,
    -- ids of the Cedar policies that decided the request, comma-separated
    policies        TEXT NOT NULL,
    host            TEXT NOT NULL
);
CREATE INDEX grants_by_workload ON grants (workload, status);
CREATE INDEX grants_by_status ON grants (status, expires_at);

CREATE TABLE approvals (
    id            TEXT PRIMARY KEY,
    -- grant | operation
    kind          TEXT NOT NULL,
    -- the grant id, or the session of a held operation
    subject       TEXT NOT NULL,
    summary       TEXT NOT NULL,
    workload      TEXT NOT NULL,
    principal     TEXT NOT NULL,
    resource      TEXT NOT NULL,
    -- pending | approved | denied | timed_out
    status        TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    deadline      BIGINT NOT NULL,
    decided_at    BIGINT,
    decided_by    TEXT,
    reason        TEXT,
    host          TEXT NOT NULL
);
CREATE INDEX approvals_by_status ON approvals (status, deadline);

-- Public keys of every enforcer sharing the store, so any of them verifies grant tokens
-- another signed.
CREATE TABLE signing_keys (
    kid       TEXT PRIMARY KEY,
    jwk       TEXT NOT NULL,
    host      TEXT NOT NULL,
    added_at  BIGINT NOT NULL
);
