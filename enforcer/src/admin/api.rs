//! `/v1`: grants, approvals and sessions, as JSON.
//!
//! | method | path                         | who                                   |
//! |--------|------------------------------|---------------------------------------|
//! | POST   | /v1/grants                   | workload: request a grant             |
//! | GET    | /v1/grants                   | operator: all; workload: its own      |
//! | GET    | /v1/grants/{id}              | operator; workload: its own (+token)  |
//! | POST   | /v1/grants/{id}/revoke       | operator; workload: its own           |
//! | GET    | /v1/approvals[?all=true]     | operator: pending (or all)            |
//! | GET    | /v1/approvals/{id}           | operator; workload: its own           |
//! | POST   | /v1/approvals/{id}/approve   | operator only                         |
//! | POST   | /v1/approvals/{id}/deny      | operator only                         |
//! | GET    | /v1/sessions                 | operator                              |

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, caller::Caller};
use crate::{
    approval::ApprovalError,
    grant::{GrantError, GrantRequest, Grants},
};

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/v1/grants", post(request_grant).get(list_grants))
        .route("/v1/grants/{id}", get(show_grant))
        .route("/v1/grants/{id}/revoke", post(revoke_grant))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(show_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/v1/sessions", get(list_sessions))
}

/// An error as the API answers it: a status and `{"error": "…"}`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        let status = match &e {
            GrantError::UnknownResource(_)
            | GrantError::UnknownAccess { .. }
            | GrantError::NoReason
            | GrantError::NoUses
            | GrantError::TtlTooLong { .. } => StatusCode::BAD_REQUEST,
            GrantError::Denied(_) | GrantError::OtherWorkload => StatusCode::FORBIDDEN,
            GrantError::NotFound(_) => StatusCode::NOT_FOUND,
            GrantError::NotRevocable { .. } => StatusCode::CONFLICT,
            GrantError::Approval(a) => return ApiError::from_approval(a),
            GrantError::BadReason => StatusCode::BAD_REQUEST,
            GrantError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => return ApiError::internal(&e),
        };
        ApiError(status, e.to_string())
    }
}

impl ApiError {
    /// Details go to the log, not to the caller (who may be the workload).
    fn internal(e: &dyn std::fmt::Display) -> ApiError {
        tracing::error!("admin API: {e}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see enforcer's log".into(),
        )
    }

    fn from_approval(e: &ApprovalError) -> ApiError {
        let status = match e {
            ApprovalError::NotFound(_) => StatusCode::NOT_FOUND,
            ApprovalError::AlreadyDecided { .. } => StatusCode::CONFLICT,
            ApprovalError::SelfApproval => StatusCode::FORBIDDEN,
            _ => return ApiError::internal(e),
        };
        ApiError(status, e.to_string())
    }

    fn operator_only() -> ApiError {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "operator rights needed: present the operator token (Authorization: Bearer, from \
             the state directory's operator-token file)"
                .into(),
        )
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        ApiError::from_approval(&e)
    }
}

type ApiResult = Result<Response, ApiError>;

fn grants(state: &AdminState) -> Result<&Arc<Grants>, ApiError> {
    state.grants.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "grants are not enabled on this enforcer".into(),
        )
    })
}

async fn request_grant(
    State(state): State<AdminState>,
    caller: Caller,
    Json(req): Json<GrantRequest>,
) -> ApiResult {
    let grants = grants(&state)?;
    let Caller::Workload(w) = caller else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "grants are requested from inside the enforced workload (`enforcer grant request` \
             there); the daemon identifies and binds it by its connection"
                .into(),
        ));
    };
    let row = grants.request(&w.requester, req).await?;
    let status = if row.status == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(grants.view(row, true)?)).into_response())
}

async fn list_grants(State(state): State<AdminState>, caller: Caller) -> ApiResult {
    let grants = grants(&state)?;
    let rows = match &caller {
        Caller::Operator { .. } => grants.list(None).await?,
        Caller::Workload(w) => grants
            .list(Some(&w.requester.workload))
            .await?
            .into_iter()
            .filter(|g| owns(w, &g.workload, &g.principal))
            .collect(),
        Caller::Anonymous => return Err(ApiError::operator_only()),
    };
    Ok(Json(rows).into_response())
}

async fn show_grant(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let grants = grants(&state)?;
    if matches!(caller, Caller::Anonymous) {
        return Err(ApiError::operator_only());
    }
    let row = grants.get(&id).await?;
    let owner = match &caller {
        Caller::Workload(w) if owns(w, &row.workload, &row.principal) => true,
        // Another workload learns nothing, not even that the id exists.
        Caller::Workload(_) => return Err(GrantError::NotFound(id).into()),
        Caller::Operator { .. } => false,
        Caller::Anonymous => return Err(ApiError::operator_only()),
    };
    Ok(Json(grants.view(row, owner)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke_grant(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<ReasonBody>>,
) -> ApiResult {
    let grants = grants(&state)?;
    let reason = body.and_then(|Json(b)| b.reason);
    match &caller {
        Caller::Operator { .. } => {}
        Caller::Workload(w) => {
            let row = grants.get(&id).await?;
            if !owns(w, &row.workload, &row.principal) {
                return Err(GrantError::NotFound(id).into());
            }
        }
        Caller::Anonymous => return Err(ApiError::operator_only()),
    }
    let row = grants
        .revoke(&id, &caller.label(), reason.as_deref())
        .await?;
    Ok(Json(grants.view(row, false)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list_approvals(
    State(state): State<AdminState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let grants = grants(&state)?;
    if matches!(caller, Caller::Anonymous) {
        return Err(ApiError::operator_only());
    }
    let rows = grants.approvals().list(!q.all).await?;
    let rows: Vec<_> = match &caller {
        Caller::Workload(w) => rows
            .into_iter()
            .filter(|r| owns(w, &r.workload, &r.principal))
            .collect(),
        _ => rows,
    };
    Ok(Json(rows).into_response())
}

async fn show_approval(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let grants = grants(&state)?;
    if matches!(caller, Caller::Anonymous) {
        return Err(ApiError::operator_only());
    }
    let row = grants.approvals().get(&id).await?;
    match &caller {
        Caller::Operator { .. } => {}
        Caller::Workload(w) if owns(w, &row.workload, &row.principal) => {}
        Caller::Workload(_) => return Err(ApprovalError::NotFound(id).into()),
        Caller::Anonymous => return Err(ApiError::operator_only()),
    }
    Ok(Json(row).into_response())
}

async fn approve(
    state: State<AdminState>,
    caller: Caller,
    id: Path<String>,
    body: Option<Json<ReasonBody>>,
) -> ApiResult {
    decide(state, caller, id, body, true).await
}

async fn deny(
    state: State<AdminState>,
    caller: Caller,
    id: Path<String>,
    body: Option<Json<ReasonBody>>,
) -> ApiResult {
    decide(state, caller, id, body, false).await
}

async fn decide(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Option<Json<ReasonBody>>,
    approve: bool,
) -> ApiResult {
    let grants = grants(&state)?;
    let reason = body.and_then(|Json(b)| b.reason);
    match &caller {
        Caller::Operator { .. } => {}
        Caller::Workload(_) => {
            let refused = grants
                .approvals()
                .refuse_self_approval(&id, &caller.label())
                .await?;
            return Err(refused.into());
        }
        Caller::Anonymous => return Err(ApiError::operator_only()),
    }
    let row = grants
        .decide(&id, approve, &caller.label(), reason.as_deref())
        .await?;
    Ok(Json(row).into_response())
}

/// A record belongs to the calling workload: same workload and same principal.
fn owns(caller: &super::WorkloadCaller, workload: &str, principal: &str) -> bool {
    caller.requester.workload == workload && caller.requester.principal.name == principal
}

async fn list_sessions(State(state): State<AdminState>, caller: Caller) -> ApiResult {
    match caller {
        Caller::Operator { .. } => Ok(Json(state.sessions.list()).into_response()),
        _ => Err(ApiError::operator_only()),
    }
}
