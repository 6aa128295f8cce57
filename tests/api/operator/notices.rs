//! Operational webhooks: posthorn's own events about endpoints and deliveries, received
//! by a hook subscribed to them, signed, once per change, never about the hook itself,
//! also in the operator org, and durable across SIGKILL.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{free_port, Node, Resp, TestApp, ORG};
use crate::receiver::{Received, Reply, TestReceiver};

use super::{app_with, publish, until, WAIT};

const ALL: [&str; 7] = [
    "endpoint.created",
    "endpoint.updated",
    "endpoint.deleted",
    "endpoint.enabled",
    "endpoint.disabled",
    "endpoint.recovered",
    "delivery.failed",
];
const HOOK_SECRET: &str = "hook-secret-value";

fn subscriptions(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|n| json!({ "eventName": n })).collect())
}

/// The operational hook: an endpoint at `url` subscribed to every operational event.
async fn hook(app: &TestApp, key: &str, url: &str) -> String {
    let r = app
        .call(
            reqwest::Method::POST,
            "/webhooks/v1/endpoints",
            Some(key),
            Some(&json!({"url": url, "secret": HOOK_SECRET, "eventTypes": subscriptions(&ALL)})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["id"].as_str().expect("id").to_owned()
}

/// Creates an endpoint at `url` subscribed to `note.created`.
async fn subscribed(app: &TestApp, url: &str) -> Resp {
    app.post(
        "/webhooks/v1/endpoints",
        &json!({"url": url, "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await
}

fn body(r: &Received) -> Value {
    serde_json::from_slice(&r.body).expect("json body")
}

/// The notices received at `path`, as (eventName, data.endpointId) pairs in order.
fn told(rx: &TestReceiver, path: &str) -> Vec<(String, String)> {
    rx.received(path)
        .iter()
        .map(body)
        .map(|b| {
            (
                b["eventName"].as_str().unwrap_or("").to_owned(),
                b["data"]["endpointId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn signed_with(secret: &str, r: &Received) -> bool {
    r.header("webhook-signature") == super::signing::standard_sig(secret, r)
}

fn id_of(url: &str) -> String {
    URL_SAFE_NO_PAD.encode(url)
}

/// Waits until `path` has `n` requests, then a little longer to see that no more come.
async fn exactly(rx: &TestReceiver, path: &str, n: usize) -> Vec<Received> {
    rx.wait_for(path, n, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.received(path);
    assert_eq!(got.len(), n, "{:?}", told(rx, path));
    got
}

#[tokio::test]
async fn every_endpoint_change_is_told_once_signed_and_never_to_itself() {
    let app = app_with("1h", |_| {}).await;
    let rx = TestReceiver::start().await;
    let hook_id = hook(&app, &app.admin_key, &rx.url("/ops")).await;
    // A change of the hook itself tells nobody (no other hook), and not the hook.
    let r = app
        .post(
            &format!("/webhooks/v1/endpoints/{hook_id}"),
            &json!({"secret": HOOK_SECRET}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let url = rx.url("/x");
    let made = subscribed(&app, &url).await;
    assert_eq!(made.status, 200, "{}", made.text);
    let x = id_of(&url);
    let path = format!("/webhooks/v1/endpoints/{x}");
    assert_eq!(
        app.post(&path, &json!({"disabled": true})).await.status,
        200
    );
    assert_eq!(app.post(&path, &json!({})).await.status, 200);
    assert_eq!(app.delete(&path).await.status, 200);

    let got = exactly(&rx, "/ops", 6).await;
    // Each is its own event, so they may arrive in any order.
    let mut names = told(&rx, "/ops");
    names.sort();
    let mut expected: Vec<(String, String)> = [
        "endpoint.created",
        "endpoint.updated",
        "endpoint.disabled",
        "endpoint.updated",
        "endpoint.enabled",
        "endpoint.deleted",
    ]
    .iter()
    .map(|n| (n.to_string(), x.clone()))
    .collect();
    expected.sort();
    assert_eq!(names, expected);
    let named = |name: &str| {
        got.iter()
            .map(body)
            .find(|b| b["eventName"] == name)
            .expect("received")
    };
    for r in &got {
        assert!(
            signed_with(HOOK_SECRET, r),
            "unsigned: {}",
            r.header("webhook-signature")
        );
        let b = body(r);
        assert_eq!(b["version"], 1);
        assert_eq!(b["data"]["orgId"], ORG);
        assert_eq!(b["data"]["url"], url);
        assert!(
            b["data"]["at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{b}"
        );
    }
    let created = named("endpoint.created");
    assert_eq!(created["data"]["enabled"], true);
    assert_eq!(
        created["data"]["eventTypes"],
        json!([{"eventName": "note.created"}])
    );
    let disabled = named("endpoint.disabled");
    assert_eq!(disabled["data"]["trigger"], "manual");
    assert_eq!(disabled["data"]["reason"], Value::Null);

    // They are events of the org like any other: in the delivery log of the hook.
    let log = app
        .get(&format!("/webhooks/v1/endpoints/{hook_id}/deliveries"))
        .await;
    assert_eq!(log.status, 200, "{}", log.text);
    let rows = log.body["deliveries"].as_array().expect("deliveries");
    assert_eq!(rows.len(), 6, "{}", log.text);
    assert!(
        rows.iter().all(|d| d["state"] == "delivered"),
        "{}",
        log.text
    );
}

#[tokio::test]
async fn a_used_up_schedule_and_a_recovery_are_told_but_not_a_blip() {
    // /back fails from 0 ms to its success at about 600 ms, /blip from 0 to 200 ms.
    let app = app_with("200ms,200ms,200ms", |c| {
        c.delivery.recovered_after = Duration::from_millis(400);
    })
    .await;
    let rx = TestReceiver::start().await;
    hook(&app, &app.admin_key, &rx.url("/ops")).await;
    rx.always("/dead", Reply::Status(503));
    rx.script(
        "/back",
        vec![Reply::Status(500), Reply::Status(500), Reply::Status(500)],
    );
    rx.script("/blip", vec![Reply::Status(500)]);
    for path in ["/dead", "/back", "/blip"] {
        let r = subscribed(&app, &rx.url(path)).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    exactly(&rx, "/ops", 3).await;
    let event = publish(&app, json!({"n": 1})).await;
    rx.wait_for("/back", 4, WAIT).await;
    rx.wait_for("/dead", 4, WAIT).await;
    let got = exactly(&rx, "/ops", 5).await;
    let mut later: Vec<Value> = got[3..].iter().map(body).collect();
    later.sort_by_key(|b| b["eventName"].as_str().unwrap_or("").to_owned());
    let failed = &later[0];
    assert_eq!(failed["eventName"], "delivery.failed", "{later:?}");
    assert_eq!(failed["data"]["endpointId"], id_of(&rx.url("/dead")));
    assert_eq!(failed["data"]["eventId"], event.as_str());
    assert_eq!(failed["data"]["eventName"], "note.created");
    assert_eq!(failed["data"]["attempts"], 4);
    assert_eq!(failed["data"]["lastStatus"], 503);
    assert!(failed["data"]["deliveryId"].as_str().is_some(), "{failed}");
    let recovered = &later[1];
    assert_eq!(recovered["eventName"], "endpoint.recovered", "{later:?}");
    assert_eq!(recovered["data"]["endpointId"], id_of(&rx.url("/back")));
    assert!(
        recovered["data"]["failingSince"].as_str().is_some(),
        "{recovered}"
    );
    assert!(got.iter().all(|r| signed_with(HOOK_SECRET, r)));
}

#[tokio::test]
async fn an_automatic_disable_is_told_with_its_reason() {
    let app = app_with("50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms", |c| {
        c.delivery.auto_disable_after = Duration::from_millis(200);
    })
    .await;
    let rx = TestReceiver::start().await;
    hook(&app, &app.admin_key, &rx.url("/ops")).await;
    rx.always("/dead", Reply::Status(500));
    let r = subscribed(&app, &rx.url("/dead")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    publish(&app, json!({})).await;
    let dead = id_of(&rx.url("/dead"));
    until(&app, &format!("/webhooks/v1/endpoints/{dead}"), |e| {
        e["enabled"] == false
    })
    .await;
    let got = exactly(&rx, "/ops", 2).await;
    let disabled = got
        .iter()
        .map(body)
        .find(|b| b["eventName"] == "endpoint.disabled")
        .expect("endpoint.disabled");
    assert_eq!(disabled["eventName"], "endpoint.disabled");
    assert_eq!(disabled["data"]["endpointId"], dead);
    assert_eq!(disabled["data"]["trigger"], "automatic");
    assert!(
        disabled["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("failed")),
        "{disabled}"
    );
}

#[tokio::test]
async fn the_operator_org_hears_of_every_org_and_orgs_only_of_their_own() {
    let app = app_with("1h", |c| c.operator_org = Some("o-ops".into())).await;
    let rx = TestReceiver::start().await;
    let ops_key = app.key_for_org("o-ops", "admin").await;
    let other_key = app.key_for_org("o-other", "admin").await;
    hook(&app, &ops_key, &rx.url("/operator")).await;
    hook(&app, &app.admin_key, &rx.url("/own")).await;
    // The second hook's creation: the operator hears of it; the org's hook is its subject.
    let mine = rx.url("/mine");
    let r = app
        .post("/webhooks/v1/endpoints", &json!({"url": mine}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let theirs = rx.url("/theirs");
    let r = app
        .call(
            reqwest::Method::POST,
            "/webhooks/v1/endpoints",
            Some(&other_key),
            Some(&json!({"url": theirs})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    exactly(&rx, "/operator", 3).await;
    let heard: Vec<Value> = rx.received("/operator").iter().map(body).collect();
    let mut urls: Vec<&str> = heard
        .iter()
        .map(|b| b["data"]["url"].as_str().unwrap_or(""))
        .collect();
    urls.sort();
    let own_hook = rx.url("/own");
    let mut expected = [own_hook.as_str(), mine.as_str(), theirs.as_str()];
    expected.sort();
    assert_eq!(urls, expected, "{heard:?}");
    for b in &heard {
        let org = if b["data"]["url"] == theirs.as_str() {
            "o-other"
        } else {
            ORG
        };
        assert_eq!(b["data"]["orgId"], org, "{b}");
    }
    let own = exactly(&rx, "/own", 1).await;
    assert_eq!(body(&own[0])["data"]["url"], mine.as_str());
    // An endpoint that takes every event is sent no operational ones.
    assert!(rx.received("/mine").is_empty() && rx.received("/theirs").is_empty());
}

#[tokio::test]
async fn operational_names_are_posthorns_own() {
    let app = app_with("1h", |_| {}).await;
    let r = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "endpoint.disabled", "data": {}}),
        )
        .await;
    r.assert_error(400, "invalid_field");
    assert!(r.text.contains("operational"), "{}", r.text);
    let r = app
        .post(
            "/webhooks/v1/event-types",
            &json!({"eventName": "delivery.failed"}),
        )
        .await;
    r.assert_error(400, "invalid_field");
    let r = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "http://127.0.0.1:9/h", "eventTypes": [{"eventName": "endpoint.created", "subcategory": "x"}]}),
        )
        .await;
    r.assert_error(400, "invalid_field");
    // Subscribable by name, though not in the catalog.
    let catalog = app.get("/webhooks/v1/event-types").await;
    assert!(
        !catalog.text.contains("endpoint.created"),
        "{}",
        catalog.text
    );
}

#[tokio::test]
async fn a_notice_survives_sigkill_between_the_change_and_its_delivery() {
    let db = crate::helpers::TestDb::new().await;
    let port = free_port();
    // Nothing listens on the hook's port yet: the first attempt (if any) fails.
    let env = [
        (
            "POSTHORN_RETRY_SCHEDULE",
            "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
        ),
        ("POSTHORN_ATTEMPT_TIMEOUT", "2s"),
        ("POSTHORN_LEASE_MARGIN", "1s"),
    ];
    let mut node = Node::start(&db.url, &env).await;
    let hook_url = format!("http://127.0.0.1:{port}/ops");
    let r = node
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": hook_url, "secret": HOOK_SECRET, "eventTypes": subscriptions(&ALL)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = node
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "http://127.0.0.1:9/x"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    node.kill().await;

    let rx = TestReceiver::start_on(port).await;
    let _node = Node::start(&db.url, &env).await;
    let got = rx.wait_for("/ops", 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received("/ops").len(), 1, "{:?}", told(&rx, "/ops"));
    let b = body(&got[0]);
    assert_eq!(b["eventName"], "endpoint.created");
    assert_eq!(b["data"]["url"], "http://127.0.0.1:9/x");
    assert!(signed_with(HOOK_SECRET, &got[0]));
}

#[tokio::test]
async fn failing_hooks_do_not_tell_each_other_of_their_failures() {
    let app = app_with("50ms", |_| {}).await;
    let rx = TestReceiver::start().await;
    rx.always("/a", Reply::Status(500));
    rx.always("/b", Reply::Status(500));
    hook(&app, &app.admin_key, &rx.url("/a")).await;
    // B's creation is told to A: one delivery, two attempts, failed.
    hook(&app, &app.admin_key, &rx.url("/b")).await;
    let r = app
        .post("/webhooks/v1/endpoints", &json!({"url": rx.url("/x")}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A: its delivery of B's creation and of X's, each attempted twice; B: X's, twice.
    // Those deliveries failing make no `delivery.failed` (they carry notices), so
    // nothing else arrives.
    exactly(&rx, "/a", 4).await;
    exactly(&rx, "/b", 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received("/a").len(), 4, "{:?}", told(&rx, "/a"));
    assert_eq!(rx.received("/b").len(), 2, "{:?}", told(&rx, "/b"));
}
