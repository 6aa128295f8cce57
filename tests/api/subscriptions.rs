//! Endpoint subscriptions (`eventTypes`) checked against the org's catalog, and the
//! save-time SSRF guard on endpoint URLs.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Resp, TestApp};

const EP: &str = "/webhooks/v1/endpoints";
const URL: &str = "https://example.com/fullstory-webhooks";
const ID: &str = "aHR0cHM6Ly9leGFtcGxlLmNvbS9mdWxsc3Rvcnktd2ViaG9va3M";
const CUSTOM: &str = "recording.event.custom";

fn path_of(id: &str) -> String {
    format!("{EP}/{id}")
}

/// Number of endpoints on the admin's first page.
async fn endpoint_count(app: &TestApp) -> usize {
    let resp = app.get(EP).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
        .get("endpoints")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// Creates `url` subscribed to `types` and returns the answer.
async fn create_with(app: &TestApp, url: &str, types: Value) -> Resp {
    app.post(EP, &json!({"url": url, "eventTypes": types}))
        .await
}

/// Mints a subcategory of `event_name` with `key` and returns its token.
async fn mint_subcategory(app: &TestApp, key: &str, event_name: &str, display: &str) -> String {
    let resp = app
        .call(
            Method::POST,
            &format!("/webhooks/v1/event-types/{event_name}/subcategories"),
            Some(key),
            Some(&json!({ "displayName": display })),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["displayName"], display, "{}", resp.text);
    let token = resp.body["subcategory"]
        .as_str()
        .expect("subcategory token")
        .to_owned();
    assert!(!token.is_empty());
    token
}

#[track_caller]
fn assert_mentions(resp: &Resp, word: &str) {
    let message = resp.body["message"].as_str().unwrap_or("");
    assert!(
        message.contains(word),
        "message should mention {word}: {}",
        resp.text
    );
}

// ---------------------------------------------------------------------------------------
// Event names
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn event_name_not_in_the_catalog_is_invalid() {
    let app = spawn_app().await;
    for name in ["invoice.paid", "note.Created", "note", "note.created "] {
        let resp = create_with(&app, URL, json!([{ "eventName": name }])).await;
        resp.assert_error(400, "invalid_field");
        assert_mentions(&resp, "eventName");
    }
    // One bad item among good ones refuses the whole Create.
    let resp = create_with(
        &app,
        URL,
        json!([{"eventName": "note.created"}, {"eventName": "no.such.type"}]),
    )
    .await;
    resp.assert_error(400, "invalid_field");
    assert_eq!(
        endpoint_count(&app).await,
        0,
        "a refused Create saved something"
    );
}

#[tokio::test]
async fn test_event_is_not_subscribable() {
    let app = spawn_app().await;
    let resp = create_with(&app, URL, json!([{"eventName": "test"}])).await;
    resp.assert_error(400, "invalid_field");
    assert_eq!(endpoint_count(&app).await, 0);

    let created = create_with(&app, URL, json!([{"eventName": "note.created"}])).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let resp = app
        .post(
            &path_of(ID),
            &json!({"eventTypes": [{"eventName": "test"}]}),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    let got = app.get(&path_of(ID)).await;
    assert_eq!(
        got.body["eventTypes"],
        json!([{"eventName": "note.created"}])
    );
}

#[tokio::test]
async fn missing_event_name_is_a_required_field() {
    let app = spawn_app().await;
    for types in [
        json!([{}]),
        json!([{"eventName": ""}]),
        json!([{"subcategory": "abc"}]),
        json!([{"eventName": "note.created"}, {"event_name": null}]),
    ] {
        let resp = create_with(&app, URL, types.clone()).await;
        resp.assert_error(400, "required_field");
        assert_mentions(&resp, "eventName");
    }
    assert_eq!(endpoint_count(&app).await, 0);
}

#[tokio::test]
async fn every_default_type_without_subcategories_is_subscribable() {
    let app = spawn_app().await;
    let types = json!([
        {"eventName": "note.created"},
        {"eventName": "segment.created"},
        {"eventName": "nativemobile.event.crash"},
    ]);
    let resp = create_with(&app, URL, types.clone()).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["eventTypes"], types);
    assert_eq!(app.get(&path_of(ID)).await.body["eventTypes"], types);
}

#[tokio::test]
async fn update_checks_event_types_and_a_refusal_changes_nothing() {
    let app = spawn_app().await;
    let resp = create_with(&app, URL, json!([{"eventName": "note.created"}])).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let modified = resp.body["modified"].clone();
    for types in [
        json!([{"eventName": "no.such.type"}]),
        json!([{"eventName": CUSTOM}]),
        json!([{"eventName": "note.created", "subcategory": "x"}]),
        json!([{}]),
    ] {
        let resp = app
            .post(
                &path_of(ID),
                &json!({"eventTypes": types, "disabled": true}),
            )
            .await;
        assert_eq!(resp.status, 400, "{types}: {}", resp.text);
    }
    let got = app.get(&path_of(ID)).await;
    assert_eq!(
        got.body["eventTypes"],
        json!([{"eventName": "note.created"}])
    );
    assert_eq!(got.body["enabled"], true);
    assert_eq!(got.body["modified"], modified);
}

// ---------------------------------------------------------------------------------------
// Subcategories
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn type_with_subcategories_needs_one() {
    let app = spawn_app().await;
    for name in [CUSTOM, "segment.trend.alert", "metric.alert"] {
        for types in [
            json!([{ "eventName": name }]),
            json!([{ "eventName": name, "subcategory": "" }]),
        ] {
            let resp = create_with(&app, URL, types).await;
            assert_eq!(resp.status, 400, "{name}: {}", resp.text);
            assert!(
                matches!(
                    resp.body["code"].as_str(),
                    Some("required_field" | "invalid_field")
                ),
                "{}",
                resp.text
            );
            assert_mentions(&resp, "subcategory");
        }
    }
    assert_eq!(endpoint_count(&app).await, 0);
}

#[tokio::test]
async fn unknown_subcategory_is_invalid() {
    let app = spawn_app().await;
    // A real token of another type is not a subcategory of this one either.
    let of_metric = mint_subcategory(&app, &app.admin_key, "metric.alert", "CPU").await;
    for sub in ["no-such-subcategory", "Seat", of_metric.as_str()] {
        let resp = create_with(
            &app,
            URL,
            json!([{ "eventName": CUSTOM, "subcategory": sub }]),
        )
        .await;
        resp.assert_error(400, "invalid_field");
        assert_mentions(&resp, "subcategory");
    }
    assert_eq!(endpoint_count(&app).await, 0);
}

#[tokio::test]
async fn minted_subcategory_is_accepted_and_echoed() {
    let app = spawn_app().await;
    let seat = mint_subcategory(&app, &app.admin_key, CUSTOM, "Seat").await;
    let types = json!([{ "eventName": CUSTOM, "subcategory": seat }]);
    let resp = create_with(&app, URL, types.clone()).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["eventTypes"], types);
    let got = app.get(&path_of(ID)).await;
    assert_eq!(got.body["eventTypes"], types);
    let list = app.get(EP).await;
    assert_eq!(list.body["endpoints"][0]["eventTypes"], types);

    // Also through Update, in snake_case, alongside a type without subcategories.
    let row = mint_subcategory(&app, &app.admin_key, CUSTOM, "Row").await;
    let resp = app
        .post(
            &path_of(ID),
            &json!({"event_types": [
                {"event_name": CUSTOM, "subcategory": row},
                {"event_name": "note.created"},
            ]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(
        resp.body["eventTypes"],
        json!([{"eventName": CUSTOM, "subcategory": row}, {"eventName": "note.created"}])
    );
}

#[tokio::test]
async fn type_without_subcategories_rejects_one() {
    let app = spawn_app().await;
    let seat = mint_subcategory(&app, &app.admin_key, CUSTOM, "Seat").await;
    for sub in ["anything", seat.as_str()] {
        let resp = create_with(
            &app,
            URL,
            json!([{ "eventName": "note.created", "subcategory": sub }]),
        )
        .await;
        resp.assert_error(400, "invalid_field");
        assert_mentions(&resp, "subcategory");
    }
    assert_eq!(endpoint_count(&app).await, 0);
}

#[tokio::test]
async fn subcategory_minted_in_another_org_is_not_valid_here() {
    let app = spawn_app().await;
    let other = app.key_for_org("o-other", "admin").await;
    let theirs = mint_subcategory(&app, &other, CUSTOM, "Seat").await;
    let types = json!([{ "eventName": CUSTOM, "subcategory": theirs }]);

    let resp = create_with(&app, URL, types.clone()).await;
    resp.assert_error(400, "invalid_field");
    assert_eq!(endpoint_count(&app).await, 0);

    // It is valid in the org that minted it.
    let resp = app
        .call(
            Method::POST,
            EP,
            Some(&other),
            Some(&json!({"url": URL, "eventTypes": types})),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["eventTypes"], types);
}

// ---------------------------------------------------------------------------------------
// Custom event types
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn custom_event_type_is_subscribable_in_its_org_only() {
    let app = spawn_app().await;
    let other = app.key_for_org("o-other", "admin").await;
    let types = json!([{"eventName": "invoice.paid"}]);

    // Not yet in the catalog.
    create_with(&app, URL, types.clone())
        .await
        .assert_error(400, "invalid_field");

    let added = app
        .post(
            "/webhooks/v1/event-types",
            &json!({"eventName": "invoice.paid", "displayName": "Invoice paid"}),
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.text);

    let resp = create_with(&app, URL, types.clone()).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["eventTypes"], types);

    let resp = app
        .call(
            Method::POST,
            EP,
            Some(&other),
            Some(&json!({"url": URL, "eventTypes": types})),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    let other_list = app.call(Method::GET, EP, Some(&other), None).await;
    assert_eq!(other_list.status, 200, "{}", other_list.text);
    assert!(
        other_list.body.get("endpoints").is_none(),
        "{}",
        other_list.text
    );
}

// ---------------------------------------------------------------------------------------
// SSRF at save time
// ---------------------------------------------------------------------------------------

const PRIVATE_TARGETS: &[&str] = &[
    "http://127.0.0.1/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://localhost:9000/",
    "http://0.0.0.0/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
];

const PUBLIC_TARGET: &str = "https://93.184.216.34/hook";

async fn guarded_app() -> TestApp {
    spawn_app_with(|c| c.allow_private_targets = false).await
}

#[tokio::test]
async fn private_targets_are_refused_on_create() {
    let app = guarded_app().await;
    for url in PRIVATE_TARGETS {
        let resp = app.post(EP, &json!({ "url": url })).await;
        resp.assert_error(400, "invalid_field");
        assert_mentions(&resp, "url");
    }
    assert_eq!(
        endpoint_count(&app).await,
        0,
        "a refused Create saved something"
    );
}

#[tokio::test]
async fn private_targets_are_refused_on_update() {
    let app = guarded_app().await;
    let created = app.post(EP, &json!({ "url": PUBLIC_TARGET })).await;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = created.body["id"].as_str().expect("id").to_owned();
    for url in PRIVATE_TARGETS {
        let resp = app
            .post(&path_of(&id), &json!({ "url": url, "disabled": true }))
            .await;
        resp.assert_error(400, "invalid_field");
        assert_mentions(&resp, "url");
    }
    let got = app.get(&path_of(&id)).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["url"], PUBLIC_TARGET);
    assert_eq!(got.body["enabled"], true);
    assert_eq!(got.body["modified"], created.body["modified"]);
    assert_eq!(endpoint_count(&app).await, 1);
}

#[tokio::test]
async fn public_literal_is_accepted_with_the_guard_on() {
    let app = guarded_app().await;
    let resp = app.post(EP, &json!({ "url": PUBLIC_TARGET })).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["url"], PUBLIC_TARGET);
    // And as an Update target.
    let other = app.post(EP, &json!({ "url": "https://8.8.8.8/x" })).await;
    assert_eq!(other.status, 200, "{}", other.text);
    let id = other.body["id"].as_str().expect("id").to_owned();
    let moved = app
        .post(
            &path_of(&id),
            &json!({ "url": "https://[2606:4700::1111]/y" }),
        )
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
    assert_eq!(moved.body["url"], "https://[2606:4700::1111]/y");
}

#[tokio::test]
async fn private_target_is_allowed_when_configured() {
    let app = spawn_app().await;
    let resp = app.post(EP, &json!({ "url": "http://127.0.0.1:9/" })).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["url"], "http://127.0.0.1:9/");
    let id = resp.body["id"].as_str().expect("id").to_owned();
    let moved = app
        .post(&path_of(&id), &json!({ "url": "http://localhost:9000/" }))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.text);
}

#[tokio::test]
async fn other_spellings_of_non_public_addresses_are_refused() {
    let app = guarded_app().await;
    for url in [
        "http://127.1/",
        "http://0177.0.0.1/",
        "http://[::ffff:7f00:1]/",
        "http://[::]/",
        "http://LOCALHOST/",
        "http://localhost./",
        "http://api.localhost/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://255.255.255.255/",
        "http://[fc00::1]/",
        "http://[ff02::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a00:1]/",
        "https://127.0.0.1:8443/path?q=1",
    ] {
        let resp = app.post(EP, &json!({ "url": url })).await;
        assert_eq!(resp.status, 400, "{url} was accepted: {}", resp.text);
        resp.assert_error(400, "invalid_field");
        assert_mentions(&resp, "url");
    }
    assert_eq!(endpoint_count(&app).await, 0);
}

#[tokio::test]
async fn ranges_iana_does_not_mark_globally_reachable_are_refused_on_save_and_for_test_events() {
    let app = guarded_app().await;
    for url in [
        "http://[64:ff9b:1::a00:1]/",                     // NAT64 local use
        "http://[::ffff:0:7f00:1]/",                      // IPv4-translated loopback
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", // Teredo
        "http://[2001:2::1]/",                            // benchmarking
        "http://[2001:db8::1]/",                          // documentation
        "http://[3fff::1]/",                              // documentation
        "http://[5f00::1]/",                              // segment routing
        "http://[100::1]/",                               // discard-only
        "http://[2002:808:808::1]/",                      // 6to4
        "http://[fec0::1]/",                              // site-local
        "http://[4000::1]/",                              // not allocated
        "http://192.0.0.170/",                            // NAT64 discovery
        "http://198.18.0.1/",                             // benchmarking
        "http://240.0.0.1/",                              // reserved
    ] {
        let resp = app.post(EP, &json!({ "url": url })).await;
        resp.assert_error(400, "invalid_field");
        let tested = app
            .post(
                "/webhooks/v1/endpoints/test",
                &json!({ "url": url, "secret": "a-test-secret-value" }),
            )
            .await;
        assert_eq!(tested.status, 400, "{url} was tested: {}", tested.text);
        tested.assert_error(400, "invalid_field");
    }
    assert_eq!(endpoint_count(&app).await, 0);
}
