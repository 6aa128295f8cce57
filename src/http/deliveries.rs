//! The delivery log (posthorn's operator API): an event and its fate, an
//! endpoint's deliveries, a delivery's attempts, retry one, recover many. Admin only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, Authorized};
use super::endpoints::load;
use super::input::{JsonBody, PathParam, QueryParams};
use super::pagination;
use super::ErrorBody;
use crate::app::AppState;
use crate::domain::{
    DeliveryId, DeliveryState, EndpointId, ErrorClass, EventId, PublicIds, Timestamp,
};
use crate::error::{ApiError, ApiResult};
use crate::store::{AttemptView, DeliveryFilter, DeliveryRecord};

pub const MAX_PAGE: u32 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_event))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(list_attempts))
        .routes(routes!(retry_delivery))
        .routes(routes!(recover))
}

/// One delivery: an event to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event_name: String,
    /// The endpoint's id now (it follows URL changes).
    pub endpoint_id: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub endpoint_deleted: bool,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated: Timestamp,
}

impl Delivery {
    /// The view of `d`, its id spelled with `ids`.
    pub fn view(d: DeliveryRecord, ids: &PublicIds) -> Self {
        Self {
            id: ids.delivery(d.id),
            event_id: d.event_id.into_string(),
            event_name: d.event_name,
            endpoint_id: EndpointId::for_url(&d.endpoint_url).as_str().to_owned(),
            endpoint_deleted: d.endpoint_deleted,
            state: d.state,
            attempts: d.attempts,
            next_attempt: d.next_attempt,
            last_status: d.last_status,
            last_error: d.last_error,
            created: d.created,
            updated: d.updated,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub id: String,
    pub event_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subcategory: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    #[schema(value_type = String, format = DateTime)]
    pub created: Timestamp,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<Delivery>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_pagination_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub attempt_no: u32,
    #[schema(value_type = String, format = DateTime)]
    pub started: Timestamp,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The first 1 KiB of the response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

impl From<AttemptView> for Attempt {
    fn from(a: AttemptView) -> Self {
        Self {
            attempt_no: a.attempt_no,
            started: a.started,
            latency_ms: a.latency_ms,
            status_code: a.status_code,
            error: a.error,
            error_class: a.error_class,
            response_body: a.response_body,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`.
    #[param(value_type = Option<DeliveryState>)]
    pub state: Option<String>,
    /// Deliveries of events published at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
    /// Deliveries of events published before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<String>,
    /// Page size; defaults to and is clamped at 100. `0` is the default.
    #[param(value_type = Option<u32>, minimum = 0)]
    pub limit: Option<String>,
    /// `nextPaginationToken` of the previous page.
    pub pagination_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverBody {
    /// Failed deliveries of events published at or after this time are queued again.
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// ... and before this time, if given.
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries were queued again.
    pub queued: u64,
}

/// Parses an optional RFC 3339 time named `field`.
pub fn parse_time(field: &str, raw: Option<&str>) -> ApiResult<Option<Timestamp>> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(Timestamp::from_millis(t.timestamp_millis())))
            .map_err(|_| {
                ApiError::invalid(
                    field,
                    "must be an RFC 3339 time, e.g. 2020-04-01T21:53:58.200Z",
                )
            }),
    }
}

fn time_range(
    since: Option<&str>,
    until: Option<&str>,
) -> ApiResult<(Option<Timestamp>, Option<Timestamp>)> {
    let (since, until) = (parse_time("since", since)?, parse_time("until", until)?);
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(ApiError::invalid("until", "must not be before since"));
        }
    }
    Ok((since, until))
}

fn delivery_id(state: &AppState, raw: &str) -> ApiResult<DeliveryId> {
    state
        .store
        .public_ids()
        .parse_delivery(raw)
        .ok_or(ApiError::NotFound)
}

/// An event, its payload and the state of its delivery to each endpoint
#[utoipa::path(get, path = "/events/{id}", tag = "delivery log",
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn get_event(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<EventView>> {
    let id = EventId::from_raw(id);
    let event = state.store.get_event(caller.org(), &id).await?;
    let deliveries = state.store.event_deliveries(caller.org(), &id).await?;
    let mut body: Value =
        serde_json::from_slice(&event.body).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(EventView {
        id: event.id.into_string(),
        event_name: event.event_name,
        subcategory: event.subcategory,
        data: body.get_mut("data").map(Value::take).unwrap_or_default(),
        created: event.created,
        deliveries: deliveries
            .into_iter()
            .map(|d| Delivery::view(d, state.store.public_ids()))
            .collect(),
    }))
}

/// An endpoint's deliveries, newest first, by state and publish time
#[utoipa::path(get, path = "/endpoints/{id}/deliveries", tag = "delivery log",
    params(("id" = String, Path, description = "Endpoint id"), DeliveryQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
    QueryParams(q): QueryParams<DeliveryQuery>,
) -> ApiResult<Json<DeliveryList>> {
    let page = pagination::PageParams {
        limit: q.limit,
        pagination_token: q.pagination_token,
    };
    let ids = state.store.public_ids();
    let (before, limit) = page.resolve(ids, "d", MAX_PAGE)?;
    let before = before.map(DeliveryId);
    let state_filter = match q.state.filter(|s| !s.is_empty()) {
        Some(s) => Some(
            s.parse::<DeliveryState>()
                .map_err(|_| ApiError::invalid("state", "must be pending, delivered or failed"))?,
        ),
        None => None,
    };
    let (since, until) = time_range(q.since.as_deref(), q.until.as_deref())?;
    let endpoint = load(&state, caller.org(), &id).await?;
    let filter = DeliveryFilter {
        state: state_filter,
        since,
        until,
        before,
        limit,
    };
    let page = state
        .store
        .list_deliveries(caller.org(), endpoint.uid, &filter)
        .await?;
    Ok(Json(DeliveryList {
        deliveries: page
            .items
            .into_iter()
            .map(|d| Delivery::view(d, ids))
            .collect(),
        next_pagination_token: page.next_after.map(|id| pagination::encode(ids, "d", id)),
    }))
}

/// One delivery
#[utoipa::path(get, path = "/deliveries/{id}", tag = "delivery log",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, body = Delivery), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn get_delivery(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<Delivery>> {
    let d = state
        .store
        .get_delivery(caller.org(), delivery_id(&state, &id)?)
        .await?;
    Ok(Json(Delivery::view(d, state.store.public_ids())))
}

/// Every attempt of a delivery, oldest first
#[utoipa::path(get, path = "/deliveries/{id}/attempts", tag = "delivery log",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 200, body = AttemptList), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn list_attempts(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<Json<AttemptList>> {
    let id = delivery_id(&state, &id)?;
    state.store.get_delivery(caller.org(), id).await?;
    let attempts = state.store.list_attempts(caller.org(), id).await?;
    Ok(Json(AttemptList {
        attempts: attempts.into_iter().map(Attempt::from).collect(),
    }))
}

/// Retry a delivery now, whatever its state, with a fresh retry schedule. Calling it
/// again within 10 s, or while its attempt is in flight, sends nothing more.
#[utoipa::path(post, path = "/deliveries/{id}/retry", tag = "delivery log",
    params(("id" = String, Path, description = "Delivery id")),
    responses((status = 202, body = Delivery), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    let id = delivery_id(&state, &id)?;
    let delivery = state
        .store
        .retry_delivery(caller.org(), id, Timestamp::now())
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Delivery::view(delivery, state.store.public_ids())),
    ))
}

/// Queue again every failed delivery of an endpoint published since a time (and
/// before `until`). Calling it twice queues nothing more.
#[utoipa::path(post, path = "/endpoints/{id}/recover", tag = "delivery log",
    params(("id" = String, Path, description = "Endpoint id")),
    request_body = RecoverBody,
    responses((status = 202, body = Recovered), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn recover(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<RecoverBody>,
) -> ApiResult<(StatusCode, Json<Recovered>)> {
    let (since, until) = time_range(body.since.as_deref(), body.until.as_deref())?;
    let since = since.ok_or_else(|| ApiError::RequiredField("since".into()))?;
    let endpoint = load(&state, caller.org(), &id).await?;
    let queued = state
        .store
        .recover_failed(caller.org(), endpoint.uid, since, until, Timestamp::now())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { queued })))
}
