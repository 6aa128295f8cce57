//! Publishing and delivery over real HTTP to a recording receiver.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{spawn_app_with, TestApp};
use crate::receiver::{Reply, TestReceiver};

const SECRET: &str = "s3cret-value";
const WAIT: Duration = Duration::from_secs(10);

/// An app with a fast retry schedule and poll interval.
async fn fast_app(schedule: &str) -> TestApp {
    let schedule = schedule.to_owned();
    spawn_app_with(move |c| {
        c.delivery.retry_schedule = schedule;
        c.delivery.poll_interval = Duration::from_millis(20);
        c.delivery.attempt_timeout = Duration::from_secs(2);
    })
    .await
}

async fn endpoint(app: &TestApp, url: &str, secret: &str, event_types: Value) -> Value {
    let resp = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": url, "secret": secret, "eventTypes": event_types}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
}

async fn publish(app: &TestApp, body: Value) -> Value {
    let resp = app.post("/webhooks/v1/events", &body).await;
    assert_eq!(resp.status, 202, "{}", resp.text);
    resp.body
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(msg);
    STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn delivers_the_envelope_with_both_signatures() {
    let app = fast_app("1s").await;
    let rx = TestReceiver::start().await;
    endpoint(
        &app,
        &rx.url("/hook"),
        SECRET,
        json!([{"eventName": "note.created"}]),
    )
    .await;
    let answer = publish(
        &app,
        json!({"eventName": "note.created", "data": {"z": 1, "a": [1, {"b": null}], "s": "é"}}),
    )
    .await;
    assert_eq!(answer["deliveries"], 1);
    let event_id = answer["id"].as_str().expect("id").to_owned();

    let got = rx.wait_for("/hook", 1, WAIT).await;
    let req = &got[0];
    let body = std::str::from_utf8(&req.body).expect("utf8");
    assert_eq!(
        body,
        r#"{"eventName":"note.created","version":1,"data":{"z":1,"a":[1,{"b":null}],"s":"é"}}"#
    );
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(
        req.header("user-agent"),
        concat!("posthorn/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(req.header("webhook-id"), event_id);

    // Fullstory-Signature: o:<org>,t:<ts>,v:<base64 HMAC(body:org:ts)>
    let fs = req.header("fullstory-signature");
    let parts: Vec<&str> = fs.split(',').collect();
    assert_eq!(parts.len(), 3, "{fs}");
    assert_eq!(parts[0], format!("o:{}", crate::helpers::ORG));
    let ts: i64 = parts[1]
        .strip_prefix("t:")
        .expect("t:")
        .parse()
        .expect("ts");
    let now = chrono::Utc::now().timestamp();
    assert!((now - ts).abs() < 30, "timestamp {ts} far from {now}");
    let expected = hmac_b64(
        SECRET.as_bytes(),
        format!("{body}:{}:{ts}", crate::helpers::ORG).as_bytes(),
    );
    assert_eq!(parts[2], format!("v:{expected}"));

    // Standard Webhooks: v1,<base64 HMAC(id.ts.body)>
    assert_eq!(req.header("webhook-timestamp"), ts.to_string());
    let expected = hmac_b64(
        SECRET.as_bytes(),
        format!("{event_id}.{ts}.{body}").as_bytes(),
    );
    assert_eq!(req.header("webhook-signature"), format!("v1,{expected}"));
}

#[tokio::test]
async fn a_whsec_secret_verifies_with_the_standard_webhooks_library() {
    let app = fast_app("1s").await;
    let rx = TestReceiver::start().await;
    let secret = format!(
        "whsec_{}",
        STANDARD.encode(b"0123456789abcdef0123456789abcdef")
    );
    endpoint(&app, &rx.url("/sw"), &secret, json!([])).await;
    publish(
        &app,
        json!({"eventName": "segment.created", "data": {"id": 7}}),
    )
    .await;
    let got = rx.wait_for("/sw", 1, WAIT).await;
    let wh = standardwebhooks::Webhook::new(&secret).expect("secret");
    wh.verify(&got[0].body, &got[0].headers)
        .expect("standard webhooks verification");
    let wrong = standardwebhooks::Webhook::new(&format!(
        "whsec_{}",
        STANDARD.encode(b"another-key-another-key-another!")
    ))
    .expect("secret");
    assert!(wrong.verify(&got[0].body, &got[0].headers).is_err());
    // The Fullstory signature uses the same key bytes (decoded from whsec_).
    let fs = got[0].header("fullstory-signature").to_owned();
    let ts = got[0].header("webhook-timestamp").to_owned();
    let body = std::str::from_utf8(&got[0].body).expect("utf8");
    let expected = hmac_b64(
        b"0123456789abcdef0123456789abcdef",
        format!("{body}:{}:{ts}", crate::helpers::ORG).as_bytes(),
    );
    assert!(fs.ends_with(&format!(",v:{expected}")), "{fs}");
}

#[tokio::test]
async fn retries_until_success_with_the_same_webhook_id_then_stops() {
    let app = fast_app("100ms,100ms,100ms,100ms").await;
    let rx = TestReceiver::start().await;
    rx.script(
        "/flaky",
        vec![Reply::Status(500), Reply::Status(503), Reply::Status(404)],
    );
    endpoint(&app, &rx.url("/flaky"), SECRET, json!([])).await;
    let answer = publish(&app, json!({"eventName": "note.created", "data": {}})).await;
    let got = rx.wait_for("/flaky", 4, WAIT).await;
    for r in &got {
        assert_eq!(r.header("webhook-id"), answer["id"].as_str().expect("id"));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.received("/flaky").len(), 4, "no attempt after the 2xx");
}

#[tokio::test]
async fn gives_up_after_the_schedule() {
    let app = fast_app("50ms,50ms").await;
    let rx = TestReceiver::start().await;
    rx.always("/down", Reply::Status(500));
    endpoint(&app, &rx.url("/down"), SECRET, json!([])).await;
    publish(&app, json!({"eventName": "note.created", "data": {}})).await;
    rx.wait_for("/down", 3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.received("/down").len(),
        3,
        "first attempt + one per schedule entry"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = fast_app("100ms").await;
    let rx = TestReceiver::start().await;
    rx.always("/moved", Reply::Redirect("/target"));
    endpoint(&app, &rx.url("/moved"), SECRET, json!([])).await;
    publish(&app, json!({"eventName": "note.created", "data": {}})).await;
    rx.wait_for("/moved", 2, WAIT).await; // the 302 counted as a failure and retried
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.received("/target").is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let app = fast_app("50ms").await;
    let rx = TestReceiver::start().await;
    rx.script("/busy", vec![Reply::TooMany(2)]);
    endpoint(&app, &rx.url("/busy"), SECRET, json!([])).await;
    publish(&app, json!({"eventName": "note.created", "data": {}})).await;
    let got = rx.wait_for("/busy", 2, WAIT).await;
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, before Retry-After: 2"
    );
}

#[tokio::test]
async fn disabled_and_unsubscribed_endpoints_get_nothing() {
    let app = fast_app("1s").await;
    let rx = TestReceiver::start().await;
    endpoint(
        &app,
        &rx.url("/on"),
        SECRET,
        json!([{"eventName": "note.created"}]),
    )
    .await;
    let off = endpoint(
        &app,
        &rx.url("/off"),
        SECRET,
        json!([{"eventName": "note.created"}]),
    )
    .await;
    endpoint(
        &app,
        &rx.url("/other"),
        SECRET,
        json!([{"eventName": "segment.created"}]),
    )
    .await;
    let resp = app
        .post(
            &format!("/webhooks/v1/endpoints/{}", off["id"].as_str().expect("id")),
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!(resp.body["enabled"], false);
    let answer = publish(&app, json!({"eventName": "note.created", "data": {}})).await;
    assert_eq!(answer["deliveries"], 1);
    rx.wait_for("/on", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.received("/off").is_empty());
    assert!(rx.received("/other").is_empty());
}

#[tokio::test]
async fn subcategories_route_events() {
    let app = fast_app("1s").await;
    let rx = TestReceiver::start().await;
    let mint = |name: &'static str| {
        let app = &app;
        async move {
            let r = app
                .post(
                    "/webhooks/v1/event-types/recording.event.custom/subcategories",
                    &json!({"displayName": name}),
                )
                .await;
            r.body["subcategory"]
                .as_str()
                .expect("subcategory")
                .to_owned()
        }
    };
    let (a, b) = (mint("A").await, mint("B").await);
    endpoint(
        &app,
        &rx.url("/a"),
        SECRET,
        json!([{"eventName": "recording.event.custom", "subcategory": a}]),
    )
    .await;
    endpoint(
        &app,
        &rx.url("/b"),
        SECRET,
        json!([{"eventName": "recording.event.custom", "subcategory": b}]),
    )
    .await;
    let answer = publish(
        &app,
        json!({"eventName": "recording.event.custom", "subcategory": a, "data": {}}),
    )
    .await;
    assert_eq!(answer["deliveries"], 1);
    rx.wait_for("/a", 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.received("/b").is_empty());
    // A type with subcategories needs one to be published.
    let resp = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "recording.event.custom", "data": {}}),
        )
        .await;
    resp.assert_error(400, "required_field");
}

#[tokio::test]
async fn an_idempotency_key_delivers_once() {
    let app = fast_app("1s").await;
    let rx = TestReceiver::start().await;
    endpoint(&app, &rx.url("/once"), SECRET, json!([])).await;
    let body = json!({"eventName": "note.created", "data": {"n": 1}, "idempotencyKey": "order-42"});
    let first = publish(&app, body.clone()).await;
    let second = publish(&app, body).await;
    assert_eq!(first, second);
    let other = publish(
        &app,
        json!({"eventName": "note.created", "data": {"n": 1}, "idempotency_key": "order-43"}),
    )
    .await;
    assert_ne!(first["id"], other["id"]);
    rx.wait_for("/once", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received("/once").len(), 2);
}

#[tokio::test]
async fn a_batch_is_validated_whole_before_any_event_is_accepted() {
    let app = fast_app("1s").await;
    let rx = TestReceiver::start().await;
    endpoint(&app, &rx.url("/batch"), SECRET, json!([])).await;
    let bad = app
        .post(
            "/webhooks/v1/events/batch",
            &json!({"events": [
                {"eventName": "note.created", "data": {"i": 0}},
                {"eventName": "no.such.type", "data": {"i": 1}},
            ]}),
        )
        .await;
    bad.assert_error(400, "invalid_field");
    assert!(
        bad.body["message"]
            .as_str()
            .expect("message")
            .contains("events[1]"),
        "{}",
        bad.text
    );
    let ok = app
        .post(
            "/webhooks/v1/events/batch",
            &json!({"events": [
                {"eventName": "note.created", "data": {"i": 0}},
                {"event_name": "segment.created", "data": {"i": 1}},
            ]}),
        )
        .await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    assert_eq!(ok.body["events"].as_array().expect("events").len(), 2);
    rx.wait_for("/batch", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.received("/batch").len(),
        2,
        "the rejected batch delivered something"
    );
}

#[tokio::test]
async fn publish_input_is_validated() {
    let app = fast_app("1s").await;
    let cases = [
        (json!({"data": {}}), 400, "required_field"),
        (json!({"eventName": "note.created"}), 400, "required_field"),
        (
            json!({"eventName": "note.created", "data": [1]}),
            400,
            "invalid_field",
        ),
        (
            json!({"eventName": "test", "data": {}}),
            400,
            "invalid_field",
        ),
        (
            json!({"eventName": "note.created", "subcategory": "x", "data": {}}),
            400,
            "invalid_field",
        ),
        (
            json!({"eventName": "note.created", "eventName2": 1, "event_name": "x", "data": {}}),
            400,
            "invalid_field",
        ),
    ];
    for (body, status, code) in cases {
        app.post("/webhooks/v1/events", &body)
            .await
            .assert_error(status, code);
    }
    let big = "x".repeat(300 * 1024);
    let resp = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"big": big}}),
        )
        .await;
    resp.assert_error(413, "payload_too_large");
    // It names the event's data and the setting, not the request body.
    let message = resp.body["message"].as_str().expect("message");
    assert!(
        message.starts_with("data ") && message.contains("POSTHORN_MAX_PAYLOAD_BYTES"),
        "{message}"
    );
}

#[tokio::test]
async fn publishing_needs_a_publisher_or_admin_key() {
    let app = fast_app("1s").await;
    let publisher = app.create_key("publisher").await;
    let standard = app.create_key("standard").await;
    let body = json!({"eventName": "note.created", "data": {}});
    let ok = app
        .call(
            reqwest::Method::POST,
            "/webhooks/v1/events",
            Some(&publisher),
            Some(&body),
        )
        .await;
    assert_eq!(ok.status, 202, "{}", ok.text);
    app.call(
        reqwest::Method::POST,
        "/webhooks/v1/events",
        Some(&standard),
        Some(&body),
    )
    .await
    .assert_error(403, "forbidden");
    app.call(
        reqwest::Method::POST,
        "/webhooks/v1/events",
        None,
        Some(&body),
    )
    .await
    .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_binary_response_body_is_logged_without_breaking_the_log() {
    let app = fast_app("1h").await;
    let rx = TestReceiver::start().await;
    rx.always("/bin", Reply::Body(200, "ok\0\u{1}binary"));
    endpoint(&app, &rx.url("/bin"), SECRET, json!([])).await;
    let id = publish(&app, json!({"eventName": "note.created", "data": {}})).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    rx.wait_for("/bin", 1, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    let event = loop {
        let e = app.get(&format!("/webhooks/v1/events/{id}")).await;
        if e.body["deliveries"][0]["state"] == "delivered" {
            break e.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recorded: {}",
            e.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let dlv = event["deliveries"][0]["id"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    let attempts = app
        .get(&format!("/webhooks/v1/deliveries/{dlv}/attempts"))
        .await;
    let body = attempts.body["attempts"][0]["responseBody"]
        .as_str()
        .expect("body")
        .to_owned();
    assert!(
        body.starts_with("ok") && body.ends_with("binary") && !body.contains('\0'),
        "{body:?}"
    );
}
