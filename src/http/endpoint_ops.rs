//! Operating an endpoint (posthorn's own): send it a `test` event, test a
//! URL before it is an endpoint, rotate its secret with a grace period, and its
//! delivery statistics. Admin only.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, Authorized};
use super::endpoints::{checked_url, load, parse_headers, parse_secret};
use super::input::{JsonBody, PathParam};
use super::ErrorBody;
use crate::app::AppState;
use crate::delivery::{attempt, sign};
use crate::domain::event_type::{envelope, TEST_EVENT};
use crate::domain::{CustomHeaders, ErrorClass, OrgId, Secret, Timestamp};
use crate::error::{ApiError, ApiResult};

/// Default time the previous secret keeps signing after a rotation.
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The windows of the statistics.
const WINDOWS: &[(&str, i64)] = &[("1h", 3_600_000), ("24h", 86_400_000), ("7d", 604_800_000)];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test_endpoint))
        .routes(routes!(test_url))
        .routes(routes!(rotate_secret))
        .routes(routes!(endpoint_stats))
}

/// What a test send came to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// True when the endpoint answered 2xx within the attempt timeout.
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestUrlBody {
    #[schema(required = true, value_type = String, format = "uri", max_length = 2048)]
    pub url: Option<String>,
    pub secret: Option<String>,
    /// Custom headers to send, as an endpoint's would be.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotateBody {
    /// The new secret; minted (and returned once) when absent.
    pub secret: Option<String>,
    /// How long the previous secret keeps signing: `24h`, `90m`, or seconds. Default 24 h.
    #[schema(value_type = Option<String>)]
    pub grace_period: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotated {
    /// Only when posthorn minted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until then deliveries carry a signature by the previous secret as well.
    #[schema(value_type = String, format = DateTime)]
    pub previous_secret_expires: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsWindow {
    /// `1h`, `24h` or `7d`: deliveries finished in that time up to now.
    pub window: String,
    pub delivered: u64,
    pub failed: u64,
    /// delivered / (delivered + failed); absent when nothing finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStats {
    pub windows: Vec<StatsWindow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_failure: Option<Timestamp>,
    /// What its deliveries wait on now, as on the endpoint (omitted when nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<super::flow::FlowState>,
}

/// Sends the `test` envelope signed with `secrets` and reports what came of it.
async fn send_test(
    state: &AppState,
    org: &OrgId,
    url: &str,
    secrets: &[Secret],
    custom: Option<&CustomHeaders>,
) -> ApiResult<TestResult> {
    let body = envelope(TEST_EVENT, 1, &Value::Object(Default::default()))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    let msg_id = format!(
        "test_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
    );
    let keys: Vec<Vec<u8>> = secrets.iter().map(sign::key_bytes).collect();
    let sent = attempt::send(
        &state.engine,
        url,
        org.as_str(),
        &msg_id,
        body.into(),
        &keys,
        custom,
    )
    .await;
    Ok(TestResult {
        success: sent.succeeded(),
        status_code: sent.status,
        latency_ms: sent.latency_ms,
        error: sent.error,
        error_class: sent.error_class,
        response_body: sent.response_body,
    })
}

/// Send a `test` event to an endpoint, signed like any delivery, and wait for the answer
#[utoipa::path(post, path = "/endpoints/{id}/test", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = TestResult), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn test_endpoint(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<TestResult>> {
    let endpoint = load(&state, caller.org(), &id).await?;
    let now = Timestamp::now();
    let mut secrets = vec![state
        .master_key
        .open_secret(caller.org(), &endpoint.sealed_secret)
        .map_err(ApiError::Internal)?];
    if let Some((sealed, until)) = &endpoint.old_secret {
        if *until > now {
            secrets.push(
                state
                    .master_key
                    .open_secret(caller.org(), sealed)
                    .map_err(ApiError::Internal)?,
            );
        }
    }
    let custom = match &endpoint.sealed_headers {
        Some(sealed) => Some(
            state
                .master_key
                .open_headers(caller.org(), sealed)
                .map_err(ApiError::Internal)?,
        ),
        None => None,
    };
    Ok(Json(
        send_test(
            &state,
            caller.org(),
            &endpoint.url,
            &secrets,
            custom.as_ref(),
        )
        .await?,
    ))
}

/// Send a `test` event to a URL with a secret, before it is an endpoint
#[utoipa::path(post, path = "/endpoints/test", tag = "endpoints",
    request_body = TestUrlBody,
    responses((status = 200, body = TestResult), (status = 400, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn test_url(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    JsonBody(body): JsonBody<TestUrlBody>,
) -> ApiResult<Json<TestResult>> {
    let raw = body
        .url
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::RequiredField("url".into()))?;
    let url = checked_url(&state, &raw).await?;
    let secret = body
        .secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::RequiredField("secret".into()))?;
    let secret = parse_secret(&secret)?;
    let custom = parse_headers(body.headers.unwrap_or_default())?;
    Ok(Json(
        send_test(&state, caller.org(), url.as_str(), &[secret], Some(&custom)).await?,
    ))
}

fn grace_period(raw: Option<Value>) -> ApiResult<Duration> {
    let grace = match raw {
        None | Some(Value::Null) => DEFAULT_GRACE,
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_secs).ok_or_else(|| {
            ApiError::invalid(
                "gracePeriod",
                "must be a whole number of seconds or a duration like 24h",
            )
        })?,
        Some(Value::String(s)) => humantime::parse_duration(&s).map_err(|_| {
            ApiError::invalid(
                "gracePeriod",
                "must be a whole number of seconds or a duration like 24h",
            )
        })?,
        Some(_) => {
            return Err(ApiError::invalid(
                "gracePeriod",
                "must be a whole number of seconds or a duration like 24h",
            ))
        }
    };
    if grace > MAX_GRACE {
        return Err(ApiError::invalid("gracePeriod", "must be at most 30 days"));
    }
    Ok(grace)
}

/// Rotate an endpoint's secret; the previous one keeps signing for the grace period
#[utoipa::path(post, path = "/endpoints/{id}/rotate-secret", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body = RotateBody,
    responses((status = 200, body = Rotated), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<RotateBody>,
) -> ApiResult<Json<Rotated>> {
    let grace = grace_period(body.grace_period)?;
    let (secret, minted) = match body.secret.filter(|s| !s.is_empty()) {
        Some(raw) => (parse_secret(&raw)?, false),
        None => (Secret::generate(), true),
    };
    let endpoint = load(&state, caller.org(), &id).await?;
    let now = Timestamp::now();
    let expires = now.plus(grace);
    let sealed = state.master_key.seal_secret(caller.org(), &secret);
    state
        .store
        .rotate_secret(caller.org(), &endpoint.url, &sealed, expires, now)
        .await?;
    Ok(Json(Rotated {
        secret: minted.then(|| secret.expose().to_owned()),
        previous_secret_expires: expires,
    }))
}

/// Delivered and failed counts and success rate over the last hour, day and week
#[utoipa::path(get, path = "/endpoints/{id}/stats", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = EndpointStats), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn endpoint_stats(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<EndpointStats>> {
    let endpoint = load(&state, caller.org(), &id).await?;
    let now = Timestamp::now().millis();
    let since: Vec<Timestamp> = WINDOWS
        .iter()
        .map(|(_, ms)| Timestamp::from_millis(now - ms))
        .collect();
    let counts = state.store.endpoint_stats(endpoint.uid, &since).await?;
    let windows = WINDOWS
        .iter()
        .zip(counts)
        .map(|((label, _), c)| {
            let finished = c.delivered + c.failed;
            StatsWindow {
                window: (*label).to_owned(),
                delivered: c.delivered,
                failed: c.failed,
                success_rate: (finished > 0).then(|| c.delivered as f64 / finished as f64),
            }
        })
        .collect();
    Ok(Json(EndpointStats {
        windows,
        last_success: endpoint.last_success,
        last_failure: endpoint.last_failure,
        flow: super::flow::FlowView::of(&endpoint, state.store.public_ids()).flow,
    }))
}
