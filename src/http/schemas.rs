//! Event-type schemas (posthorn): change a type's schema, example or display name, and
//! Get Sample Data, the envelope a receiver of the type gets.
//!
//! Policy: a schema that changes (given, replaced or removed) raises the type's
//! version, which events published from then on carry in their envelope; an example
//! or display name alone does not. A type's example must match its schema, so a schema
//! change that its current example does not match is refused unless the same request
//! gives a new example (or removes it). Publishing checks `data` against the schema of
//! the current version (see `http/events.rs`). Compiling a schema and checking an
//! example against one run off the async workers within the validation budget (422
//! `validation_budget_exceeded` past it, and nothing is saved).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::auth::{AdminOnly, AnyRole, Authorized};
use super::catalog::{
    checked_example, compile_schema, display_name, event_type, off_workers, EventDef,
};
use super::input::{JsonBody, PathParam, QueryParams};
use super::ErrorBody;
use crate::app::AppState;
use crate::domain::{EventSchema, Timestamp};
use crate::error::{ApiError, ApiResult};
use crate::store::EventTypeChange;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(update_event_type))
        .routes(routes!(sample_data))
}

/// `Some(value)` for a field that is present, `null` included (absent is `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Update body: an absent field is left as it is; `"schema": null` or
/// `"example": null` removes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateEventTypeBody {
    pub display_name: Option<String>,
    /// A JSON Schema (draft 2020-12) for `data`, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// An example `data`, or `null` to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub example: Option<Value>,
}

/// Change an event type's schema, example or display name (posthorn)
#[utoipa::path(post, path = "/event-types/{event_name}", tag = "event types",
    params(("event_name" = String, Path, description = "Event type name")),
    request_body = UpdateEventTypeBody,
    responses((status = 200, body = EventDef), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn update_event_type(
    State(state): State<AppState>,
    caller: Authorized<AdminOnly>,
    PathParam(event_name): PathParam,
    JsonBody(body): JsonBody<UpdateEventTypeBody>,
) -> ApiResult<Json<EventDef>> {
    let org = caller.org();
    let current = event_type(&state, org, &event_name).await?;
    let given = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
    // A schema to compile, or an example to run against the current schema.
    let runs_schema = given(&body.schema)
        || (body.schema.is_none() && given(&body.example) && current.schema.is_some());
    let (schema, example) = if runs_schema {
        let (kept_schema, kept_example) = (current.schema, current.example);
        off_workers(&state, org, move |deadline, budget| {
            let change = Change {
                schema: body.schema,
                example: body.example,
                kept_schema,
                kept_example,
            };
            change.checked(deadline, budget)
        })
        .await?
    } else {
        let change = Change {
            schema: body.schema,
            example: body.example,
            kept_schema: current.schema,
            kept_example: current.example,
        };
        change.checked(Instant::now(), state.schema_checks.budget())?
    };
    let change = EventTypeChange {
        display_name: display_name(body.display_name)?,
        schema: schema.map(|s| s.map(|s| s.source().clone())),
        example,
    };
    let updated = state
        .store
        .update_event_type(org, &event_name, &change, Timestamp::now())
        .await?;
    Ok(Json(updated.into()))
}

/// A change of a type's schema or example, with what the type has now.
struct Change {
    schema: Option<Value>,
    example: Option<Value>,
    kept_schema: Option<Arc<EventSchema>>,
    kept_example: Option<Value>,
}

/// What a change sets: `None` leaves it, `Some(None)` removes it.
type Changed = (Option<Option<Arc<EventSchema>>>, Option<Option<Value>>);

impl Change {
    /// The schema compiled and the example that must match it checked, by `deadline`.
    fn checked(self, deadline: Instant, budget: Duration) -> ApiResult<Changed> {
        let schema = match self.schema {
            None => None,
            Some(Value::Null) => Some(None),
            Some(given) => Some(Some(compile_schema(given)?)),
        };
        // The schema the example must match once the change is made.
        let next_schema: Option<&EventSchema> = match &schema {
            None => self.kept_schema.as_deref(),
            Some(next) => next.as_deref(),
        };
        let example = match self.example {
            None => {
                if let (Some(kept), Some(s)) = (self.kept_example, &schema) {
                    checked_example(kept, s.as_deref(), deadline, budget).map_err(|e| match e {
                        ApiError::ValidationBudgetExceeded(_) => e,
                        _ => ApiError::invalid(
                            "schema",
                            "does not match the type's current example: give a new example (or \"example\": null) with it",
                        ),
                    })?;
                }
                None
            }
            Some(Value::Null) => Some(None),
            Some(given) => Some(Some(checked_example(given, next_schema, deadline, budget)?)),
        };
        Ok((schema, example))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SampleParams {
    /// A subcategory of the type (for a type that has them).
    pub subcategory: Option<String>,
    /// A version of the type; default its current one.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub version: Option<String>,
}

/// The envelope a receiver gets for an event of the type.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SampleData {
    pub event_name: String,
    pub version: i64,
    #[schema(value_type = Object)]
    pub data: Value,
}

/// The `data` of a sample: the example, else the schema's first `examples` entry that
/// is an object, else `{}`.
fn sample_of(example: Option<Value>, schema: Option<&Value>) -> Value {
    example
        .or_else(|| {
            schema?
                .get("examples")?
                .as_array()?
                .iter()
                .find(|e| e.is_object())
                .cloned()
        })
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// Get Sample Data: the envelope of an event of the type, from its example
#[utoipa::path(get, path = "/event-types/{event_name}/sample", tag = "event types",
    params(("event_name" = String, Path, description = "Event type name"), SampleParams),
    responses((status = 200, body = SampleData), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []), ("basic" = []), ("fullstory" = [])))]
pub async fn sample_data(
    State(state): State<AppState>,
    caller: Authorized<AnyRole>,
    PathParam(event_name): PathParam,
    QueryParams(params): QueryParams<SampleParams>,
) -> ApiResult<Json<SampleData>> {
    let org = caller.org();
    let def = event_type(&state, org, &event_name).await?;
    match params.subcategory.filter(|s| !s.is_empty()) {
        Some(_) if !def.has_subcategories => {
            return Err(ApiError::invalid(
                "subcategory",
                format_args!("must be empty: event type {event_name} has no subcategories"),
            ))
        }
        Some(sub)
            if !state
                .store
                .subcategory_exists(org, &event_name, &sub)
                .await? =>
        {
            return Err(ApiError::NotFound)
        }
        _ => {}
    }
    let version = match params.version.as_deref().map(str::trim) {
        None | Some("") => def.version,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| ApiError::invalid("version", "must be a whole number from 1"))?,
    };
    let found = state
        .store
        .event_type_version(org, &event_name, version)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(SampleData {
        event_name,
        version: found.version,
        data: sample_of(found.example, found.schema.as_ref()),
    }))
}
