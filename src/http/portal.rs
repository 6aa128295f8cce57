//! Portal sessions: an admin key mints a link to the customer portal for its org.
//!
//! Policy: the answer's `url` carries a grant token in its fragment (never sent to a
//! server by a browser, never in a log); the portal page trades it for a short cookie
//! session (see `web/session.rs`). The grant acts as the key that minted it: revoking
//! that key, or the grant, ends every portal session made from it. What the portal
//! does is never counted against that key: its sessions and each link have budgets of
//! their own, trading a link is throttled per link and per client address, and a link
//! keeps at most `POSTHORN_PORTAL_SESSIONS_PER_LINK` live sessions (the oldest ends).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, Authorized};
use super::input::JsonBody;
use super::{Empty, ErrorBody};
use crate::app::AppState;
use crate::domain::{Capabilities, SessionToken, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::{WebSessionKind, WebSessionRecord};

/// Longest a portal link may be valid: a week.
pub const MAX_EXPIRES_IN: u64 = 7 * 24 * 3600;
/// A portal link's life when none is asked for: an hour.
pub const DEFAULT_EXPIRES_IN: u64 = 3600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_portal_session))
        .routes(routes!(revoke_portal_session))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatePortalSessionBody {
    /// Seconds the link stays valid (default 3600, at most 604800).
    #[schema(minimum = 1, maximum = 604800)]
    pub expires_in: Option<u64>,
    /// What the portal may do beyond viewing: `view`, `manage_endpoints`, `retry`,
    /// `rotate_secrets`. Default: all of them.
    pub capabilities: Option<Vec<String>>,
    /// `true`: nothing can be changed, whatever the capabilities say.
    pub read_only: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortalSession {
    /// The portal link: open it, or put it in an `<iframe>`.
    pub url: String,
    /// The grant token the link carries in its fragment.
    pub token: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires: Timestamp,
    pub capabilities: Vec<String>,
    pub read_only: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokePortalSessionBody {
    /// The `token` of a minted portal session.
    #[schema(required = true, value_type = String)]
    pub token: Option<String>,
}

/// Mint a customer-portal link for the caller's org
#[utoipa::path(post, path = "/portal-sessions", tag = "portal",
    request_body = CreatePortalSessionBody,
    responses((status = 200, body = PortalSession), (status = 400, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn create_portal_session(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    headers: axum::http::HeaderMap,
    JsonBody(body): JsonBody<CreatePortalSessionBody>,
) -> ApiResult<Json<PortalSession>> {
    let expires_in = body.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(ApiError::invalid(
            "expiresIn",
            format!("must be between 1 and {MAX_EXPIRES_IN} seconds"),
        ));
    }
    let capabilities = match &body.capabilities {
        None => Capabilities::all(),
        Some(names) => Capabilities::from_names(names.iter().map(String::as_str))
            .map_err(|e| ApiError::invalid("capabilities", e))?,
    };
    let read_only = body.read_only.unwrap_or(false);
    let now = Timestamp::now();
    let expires = Timestamp::from_millis(now.millis() + (expires_in * 1000) as i64);
    let token = SessionToken::generate();
    state
        .store
        .insert_web_session(&WebSessionRecord {
            hash: token.hash(),
            org_id: caller.org().clone(),
            kind: WebSessionKind::PortalGrant,
            capabilities: capabilities.to_string(),
            read_only,
            csrf: String::new(),
            key_hash: Some(caller.key.hash),
            grant_hash: None,
            created: now,
            expires,
            revoked: None,
        })
        .await?;
    Ok(Json(PortalSession {
        url: format!(
            "{}/portal/#token={}",
            base_url(&state, &headers),
            token.expose()
        ),
        token: token.expose().to_owned(),
        expires,
        capabilities: capabilities.names().into_iter().map(String::from).collect(),
        read_only,
    }))
}

/// Where the caller reaches this server: the configured public URL, else the
/// request's `Host` (a plain host and port), else the listen address.
fn base_url(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    if state.config.web.public_url.is_some() {
        return state.config.base_url();
    }
    headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map_or_else(|| state.config.base_url(), |h| format!("http://{h}"))
}

/// Revoke a portal link and every portal session opened with it
#[utoipa::path(post, path = "/portal-sessions/revoke", tag = "portal",
    request_body = RevokePortalSessionBody,
    responses((status = 200, body = Empty), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn revoke_portal_session(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    JsonBody(body): JsonBody<RevokePortalSessionBody>,
) -> ApiResult<Json<Empty>> {
    let token = body
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::RequiredField("token".into()))?;
    let hash = SessionToken::from_raw(token).hash();
    let grant = state.store.find_web_session(&hash).await?;
    match grant {
        Some(g) if g.kind == WebSessionKind::PortalGrant && &g.org_id == caller.org() => {
            state
                .store
                .revoke_web_session(&hash, Timestamp::now())
                .await?;
            Ok(Json(Empty {}))
        }
        _ => Err(ApiError::NotFound),
    }
}
