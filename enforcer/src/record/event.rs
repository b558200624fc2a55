//! What is recorded.

use std::{borrow::Cow, collections::BTreeMap, net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};

/// The process that opened a connection, from the kernel's record at connect().
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
}

/// A routing decision, taken when the connection is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionDecided {
    pub connection: u64,
    pub workload: String,
    /// Who the workload is: `local` for a run without identity token, else
    /// `<identity provider>:<subject>` of its verified OIDC token.
    pub principal: String,
    /// The token claims the policy maps to attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    pub process: Option<Process>,
    pub peer: SocketAddr,
    pub orig_dst: Option<SocketAddr>,
    /// `allow` or `deny`.
    pub decision: String,
    /// `resource`, `egress` or `deny`.
    pub route: String,
    pub rule: Option<String>,
    pub reason: Option<String>,
}

/// The end of an allowed connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionClosed {
    pub connection: u64,
    pub workload: String,
    pub rule: Option<String>,
    pub bytes_to_upstream: u64,
    pub bytes_to_client: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// Something that happened to a JIT grant: who, what, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantEvent {
    /// requested | issued | pending | denied | revoked | expired | used_up
    pub action: String,
    pub grant: String,
    pub workload: String,
    pub principal: String,
    pub resource: String,
    pub access: String,
    /// The requester's reason.
    pub reason: String,
    /// Who decided (an operator, `policy`, `timeout`), when someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Ids of the Cedar policies that decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Why it was denied / revoked, TTL and uses when issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Something that happened to an approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEvent {
    /// requested | approved | denied | timed_out | refused
    pub action: String,
    pub approval: String,
    /// grant | operation
    pub approval_kind: String,
    pub subject: String,
    pub workload: String,
    pub principal: String,
    pub resource: String,
    /// The operator who decided, or the caller who was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One statement or request of a protocol session, as decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementDecided {
    pub connection: u64,
    // Shared with the session that records them, not copied per statement.
    pub workload: Arc<str>,
    pub principal: Arc<str>,
    pub resource: Arc<str>,
    /// e.g. `sql:write`
    pub action: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// The statement as parsed (bounded).
    pub statement: String,
    /// allow | deny
    pub decision: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// The grant that allowed it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The approval it was held for, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a Kubernetes API request names, as the API server reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ApiObject>,
    /// The request's number on its connection (HTTP): an HTTP/2 connection carries many
    /// at once, and this is what ties a request's end to its decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
}

/// The object of a Kubernetes API request: `""` where the request names none (the core
/// group, no subresource, a cluster-scoped resource, a collection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiObject {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// How an allowed statement ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementDone {
    pub connection: u64,
    pub resource: Arc<str>,
    /// The server's command tag (`DELETE 1`, `SELECT 3`), empty on error.
    pub tag: String,
    /// Rows sent to the client.
    pub rows_returned: u64,
    /// Rows the command affected, from its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_affected: Option<u64>,
    pub duration_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request's number on its connection, as in its decision (HTTP resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// Bytes of the answer's body sent to the client (HTTP resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// One message of a stream into a container (exec, attach, port-forward) as relayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFrame {
    pub connection: u64,
    pub resource: String,
    /// `to_container` or `from_container`.
    pub direction: String,
    /// `stdin`, `stdout`, `stderr`, `error`, `resize`, `close`, `port N`, … (from the
    /// stream's subprotocol), or `data` where the subprotocol has no channels.
    pub channel: String,
    /// Size of the content, whole, even when only its start is kept.
    pub bytes: u64,
    /// The content, when it is UTF-8, with what the resource's detectors find masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The content, when it is not UTF-8, in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// Whether only the start of the content is kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Statement(StatementDecided),
    StatementDone(StatementDone),
    ConnectionDecided(ConnectionDecided),
    ConnectionClosed(ConnectionClosed),
    Grant(GrantEvent),
    Approval(ApprovalEvent),
    StreamFrame(StreamFrame),
}

/// One enforcement log line being written: a flat JSON object.
struct Line<'a>(&'a mut Vec<u8>);

impl Line<'_> {
    fn key(&mut self, key: &str) {
        // Keys are this file's own literals: nothing to escape.
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        super::json::string(value, self.0);
        self
    }

    fn opt(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.str(key, value.unwrap_or(""))
    }

    /// The values joined by commas, in one string.
    fn list(&mut self, key: &str, values: &[String]) -> &mut Self {
        self.key(key);
        self.0.push(b'"');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            super::json::contents(value, self.0);
        }
        self.0.push(b'"');
        self
    }

    fn num(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }
}

impl Event {
    /// Writes the event as one enforcement log line (JSON, the shape log shippers read:
    /// timestamp, level, message, the event's fields, target) into `out`; `false` for events
    /// the enforcement log leaves to the audit log (stream content).
    pub fn log_line(&self, at: time::OffsetDateTime, out: &mut Vec<u8>) -> bool {
        use std::borrow::Cow;
        let (level, message): (&str, Cow<'_, str>) = match self {
            Event::ConnectionDecided(e) if e.decision == "deny" => {
                ("WARN", "connection denied".into())
            }
            Event::ConnectionDecided(_) => ("INFO", "connection allowed".into()),
            Event::ConnectionClosed(_) => ("INFO", "connection closed".into()),
            Event::Statement(e) => (
                "INFO",
                match &*e.decision {
                    "allow" => "statement allow".into(),
                    "deny" => "statement deny".into(),
                    other => format!("statement {other}").into(),
                },
            ),
            Event::StatementDone(_) => ("INFO", "statement done".into()),
            Event::Grant(e) => ("INFO", format!("grant {}", e.action).into()),
            Event::Approval(e) => ("INFO", format!("approval {}", e.action).into()),
            Event::StreamFrame(_) => return false,
        };
        out.extend_from_slice(b"{\"timestamp\":\"");
        super::json::timestamp(at, 6, out);
        out.extend_from_slice(b"\"");
        let mut line = Line(out);
        line.str("level", level).str("message", &message);
        match self {
            Event::ConnectionDecided(e) => {
                let (pid, tid, uid, gid, comm) = match &e.process {
                    Some(p) => (p.pid, p.tid, p.uid, p.gid, p.comm.as_str()),
                    None => (0, 0, u32::MAX, u32::MAX, ""),
                };
                line.str("event", "connection_decided")
                    .num("connection", e.connection)
                    .str("workload", &e.workload)
                    .str("principal", &e.principal)
                    .num("pid", pid.into())
                    .num("tid", tid.into())
                    .num("uid", uid.into())
                    .num("gid", gid.into())
                    .str("comm", comm)
                    .str("peer", &e.peer.to_string())
                    .str(
                        "orig_dst",
                        &e.orig_dst.map(|a| a.to_string()).unwrap_or_default(),
                    )
                    .str("decision", &e.decision)
                    .str("route", &e.route)
                    .opt("rule", e.rule.as_deref());
                if e.decision == "deny" {
                    line.opt("reason", e.reason.as_deref());
                }
            }
            Event::ConnectionClosed(e) => {
                line.str("event", "connection_closed")
                    .num("connection", e.connection)
                    .str("workload", &e.workload)
                    .opt("rule", e.rule.as_deref())
                    .num("bytes_to_upstream", e.bytes_to_upstream)
                    .num("bytes_to_client", e.bytes_to_client)
                    .num("duration_ms", e.duration_ms)
                    .opt("error", e.error.as_deref());
            }
            Event::Statement(e) => {
                line.str("event", "statement")
                    .num("connection", e.connection)
                    .str("workload", &e.workload)
                    .str("principal", &e.principal)
                    .str("resource", &e.resource)
                    .str("action", &e.action)
                    .list("tables", &e.tables)
                    .str("statement", &e.statement)
                    .str("decision", &e.decision)
                    .list("policies", &e.policies)
                    .opt("grant", e.grant.as_deref())
                    .opt("approval", e.approval.as_deref())
                    .opt("reason", e.reason.as_deref());
                if let Some(n) = e.request {
                    line.num("request", n);
                }
                if let Some(o) = &e.object {
                    line.str("group", &o.group)
                        .str("api_resource", &o.resource)
                        .str("subresource", &o.subresource)
                        .str("namespace", &o.namespace)
                        .str("name", &o.name);
                }
            }
            Event::StatementDone(e) => {
                line.str("event", "statement_done")
                    .num("connection", e.connection)
                    .str("resource", &e.resource)
                    .str("tag", &e.tag)
                    .num("rows_returned", e.rows_returned)
                    .num("rows_affected", e.rows_affected.unwrap_or(0))
                    .num("duration_us", e.duration_us)
                    .num("bytes", e.bytes.unwrap_or(0))
                    .opt("error", e.error.as_deref());
                if let Some(n) = e.request {
                    line.num("request", n);
                }
            }
            Event::Grant(e) => {
                line.str("event", "grant")
                    .str("action", &e.action)
                    .str("grant", &e.grant)
                    .str("workload", &e.workload)
                    .str("principal", &e.principal)
                    .str("resource", &e.resource)
                    .str("access", &e.access)
                    .str("reason", &e.reason)
                    .opt("by", e.by.as_deref())
                    .list("policies", &e.policies)
                    .opt("detail", e.detail.as_deref());
            }
            Event::Approval(e) => {
                line.str("event", "approval")
                    .str("action", &e.action)
                    .str("approval", &e.approval)
                    .str("approval_kind", &e.approval_kind)
                    .str("subject", &e.subject)
                    .str("workload", &e.workload)
                    .str("principal", &e.principal)
                    .str("resource", &e.resource)
                    .opt("by", e.by.as_deref())
                    .opt("reason", e.reason.as_deref());
            }
            Event::StreamFrame(_) => {}
        }
        line.str("target", "enforcer::decision");
        out.extend_from_slice(b"}\n");
        true
    }

    /// Emits the event through `tracing`, for people reading stderr (RUST_LOG decides what
    /// they see; denied connections by default). The enforcement log file is written by the
    /// recorder ([`Event::log_line`]).
    pub fn log(&self) {
        match self {
            Event::ConnectionDecided(e) => {
                let (pid, tid, uid, gid, comm) = match &e.process {
                    Some(p) => (p.pid, p.tid, p.uid, p.gid, p.comm.as_str()),
                    None => (0, 0, u32::MAX, u32::MAX, ""),
                };
                let orig = e.orig_dst.map(|a| a.to_string()).unwrap_or_default();
                if e.decision == "deny" {
                    tracing::warn!(
                        target: "enforcer::decision",
                        event = "connection_decided",
                        connection = e.connection,
                        workload = %e.workload,
                        principal = %e.principal,
                        pid, tid, uid, gid, comm,
                        peer = %e.peer,
                        orig_dst = %orig,
                        decision = %e.decision,
                        route = %e.route,
                        rule = e.rule.as_deref().unwrap_or(""),
                        reason = e.reason.as_deref().unwrap_or(""),
                        "connection denied"
                    );
                } else {
                    tracing::info!(
                        target: "enforcer::decision",
                        event = "connection_decided",
                        connection = e.connection,
                        workload = %e.workload,
                        principal = %e.principal,
                        pid, tid, uid, gid, comm,
                        peer = %e.peer,
                        orig_dst = %orig,
                        decision = %e.decision,
                        route = %e.route,
                        rule = e.rule.as_deref().unwrap_or(""),
                        "connection allowed"
                    );
                }
            }
            Event::ConnectionClosed(e) => tracing::info!(
                target: "enforcer::decision",
                event = "connection_closed",
                connection = e.connection,
                workload = %e.workload,
                rule = e.rule.as_deref().unwrap_or(""),
                bytes_to_upstream = e.bytes_to_upstream,
                bytes_to_client = e.bytes_to_client,
                duration_ms = e.duration_ms,
                error = e.error.as_deref().unwrap_or(""),
                "connection closed"
            ),
            Event::Statement(e) => tracing::info!(
                target: "enforcer::decision",
                event = "statement",
                connection = e.connection,
                workload = %e.workload,
                principal = %e.principal,
                resource = %e.resource,
                action = %e.action,
                tables = %e.tables.join(","),
                statement = %e.statement,
                decision = %e.decision,
                policies = %e.policies.join(","),
                grant = e.grant.as_deref().unwrap_or(""),
                approval = e.approval.as_deref().unwrap_or(""),
                reason = e.reason.as_deref().unwrap_or(""),
                "statement {}", e.decision
            ),
            Event::StatementDone(e) => tracing::info!(
                target: "enforcer::decision",
                event = "statement_done",
                connection = e.connection,
                resource = %e.resource,
                tag = %e.tag,
                rows_returned = e.rows_returned,
                rows_affected = e.rows_affected.unwrap_or(0),
                duration_us = e.duration_us,
                error = e.error.as_deref().unwrap_or(""),
                "statement done"
            ),
            Event::Grant(e) => tracing::info!(
                target: "enforcer::decision",
                event = "grant",
                action = %e.action,
                grant = %e.grant,
                workload = %e.workload,
                principal = %e.principal,
                resource = %e.resource,
                access = %e.access,
                reason = %e.reason,
                by = e.by.as_deref().unwrap_or(""),
                policies = %e.policies.join(","),
                detail = e.detail.as_deref().unwrap_or(""),
                "grant {}", e.action
            ),
            // Content stays in the audit log: the enforcement log says that data flowed.
            Event::StreamFrame(e) => tracing::debug!(
                target: "enforcer::decision",
                event = "stream_frame",
                connection = e.connection,
                resource = %e.resource,
                direction = %e.direction,
                channel = %e.channel,
                bytes = e.bytes,
                "stream frame"
            ),
            Event::Approval(e) => tracing::info!(
                target: "enforcer::decision",
                event = "approval",
                action = %e.action,
                approval = %e.approval,
                approval_kind = %e.approval_kind,
                subject = %e.subject,
                workload = %e.workload,
                principal = %e.principal,
                resource = %e.resource,
                by = e.by.as_deref().unwrap_or(""),
                reason = e.reason.as_deref().unwrap_or(""),
                "approval {}", e.action
            ),
        }
    }
}
