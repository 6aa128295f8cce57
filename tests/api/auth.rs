//! Authentication, roles, API keys, tenancy and rate limiting (CONTRACT §1 and §2).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::helpers::{spawn_app, spawn_app_with, Resp, TestApp, ADMIN_KEY, ORG};

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

#[tokio::test]
async fn no_authorization_header_is_401_with_the_contract_body() {
    let app = spawn_app().await;
    for path in [
        "/webhooks/v1/endpoints",
        "/webhooks/v1/endpoints/aHR0cHM6Ly9leGFtcGxlLmNvbS9h",
        "/webhooks/v1/event-types",
        "/webhooks/v1/event-types/metric.alert/subcategories",
        "/webhooks/v1/keys",
    ] {
        let resp = app.call(Method::GET, path, None, None).await;
        assert_unauthorized(&resp, path);
    }
    // A write without a key is refused and changes nothing.
    let resp = app
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            None,
            Some(&json!({"url": "https://example.com/hook"})),
        )
        .await;
    assert_unauthorized(&resp, "POST /endpoints without a key");
    assert_eq!(endpoint_count(&app, ADMIN_KEY).await, 0);
}

#[tokio::test]
async fn unknown_key_is_401() {
    let app = spawn_app().await;
    for header in [
        "Basic not-a-key".to_owned(),
        "Bearer not-a-key".to_owned(),
        "Basic ph_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        // One character off the real key.
        format!("Basic {}x", ADMIN_KEY),
        format!("Basic {}", &ADMIN_KEY[..ADMIN_KEY.len() - 1]),
    ] {
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/endpoints", Some(&header)).await;
        assert_unauthorized(&resp, &header);
    }
}

#[tokio::test]
async fn malformed_authorization_header_is_401() {
    let app = spawn_app().await;
    for header in [
        "Basic".to_owned(),
        "Bearer".to_owned(),
        "Token xyz".to_owned(),
        // A valid key under a scheme posthorn does not accept.
        format!("Token {ADMIN_KEY}"),
        // The key alone, without a scheme.
        ADMIN_KEY.to_owned(),
    ] {
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/endpoints", Some(&header)).await;
        assert_unauthorized(&resp, &header);
    }
}

#[tokio::test]
async fn basic_and_bearer_both_authenticate() {
    let app = spawn_app().await;
    for header in [format!("Basic {ADMIN_KEY}"), format!("Bearer {ADMIN_KEY}")] {
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/endpoints", Some(&header)).await;
        assert_eq!(resp.status, 200, "{header}: {}", resp.text);
        let resp =
            with_authorization(&app, Method::GET, "/webhooks/v1/event-types", Some(&header)).await;
        assert_eq!(resp.status, 200, "{header}: {}", resp.text);
    }
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_works_at_once() {
    let app = spawn_app().await;
    let created = create_key_full(&app, json!({"role": "admin", "name": "ci"})).await;
    let obj = created.as_object().expect("object");
    let fields: HashSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        HashSet::from(["id", "role", "name", "created", "key"]),
        "{created}"
    );
    assert_eq!(created["role"], "admin");
    assert_eq!(created["name"], "ci");
    assert_timestamp(&created["created"], "created");
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(!key.is_empty() && !id.is_empty());
    assert_ne!(key, id, "the id must not be the key");

    // The new key works at once, for admin operations.
    let resp = app
        .call(Method::GET, "/webhooks/v1/keys", Some(&key), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let resp = app
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(&key),
            Some(&json!({"url": "https://example.com/by-new-key"})),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);

    // Without a name: no `name` key. Every key is different.
    let other = create_key_full(&app, json!({"role": "publisher"})).await;
    assert!(other.get("name").is_none(), "{other}");
    assert_eq!(other["role"], "publisher");
    assert_ne!(other["key"], created["key"]);
    assert_ne!(other["id"], created["id"]);
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once() {
    let app = spawn_app().await;
    let created = create_key_full(&app, json!({"role": "admin"})).await;
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let resp = app
        .call(Method::GET, "/webhooks/v1/endpoints", Some(&key), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);

    let revoked = app.delete(&format!("/webhooks/v1/keys/{id}")).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.body, json!({}));

    for header in [format!("Basic {key}"), format!("Bearer {key}")] {
        for path in ["/webhooks/v1/endpoints", "/webhooks/v1/event-types"] {
            let resp = with_authorization(&app, Method::GET, path, Some(&header)).await;
            assert_unauthorized(&resp, &format!("revoked key on {path}"));
        }
    }
    // The key that revoked it is unaffected.
    assert_eq!(app.get("/webhooks/v1/endpoints").await.status, 200);

    // The list shows the revocation on that key only.
    let keys = list_keys(&app, ADMIN_KEY).await;
    let entry = keys
        .iter()
        .find(|k| k["id"] == id.as_str())
        .expect("revoked key still listed");
    assert_timestamp(&entry["revoked"], "revoked");
    for other in keys.iter().filter(|k| k["id"] != id.as_str()) {
        assert!(other.get("revoked").is_none(), "{other}");
    }
}

#[tokio::test]
async fn revoking_an_unknown_key_is_404() {
    let app = spawn_app().await;
    app.delete("/webhooks/v1/keys/k_doesnotexist")
        .await
        .assert_error(404, "resource_not_found");
}

#[tokio::test]
async fn key_list_never_shows_a_key_or_its_hash() {
    let app = spawn_app().await;
    let a = create_key_full(&app, json!({"role": "admin", "name": "first"})).await;
    let b = create_key_full(&app, json!({"role": "standard"})).await;
    let resp = app.get("/webhooks/v1/keys").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let keys = resp.body["keys"].as_array().expect("keys array").clone();

    let listed: HashSet<&str> = keys.iter().filter_map(|k| k["id"].as_str()).collect();
    for created in [&a, &b] {
        assert!(
            listed.contains(created["id"].as_str().expect("id")),
            "{created} not in {keys:?}"
        );
    }
    let allowed = HashSet::from(["id", "role", "name", "created", "revoked"]);
    for item in &keys {
        for field in item.as_object().expect("object").keys() {
            assert!(
                allowed.contains(field.as_str()),
                "unexpected {field}: {item}"
            );
        }
        assert_timestamp(&item["created"], "created");
    }
    let entry_a = keys.iter().find(|k| k["id"] == a["id"]).expect("a listed");
    assert_eq!(entry_a["role"], "admin");
    assert_eq!(entry_a["name"], "first");
    let entry_b = keys.iter().find(|k| k["id"] == b["id"]).expect("b listed");
    assert_eq!(entry_b["role"], "standard");

    for raw in [
        a["key"].as_str().expect("key"),
        b["key"].as_str().expect("key"),
        ADMIN_KEY,
    ] {
        let digest = Sha256::digest(raw.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let forms = [
            raw.to_owned(),
            hex.clone(),
            hex.to_uppercase(),
            base64::engine::general_purpose::STANDARD.encode(digest),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest),
        ];
        for form in forms {
            assert!(
                !resp.text.contains(&form),
                "key list leaks a key or its hash: {}",
                resp.text
            );
        }
    }
}

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

#[tokio::test]
async fn creating_a_key_validates_the_role() {
    let app = spawn_app().await;
    let before = list_keys(&app, ADMIN_KEY).await.len();
    for role in [json!("superuser"), json!("ADMIN"), json!("Admin"), json!(5)] {
        let resp = app
            .post("/webhooks/v1/keys", &json!({"role": role, "name": "x"}))
            .await;
        resp.assert_error(400, "invalid_field");
        assert!(resp.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("role")));
    }
    for body in [json!({}), json!({"name": "no role"})] {
        let resp = app.post("/webhooks/v1/keys", &body).await;
        resp.assert_error(400, "required_field");
        assert!(resp.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("role")));
    }
    assert_eq!(list_keys(&app, ADMIN_KEY).await.len(), before);
}

#[tokio::test]
async fn rate_limit_is_per_key_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit = 2;
        c.rate_limit_burst = Some(2);
    })
    .await;
    // Minted by the CLI, so the admin key's budget is untouched.
    let other = app.key_for_org(ORG, "admin").await;

    // Ten requests at once: a rate of 2/s with a burst of 2 lets about two through.
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let req = app
            .client
            .get(format!("{}/webhooks/v1/event-types", app.base))
            .header("Authorization", format!("Basic {}", app.admin_key));
        burst.spawn(async move { TestApp::read(req.send().await.expect("sent")).await });
    }
    let mut answers = Vec::new();
    while let Some(r) = burst.join_next().await {
        answers.push(r.expect("request task"));
    }
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert!(
        answers.iter().all(|r| r.status == 200 || r.status == 429),
        "{answers:?}"
    );
    assert!(ok >= 2, "the burst of 2 was not allowed: {ok} succeeded");
    assert!(
        ok <= 4,
        "{ok} of 10 simultaneous requests passed a 2/s limit"
    );
    let limited = answers.into_iter().find(|r| r.status == 429);
    let limited = limited.expect("10 simultaneous requests at 2/s never got a 429");
    limited.assert_error(429, "too_many_requests");
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .expect("429 without Retry-After")
        .to_str()
        .expect("ascii")
        .trim()
        .parse()
        .expect("Retry-After is a whole number of seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert!(
        retry_after <= 5,
        "Retry-After too long for 2/s: {retry_after}"
    );

    // Another key of the same org is not limited by the first one's burst.
    for _ in 0..2 {
        let resp = app
            .call(Method::GET, "/webhooks/v1/event-types", Some(&other), None)
            .await;
        assert_eq!(resp.status, 200, "{}", resp.text);
    }

    // Waiting as told is enough.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let resp = app.get("/webhooks/v1/event-types").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}
