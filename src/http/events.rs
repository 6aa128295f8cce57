//! Publishing events (posthorn's own operation).
//!
//! Policy: every event of a request is validated before any is stored; the event and
//! all of its deliveries are committed in one transaction before the 202 is sent, by
//! the group committer (`crate::publisher`), which does not depend on the request: a
//! client that hangs up mid-request leaves either nothing or a fully queued event.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{Authorized, Publishers};
use super::input::JsonBody;
use super::ErrorBody;
use crate::app::AppState;
use crate::domain::event_type::{envelope, TEST_EVENT};
use crate::domain::notice::is_operational;
use crate::domain::{EventId, OrgId, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::{EventTypeRecord, NewEvent, Published};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
const MAX_IDEMPOTENCY_KEY: usize = 255;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish))
        .routes(routes!(publish_batch))
}

/// One event to publish. Fields are also accepted in snake_case (`event_name`, ...).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishBody {
    #[schema(required = true, value_type = String, min_length = 1)]
    pub event_name: Option<String>,
    pub subcategory: Option<String>,
    /// Any JSON object; sent as the envelope's `data`.
    #[schema(value_type = Object)]
    pub data: Option<Value>,
    /// A repeat within 24 h answers like the first and delivers nothing again.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchBody {
    #[schema(required = true, value_type = Vec<PublishBody>, min_items = 1, max_items = 1000)]
    pub events: Option<Vec<PublishBody>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublishAnswer {
    /// The event id: `webhook-id` of every delivery of it.
    pub id: String,
    /// How many endpoints it fans out to.
    pub deliveries: u64,
}

impl From<Published> for PublishAnswer {
    fn from(p: Published) -> Self {
        Self {
            id: p.id.into_string(),
            deliveries: p.deliveries,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    pub events: Vec<PublishAnswer>,
}

/// Checks one event against the catalog and limits; `at` prefixes field names.
async fn validate(
    state: &AppState,
    org: &OrgId,
    catalog: &[EventTypeRecord],
    body: PublishBody,
    at: &str,
) -> ApiResult<NewEvent> {
    let field = |name: &str| format!("{at}{name}");
    let name = body
        .event_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::RequiredField(field("eventName")))?;
    if name == TEST_EVENT {
        return Err(ApiError::invalid(
            &field("eventName"),
            "test is sent only by the test operation",
        ));
    }
    if is_operational(&name) {
        return Err(ApiError::invalid(
            &field("eventName"),
            format_args!("{name} is posthorn's own operational event; only posthorn sends it"),
        ));
    }
    let Some(def) = catalog.iter().find(|t| t.name == name) else {
        return Err(ApiError::invalid(
            &field("eventName"),
            format_args!("{name:?} is not an event type of this org"),
        ));
    };
    let subcategory = body.subcategory.filter(|s| !s.is_empty());
    match (&subcategory, def.has_subcategories) {
        (None, true) => {
            return Err(ApiError::RequiredField(format!(
                "{} (event type {name} has subcategories)",
                field("subcategory")
            )))
        }
        (Some(_), false) => {
            return Err(ApiError::invalid(
                &field("subcategory"),
                format_args!("must be empty: event type {name} has no subcategories"),
            ))
        }
        (Some(sub), true) if !state.store.subcategory_exists(org, &name, sub).await? => {
            return Err(ApiError::invalid(
                &field("subcategory"),
                format_args!("is not a subcategory of {name}"),
            ));
        }
        _ => {}
    }
    let data = body
        .data
        .ok_or_else(|| ApiError::RequiredField(field("data")))?;
    if !data.is_object() {
        return Err(ApiError::invalid(&field("data"), "must be a JSON object"));
    }
    if let Some(schema) = &def.schema {
        schema
            .check(&data)
            .map_err(|e| ApiError::invalid(&field("data"), e))?;
    }
    let idempotency_key = body.idempotency_key.filter(|k| !k.is_empty());
    if idempotency_key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(ApiError::invalid(
            &field("idempotencyKey"),
            format_args!("must be at most {MAX_IDEMPOTENCY_KEY} bytes"),
        ));
    }
    let body = envelope(&name, def.version, &data).map_err(|e| ApiError::Internal(e.into()))?;
    let limit = state.config.delivery.max_payload_bytes;
    if body.len() > limit {
        return Err(ApiError::EventTooLarge(format!(
            "{} makes an event of {} bytes (compact JSON, with its envelope); the limit is {limit} (POSTHORN_MAX_PAYLOAD_BYTES)",
            field("data"),
            body.len()
        )));
    }
    Ok(NewEvent {
        id: EventId::generate(Timestamp::now()),
        org_id: org.clone(),
        event_name: name,
        subcategory,
        body: body.into(),
        idempotency_key,
    })
}

/// Publish an event
#[utoipa::path(post, path = "/events", tag = "events", request_body = PublishBody,
    responses((status = 202, body = PublishAnswer), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn publish(
    State(state): State<AppState>,
    caller: Authorized<Publishers>,
    JsonBody(body): JsonBody<PublishBody>,
) -> ApiResult<(StatusCode, Json<PublishAnswer>)> {
    let catalog = state.store.list_event_types(caller.org()).await?;
    let event = validate(&state, caller.org(), &catalog, body, "").await?;
    let mut published = state.publisher.publish(vec![event]).await?;
    let answer = published
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("publish answered nothing")))?;
    Ok((StatusCode::ACCEPTED, Json(answer.into())))
}

/// Publish many events at once: all are validated before any is accepted.
#[utoipa::path(post, path = "/events/batch", tag = "events", request_body = BatchBody,
    responses((status = 202, body = BatchAnswer), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn publish_batch(
    State(state): State<AppState>,
    caller: Authorized<Publishers>,
    JsonBody(body): JsonBody<BatchBody>,
) -> ApiResult<(StatusCode, Json<BatchAnswer>)> {
    let items = body
        .events
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::RequiredField("events".into()))?;
    if items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "events",
            format_args!("must hold at most {MAX_BATCH} events"),
        ));
    }
    let catalog = state.store.list_event_types(caller.org()).await?;
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        events.push(
            validate(
                &state,
                caller.org(),
                &catalog,
                item,
                &format!("events[{i}]."),
            )
            .await?,
        );
    }
    let published = state.publisher.publish(events).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAnswer {
            events: published.into_iter().map(PublishAnswer::from).collect(),
        }),
    ))
}
