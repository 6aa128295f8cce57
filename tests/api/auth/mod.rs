//! Authentication, roles, API keys, tenancy and rate limiting.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{Resp, TestApp};

mod authentication;
mod keys;
mod roles;

fn unauthorized() -> Value {
    json!({"message": "access is unauthorized", "code": "unauthorized"})
}

fn forbidden() -> Value {
    json!({"message": "insufficient permissions", "code": "forbidden"})
}

/// Sends a request with this exact `Authorization` header value (or none).
async fn with_authorization(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
) -> Resp {
    let mut req = app.client.request(method, format!("{}{}", app.base, path));
    if let Some(value) = authorization {
        req = req.header("Authorization", value);
    }
    TestApp::read(req.send().await.expect("request sent")).await
}

#[track_caller]
fn assert_unauthorized(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 401, "{what}: {}", resp.text);
    assert_eq!(resp.body, unauthorized(), "{what}: {}", resp.text);
}

#[track_caller]
fn assert_forbidden(resp: &Resp, what: &str) {
    assert_eq!(resp.status, 403, "{what}: {}", resp.text);
    assert_eq!(resp.body, forbidden(), "{what}: {}", resp.text);
}

/// Number of endpoints on the first page of the admin's list.
async fn endpoint_count(app: &TestApp, key: &str) -> usize {
    let list = app
        .call(Method::GET, "/webhooks/v1/endpoints", Some(key), None)
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    list.body
        .get("endpoints")
        .map_or(0, |e| e.as_array().expect("endpoints is an array").len())
}

/// The org's keys, as listed by `key`.
async fn list_keys(app: &TestApp, key: &str) -> Vec<Value> {
    let resp = app
        .call(Method::GET, "/webhooks/v1/keys", Some(key), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
        .get("keys")
        .map(|k| k.as_array().expect("keys is an array").clone())
        .unwrap_or_default()
}

/// Creates a key through the API and returns the whole answer.
async fn create_key_full(app: &TestApp, body: Value) -> Value {
    let resp = app.post("/webhooks/v1/keys", &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
}

#[track_caller]
fn assert_timestamp(value: &Value, what: &str) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    // RFC 3339, UTC, millisecond precision: 2020-04-01T21:53:58.200Z
    let b = s.as_bytes();
    assert!(
        s.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[23] == b'Z'
            && s[20..23].bytes().all(|c| c.is_ascii_digit()),
        "{what} is not an RFC 3339 UTC millisecond timestamp: {s}"
    );
}
