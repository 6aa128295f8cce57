//! Custom headers of an endpoint: sent on every attempt, masked in answers, refused
//! where posthorn sets the header itself, encrypted at rest.

use std::time::Duration;

use serde_json::{json, Value};

use super::EP;
use crate::helpers::{spawn_app_with, TestApp};
use crate::receiver::{Reply, TestReceiver};

const TOKEN: &str = "Bearer tok-5f2e9c41d7";
const WAIT: Duration = Duration::from_secs(10);

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.delivery.retry_schedule = "100ms".into();
        c.delivery.poll_interval = Duration::from_millis(20);
    })
    .await
}

async fn create(app: &TestApp, url: &str, headers: Value) -> Value {
    let resp = app
        .post(
            EP,
            &json!({"url": url, "secret": "s3cret-value", "headers": headers}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
}

#[tokio::test]
async fn custom_headers_arrive_on_every_attempt_and_retry() {
    let app = app().await;
    let rx = TestReceiver::start().await;
    rx.script("/h", vec![Reply::Status(500)]);
    let created = create(
        &app,
        &rx.url("/h"),
        json!({"Authorization": TOKEN, "X-Tenant": "a"}),
    )
    .await;
    assert_eq!(
        created["headers"],
        json!({"Authorization": "********", "X-Tenant": "a"})
    );
    let resp = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {}}),
        )
        .await;
    assert_eq!(resp.status, 202, "{}", resp.text);
    let got = rx.wait_for("/h", 2, WAIT).await;
    for attempt in &got[..2] {
        assert_eq!(attempt.header("authorization"), TOKEN);
        assert_eq!(attempt.header("x-tenant"), "a");
        // posthorn's own headers are untouched.
        assert_eq!(attempt.header("content-type"), "application/json");
        assert!(!attempt.header("webhook-signature").is_empty());
    }
}

#[tokio::test]
async fn answers_mask_sensitive_values_and_updates_keep_or_clear_them() {
    let app = app().await;
    let rx = TestReceiver::start().await;
    let created = create(
        &app,
        &rx.url("/m"),
        json!({"Authorization": TOKEN, "X-Api-Key": "k-1", "X-Tenant": "a"}),
    )
    .await;
    let path = format!("{EP}/{}", created["id"].as_str().expect("id"));
    let masked = json!({"Authorization": "********", "X-Api-Key": "********", "X-Tenant": "a"});
    assert_eq!(app.get(&path).await.body["headers"], masked);
    assert_eq!(app.get(EP).await.body["endpoints"][0]["headers"], masked);
    assert!(!app.get(&path).await.text.contains("tok-5f2e9c41d7"));

    // What a Get shows, sent back with one value changed, keeps the masked values.
    let mut sent_back = masked.clone();
    sent_back["X-Tenant"] = json!("b");
    let resp = app.post(&path, &json!({"headers": sent_back})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let test = app.post(&format!("{path}/test"), &json!({})).await;
    assert_eq!(test.body["success"], true, "{}", test.text);
    let seen = rx.wait_for("/m", 1, WAIT).await;
    assert_eq!(seen[0].header("authorization"), TOKEN);
    assert_eq!(seen[0].header("x-api-key"), "k-1");
    assert_eq!(seen[0].header("x-tenant"), "b");

    // A mask for a header the endpoint does not have is refused, not stored.
    app.post(&path, &json!({"headers": {"X-Missing": "********"}}))
        .await
        .assert_error(400, "invalid_field");

    // Absent leaves them; an empty object removes them.
    let resp = app.post(&path, &json!({"url": rx.url("/m")})).await;
    assert_eq!(resp.body["headers"]["X-Tenant"], "b", "{}", resp.text);
    let resp = app.post(&path, &json!({"headers": {}})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp.body.get("headers").is_none(), "{}", resp.text);
    app.post(&format!("{path}/test"), &json!({})).await;
    let seen = rx.wait_for("/m", 2, WAIT).await;
    assert_eq!(seen[1].header("authorization"), "");
}

#[tokio::test]
async fn headers_posthorn_sets_and_invalid_ones_are_refused() {
    let app = app().await;
    let mut refused: Vec<Value> = [
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Transfer-Encoding",
        "Host",
        "User-Agent",
        "Fullstory-Signature",
        "webhook-id",
        "Webhook-Timestamp",
        "webhook-signature",
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Upgrade",
        "Expect",
    ]
    .iter()
    .map(|name| json!({ *name: "x" }))
    .collect();
    refused.extend([
        json!({"bad name": "x"}),
        json!({"": "x"}),
        json!({"X-A": "line\nbreak"}),
        json!({"X-A": 1}),
        json!({"X-A": "1", "x-a": "2"}),
        json!({"X-Big": "v".repeat(9000)}),
        Value::Object((0..21).map(|i| (format!("x-{i}"), json!("v"))).collect()),
        json!(["X-A"]),
    ]);
    for headers in refused {
        let resp = app
            .post(
                EP,
                &json!({"url": "https://example.com/h", "headers": headers}),
            )
            .await;
        resp.assert_error(400, "invalid_field");
        assert!(resp.text.contains("headers"), "{headers}: {}", resp.text);
    }
    assert!(
        app.get(EP).await.body.get("endpoints").is_none(),
        "nothing was created"
    );
}

#[tokio::test]
async fn header_values_are_encrypted_at_rest() {
    let app = app().await;
    create(
        &app,
        "https://example.com/at-rest",
        json!({"Authorization": TOKEN, "X-Tenant": "plain-tenant-value"}),
    )
    .await;
    let hex = if app.database_url.starts_with("sqlite:") {
        "hex(headers)"
    } else {
        "encode(headers, 'hex')"
    };
    let stored = app
        .sql_strings(&format!(
            "SELECT {hex} FROM endpoints WHERE headers IS NOT NULL"
        ))
        .await;
    assert_eq!(stored.len(), 1);
    let stored = stored[0].to_ascii_lowercase();
    for plain in ["tok-5f2e9c41d7", "plain-tenant-value", "X-Tenant"] {
        let plain_hex: String = plain.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !stored.contains(&plain_hex),
            "{plain} is stored in the clear"
        );
    }
    // And nowhere in the SQLite file or its WAL.
    if let Some(file) = app.database_url.strip_prefix("sqlite://") {
        for path in [file.to_owned(), format!("{file}-wal")] {
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes.windows(14).any(|w| w == b"tok-5f2e9c41d7"),
                "the token is in {path}"
            );
        }
    }
}
