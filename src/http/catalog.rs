//! The event catalog: Fullstory's List Event Types and List Event Subcategories, and
//! posthorn's admin operations to add types and mint subcategories.
//!
//! A type's schema is compiled, and its example checked against it, off the async
//! workers within the validation budget (`domain/schema/checks.rs`): 422
//! `validation_budget_exceeded` past it, and nothing is saved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, AnyRole, Authorized};
use super::input::{JsonBody, PathParam, QueryParams};
use super::pagination::{self, PageParams};
use super::ErrorBody;
use crate::app::AppState;
use crate::domain::event_type::TEST_EVENT;
use crate::domain::notice::is_operational;
use crate::domain::schema::checks::Stopped;
use crate::domain::schema::CheckError;
use crate::domain::{EventName, EventSchema, EventTypeRef, OrgId, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::{EventTypeRecord, SubcategoryRecord};

pub const MAX_SUBCATEGORY_PAGE: u32 = 1000;
const MAX_DISPLAY_NAME: usize = 256;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_event_types, create_event_type))
        .routes(routes!(list_subcategories, create_subcategory))
}

/// One subscription as a client sends it (`eventName` or `event_name`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeInput {
    /// An event type of the org's catalog, or one of posthorn's operational events
    /// (`endpoint.created`, `endpoint.updated`, `endpoint.deleted`, `endpoint.enabled`,
    /// `endpoint.disabled`, `endpoint.recovered`, `delivery.failed`), which are not in
    /// the catalog and take no subcategory.
    pub event_name: Option<String>,
    pub subcategory: Option<String>,
}

/// Checks subscriptions against the org's catalog: the name must be in it, a type with
/// subcategories needs one of its own, a type without rejects one. Repeats are dropped.
pub async fn validate_subscriptions(
    state: &AppState,
    org: &OrgId,
    inputs: Vec<EventTypeInput>,
) -> ApiResult<Vec<EventTypeRef>> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let catalog = state.store.list_event_types(org).await?;
    let mut out: Vec<EventTypeRef> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let field = format!("eventTypes[{i}]");
        let name = input
            .event_name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::RequiredField(format!("{field}.eventName")))?;
        if name == TEST_EVENT {
            return Err(ApiError::invalid(
                &format!("{field}.eventName"),
                "test is not subscribable; it is sent by the test operation",
            ));
        }
        let subcategory = input.subcategory.filter(|s| !s.is_empty());
        let has_subcategories = if is_operational(&name) {
            false
        } else if let Some(def) = catalog.iter().find(|t| t.name == name) {
            def.has_subcategories
        } else {
            return Err(ApiError::invalid(
                &format!("{field}.eventName"),
                format_args!("{name:?} is not an event type of this org"),
            ));
        };
        match (&subcategory, has_subcategories) {
            (None, true) => {
                return Err(ApiError::RequiredField(format!(
                    "{field}.subcategory (event type {name} has subcategories)"
                )))
            }
            (Some(_), false) => {
                return Err(ApiError::invalid(
                    &format!("{field}.subcategory"),
                    format_args!("must be empty: event type {name} has no subcategories"),
                ))
            }
            (Some(sub), true) if !state.store.subcategory_exists(org, &name, sub).await? => {
                return Err(ApiError::invalid(
                    &format!("{field}.subcategory"),
                    format_args!(
                        "is not a subcategory of {name}; use a value from List Event Subcategories"
                    ),
                ));
            }
            _ => {}
        }
        let r = EventTypeRef {
            event_name: name,
            subcategory,
        };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDef {
    pub event_name: String,
    pub display_name: String,
    pub has_subcategories: bool,
    /// The version events of this type are published under; left out while it is 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// The JSON Schema (draft 2020-12) every published `data` must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// An example `data`, shown by Get Sample Data.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub example: Option<Value>,
}

impl From<EventTypeRecord> for EventDef {
    fn from(r: EventTypeRecord) -> Self {
        Self {
            event_name: r.name,
            display_name: r.display_name,
            has_subcategories: r.has_subcategories,
            version: (r.version != 1).then_some(r.version),
            schema: r.schema.map(|s| s.source().clone()),
            example: r.example,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDefList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub event_defs: Vec<EventDef>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubcategoryDef {
    pub subcategory: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl From<SubcategoryRecord> for SubcategoryDef {
    fn from(r: SubcategoryRecord) -> Self {
        Self {
            subcategory: r.token,
            display_name: r.display_name,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubcategoryDefList {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subcategory_defs: Vec<SubcategoryDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_pagination_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventTypeBody {
    #[schema(required = true, value_type = String, min_length = 1)]
    pub event_name: Option<String>,
    pub display_name: Option<String>,
    pub has_subcategories: Option<bool>,
    /// A JSON Schema (draft 2020-12) for `data`; publishing checks it.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// An example `data` (must match `schema`).
    #[schema(value_type = Option<Object>)]
    pub example: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSubcategoryBody {
    pub display_name: Option<String>,
}

pub(super) fn display_name(raw: Option<String>) -> ApiResult<Option<String>> {
    match raw.filter(|s| !s.trim().is_empty()) {
        Some(s) if s.chars().count() > MAX_DISPLAY_NAME => Err(ApiError::invalid(
            "displayName",
            format_args!("must be at most {MAX_DISPLAY_NAME} characters"),
        )),
        other => Ok(other),
    }
}

/// List Event Types
#[utoipa::path(get, path = "/event-types", tag = "event types",
    responses((status = 200, body = EventDefList)), security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn list_event_types(
    State(state): State<AppState>,
    caller: Authorized<AnyRole>,
) -> ApiResult<Json<EventDefList>> {
    let types = state.store.list_event_types(caller.org()).await?;
    Ok(Json(EventDefList {
        event_defs: types.iter().cloned().map(EventDef::from).collect(),
    }))
}

/// Add an event type to the org's catalog (posthorn).
#[utoipa::path(post, path = "/event-types", tag = "event types",
    request_body = CreateEventTypeBody,
    responses((status = 200, body = EventDef), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn create_event_type(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    JsonBody(body): JsonBody<CreateEventTypeBody>,
) -> ApiResult<Json<EventDef>> {
    let raw = body
        .event_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::RequiredField("eventName".into()))?;
    let name = EventName::parse(&raw).map_err(|e| ApiError::invalid("eventName", e))?;
    if name.as_str() == TEST_EVENT {
        return Err(ApiError::invalid(
            "eventName",
            "test is reserved for the test operation",
        ));
    }
    if is_operational(name.as_str()) {
        return Err(ApiError::invalid(
            "eventName",
            format_args!(
                "{name} is reserved for posthorn's operational events",
                name = name.as_str()
            ),
        ));
    }
    let (schema, example) = match (body.schema, body.example) {
        (None, example) => (None, example.map(no_schema_example).transpose()?),
        (Some(schema), example) => {
            off_workers(&state, caller.org(), move |deadline, budget| {
                let schema = compile_schema(schema)?;
                let example = example
                    .map(|e| checked_example(e, Some(&schema), deadline, budget))
                    .transpose()?;
                Ok((Some(schema), example))
            })
            .await?
        }
    };
    let mut record = EventTypeRecord::new(
        name.as_str().to_owned(),
        display_name(body.display_name)?.unwrap_or_else(|| name.as_str().to_owned()),
        body.has_subcategories.unwrap_or(false),
    );
    record.schema = schema;
    record.example = example;
    state
        .store
        .create_event_type(caller.org(), &record, Timestamp::now())
        .await?;
    Ok(Json(record.into()))
}

pub(super) fn compile_schema(source: Value) -> ApiResult<Arc<EventSchema>> {
    EventSchema::compile(source)
        .map(Arc::new)
        .map_err(|e| ApiError::invalid("schema", e))
}

/// An example `data`: an object, matching `schema` when there is one, checked by
/// `deadline` (run it off the async workers: [`off_workers`]).
pub(super) fn checked_example(
    example: Value,
    schema: Option<&EventSchema>,
    deadline: Instant,
    budget: Duration,
) -> ApiResult<Value> {
    if !example.is_object() {
        return Err(ApiError::invalid(
            "example",
            "must be a JSON object (an event's data)",
        ));
    }
    if let Some(schema) = schema {
        match schema.check_within(&example, deadline) {
            Ok(()) => {}
            Err(CheckError::Mismatch(why)) => return Err(ApiError::invalid("example", why)),
            Err(CheckError::OutOfTime) => return Err(example_spent(budget)),
        }
    }
    Ok(example)
}

fn example_spent(budget: Duration) -> ApiError {
    ApiError::ValidationBudgetExceeded(format!(
        "example could not be checked against the schema within the validation budget ({}, POSTHORN_VALIDATION_BUDGET); nothing was saved",
        humantime::format_duration(budget)
    ))
}

/// Runs `job` (compiling a schema, checking an example against it) for `org` off the
/// async workers, within the validation budget (`domain/schema/checks.rs`); `job`
/// gets its deadline and the budget.
pub(super) async fn off_workers<T: Send + 'static>(
    state: &AppState,
    org: &OrgId,
    job: impl FnOnce(Instant, Duration) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let budget = state.schema_checks.budget();
    state
        .schema_checks
        .run(org, move |deadline| job(deadline, budget))
        .await
        .unwrap_or_else(|e| Err(stopped(e, || example_spent(budget))))
}

/// The answer to a schema check that did not give its own: `spent` when it ran out
/// of time.
pub(super) fn stopped(why: Stopped, spent: impl FnOnce() -> ApiError) -> ApiError {
    match why {
        Stopped::OutOfTime => spent(),
        // The org's own checks hold its share: it sends more than it may at once.
        Stopped::OrgBusy => ApiError::TooManyRequests {
            retry_after_secs: 1,
        },
        Stopped::Busy => ApiError::Unavailable(anyhow::anyhow!(
            "schema checks had no room within the validation budget (POSTHORN_VALIDATION_THREADS)"
        )),
        Stopped::Panicked => ApiError::Internal(anyhow::anyhow!("a schema check panicked")),
    }
}

/// An example for a type without a schema: an object (checked on the async worker,
/// since nothing is run against it).
pub(super) fn no_schema_example(example: Value) -> ApiResult<Value> {
    checked_example(example, None, Instant::now(), Duration::ZERO)
}

/// The event type `name` of `org`, or 404.
pub(super) async fn event_type(
    state: &AppState,
    org: &OrgId,
    name: &str,
) -> ApiResult<EventTypeRecord> {
    state
        .store
        .get_event_type(org, name)
        .await?
        .ok_or(ApiError::NotFound)
}

/// List Event Subcategories
#[utoipa::path(get, path = "/event-types/{event_name}/subcategories", tag = "event types",
    params(("event_name" = String, Path, description = "Event type name"), PageParams),
    responses((status = 200, body = SubcategoryDefList), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn list_subcategories(
    State(state): State<AppState>,
    caller: Authorized<AnyRole>,
    PathParam(event_name): PathParam,
    QueryParams(params): QueryParams<PageParams>,
) -> ApiResult<Json<SubcategoryDefList>> {
    let ids = state.store.public_ids();
    let (after, limit) = params.resolve(ids, "s", MAX_SUBCATEGORY_PAGE)?;
    event_type(&state, caller.org(), &event_name).await?;
    let page = state
        .store
        .list_subcategories(caller.org(), &event_name, after, limit)
        .await?;
    Ok(Json(SubcategoryDefList {
        subcategory_defs: page.items.into_iter().map(SubcategoryDef::from).collect(),
        next_pagination_token: page.next_after.map(|seq| pagination::encode(ids, "s", seq)),
    }))
}

/// Mint a subcategory of an event type (posthorn). The value is opaque.
#[utoipa::path(post, path = "/event-types/{event_name}/subcategories", tag = "event types",
    params(("event_name" = String, Path, description = "Event type name")),
    request_body = CreateSubcategoryBody,
    responses((status = 200, body = SubcategoryDef), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn create_subcategory(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(event_name): PathParam,
    JsonBody(body): JsonBody<CreateSubcategoryBody>,
) -> ApiResult<Json<SubcategoryDef>> {
    let display = display_name(body.display_name)?;
    let def = event_type(&state, caller.org(), &event_name).await?;
    if !def.has_subcategories {
        return Err(ApiError::invalid(
            "eventName",
            format_args!("{event_name} has no subcategories"),
        ));
    }
    let mut bytes = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let record = state
        .store
        .create_subcategory(
            caller.org(),
            &event_name,
            &token,
            display.as_deref(),
            Timestamp::now(),
        )
        .await?;
    Ok(Json(record.into()))
}
