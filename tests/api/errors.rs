//! The error statuses, each with the exact `{message, code}` body, and
//! the promise that a refused request changes nothing.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Resp, TestApp, ADMIN_KEY};

const ENDPOINTS: &str = "/webhooks/v1/endpoints";
/// base64url of `https://example.com/a`.
const SOME_ID: &str = "aHR0cHM6Ly9leGFtcGxlLmNvbS9h";

/// Sends `body` as raw bytes with this Content-Type (or none), as the admin unless
/// `key` is `None`.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Resp {
    let mut req = app
        .client
        .request(method, format!("{}{}", app.base, path))
        .body(body);
    if let Some(key) = key {
        req = req.header("Authorization", format!("Basic {key}"));
    }
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    TestApp::read(req.send().await.expect("request sent")).await
}

/// The contract's error form, and a JSON Content-Type.
#[track_caller]
fn assert_error(resp: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", resp.text);
    resp.assert_error(status, code);
    let ct = resp
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        ct.starts_with("application/json"),
        "{what}: error Content-Type is {ct:?}"
    );
}

#[track_caller]
fn assert_message_names(resp: &Resp, field: &str) {
    let message = resp.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field),
        "message should name {field}: {}",
        resp.text
    );
}

/// The admin's endpoints (first page).
async fn endpoints(app: &TestApp) -> Vec<Value> {
    let list = app.get(ENDPOINTS).await;
    assert_eq!(list.status, 200, "{}", list.text);
    list.body
        .get("endpoints")
        .map(|e| e.as_array().expect("array").clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn unknown_route_is_404_resource_not_found() {
    let app = spawn_app().await;
    for path in [
        "/",
        "/webhooks/v1",
        "/webhooks/v1/nope",
        "/webhooks/v2/endpoints",
        "/webhooks/v1/endpoints/a/b",
        "/webhooks/v1/event-types/metric.alert/subcategories/x",
    ] {
        for key in [Some(ADMIN_KEY), None] {
            let resp = app.call(Method::GET, path, key, None).await;
            assert_error(&resp, 404, "resource_not_found", path);
        }
    }
    let resp = app
        .post(
            "/webhooks/v1/nope",
            &json!({"url": "https://example.com/x"}),
        )
        .await;
    assert_error(&resp, 404, "resource_not_found", "POST to an unknown route");
}

#[tokio::test]
async fn wrong_method_is_405_method_not_allowed() {
    let app = spawn_app().await;
    let ep = app
        .post(ENDPOINTS, &json!({"url": "https://example.com/a"}))
        .await;
    assert_eq!(ep.status, 200, "{}", ep.text);
    let cases = [
        (Method::PUT, ENDPOINTS.to_owned()),
        (Method::PATCH, ENDPOINTS.to_owned()),
        (Method::DELETE, ENDPOINTS.to_owned()),
        (Method::PATCH, format!("{ENDPOINTS}/{SOME_ID}")),
        // Update is POST, as in Fullstory; PUT is not an alias.
        (Method::PUT, format!("{ENDPOINTS}/{SOME_ID}")),
        (Method::DELETE, "/webhooks/v1/event-types".to_owned()),
        (Method::PUT, "/webhooks/v1/event-types".to_owned()),
        (
            Method::DELETE,
            "/webhooks/v1/event-types/metric.alert/subcategories".to_owned(),
        ),
        (Method::PUT, "/webhooks/v1/keys".to_owned()),
        (Method::GET, "/webhooks/v1/keys/k_x".to_owned()),
        (Method::POST, "/healthz".to_owned()),
    ];
    for (method, path) in cases {
        for key in [Some(ADMIN_KEY), None] {
            let what = format!("{method} {path} (key: {})", key.is_some());
            let body = (method != Method::GET).then(|| json!({"disabled": true}));
            let resp = app.call(method.clone(), &path, key, body.as_ref()).await;
            assert_error(&resp, 405, "method_not_allowed", &what);
        }
    }
    // The endpoint the PUT/PATCH aimed at is unchanged.
    let got = app.get(&format!("{ENDPOINTS}/{SOME_ID}")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["enabled"], true);
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json_and_changes_nothing() {
    let app = spawn_app().await;
    let cases = [
        (ENDPOINTS.to_owned(), r#"{"url": "https://example.com/x","#),
        (
            ENDPOINTS.to_owned(),
            r#"{"url": "https://example.com/x"} trailing"#,
        ),
        (ENDPOINTS.to_owned(), "not json"),
        (ENDPOINTS.to_owned(), r#"["https://example.com/x"]"#),
        (ENDPOINTS.to_owned(), r#""https://example.com/x""#),
        (format!("{ENDPOINTS}/{SOME_ID}"), r#"{"disabled": tru"#),
        ("/webhooks/v1/keys".to_owned(), r#"{"role": "admin""#),
        ("/webhooks/v1/event-types".to_owned(), r#"{"eventName": }"#),
        (
            "/webhooks/v1/event-types/metric.alert/subcategories".to_owned(),
            "{,}",
        ),
    ];
    let keys_before = app.get("/webhooks/v1/keys").await.body;
    for (path, body) in cases {
        let resp = raw(
            &app,
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some("application/json"),
            body,
        )
        .await;
        assert_error(&resp, 400, "invalid_json", &format!("{path} {body}"));
    }
    assert!(endpoints(&app).await.is_empty());
    assert_eq!(app.get("/webhooks/v1/keys").await.body, keys_before);
    assert_eq!(
        app.get("/webhooks/v1/event-types/metric.alert/subcategories")
            .await
            .body,
        json!({})
    );
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_400_naming_the_field() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"url": 42}), "url"),
        (
            json!({"url": "https://example.com/x", "eventTypes": "note.created"}),
            "eventTypes",
        ),
        (
            json!({"url": "https://example.com/x", "secret": ["a"]}),
            "secret",
        ),
    ] {
        let resp = app.post(ENDPOINTS, &body).await;
        assert_error(&resp, 400, "invalid_field", &body.to_string());
        assert_message_names(&resp, field);
    }
    let resp = app.post(ENDPOINTS, &json!({})).await;
    assert_error(&resp, 400, "required_field", "create without url");
    assert_message_names(&resp, "url");
    assert!(endpoints(&app).await.is_empty());
}

#[tokio::test]
async fn a_field_given_in_both_cases_is_400() {
    let app = spawn_app().await;
    let resp = app
        .post(
            ENDPOINTS,
            &json!({
                "url": "https://example.com/x",
                "eventTypes": [{"eventName": "note.created"}],
                "event_types": [{"eventName": "segment.created"}],
            }),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    resp.assert_error(400, resp.body["code"].as_str().unwrap_or("?"));
    assert!(endpoints(&app).await.is_empty());

    let resp = app
        .get("/webhooks/v1/event-types/metric.alert/subcategories?paginationToken=a&pagination_token=b")
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    resp.assert_error(400, resp.body["code"].as_str().unwrap_or("?"));
}

#[tokio::test]
async fn bad_pagination_parameters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("paginationToken=not-a-token", "paginationToken"),
    ] {
        for path in [
            ENDPOINTS,
            "/webhooks/v1/event-types/metric.alert/subcategories",
        ] {
            let resp = app.get(&format!("{path}?{query}")).await;
            assert_error(&resp, 400, "invalid_field", &format!("{path}?{query}"));
            assert_message_names(&resp, field);
        }
    }
}

#[tokio::test]
async fn a_non_json_content_type_is_415_and_changes_nothing() {
    let app = spawn_app().await;
    let body = r#"{"url": "https://example.com/plain"}"#;
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = raw(
            &app,
            Method::POST,
            ENDPOINTS,
            Some(ADMIN_KEY),
            Some(ct),
            body,
        )
        .await;
        assert_error(&resp, 415, "unsupported_media_type", ct);
    }
    assert!(endpoints(&app).await.is_empty());
    // JSON with parameters is JSON.
    let resp = raw(
        &app,
        Method::POST,
        ENDPOINTS,
        Some(ADMIN_KEY),
        Some("application/json; charset=utf-8"),
        body,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_changes_nothing() {
    let app = spawn_app_with(|c| c.max_body_bytes = 1024).await;
    let big = json!({"url": "https://example.com/big", "padding": "x".repeat(4096)}).to_string();
    assert!(big.len() > 4096);
    for path in [ENDPOINTS, "/webhooks/v1/keys", "/webhooks/v1/event-types"] {
        let resp = raw(
            &app,
            Method::POST,
            path,
            Some(ADMIN_KEY),
            Some("application/json"),
            big.clone(),
        )
        .await;
        assert_error(&resp, 413, "payload_too_large", path);
    }
    assert!(endpoints(&app).await.is_empty());

    // A body under the limit (unknown fields are ignored) goes through.
    let small = json!({"url": "https://example.com/small", "padding": "x".repeat(800)}).to_string();
    assert!(small.len() < 1024);
    let resp = raw(
        &app,
        Method::POST,
        ENDPOINTS,
        Some(ADMIN_KEY),
        Some("application/json"),
        small,
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(endpoints(&app).await.len(), 1);
}

#[tokio::test]
async fn a_duplicate_endpoint_url_is_409_already_exists() {
    let app = spawn_app().await;
    let body = json!({"url": "https://example.com/dup", "secret": "first-secret-0123456789"});
    let first = app.post(ENDPOINTS, &body).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let resp = app
        .post(
            ENDPOINTS,
            &json!({"url": "https://example.com/dup", "eventTypes": [{"eventName": "note.created"}]}),
        )
        .await;
    assert_error(&resp, 409, "already_exists", "second create");
    let list = endpoints(&app).await;
    assert_eq!(list.len(), 1);
    assert!(
        list[0].get("eventTypes").is_none(),
        "the refused create changed the endpoint: {}",
        list[0]
    );
}

#[tokio::test]
async fn auth_errors_have_the_contract_form() {
    let app = spawn_app().await;
    let resp = app.call(Method::GET, ENDPOINTS, None, None).await;
    assert_error(&resp, 401, "unauthorized", "no key");
    let standard = app.create_key("standard").await;
    let resp = app
        .call(Method::GET, ENDPOINTS, Some(&standard), None)
        .await;
    assert_error(&resp, 403, "forbidden", "standard key");
}

/// NUL characters and undecodable path ids are refused in the contract's form on every
/// store (PostgreSQL cannot keep a NUL inside text).
#[tokio::test]
async fn nul_characters_and_bad_path_bytes_are_clean_4xx() {
    let app = crate::helpers::spawn_app().await;
    // "AA" is base64url of a single NUL byte.
    app.get("/webhooks/v1/endpoints/AA")
        .await
        .assert_error(404, "resource_not_found");
    app.get("/webhooks/v1/endpoints/%FF")
        .await
        .assert_error(404, "resource_not_found");
    app.get("/webhooks/v1/events/%00")
        .await
        .assert_error(404, "resource_not_found");
    app.get("/webhooks/v1/event-types/a%00b/subcategories")
        .await
        .assert_error(404, "resource_not_found");
    let bad = serde_json::json!({"eventName": "note.created", "data": {"ok": "\u{0}"}, "idempotencyKey": "k\u{0}"});
    app.post("/webhooks/v1/events", &bad)
        .await
        .assert_error(400, "invalid_field");
    let bad = serde_json::json!({"url": "https://example.com/\u{0}"});
    app.post("/webhooks/v1/endpoints", &bad)
        .await
        .assert_error(400, "invalid_field");
    // NUL inside user data is fine: it is stored as JSON, escaped.
    let ok = serde_json::json!({"eventName": "note.created", "data": {"text": "a\u{0}b"}});
    assert_eq!(app.post("/webhooks/v1/events", &ok).await.status, 202);
}
