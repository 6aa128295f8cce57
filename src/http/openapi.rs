//! The OpenAPI document: what each handler's `#[utoipa::path]` says, completed here with
//! what holds for every operation alike, so that the document lists every status an
//! operation can answer.
//!
//! Policy: an operation's own annotation names its successes and the errors only it
//! can give (403 of a role check, 404 of a lookup, 409); [`complete`] adds the errors
//! every operation of its kind can give: any request can be malformed (400), too long
//! (414, 431), refused for want of connections (503) or fail (500); an authenticated one
//! can be unauthorized (401) or over its rate limit (429); one with a body can be late
//! (408), too large (413) or not JSON (415). Each error's schema is the `{message,
//! code}` body with the codes that status carries, and 429 and 503 tell `Retry-After`.
//! Answer objects are closed (`additionalProperties: false`); request bodies are not,
//! since they also take every field in snake_case.

use serde_json::{json, Map, Value};
use utoipa::openapi::security::SecurityScheme;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "posthorn",
        description = "Self-hosted webhook sender. The management API under /webhooks/v1 is wire-compatible with Fullstory's Webhooks API v1. Every input field is also accepted in snake_case. Authenticate with `Authorization: Bearer <api-key>`, standard Basic with the key as the user and no password, or Fullstory's `Authorization: Basic <api-key>` (the raw key)."
    ),
    modifiers(&SecurityAddon),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer <api-key>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "Standard Basic: the API key as the user name, no password (`curl -u KEY:`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "fullstory",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "Fullstory's form: `Basic <api-key>`, the raw key after `Basic `",
            ))),
        );
    }
}

/// Each error status posthorn answers: what it means and the `code`s it carries.
const ERRORS: &[(u16, &str, &[&str])] = &[
    (400, "The request is malformed, or a parameter or field is missing or not acceptable (the message names it); nothing was changed.",
        &["required_field", "invalid_field", "invalid_json", "malformed_request"]),
    (401, "No API key, or an unknown or revoked one.", &["unauthorized"]),
    (403, "The key's role may not do this.", &["forbidden"]),
    (404, "Nothing of that id in the key's org.", &["resource_not_found"]),
    (408, "The request body did not arrive in time.", &["request_timeout"]),
    (409, "It already exists.", &["already_exists"]),
    (413, "The body, or one event in it, is larger than the configured limit.", &["payload_too_large"]),
    (414, "The request target is too long.", &["uri_too_long"]),
    (415, "The body is not declared as `application/json`.", &["unsupported_media_type"]),
    (422, "Checking `data` (or an example) against the event type's schema took the whole validation budget (`POSTHORN_VALIDATION_BUDGET`), or a bound per org or per request would be passed (`POSTHORN_MAX_ENDPOINTS_PER_ORG`, `POSTHORN_MAX_DELIVERIES_PER_REQUEST`); nothing was stored.", &["validation_budget_exceeded", "limit_exceeded"]),
    (429, "Too many requests with this key, or too many failed authentications from this address; try again after `Retry-After`.", &["too_many_requests"]),
    (431, "The request line and headers are too large.", &["headers_too_large"]),
    (500, "Something went wrong on the server; nothing was acknowledged.", &["server_error"]),
    (503, "The store cannot be reached, or the server serves as many connections as it may; try again after `Retry-After`.", &["unavailable"]),
];

/// Operations any valid key may call: they never answer 403.
const ANY_ROLE: &[&str] = &["list_event_types", "list_subcategories", "sample_data"];

/// The finished document.
pub fn document(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    complete(&mut doc);
    doc
}

fn complete(doc: &mut Value) {
    let (mut closed, mut inputs) = (Vec::new(), Vec::new());
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                add_errors(path, operation);
                collect_refs(operation.get("responses"), &mut closed);
                collect_refs(operation.get("requestBody"), &mut inputs);
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    let mut i = 0;
    while i < inputs.len() {
        let more = {
            let mut more = Vec::new();
            collect_refs(schemas.get(&inputs[i]), &mut more);
            more
        };
        for name in more {
            if !inputs.contains(&name) {
                inputs.push(name);
            }
        }
        i += 1;
    }
    for (status, _, codes) in ERRORS {
        schemas[error_schema(*status)] = json!({
            "type": "object",
            "required": ["message", "code"],
            "additionalProperties": false,
            "properties": {
                "message": {"type": "string", "description": "What went wrong, for people; names the field at fault."},
                "code": {"type": "string", "enum": codes, "description": "Short snake_case value, safe to switch on."}
            }
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = closed.pop() {
        if inputs.contains(&name) || !seen.insert(name.clone()) {
            continue;
        }
        let merged = merge_all_of(schemas, &name);
        let Some(schema) = schemas.get_mut(&name) else {
            continue;
        };
        if let Some(merged) = merged {
            *schema = merged;
        }
        collect_refs(Some(schema), &mut closed);
        close(schema);
    }
}

fn error_schema(status: u16) -> String {
    format!("Error{status}")
}

/// Adds the errors `operation` can answer that its annotation does not list, and gives
/// every error its status's schema.
fn add_errors(path: &str, operation: &mut Map<String, Value>) {
    let secured = operation.contains_key("security");
    let has_body = operation.contains_key("requestBody");
    let id = operation
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let any_role = ANY_ROLE.contains(&id);
    let responses = operation
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else { return };
    for (status, description, _) in ERRORS {
        let applies = match status {
            400 | 414 | 431 | 500 | 503 => true,
            401 | 429 => secured,
            403 => secured && !any_role,
            404 => path.contains('{'),
            408 | 413 | 415 => has_body,
            _ => false,
        };
        let key = status.to_string();
        if !applies && !responses.contains_key(&key) {
            continue;
        }
        let mut response = json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", error_schema(*status))}}}
        });
        if matches!(status, 429 | 503) {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 1}
            }});
        }
        if let Some(own) = responses.get(&key).and_then(|r| r["description"].as_str()) {
            if !own.is_empty() {
                response["description"] = Value::from(own);
            }
        }
        responses.insert(key, response);
    }
}

/// The names of the component schemas `value` refers to.
fn collect_refs(value: Option<&Value>, out: &mut Vec<String>) {
    match value {
        Some(Value::Object(map)) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                out.push(name.to_owned());
            }
            map.values().for_each(|v| collect_refs(Some(v), out));
        }
        Some(Value::Array(items)) => items.iter().for_each(|v| collect_refs(Some(v), out)),
        _ => {}
    }
}

/// The one object an `allOf` of objects (serde's `flatten`) stands for, so that it can
/// be closed: a closed part of an `allOf` would refuse the other parts' fields.
fn merge_all_of(schemas: &Value, name: &str) -> Option<Value> {
    let parts = schemas.get(name)?.get("allOf")?.as_array()?;
    let mut merged = json!({"type": "object", "properties": {}, "required": []});
    if let Some(description) = schemas[name].get("description") {
        merged["description"] = description.clone();
    }
    for part in parts {
        let part = match part.get("$ref").and_then(Value::as_str) {
            Some(r) => schemas.get(r.strip_prefix("#/components/schemas/")?)?,
            None => part,
        };
        if part.get("type").and_then(Value::as_str) != Some("object") {
            return None;
        }
        for (field, schema) in part.get("properties")?.as_object()? {
            merged["properties"][field] = schema.clone();
        }
        if let (Some(required), Some(all)) = (
            part.get("required").and_then(Value::as_array),
            merged["required"].as_array_mut(),
        ) {
            all.extend(required.iter().cloned());
        }
    }
    Some(merged)
}

/// An answer object lists every field it can carry: no others.
fn close(schema: &mut Value) {
    let is_object = schema.get("type").and_then(Value::as_str) == Some("object");
    if is_object
        && schema.get("properties").is_some()
        && schema.get("additionalProperties").is_none()
    {
        schema["additionalProperties"] = Value::Bool(false);
    }
}
