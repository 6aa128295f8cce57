//! The five Fullstory endpoint operations.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, Authorized};
use super::catalog::{validate_subscriptions, EventTypeInput};
use super::flow::{FlowInput, FlowView};
use super::input::{JsonBody, PathParam, QueryParams};
use super::pagination::{self, PageParams};
use super::{Empty, ErrorBody};
use crate::app::AppState;
use crate::domain::{
    CustomHeaders, EndpointId, EndpointUrl, EventTypeRef, OrgId, Secret, Timestamp,
};
use crate::error::{ApiError, ApiResult};
use crate::store::{EndpointPatch, EndpointRecord, NewEndpoint};

pub const MAX_PAGE: u32 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
}

/// An endpoint as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Unpadded base64url of `url`.
    pub id: String,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub modified: Timestamp,
    pub enabled: bool,
    pub url: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<EventTypeRef>,
    /// Only in the answer to a Create that minted the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Why posthorn disabled the endpoint (it failed for too long); cleared by an
    /// Update that enables it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<Timestamp>,
    /// Custom headers sent on every attempt; the values of sensitive names
    /// (`Authorization`, `Cookie`, names with `key`, `token`, `secret`, `auth`,
    /// `password` or `session`) show as `********`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub flow: FlowView,
}

impl Endpoint {
    /// The view of `r`, its custom headers opened with the master key and masked.
    pub fn view(r: EndpointRecord, state: &AppState) -> Self {
        let headers = r.sealed_headers.as_ref().and_then(|sealed| {
            state
                .master_key
                .open_headers(&r.org_id, sealed)
                .inspect_err(|e| tracing::error!(error = %e, "cannot open endpoint headers"))
                .ok()
        });
        Self {
            flow: FlowView::of(&r, state.store.public_ids()),
            id: EndpointId::for_url(&r.url).as_str().to_owned(),
            created: r.created,
            modified: r.modified,
            enabled: r.enabled,
            url: r.url,
            event_types: r.event_types,
            secret: None,
            disabled_reason: r.disabled_reason,
            disabled_at: if r.enabled { None } else { r.disabled_at },
            headers: headers.map(|h| h.masked()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_pagination_token: Option<String>,
}

/// Create body. Every field is also accepted in snake_case.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEndpointBody {
    #[schema(required = true, value_type = String, format = "uri", max_length = 2048)]
    pub url: Option<String>,
    pub event_types: Option<Vec<EventTypeInput>>,
    pub secret: Option<String>,
    /// `true`: the endpoint is created disabled (it receives nothing until enabled).
    pub disabled: Option<bool>,
    /// Headers sent on every attempt (at most 20, 8 KiB together; not the ones
    /// posthorn sets). Stored encrypted.
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub flow: FlowInput,
}

/// Update body: an absent or empty field is left as it is; the endpoint is enabled
/// unless `disabled` is true.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateEndpointBody {
    pub url: Option<String>,
    pub event_types: Option<Vec<EventTypeInput>>,
    pub secret: Option<String>,
    pub disabled: Option<bool>,
    /// Replaces the custom headers; absent leaves them, `{}` removes them. A value sent
    /// as `********` keeps the stored value of that header. When `url` changes, absent
    /// removes them (the answer has a `Warning` header saying so) and `********` is
    /// refused: headers follow a new URL only when given again.
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub flow: FlowInput,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Parses a URL and applies the SSRF rule unless private targets are allowed.
pub(super) async fn checked_url(state: &AppState, raw: &str) -> ApiResult<EndpointUrl> {
    let url = EndpointUrl::parse(raw).map_err(|e| ApiError::invalid("url", e))?;
    if url.host_is(crate::delivery::tunnel::HOST) {
        return Err(ApiError::invalid(
            "url",
            "uses a host reserved for posthorn listen",
        ));
    }
    if !state.config.allow_private_targets {
        url.check_public()
            .await
            .map_err(|e| ApiError::invalid("url", e))?;
    }
    Ok(url)
}

pub(super) fn parse_headers(given: BTreeMap<String, String>) -> ApiResult<CustomHeaders> {
    CustomHeaders::parse(given).map_err(|e| ApiError::invalid("headers", e))
}

/// Custom headers sealed for the store; none for an empty set.
fn seal_headers(state: &AppState, org: &OrgId, headers: &CustomHeaders) -> Option<Vec<u8>> {
    (!headers.is_empty()).then(|| state.master_key.seal_headers(org, headers))
}

pub(super) fn parse_secret(raw: &str) -> ApiResult<Secret> {
    Secret::parse(raw).map_err(|e| ApiError::invalid("secret", e))
}

/// The URL an endpoint id stands for; an id that decodes to nothing names nothing.
fn url_of(id: &str) -> ApiResult<String> {
    EndpointId::from_raw(id).url().ok_or(ApiError::NotFound)
}

/// Create Endpoint
#[utoipa::path(post, path = "/endpoints", tag = "endpoints",
    request_body = CreateEndpointBody,
    responses((status = 200, body = Endpoint), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    JsonBody(body): JsonBody<CreateEndpointBody>,
) -> ApiResult<Json<Endpoint>> {
    let org = caller.org();
    let raw_url = non_empty(body.url).ok_or_else(|| ApiError::RequiredField("url".into()))?;
    let url = checked_url(&state, &raw_url).await?;
    let event_types =
        validate_subscriptions(&state, org, body.event_types.unwrap_or_default()).await?;
    let (secret, minted) = match non_empty(body.secret) {
        Some(raw) => (parse_secret(&raw)?, false),
        None => (Secret::generate(), true),
    };
    let headers = parse_headers(body.headers.unwrap_or_default())?;
    let flow = body.flow.create()?;
    let new = NewEndpoint {
        org_id: org.clone(),
        url: url.as_str().to_owned(),
        event_types,
        sealed_secret: state.master_key.seal_secret(org, &secret),
        sealed_headers: seal_headers(&state, org, &headers),
        flow,
        enabled: body.disabled != Some(true),
        now: Timestamp::now(),
    };
    // At most POSTHORN_MAX_ENDPOINTS_PER_ORG live ones (fan_out.rs), else 422.
    let most = state.config.fan_out.max_endpoints_per_org;
    let record = state.store.create_endpoint_within(&new, most).await?;
    let mut view = Endpoint::view(record, &state);
    view.secret = minted.then(|| secret.expose().to_owned());
    Ok(Json(view))
}

/// List Endpoints
#[utoipa::path(get, path = "/endpoints", tag = "endpoints", params(PageParams),
    responses((status = 200, body = EndpointList), (status = 400, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    QueryParams(params): QueryParams<PageParams>,
) -> ApiResult<Json<EndpointList>> {
    let ids = state.store.public_ids();
    let (after, limit) = params.resolve(ids, "e", MAX_PAGE)?;
    let page = state
        .store
        .list_endpoints(caller.org(), after, limit)
        .await?;
    Ok(Json(EndpointList {
        endpoints: page
            .items
            .into_iter()
            .map(|r| Endpoint::view(r, &state))
            .collect(),
        next_pagination_token: page.next_after.map(|seq| pagination::encode(ids, "e", seq)),
    }))
}

pub(super) async fn load(state: &AppState, org: &OrgId, id: &str) -> ApiResult<EndpointRecord> {
    Ok(state.store.get_endpoint(org, &url_of(id)?).await?)
}

/// Get Endpoint
#[utoipa::path(get, path = "/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = Endpoint), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn get_endpoint(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<Endpoint>> {
    let record = load(&state, caller.org(), &id).await?;
    Ok(Json(Endpoint::view(record, &state)))
}

/// Update Endpoint (POST, as Fullstory does)
#[utoipa::path(post, path = "/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body = UpdateEndpointBody,
    responses((status = 200, body = Endpoint, headers(("Warning" = String,
            description = "Present when the URL changed and the custom headers were removed with it"))),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<UpdateEndpointBody>,
) -> ApiResult<Updated> {
    let org = caller.org();
    let current_url = url_of(&id)?;
    let url = match non_empty(body.url) {
        Some(raw) => Some(checked_url(&state, &raw).await?.as_str().to_owned()),
        None => None,
    };
    // Custom headers often carry a receiver's credentials: they never follow the
    // endpoint to a new URL unless this request gives them again.
    let moves = url.as_deref().is_some_and(|u| u != current_url);
    let event_types = match body.event_types.filter(|v| !v.is_empty()) {
        Some(refs) => Some(validate_subscriptions(&state, org, refs).await?),
        None => None,
    };
    let sealed_secret = match non_empty(body.secret) {
        Some(raw) => Some(state.master_key.seal_secret(org, &parse_secret(&raw)?)),
        None => None,
    };
    // The flow fields are checked against what is stored (a burst needs a limit).
    let current = load(&state, org, &id).await?;
    let flow = body.flow.patch(current.flow)?;
    let dropped = moves && body.headers.is_none() && current.sealed_headers.is_some();
    let sealed_headers = match body.headers {
        None if dropped => Some(None),
        None => None,
        Some(given) => {
            let mut headers = parse_headers(given)?;
            if moves && headers.has_masked() {
                return Err(ApiError::invalid(
                    "headers",
                    "cannot keep a masked value (********) while the URL changes: give each value again",
                ));
            }
            // A masked value sent back keeps what is stored. (Read before the update:
            // a concurrent Update of the same header in between is overwritten.)
            if headers.has_masked() {
                let stored = match &current.sealed_headers {
                    Some(sealed) => state
                        .master_key
                        .open_headers(org, sealed)
                        .map_err(ApiError::Internal)?,
                    None => CustomHeaders::default(),
                };
                headers = headers
                    .keeping_masked(&stored)
                    .map_err(|e| ApiError::invalid("headers", e))?;
            }
            Some(seal_headers(&state, org, &headers))
        }
    };
    let patch = EndpointPatch {
        url,
        event_types,
        sealed_secret,
        sealed_headers,
        flow,
        enabled: body.disabled != Some(true),
        now: Timestamp::now(),
    };
    let record = state
        .store
        .update_endpoint(org, &current_url, &patch)
        .await?;
    Ok(Updated {
        endpoint: Endpoint::view(record, &state),
        headers_dropped: dropped,
    })
}

/// Update's answer: the endpoint, and a `Warning` header when its custom headers were
/// removed because its URL changed.
pub struct Updated {
    pub endpoint: Endpoint,
    pub headers_dropped: bool,
}

/// What the `Warning` header of Update says when custom headers were removed.
pub const HEADERS_DROPPED: &str =
    "299 posthorn \"the URL changed, so the custom headers were removed; send them again to keep them\"";

impl IntoResponse for Updated {
    fn into_response(self) -> Response {
        let mut response = Json(self.endpoint).into_response();
        if self.headers_dropped {
            response.headers_mut().insert(
                axum::http::header::WARNING,
                axum::http::HeaderValue::from_static(HEADERS_DROPPED),
            );
        }
        response
    }
}

/// Delete Endpoint
#[utoipa::path(delete, path = "/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, body = Empty), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<Empty>> {
    let url = url_of(&id)?;
    state
        .store
        .delete_endpoint(caller.org(), &url, Timestamp::now())
        .await?;
    Ok(Json(Empty {}))
}
