//! Publishing events (posthorn's own operation).
//!
//! Policy: every event of a request is validated before any is stored; the event and
//! all of its deliveries are committed in one transaction before the 202 is sent, by
//! the group committer (`crate::publisher`), which does not depend on the request: a
//! client that hangs up mid-request leaves either nothing or a fully queued event.
//! The checks against event types' schemas run last, as one job off the async workers
//! within the request's budget (`POSTHORN_VALIDATION_BUDGET`); a request whose checks
//! do not end within it is answered 422 `validation_budget_exceeded` and nothing of it
//! reaches the publisher. A request whose types have no schema skips that step.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
use crate::domain::schema::CheckError;
use crate::domain::{EventId, EventSchema, OrgId, Timestamp};
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

/// One event as far as it is checked on the async worker; its schema check comes after.
struct Prepared {
    /// Prefix of its field names (`events[3].` in a batch).
    at: String,
    name: String,
    subcategory: Option<String>,
    version: i64,
    data: Value,
    idempotency_key: Option<String>,
    schema: Option<Arc<EventSchema>>,
}

/// Checks every event of a request, answering the error of the first event at fault
/// (and of its first rule broken) as if they were checked one by one in order; the
/// schema checks run last, all at once, off the async workers within the budget.
async fn validate_all(
    state: &AppState,
    org: &OrgId,
    catalog: &[EventTypeRecord],
    items: Vec<PublishBody>,
    at: impl Fn(usize) -> String,
) -> ApiResult<Vec<NewEvent>> {
    let mut prepared = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    let mut failed = None;
    for (i, body) in items.into_iter().enumerate() {
        let p = match prepare(state, org, catalog, body, at(i)).await {
            Ok(p) => p,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        // The rules after the schema's: an event at fault here is still checked
        // against its schema, whose error comes first.
        let event = finish(state, org, &p);
        prepared.push(p);
        match event {
            Ok(event) => events.push(event),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    check_schemas(state, org, prepared).await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(events),
    }
}

/// Checks one event against the catalog, up to its schema.
async fn prepare(
    state: &AppState,
    org: &OrgId,
    catalog: &[EventTypeRecord],
    body: PublishBody,
    at: String,
) -> ApiResult<Prepared> {
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
    Ok(Prepared {
        version: def.version,
        schema: def.schema.clone(),
        at,
        name,
        subcategory,
        data,
        idempotency_key: body.idempotency_key.filter(|k| !k.is_empty()),
    })
}

/// The rules that follow the schema's, and the event as it is stored.
fn finish(state: &AppState, org: &OrgId, p: &Prepared) -> ApiResult<NewEvent> {
    let field = |name: &str| format!("{}{name}", p.at);
    if p.idempotency_key
        .as_ref()
        .is_some_and(|k| k.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(ApiError::invalid(
            &field("idempotencyKey"),
            format_args!("must be at most {MAX_IDEMPOTENCY_KEY} bytes"),
        ));
    }
    let body = envelope(&p.name, p.version, &p.data).map_err(|e| ApiError::Internal(e.into()))?;
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
        event_name: p.name.clone(),
        subcategory: p.subcategory.clone(),
        body: body.into(),
        idempotency_key: p.idempotency_key.clone(),
    })
}

/// Checks the `data` of each event whose type has a schema, in order, as one job off
/// the async workers within the request's budget (see `domain/schema/checks.rs`).
/// Events without a schema cost nothing here.
async fn check_schemas(state: &AppState, org: &OrgId, prepared: Vec<Prepared>) -> ApiResult<()> {
    let checks: Vec<_> = prepared
        .into_iter()
        .filter_map(|p| p.schema.map(|s| (p.at, p.name, s, p.data)))
        .collect();
    if checks.is_empty() {
        return Ok(());
    }
    let budget = state.schema_checks.budget();
    let spent = move |at: &str, name: &str| {
        ApiError::ValidationBudgetExceeded(format!(
            "{at}data could not be checked against the schema of event type {name} within the validation budget ({}, POSTHORN_VALIDATION_BUDGET); nothing was stored",
            humantime::format_duration(budget)
        ))
    };
    // Which event the job is at, for the answer when it is not back in time.
    let at_event = Arc::new(AtomicUsize::new(0));
    let names: Vec<_> = checks
        .iter()
        .map(|(at, name, ..)| (at.clone(), name.clone()))
        .collect();
    let progress = at_event.clone();
    let outcome = state
        .schema_checks
        .run(org, move |deadline| {
            for (i, (at, name, schema, data)) in checks.iter().enumerate() {
                progress.store(i, Ordering::Relaxed);
                if std::time::Instant::now() >= deadline {
                    return Err(spent(at, name));
                }
                match schema.check_within(data, deadline) {
                    Ok(()) => {}
                    Err(CheckError::Mismatch(why)) => {
                        return Err(ApiError::invalid(&format!("{at}data"), why))
                    }
                    Err(CheckError::OutOfTime) => return Err(spent(at, name)),
                }
            }
            Ok(())
        })
        .await;
    match outcome {
        Ok(checked) => checked,
        Err(stopped) => {
            let (at, name) = names
                .get(at_event.load(Ordering::Relaxed))
                .cloned()
                .unwrap_or_default();
            Err(super::catalog::stopped(stopped, || spent(&at, &name)))
        }
    }
}

/// Publish an event
#[utoipa::path(post, path = "/events", tag = "events", request_body = PublishBody,
    responses((status = 202, body = PublishAnswer), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn publish(
    State(state): State<AppState>,
    caller: Authorized<Publishers>,
    JsonBody(body): JsonBody<PublishBody>,
) -> ApiResult<(StatusCode, Json<PublishAnswer>)> {
    let catalog = state.store.list_event_types(caller.org()).await?;
    let events = validate_all(&state, caller.org(), &catalog, vec![body], |_| {
        String::new()
    })
    .await?;
    let mut published = crate::fan_out::publish(&state, caller.org(), events).await?;
    let answer = published
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("publish answered nothing")))?;
    Ok((StatusCode::ACCEPTED, Json(answer.into())))
}

/// Publish many events at once: all are validated before any is accepted.
#[utoipa::path(post, path = "/events/batch", tag = "events", request_body = BatchBody,
    responses((status = 202, body = BatchAnswer), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
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
    let events = validate_all(&state, caller.org(), &catalog, items, |i| {
        format!("events[{i}].")
    })
    .await?;
    let published = crate::fan_out::publish(&state, caller.org(), events).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAnswer {
            events: published.into_iter().map(PublishAnswer::from).collect(),
        }),
    ))
}
