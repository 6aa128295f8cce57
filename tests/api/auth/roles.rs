//! Roles and tenancy: publisher and standard keys may only read the catalog, and
//! another org's admin can neither see nor touch this org's keys and endpoints.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, ADMIN_KEY};

use super::{assert_forbidden, create_key_full, endpoint_count, list_keys};

/// A `role` key may read the catalog and nothing else; its refused calls change nothing.
async fn only_catalog_reads_for(role: &str) {
    let app = spawn_app().await;
    let ep = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "https://example.com/hook"}),
        )
        .await;
    assert_eq!(ep.status, 200, "{}", ep.text);
    let ep_id = ep.body["id"].as_str().expect("id").to_owned();
    let victim = create_key_full(&app, json!({"role": "standard", "name": "victim"})).await;
    let victim_id = victim["id"].as_str().expect("id").to_owned();
    let key = app.create_key(role).await;
    let keys_before = list_keys(&app, ADMIN_KEY).await.len();

    let refused: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/webhooks/v1/endpoints".into(),
            Some(json!({"url": "https://example.com/other"})),
        ),
        (Method::GET, "/webhooks/v1/endpoints".into(), None),
        (Method::GET, format!("/webhooks/v1/endpoints/{ep_id}"), None),
        (
            Method::POST,
            format!("/webhooks/v1/endpoints/{ep_id}"),
            Some(json!({"disabled": true})),
        ),
        (
            Method::DELETE,
            format!("/webhooks/v1/endpoints/{ep_id}"),
            None,
        ),
        (
            Method::POST,
            "/webhooks/v1/keys".into(),
            Some(json!({"role": "admin"})),
        ),
        (Method::GET, "/webhooks/v1/keys".into(), None),
        (
            Method::DELETE,
            format!("/webhooks/v1/keys/{victim_id}"),
            None,
        ),
        (
            Method::POST,
            "/webhooks/v1/event-types".into(),
            Some(json!({"eventName": "invoice.paid"})),
        ),
        (
            Method::POST,
            "/webhooks/v1/event-types/metric.alert/subcategories".into(),
            Some(json!({"displayName": "x"})),
        ),
    ];
    for (method, path, body) in refused {
        let what = format!("{role} {method} {path}");
        let resp = app.call(method, &path, Some(&key), body.as_ref()).await;
        assert_forbidden(&resp, &what);
    }

    // The catalog is readable.
    let types = app
        .call(Method::GET, "/webhooks/v1/event-types", Some(&key), None)
        .await;
    assert_eq!(types.status, 200, "{}", types.text);
    assert!(
        types.body["eventDefs"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        types.text
    );
    let subs = app
        .call(
            Method::GET,
            "/webhooks/v1/event-types/metric.alert/subcategories",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(subs.status, 200, "{}", subs.text);

    // Nothing the refused calls aimed at changed.
    let got = app.get(&format!("/webhooks/v1/endpoints/{ep_id}")).await;
    assert_eq!(got.status, 200, "endpoint deleted by a {role} key");
    assert_eq!(
        got.body["enabled"], true,
        "endpoint disabled by a {role} key"
    );
    assert_eq!(endpoint_count(&app, ADMIN_KEY).await, 1);
    let keys = list_keys(&app, ADMIN_KEY).await;
    assert_eq!(keys.len(), keys_before, "a {role} key created a key");
    let victim_entry = keys
        .iter()
        .find(|k| k["id"] == victim_id.as_str())
        .expect("victim listed");
    assert!(victim_entry.get("revoked").is_none(), "revoked by {role}");
    let types = app.get("/webhooks/v1/event-types").await;
    assert!(!types.text.contains("invoice.paid"), "{}", types.text);
    let subs = app
        .get("/webhooks/v1/event-types/metric.alert/subcategories")
        .await;
    assert_eq!(subs.body, json!({}), "a {role} key minted a subcategory");
}

#[tokio::test]
async fn publisher_key_may_only_read_the_catalog() {
    only_catalog_reads_for("publisher").await;
}

#[tokio::test]
async fn standard_key_may_only_read_the_catalog() {
    only_catalog_reads_for("standard").await;
}

#[tokio::test]
async fn another_orgs_admin_cannot_see_or_touch_this_orgs_keys_and_endpoints() {
    let app = spawn_app().await;
    let url = "https://example.com/tenant-a";
    let ep = app
        .post("/webhooks/v1/endpoints", &json!({"url": url}))
        .await;
    assert_eq!(ep.status, 200, "{}", ep.text);
    let ep_id = ep.body["id"].as_str().expect("id").to_owned();
    let a_key = create_key_full(&app, json!({"role": "admin", "name": "a-extra"})).await;
    let a_key_id = a_key["id"].as_str().expect("id").to_owned();
    let a_ids: HashSet<String> = list_keys(&app, ADMIN_KEY)
        .await
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_owned())
        .collect();

    let b = app.key_for_org("o-other", "admin").await;

    // Keys: B sees only its own, cannot revoke A's.
    let b_keys = list_keys(&app, &b).await;
    assert!(!b_keys.is_empty(), "B's list should show B's own key");
    for k in &b_keys {
        assert!(
            !a_ids.contains(k["id"].as_str().expect("id")),
            "B sees A's key {k}"
        );
    }
    app.call(
        Method::DELETE,
        &format!("/webhooks/v1/keys/{a_key_id}"),
        Some(&b),
        None,
    )
    .await
    .assert_error(404, "resource_not_found");
    let still = app
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some(a_key["key"].as_str().expect("key")),
            None,
        )
        .await;
    assert_eq!(
        still.status, 200,
        "A's key was revoked by B: {}",
        still.text
    );

    // Endpoints: invisible and untouchable.
    assert_eq!(endpoint_count(&app, &b).await, 0);
    let path = format!("/webhooks/v1/endpoints/{ep_id}");
    app.call(Method::GET, &path, Some(&b), None)
        .await
        .assert_error(404, "resource_not_found");
    app.call(
        Method::POST,
        &path,
        Some(&b),
        Some(&json!({"disabled": true})),
    )
    .await
    .assert_error(404, "resource_not_found");
    app.call(Method::DELETE, &path, Some(&b), None)
        .await
        .assert_error(404, "resource_not_found");
    let got = app.get(&path).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["enabled"], true);

    // The same URL is free in another org.
    let b_ep = app
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(&b),
            Some(&json!({"url": url})),
        )
        .await;
    assert_eq!(b_ep.status, 200, "{}", b_ep.text);
    assert_eq!(endpoint_count(&app, ADMIN_KEY).await, 1);
    assert_eq!(endpoint_count(&app, &b).await, 1);
}
