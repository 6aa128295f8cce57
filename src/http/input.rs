//! Request input: JSON bodies and query strings in the contract's conventions.
//!
//! Policy: every field and query parameter is accepted in lowerCamelCase and in
//! snake_case; both forms of one field in one request is a 400. Unknown fields are
//! ignored. Opaque user payloads (`data`) are passed through untouched: numbers keep
//! their digits (serde_json's arbitrary precision), so a 30-digit integer is delivered
//! as published, never rounded to a float. An object that names one key twice, anywhere
//! in a body, is a 400 naming where (a parser would otherwise keep the last one
//! silently, and receivers disagree on which one counts). A body that is empty counts
//! as `{}`. Every failure is a 4xx in the `{message, code}` form.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeOwned, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::conn::BodyTimeout;
use crate::error::ApiError;

/// Object keys whose values are user data, never renamed.
const OPAQUE: &[&str] = &["data", "headers", "schema", "example"];

/// `event_types` → `eventTypes`; a name without underscores is returned as it is.
pub fn to_camel(key: &str) -> String {
    if !key.contains('_') {
        return key.to_owned();
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for (i, c) in key.chars().enumerate() {
        if c == '_' && i > 0 {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Renames every key of `value` to lowerCamelCase, refusing a field given twice.
pub fn normalize(value: Value) -> Result<Value, ApiError> {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            let mut original: Vec<(String, String)> = Vec::new();
            for (key, v) in map {
                let camel = to_camel(&key);
                if let Some((_, first)) = original.iter().find(|(c, _)| *c == camel) {
                    return Err(ApiError::InvalidField(format!(
                        "{camel} is given twice (as {first} and as {key}); give one"
                    )));
                }
                let v = if OPAQUE.contains(&camel.as_str()) {
                    v
                } else {
                    normalize(v)?
                };
                original.push((camel.clone(), key));
                out.insert(camel, v);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .into_iter()
            .map(normalize)
            .collect::<Result<_, _>>()
            .map(Value::Array),
        // No store keeps a NUL inside text (PostgreSQL refuses it), so no field may
        // hold one; user `data` is stored as JSON, where it is escaped.
        Value::String(text) if text.contains('\0') => Err(ApiError::InvalidField(
            "text fields must not contain NUL characters".into(),
        )),
        other => Ok(other),
    }
}

/// Deserializes a normalized value, naming the field that did not fit.
fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path.is_empty() || path == "." {
            ApiError::InvalidField(inner)
        } else {
            ApiError::InvalidField(format!("{path}: {inner}"))
        }
    })
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// How long a body may take where no [`BodyTimeout`] was set (routers built without
/// the server's configuration).
const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A JSON request body, normalized and deserialized into `T`. Its bytes must arrive
/// within the [`BodyTimeout`] (`408` otherwise).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            if !ct.to_str().is_ok_and(is_json) {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        let timeout = req
            .extensions()
            .get::<BodyTimeout>()
            .map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::RequestTimeout)?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::InvalidJson("could not read the request body".into())
                }
            })?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            let value = serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                ApiError::InvalidJson(format!("request body is not valid JSON: {e}"))
            })?;
            unique_keys(&bytes)?;
            value
        };
        if !value.is_object() {
            return Err(ApiError::InvalidJson(
                "request body must be a JSON object".into(),
            ));
        }
        from_value(normalize(value)?).map(JsonBody)
    }
}

/// Refuses JSON text in which an object names one key twice (`bytes` is known to be
/// valid JSON); the error names the object's place.
pub fn unique_keys(bytes: &[u8]) -> Result<(), ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, UniqueKeys>(&mut de)
        .map(|_| ())
        .map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                ApiError::InvalidJson(inner)
            } else {
                ApiError::InvalidJson(format!("{path}: {inner}"))
            }
        })
}

/// A JSON value whose objects were checked for repeated keys, and otherwise ignored.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeys)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }
    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(self)
    }

    // (With arbitrary precision a number also arrives here, as a one-key map.)
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(A::Error::custom(format!(
                    "key {key:?} is given twice in one object; give it once"
                )));
            }
            map.next_value::<UniqueKeys>()?;
            seen.insert(key);
        }
        Ok(self)
    }
}

/// A path parameter. One that is not valid UTF-8 or holds a NUL names nothing: 404 in
/// the contract's form (axum's own rejection would be plain text).
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::NotFound)?;
        if value.contains('\0') {
            return Err(ApiError::NotFound);
        }
        Ok(Self(value))
    }
}

/// Query parameters, normalized like body fields and deserialized into `T` (whose
/// fields should be strings: numbers are parsed by the handler, which can name them).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut map = Map::new();
        let mut original: Vec<(String, String)> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        {
            let camel = to_camel(&key);
            if let Some((_, first)) = original.iter().find(|(c, _)| *c == camel) {
                return Err(ApiError::InvalidField(format!(
                    "query parameter {camel} is given twice (as {first} and as {key}); give one"
                )));
            }
            if value.contains('\0') {
                return Err(ApiError::InvalidField(format!(
                    "query parameter {camel} must not contain NUL characters"
                )));
            }
            original.push((camel.clone(), key.into_owned()));
            map.insert(camel, Value::String(value.into_owned()));
        }
        from_value(Value::Object(map)).map(QueryParams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn camel_cases_snake_keys() {
        assert_eq!(to_camel("event_types"), "eventTypes");
        assert_eq!(to_camel("pagination_token"), "paginationToken");
        assert_eq!(to_camel("eventTypes"), "eventTypes");
    }

    #[test]
    fn normalizes_nested_but_not_data() {
        let v = normalize(json!({"event_types": [{"event_name": "a"}], "data": {"a_b": 1}}))
            .expect("ok");
        assert_eq!(
            v,
            json!({"eventTypes": [{"eventName": "a"}], "data": {"a_b": 1}})
        );
    }

    #[test]
    fn refuses_a_key_given_twice_and_names_where() {
        assert!(unique_keys(br#"{"a": 1, "data": {"b": [1, {"c": 2}], "d": 3}}"#).is_ok());
        assert!(unique_keys(br#"{"n": 123456789012345678901234567890}"#).is_ok());
        let e = unique_keys(br#"{"data": {"x": {"a": 1, "a": 2}}}"#).expect_err("twice");
        let text = e.to_string();
        assert!(text.contains("data.x") && text.contains("\"a\""), "{text}");
        assert!(unique_keys(br#"{"a": 1, "a": 1}"#).is_err());
        assert!(unique_keys(br#"[{"a": [{"b": 1, "b": 1}]}]"#).is_err());
    }

    #[test]
    fn big_numbers_keep_their_digits() {
        let v: Value = serde_json::from_str(r#"{"n": 123456789012345678901234567890, "f": 1.50}"#)
            .expect("json");
        let v = normalize(v).expect("ok");
        assert_eq!(
            serde_json::to_string(&v).expect("text"),
            r#"{"n":123456789012345678901234567890,"f":1.50}"#
        );
    }

    #[test]
    fn refuses_both_forms() {
        assert!(normalize(json!({"eventTypes": [], "event_types": []})).is_err());
        assert!(normalize(json!({"e": [{"eventName": "a", "event_name": "b"}]})).is_err());
    }

    proptest::proptest! {
        /// Any JSON object: normalised or refused with a 4xx, never a panic; keys in
        /// camelCase stay as they are.
        #[test]
        fn normalize_never_panics(keys in proptest::collection::vec("[a-zA-Z_]{1,12}", 0..8)) {
            let object: Map<String, Value> =
                keys.iter().map(|k| (k.clone(), Value::from(1))).collect();
            match normalize(Value::Object(object)) {
                Ok(Value::Object(out)) => {
                    for k in out.keys() {
                        proptest::prop_assert_eq!(&to_camel(k), k);
                    }
                }
                Ok(other) => proptest::prop_assert!(false, "not an object: {other}"),
                Err(e) => proptest::prop_assert!(e.status().is_client_error()),
            }
        }
    }
}
