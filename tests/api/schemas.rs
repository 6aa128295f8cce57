//! Event-type schemas over real HTTP: publishing checks `data` and stores nothing on a
//! mismatch, versions, the example rules, and Get Sample Data.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};
use crate::receiver::TestReceiver;

const TYPES: &str = "/webhooks/v1/event-types";

fn note_schema() -> Value {
    json!({
        "type": "object",
        "required": ["title"],
        "properties": {"title": {"type": "string"}, "word_count": {"type": "integer"}}
    })
}

async fn app() -> TestApp {
    spawn_app_with(|c| c.delivery.poll_interval = Duration::from_millis(20)).await
}

async fn with_note_schema(app: &TestApp) -> Value {
    let resp = app
        .post(
            &format!("{TYPES}/note.created"),
            &json!({"schema": note_schema(), "example": {"title": "Hello", "word_count": 2}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
}

async fn events_stored(app: &TestApp) -> i64 {
    app.sql_i64("SELECT COUNT(*) FROM events").await
}

#[tokio::test]
async fn a_mismatch_is_a_400_naming_the_path_and_rule_and_stores_nothing() {
    let app = app().await;
    let def = with_note_schema(&app).await;
    assert_eq!(def["version"], 2, "{def}");
    // snake_case inside a schema is the schema's own: kept as given.
    assert_eq!(def["schema"], note_schema());
    let rx = TestReceiver::start().await;
    let resp = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": rx.url("/n"), "eventTypes": [{"eventName": "note.created"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);

    let bad = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"title": 5}}),
        )
        .await;
    bad.assert_error(400, "invalid_field");
    let message = bad.body["message"].as_str().unwrap_or_default();
    for part in ["data", "/title", "string", "/properties/title/type"] {
        assert!(message.contains(part), "{part} not in {message}");
    }
    let missing = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {}}),
        )
        .await;
    missing.assert_error(400, "invalid_field");
    assert!(missing.text.contains("title"), "{}", missing.text);
    assert_eq!(events_stored(&app).await, 0);

    let good = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"title": "ok"}}),
        )
        .await;
    assert_eq!(good.status, 202, "{}", good.text);
    let got = rx.wait_for("/n", 1, Duration::from_secs(10)).await;
    let envelope: Value = serde_json::from_slice(&got[0].body).expect("JSON");
    assert_eq!(envelope["version"], 2, "the version it was published under");
}

#[tokio::test]
async fn a_batch_with_one_bad_event_stores_none() {
    let app = app().await;
    with_note_schema(&app).await;
    let resp = app
        .post(
            "/webhooks/v1/events/batch",
            &json!({"events": [
                {"eventName": "note.created", "data": {"title": "a"}},
                {"eventName": "note.created", "data": {"title": "b", "word_count": "many"}},
                {"eventName": "note.created", "data": {"title": "c"}},
            ]}),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    assert!(
        resp.text.contains("events[1].data") && resp.text.contains("/word_count"),
        "{}",
        resp.text
    );
    assert_eq!(events_stored(&app).await, 0);
}

/// The schema checks run after the others, off the async workers, yet a batch is
/// answered with the first event at fault and its first rule broken, as if its events
/// were checked one by one.
#[tokio::test]
async fn a_batch_names_its_first_fault_whatever_the_rule() {
    let app = app().await;
    with_note_schema(&app).await;
    let long_key = "k".repeat(256);
    let cases = [
        // A mismatch before a missing name: the mismatch.
        (
            json!([
                {"eventName": "note.created", "data": {"title": 1}},
                {"data": {"title": "b"}},
            ]),
            "events[0].data",
        ),
        // A missing name before a mismatch: the name.
        (
            json!([
                {"data": {"title": "b"}},
                {"eventName": "note.created", "data": {"title": 1}},
            ]),
            "events[0].eventName",
        ),
        // In one event, the schema's rule comes before the idempotency key's.
        (
            json!([{"eventName": "note.created", "data": {"title": 1}, "idempotencyKey": long_key}]),
            "events[0].data",
        ),
        // A long key before a later mismatch: the key.
        (
            json!([
                {"eventName": "note.created", "data": {"title": "a"}, "idempotencyKey": long_key},
                {"eventName": "note.created", "data": {"title": 1}},
            ]),
            "events[0].idempotencyKey",
        ),
    ];
    for (events, first) in cases {
        let resp = app
            .post("/webhooks/v1/events/batch", &json!({"events": events}))
            .await;
        assert_eq!(resp.status, 400, "{events}: {}", resp.text);
        let message = resp.body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(first), "{first}: {message}");
    }
    assert_eq!(events_stored(&app).await, 0);
}

#[tokio::test]
async fn schemas_and_examples_are_checked_and_versioned() {
    let app = app().await;
    let path = format!("{TYPES}/note.created");
    app.post(&path, &json!({"schema": {"type": 7}}))
        .await
        .assert_error(400, "invalid_field");
    app.post(
        &path,
        &json!({"schema": {"$ref": "https://example.com/x.json"}}),
    )
    .await
    .assert_error(400, "invalid_field");
    app.post(
        &path,
        &json!({"schema": note_schema(), "example": {"title": 1}}),
    )
    .await
    .assert_error(400, "invalid_field");
    app.post(&path, &json!({"example": []}))
        .await
        .assert_error(400, "invalid_field");
    // A schema whose check would cost too much is refused at once, not run.
    let mut defs = serde_json::Map::new();
    defs.insert(
        "a0".into(),
        json!({"type": "string", "pattern": "^(a|aa)+$"}),
    );
    for i in 1..40 {
        let below = format!("#/$defs/a{}", i - 1);
        defs.insert(
            format!("a{i}"),
            json!({"allOf": [{"$ref": below}, {"$ref": below}]}),
        );
    }
    app.post(
        &path,
        &json!({"schema": {"$defs": defs, "$ref": "#/$defs/a39"}}),
    )
    .await
    .assert_error(400, "invalid_field");
    app.post(
        &format!("{TYPES}/no.such"),
        &json!({"schema": note_schema()}),
    )
    .await
    .assert_error(404, "resource_not_found");
    assert!(
        app.get(TYPES).await.text.find("\"schema\"").is_none(),
        "nothing was changed"
    );

    let v2 = with_note_schema(&app).await;
    assert_eq!(v2["version"], 2);
    // An example alone keeps the version.
    let same = app
        .post(&path, &json!({"example": {"title": "Other"}}))
        .await;
    assert_eq!(same.body["version"], 2, "{}", same.text);
    // A schema the current example does not match needs a new example with it.
    let stricter = json!({"type": "object", "required": ["body"]});
    app.post(&path, &json!({"schema": stricter}))
        .await
        .assert_error(400, "invalid_field");
    let v3 = app
        .post(&path, &json!({"schema": stricter, "example": null}))
        .await;
    assert_eq!(v3.body["version"], 3, "{}", v3.text);
    assert!(v3.body.get("example").is_none());
    // Removing the schema is a change of schema too; then anything is accepted.
    let v4 = app.post(&path, &json!({"schema": null})).await;
    assert_eq!(v4.body["version"], 4, "{}", v4.text);
    assert!(v4.body.get("schema").is_none());
    let resp = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"anything": true}}),
        )
        .await;
    assert_eq!(resp.status, 202, "{}", resp.text);
    // The listing keeps Fullstory's shape, with the new fields only where set.
    let list = app.get(TYPES).await.body;
    let defs = list["eventDefs"].as_array().expect("eventDefs");
    let note = defs
        .iter()
        .find(|d| d["eventName"] == "note.created")
        .expect("note.created");
    assert_eq!(note["version"], 4);
    let untouched = defs
        .iter()
        .find(|d| d["eventName"] != "note.created")
        .expect("another type");
    assert_eq!(
        untouched.as_object().map(|o| o.len()),
        Some(3),
        "{untouched}"
    );
}

#[tokio::test]
async fn sample_data_with_and_without_a_schema() {
    let app = app().await;
    let sample = |q: &str| format!("{TYPES}/note.created/sample{q}");
    let plain = app.get(&sample("")).await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    assert_eq!(
        plain.body,
        json!({"eventName": "note.created", "version": 1, "data": {}})
    );
    with_note_schema(&app).await;
    let v2 = app.get(&sample("")).await.body;
    assert_eq!(
        v2,
        json!({"eventName": "note.created", "version": 2, "data": {"title": "Hello", "word_count": 2}})
    );
    assert_eq!(app.get(&sample("?version=1")).await.body["data"], json!({}));
    app.get(&sample("?version=3"))
        .await
        .assert_error(404, "resource_not_found");
    app.get(&sample("?version=zero"))
        .await
        .assert_error(400, "invalid_field");
    app.get(&sample("?subcategory=abc"))
        .await
        .assert_error(400, "invalid_field");
    app.get(&format!("{TYPES}/no.such/sample"))
        .await
        .assert_error(404, "resource_not_found");

    // A new type whose schema has `examples` but no example of its own.
    let resp = app
        .post(
            TYPES,
            &json!({"eventName": "invoice.paid", "schema": {
                "type": "object", "examples": [{"amount": 12}]
            }}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let invoice = app.get(&format!("{TYPES}/invoice.paid/sample")).await;
    assert_eq!(
        invoice.body["data"],
        json!({"amount": 12}),
        "{}",
        invoice.text
    );
    assert_eq!(invoice.body["version"], 1);

    // Any role that reads the catalog reads samples; only admins change schemas.
    let standard = app.create_key("standard").await;
    let resp = app
        .call(reqwest::Method::GET, &sample(""), Some(&standard), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = app
        .call(
            reqwest::Method::POST,
            &format!("{TYPES}/note.created"),
            Some(&standard),
            Some(&json!({"schema": null})),
        )
        .await;
    resp.assert_error(403, "forbidden");
}
