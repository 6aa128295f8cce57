//! The event catalog: Fullstory's List Event Types and List Event Subcategories, and
//! posthorn's admin operations to add types and mint subcategories.

use std::collections::{BTreeMap, HashSet};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

const TYPES: &str = "/webhooks/v1/event-types";

fn subs(event_name: &str) -> String {
    format!("/webhooks/v1/event-types/{event_name}/subcategories")
}

/// The default catalog: name → hasSubcategories.
fn default_catalog() -> BTreeMap<String, bool> {
    [
        ("note.created", false),
        ("segment.created", false),
        ("nativemobile.event.crash", false),
        ("segment.trend.alert", true),
        ("metric.alert", true),
        ("recording.event.custom", true),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_owned(), s))
    .collect()
}

/// The catalog as `key` sees it, checking the shape of every item: name → item.
async fn catalog(app: &TestApp, key: &str) -> BTreeMap<String, Value> {
    let resp = app.call(Method::GET, TYPES, Some(key), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let obj = resp.body.as_object().expect("object");
    assert!(
        obj.keys().all(|k| k == "eventDefs"),
        "unexpected fields: {}",
        resp.text
    );
    let defs = resp.body["eventDefs"].as_array().expect("eventDefs array");
    let mut out = BTreeMap::new();
    for def in defs {
        let fields: HashSet<&str> = def
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            HashSet::from(["eventName", "displayName", "hasSubcategories"]),
            "{def}"
        );
        let name = def["eventName"].as_str().expect("eventName string");
        assert!(
            def["displayName"].as_str().is_some_and(|d| !d.is_empty()),
            "{def}"
        );
        assert!(def["hasSubcategories"].is_boolean(), "{def}");
        assert!(
            out.insert(name.to_owned(), def.clone()).is_none(),
            "{name} listed twice"
        );
    }
    out
}

fn has_subcategories(catalog: &BTreeMap<String, Value>) -> BTreeMap<String, bool> {
    catalog
        .iter()
        .map(|(n, d)| (n.clone(), d["hasSubcategories"].as_bool().expect("bool")))
        .collect()
}

/// Mints a subcategory as the admin and returns the answer.
async fn mint(app: &TestApp, event_name: &str, body: Value) -> Value {
    let resp = app.post(&subs(event_name), &body).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.body
}

/// One page of subcategories: (defs, nextPaginationToken).
async fn page(app: &TestApp, query: &str) -> (Vec<Value>, Option<String>) {
    let resp = app.get(query).await;
    assert_eq!(resp.status, 200, "{query}: {}", resp.text);
    let defs = resp
        .body
        .get("subcategoryDefs")
        .map(|d| d.as_array().expect("subcategoryDefs array").clone())
        .unwrap_or_default();
    let token = resp
        .body
        .get("nextPaginationToken")
        .map(|t| t.as_str().expect("token string").to_owned());
    if let Some(t) = &token {
        assert!(!t.is_empty(), "empty nextPaginationToken must be omitted");
    }
    (defs, token)
}

fn tokens(defs: &[Value]) -> Vec<String> {
    defs.iter()
        .map(|d| d["subcategory"].as_str().expect("subcategory").to_owned())
        .collect()
}

#[tokio::test]
async fn default_catalog_is_fullstorys_six_types() {
    let app = spawn_app().await;
    let got = catalog(&app, &app.admin_key).await;
    assert_eq!(has_subcategories(&got), default_catalog());
    assert!(!got.contains_key("test"), "test must not be listed");

    // A brand-new org starts with the same catalog.
    let fresh = app.key_for_org("o-fresh", "standard").await;
    let fresh_catalog = catalog(&app, &fresh).await;
    assert_eq!(has_subcategories(&fresh_catalog), default_catalog());
}

#[tokio::test]
async fn minted_subcategories_are_listed_with_their_display_names() {
    let app = spawn_app().await;
    let named = mint(&app, "metric.alert", json!({"displayName": "CPU high"})).await;
    assert_eq!(named.as_object().expect("object").len(), 2, "{named}");
    assert_eq!(named["displayName"], "CPU high");
    let unnamed = mint(&app, "metric.alert", json!({})).await;
    assert_eq!(
        unnamed.as_object().expect("object").len(),
        1,
        "no displayName key expected: {unnamed}"
    );
    // snake_case input is accepted.
    let snake = mint(&app, "metric.alert", json!({"display_name": "Memory"})).await;
    assert_eq!(snake["displayName"], "Memory");

    let minted: Vec<&Value> = vec![&named, &unnamed, &snake];
    let distinct: HashSet<&str> = minted
        .iter()
        .map(|m| m["subcategory"].as_str().expect("subcategory string"))
        .collect();
    assert_eq!(distinct.len(), 3, "tokens must differ: {minted:?}");
    assert!(distinct.iter().all(|t| !t.is_empty()));

    let (defs, token) = page(&app, &subs("metric.alert")).await;
    assert!(token.is_none(), "one short page has no token");
    assert_eq!(defs.len(), 3, "{defs:?}");
    for m in &minted {
        let listed = defs
            .iter()
            .find(|d| d["subcategory"] == m["subcategory"])
            .unwrap_or_else(|| panic!("{m} not listed in {defs:?}"));
        assert_eq!(listed, *m, "listed form differs from minted form");
    }

    // Subcategories belong to their type.
    assert_eq!(app.get(&subs("segment.trend.alert")).await.body, json!({}));
}

#[tokio::test]
async fn subcategory_pages_visit_each_item_exactly_once() {
    let app = spawn_app().await;
    let mut minted = Vec::new();
    for i in 0..7 {
        let m = mint(
            &app,
            "recording.event.custom",
            json!({"displayName": format!("sub {i}")}),
        )
        .await;
        minted.push(m["subcategory"].as_str().expect("token").to_owned());
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut query = format!("{}?limit=3", subs("recording.event.custom"));
    loop {
        let (defs, token) = page(&app, &query).await;
        sizes.push(defs.len());
        seen.extend(tokens(&defs));
        match token {
            Some(t) => {
                query = format!(
                    "{}?limit=3&paginationToken={t}",
                    subs("recording.event.custom")
                )
            }
            None => break,
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an item was listed twice: {seen:?}"
    );
    assert_eq!(unique, minted.iter().collect::<HashSet<_>>());

    // snake_case query parameters page the same way.
    let (first, token) = page(&app, &format!("{}?limit=3", subs("recording.event.custom"))).await;
    let token = token.expect("token");
    let (camel, _) = page(
        &app,
        &format!(
            "{}?limit=3&paginationToken={token}",
            subs("recording.event.custom")
        ),
    )
    .await;
    let (snake, _) = page(
        &app,
        &format!(
            "{}?limit=3&pagination_token={token}",
            subs("recording.event.custom")
        ),
    )
    .await;
    assert_eq!(camel, snake);
    assert!(tokens(&first).iter().all(|t| !tokens(&camel).contains(t)));

    // A limit above the count gives one page without a token.
    let (all, token) = page(
        &app,
        &format!("{}?limit=50", subs("recording.event.custom")),
    )
    .await;
    assert_eq!(all.len(), 7);
    assert!(token.is_none());
}

#[tokio::test]
async fn subcategory_limit_defaults_to_and_is_clamped_at_1000() {
    let app = spawn_app_with(|c| c.rate_limit = 0).await;
    const TOTAL: usize = 1005;
    const WORKERS: usize = 16;
    let mut set = JoinSet::new();
    for w in 0..WORKERS {
        let client = app.client.clone();
        let url = format!("{}{}", app.base, subs("metric.alert"));
        let key = app.admin_key.clone();
        let n = TOTAL / WORKERS + usize::from(w < TOTAL % WORKERS);
        set.spawn(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let resp = client
                    .post(&url)
                    .header("Authorization", format!("Basic {key}"))
                    .json(&json!({}))
                    .send()
                    .await
                    .expect("request sent");
                let r = TestApp::read(resp).await;
                assert_eq!(r.status, 200, "{}", r.text);
                out.push(r.body["subcategory"].as_str().expect("token").to_owned());
            }
            out
        });
    }
    let mut minted = HashSet::new();
    while let Some(joined) = set.join_next().await {
        minted.extend(joined.expect("worker"));
    }
    assert_eq!(minted.len(), TOTAL);

    let (first, token) = page(&app, &subs("metric.alert")).await;
    assert_eq!(first.len(), 1000, "default page size");
    let token = token.expect("a token after the first 1000");
    let (second, last) = page(
        &app,
        &format!("{}?paginationToken={token}", subs("metric.alert")),
    )
    .await;
    assert_eq!(second.len(), 5);
    assert!(last.is_none());
    let seen: HashSet<String> = tokens(&first).into_iter().chain(tokens(&second)).collect();
    assert_eq!(seen, minted);

    let (clamped, token) = page(&app, &format!("{}?limit=5000", subs("metric.alert"))).await;
    assert_eq!(clamped.len(), 1000, "limit must be clamped at 1000");
    assert!(token.is_some());
}

#[tokio::test]
async fn subcategories_of_unknown_or_flat_types() {
    let app = spawn_app().await;
    app.get(&subs("no.such.type"))
        .await
        .assert_error(404, "resource_not_found");
    let flat = app.get(&subs("note.created")).await;
    assert_eq!(flat.status, 200, "{}", flat.text);
    assert_eq!(flat.body, json!({}));

    app.post(&subs("no.such.type"), &json!({"displayName": "x"}))
        .await
        .assert_error(404, "resource_not_found");
    let resp = app
        .post(&subs("note.created"), &json!({"displayName": "x"}))
        .await;
    resp.assert_error(400, "invalid_field");
    assert_eq!(app.get(&subs("note.created")).await.body, json!({}));
    // `test` is not in the catalog.
    app.get(&subs("test"))
        .await
        .assert_error(404, "resource_not_found");
}

#[tokio::test]
async fn creating_an_event_type_validates_the_name() {
    let app = spawn_app().await;
    for name in ["Bad Name", "UPPER", "note created", "note.created!"] {
        let resp = app
            .post(TYPES, &json!({"eventName": name, "displayName": "x"}))
            .await;
        resp.assert_error(400, "invalid_field");
        assert!(
            resp.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("eventName")),
            "{}",
            resp.text
        );
    }
    for body in [json!({"eventName": ""}), json!({"displayName": "no name"})] {
        let resp = app.post(TYPES, &body).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.text);
        let code = resp.body["code"].as_str().unwrap_or_default().to_owned();
        assert!(
            code == "required_field" || code == "invalid_field",
            "{}",
            resp.text
        );
        resp.assert_error(400, &code);
    }
    app.post(TYPES, &json!({"eventName": "test"}))
        .await
        .assert_error(400, "invalid_field");
    app.post(
        TYPES,
        &json!({"eventName": "note.created", "displayName": "Other"}),
    )
    .await
    .assert_error(409, "already_exists");

    // None of that changed the catalog.
    let got = catalog(&app, &app.admin_key).await;
    assert_eq!(has_subcategories(&got), default_catalog());
    assert_ne!(got["note.created"]["displayName"], "Other");
}

#[tokio::test]
async fn a_created_event_type_is_listed_and_usable() {
    let app = spawn_app().await;
    let paid = app
        .post(
            TYPES,
            &json!({"eventName": "invoice.paid", "displayName": "Invoice paid", "hasSubcategories": true}),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text);
    assert_eq!(
        paid.body,
        json!({"eventName": "invoice.paid", "displayName": "Invoice paid", "hasSubcategories": true})
    );
    let void = app.post(TYPES, &json!({"eventName": "invoice.void"})).await;
    assert_eq!(void.status, 200, "{}", void.text);
    assert_eq!(void.body["eventName"], "invoice.void");
    assert_eq!(void.body["hasSubcategories"], false);
    assert!(void.body["displayName"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    let snake = app
        .post(
            TYPES,
            &json!({"event_name": "user.signup", "display_name": "User signup", "has_subcategories": true}),
        )
        .await;
    assert_eq!(snake.status, 200, "{}", snake.text);
    assert_eq!(
        snake.body,
        json!({"eventName": "user.signup", "displayName": "User signup", "hasSubcategories": true})
    );

    let got = catalog(&app, &app.admin_key).await;
    assert_eq!(got.len(), 9);
    assert_eq!(got["invoice.paid"], paid.body);
    assert_eq!(got["invoice.void"], void.body);
    assert_eq!(got["user.signup"], snake.body);

    // A second create is a conflict and does not overwrite.
    app.post(
        TYPES,
        &json!({"eventName": "invoice.paid", "displayName": "Changed", "hasSubcategories": false}),
    )
    .await
    .assert_error(409, "already_exists");
    assert_eq!(
        catalog(&app, &app.admin_key).await["invoice.paid"],
        paid.body
    );

    // Subcategories follow the type's flag.
    let sub = mint(&app, "invoice.paid", json!({"displayName": "EUR"})).await;
    app.post(&subs("invoice.void"), &json!({}))
        .await
        .assert_error(400, "invalid_field");
    assert_eq!(app.get(&subs("invoice.void")).await.body, json!({}));

    // Endpoints can subscribe to the new types.
    let ep = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({
                "url": "https://example.com/invoices",
                "eventTypes": [
                    {"eventName": "invoice.void"},
                    {"eventName": "invoice.paid", "subcategory": sub["subcategory"]},
                ],
            }),
        )
        .await;
    assert_eq!(ep.status, 200, "{}", ep.text);
    assert_eq!(ep.body["eventTypes"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn the_catalog_is_per_org() {
    let app = spawn_app().await;
    let created = app
        .post(
            TYPES,
            &json!({"eventName": "invoice.paid", "hasSubcategories": true}),
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    mint(&app, "invoice.paid", json!({"displayName": "EUR"})).await;
    let alert_sub = mint(&app, "metric.alert", json!({"displayName": "CPU"})).await;

    let b = app.key_for_org("o-b", "admin").await;
    let b_catalog = catalog(&app, &b).await;
    assert_eq!(has_subcategories(&b_catalog), default_catalog());
    app.call(Method::GET, &subs("invoice.paid"), Some(&b), None)
        .await
        .assert_error(404, "resource_not_found");
    app.call(
        Method::POST,
        &subs("invoice.paid"),
        Some(&b),
        Some(&json!({})),
    )
    .await
    .assert_error(404, "resource_not_found");
    let b_alert = app
        .call(Method::GET, &subs("metric.alert"), Some(&b), None)
        .await;
    assert_eq!(b_alert.status, 200);
    assert_eq!(b_alert.body, json!({}), "A's subcategories leak to B");

    // A's subcategory token means nothing in B.
    let resp = app
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(&b),
            Some(&json!({
                "url": "https://example.com/b",
                "eventTypes": [{"eventName": "metric.alert", "subcategory": alert_sub["subcategory"]}],
            })),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);

    // B may create a type of the same name: names are per org.
    let b_created = app
        .call(
            Method::POST,
            TYPES,
            Some(&b),
            Some(&json!({"eventName": "invoice.paid"})),
        )
        .await;
    assert_eq!(b_created.status, 200, "{}", b_created.text);
    assert_eq!(b_created.body["hasSubcategories"], false);
    // ...which does not change A's.
    assert_eq!(
        catalog(&app, &app.admin_key).await["invoice.paid"]["hasSubcategories"],
        true
    );
}
