//! The five Fullstory endpoint operations (CONTRACT §1–3), over real HTTP.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::helpers::{spawn_app, Resp, TestApp};

const EP: &str = "/webhooks/v1/endpoints";
const FS_URL: &str = "https://example.com/fullstory-webhooks";
const FS_ID: &str = "aHR0cHM6Ly9leGFtcGxlLmNvbS9mdWxsc3Rvcnktd2ViaG9va3M";

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

/// Unpadded base64url, written out here so the test does not share the server's code.
fn b64url(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, by hand.
fn is_rfc3339_millis_utc(s: &str) -> bool {
    let pattern = "0000-00-00T00:00:00.000Z";
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'0' => c.is_ascii_digit(),
            other => c == other,
        })
}

fn path_of(id: &str) -> String {
    format!("{EP}/{id}")
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("id is a string").to_owned()
}

/// Creates an endpoint as the admin and returns the answer's body.
async fn create(app: &TestApp, body: Value) -> Value {
    let resp = app.post(EP, &body).await;
    assert_eq!(resp.status, 200, "create {body}: {}", resp.text);
    resp.body
}

async fn create_url(app: &TestApp, url: &str) -> Value {
    create(app, json!({ "url": url })).await
}

/// Every endpoint of the admin's org, following tokens.
async fn list_all(app: &TestApp) -> Vec<Value> {
    list_all_with(app, &app.admin_key).await
}

async fn list_all_with(app: &TestApp, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let path = match &token {
            Some(t) => format!("{EP}?paginationToken={t}"),
            None => EP.to_owned(),
        };
        let resp = app.call(Method::GET, &path, Some(key), None).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        if let Some(items) = resp.body.get("endpoints") {
            out.extend(items.as_array().expect("endpoints is an array").clone());
        }
        match resp.body.get("nextPaginationToken") {
            Some(t) => token = Some(t.as_str().expect("token is a string").to_owned()),
            None => return out,
        }
    }
    panic!("pagination never ended");
}

/// Sends `raw` bytes as an `application/json` body.
async fn send_raw(app: &TestApp, method: Method, path: &str, raw: &str) -> Resp {
    let resp = app
        .client
        .request(method, format!("{}{}", app.base, path))
        .header("Authorization", format!("Basic {}", app.admin_key))
        .header("Content-Type", "application/json")
        .body(raw.to_owned())
        .send()
        .await
        .expect("request sent");
    TestApp::read(resp).await
}

/// Creates `n` endpoints at once (`https://example.com/many/{i}`), concurrently.
async fn create_many(app: &TestApp, n: usize) -> HashSet<String> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = app.client.clone();
        let url = format!("{}{}", app.base, EP);
        let key = app.admin_key.clone();
        set.spawn(async move {
            let resp = client
                .post(url)
                .header("Authorization", format!("Basic {key}"))
                .json(&json!({ "url": format!("https://example.com/many/{i}") }))
                .send()
                .await
                .expect("request sent");
            TestApp::read(resp).await
        });
    }
    let mut ids = HashSet::new();
    while let Some(joined) = set.join_next().await {
        let resp = joined.expect("task ran");
        assert_eq!(resp.status, 200, "{}", resp.text);
        ids.insert(id_of(&resp.body));
    }
    assert_eq!(ids.len(), n);
    ids
}

fn page_ids(body: &Value) -> Vec<String> {
    body.get("endpoints")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(id_of).collect())
        .unwrap_or_default()
}

/// No `secret` key anywhere in `body` (top level, or in each listed endpoint).
#[track_caller]
fn assert_no_secret(resp: &Resp, minted: Option<&str>) {
    assert!(resp.body.get("secret").is_none(), "{}", resp.text);
    if let Some(items) = resp.body.get("endpoints").and_then(Value::as_array) {
        for item in items {
            assert!(item.get("secret").is_none(), "{}", resp.text);
        }
    }
    if let Some(secret) = minted {
        assert!(!resp.text.contains(secret), "secret leaked: {}", resp.text);
    }
}

// ---------------------------------------------------------------------------------------
// Create: shape of the answer
// ---------------------------------------------------------------------------------------

#[test]
fn local_b64url_matches_the_contract_example() {
    assert_eq!(b64url(FS_URL), FS_ID);
    assert_eq!(b64url("a"), "YQ");
    assert_eq!(b64url("ab"), "YWI");
    assert_eq!(b64url("abc"), "YWJj");
    assert!(is_rfc3339_millis_utc("2020-04-01T21:53:58.200Z"));
    assert!(!is_rfc3339_millis_utc("2020-04-01T21:53:58Z"));
    assert!(!is_rfc3339_millis_utc("2020-04-01T21:53:58.200000Z"));
    assert!(!is_rfc3339_millis_utc("2020-04-01T21:53:58.200+00:00"));
}

#[tokio::test]
async fn create_returns_endpoint_with_url_derived_id_timestamps_and_minted_secret() {
    let app = spawn_app().await;
    let resp = app
        .post(
            EP,
            &json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}]}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let body = &resp.body;
    assert_eq!(body["id"], FS_ID);
    assert_eq!(body["url"], FS_URL);
    assert_eq!(body["enabled"], true);
    assert_eq!(body["eventTypes"], json!([{"eventName": "note.created"}]));
    for field in ["created", "modified"] {
        let ts = body[field].as_str().expect("timestamp is a string");
        assert!(
            is_rfc3339_millis_utc(ts),
            "{field} is not RFC 3339 UTC with milliseconds: {ts}"
        );
    }
    let secret = body["secret"].as_str().expect("minted secret returned");
    assert!(!secret.is_empty());

    // Another URL gets its own, URL-derived id, and another minted secret.
    let other_url = "https://hooks.example.org/a/b?c=d";
    let other = create_url(&app, other_url).await;
    assert_eq!(other["id"], b64url(other_url));
    let other_secret = other["secret"].as_str().expect("minted secret returned");
    assert_ne!(other_secret, secret, "minted secrets must differ");
}

#[tokio::test]
async fn create_with_a_secret_does_not_echo_it() {
    let app = spawn_app().await;
    let given = "my-own-secret-0123456789";
    let resp = app.post(EP, &json!({"url": FS_URL, "secret": given})).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp.body.get("secret").is_none(), "{}", resp.text);
    assert!(!resp.text.contains(given), "{}", resp.text);
}

#[tokio::test]
async fn secret_never_appears_in_get_list_or_update() {
    let app = spawn_app().await;
    let created = create_url(&app, FS_URL).await;
    let minted = created["secret"]
        .as_str()
        .expect("minted secret")
        .to_owned();
    let given = "given-secret-abcdefgh";
    let with_given = create(
        &app,
        json!({"url": "https://example.com/given", "secret": given}),
    )
    .await;

    for (id, secret) in [
        (FS_ID.to_owned(), minted.as_str()),
        (id_of(&with_given), given),
    ] {
        let got = app.get(&path_of(&id)).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_no_secret(&got, Some(secret));

        let updated = app.post(&path_of(&id), &json!({})).await;
        assert_eq!(updated.status, 200, "{}", updated.text);
        assert_no_secret(&updated, Some(secret));

        let new_secret = "rotated-secret-0123456789";
        let updated = app
            .post(&path_of(&id), &json!({"secret": new_secret}))
            .await;
        assert_eq!(updated.status, 200, "{}", updated.text);
        assert_no_secret(&updated, Some(new_secret));
        assert_no_secret(&updated, Some(secret));
    }
    let list = app.get(EP).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(page_ids(&list.body).len(), 2, "{}", list.text);
    assert_no_secret(&list, Some(&minted));
    assert_no_secret(&list, Some(given));
}

// ---------------------------------------------------------------------------------------
// Empty values omitted, `enabled` always present
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn endpoint_without_event_types_has_no_event_types_key() {
    let app = spawn_app().await;
    let a = create_url(&app, "https://example.com/a").await;
    let b = create(
        &app,
        json!({"url": "https://example.com/b", "eventTypes": []}),
    )
    .await;
    for body in [&a, &b] {
        assert!(body.get("eventTypes").is_none(), "{body}");
        let got = app.get(&path_of(&id_of(body))).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert!(got.body.get("eventTypes").is_none(), "{}", got.text);
    }
    let list = app.get(EP).await;
    for item in list.body["endpoints"].as_array().expect("endpoints") {
        assert!(item.get("eventTypes").is_none(), "{}", list.text);
    }
}

#[tokio::test]
async fn event_type_without_subcategory_has_no_subcategory_key() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}, {"eventName": "segment.created"}]}),
    )
    .await;
    let got = app.get(&path_of(FS_ID)).await;
    let list = app.get(EP).await;
    for types in [
        &created["eventTypes"],
        &got.body["eventTypes"],
        &list.body["endpoints"][0]["eventTypes"],
    ] {
        let items = types.as_array().expect("eventTypes array");
        assert_eq!(items.len(), 2, "{types}");
        for item in items {
            let obj = item.as_object().expect("object");
            assert!(obj.get("subcategory").is_none(), "{types}");
            assert_eq!(obj.len(), 1, "only eventName expected: {types}");
        }
    }
}

#[tokio::test]
async fn enabled_is_always_present_also_when_false() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(
        updated.body.get("enabled"),
        Some(&json!(false)),
        "{}",
        updated.text
    );
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body.get("enabled"), Some(&json!(false)), "{}", got.text);
    let list = app.get(EP).await;
    assert_eq!(
        list.body["endpoints"][0].get("enabled"),
        Some(&json!(false)),
        "{}",
        list.text
    );
}

#[tokio::test]
async fn a_single_page_list_has_no_next_token() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let list = app.get(EP).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(page_ids(&list.body), vec![FS_ID.to_owned()]);
    assert!(
        list.body.get("nextPaginationToken").is_none(),
        "{}",
        list.text
    );
}

#[tokio::test]
async fn empty_list_answers_empty_object() {
    let app = spawn_app().await;
    let list = app.get(EP).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body, json!({}), "{}", list.text);
}

// ---------------------------------------------------------------------------------------
// Both casings, unknown fields
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn snake_case_event_types_accepted_on_create_and_update() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({"url": FS_URL, "event_types": [{"event_name": "note.created"}]}),
    )
    .await;
    assert_eq!(
        created["eventTypes"],
        json!([{"eventName": "note.created"}])
    );
    assert!(created.get("event_types").is_none());

    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"event_types": [{"event_name": "segment.created"}]}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(
        updated.body["eventTypes"],
        json!([{"eventName": "segment.created"}])
    );
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(
        got.body["eventTypes"],
        json!([{"eventName": "segment.created"}])
    );
}

#[tokio::test]
async fn both_casings_of_one_field_in_a_body_are_refused() {
    let app = spawn_app().await;
    let resp = app
        .post(
            EP,
            &json!({
                "url": FS_URL,
                "eventTypes": [{"eventName": "note.created"}],
                "event_types": [{"eventName": "note.created"}],
            }),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    assert!(
        list_all(&app).await.is_empty(),
        "a refused Create saved something"
    );

    create_url(&app, FS_URL).await;
    let resp = app
        .post(
            &path_of(FS_ID),
            &json!({"disabled": true, "eventTypes": [], "event_types": []}),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(
        got.body["enabled"], true,
        "a refused Update changed the endpoint"
    );
}

#[tokio::test]
async fn both_casings_nested_in_an_event_type_are_refused() {
    let app = spawn_app().await;
    let resp = app
        .post(
            EP,
            &json!({
                "url": FS_URL,
                "eventTypes": [{"eventName": "note.created", "event_name": "note.created"}],
            }),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    assert!(
        list_all(&app).await.is_empty(),
        "a refused Create saved something"
    );

    create_url(&app, FS_URL).await;
    let resp = app
        .post(
            &path_of(FS_ID),
            &json!({"event_types": [{"eventName": "note.created", "event_name": "segment.created"}]}),
        )
        .await;
    resp.assert_error(400, "invalid_field");
    let got = app.get(&path_of(FS_ID)).await;
    assert!(got.body.get("eventTypes").is_none(), "{}", got.text);
}

#[tokio::test]
async fn pagination_token_accepted_in_both_casings() {
    let app = spawn_app().await;
    for i in 0..3 {
        create_url(&app, &format!("https://example.com/{i}")).await;
    }
    let first = app.get(&format!("{EP}?limit=2")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(page_ids(&first.body).len(), 2);
    let token = first.body["nextPaginationToken"]
        .as_str()
        .expect("a next token")
        .to_owned();

    let camel = app
        .get(&format!("{EP}?limit=2&paginationToken={token}"))
        .await;
    let snake = app
        .get(&format!("{EP}?limit=2&pagination_token={token}"))
        .await;
    for resp in [&camel, &snake] {
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(
            page_ids(&resp.body),
            vec![b64url("https://example.com/2")],
            "{}",
            resp.text
        );
        assert!(
            resp.body.get("nextPaginationToken").is_none(),
            "{}",
            resp.text
        );
    }
}

#[tokio::test]
async fn both_casings_of_a_query_parameter_are_refused() {
    let app = spawn_app().await;
    for i in 0..3 {
        create_url(&app, &format!("https://example.com/{i}")).await;
    }
    let first = app.get(&format!("{EP}?limit=1")).await;
    let token = first.body["nextPaginationToken"]
        .as_str()
        .expect("a next token")
        .to_owned();
    let resp = app
        .get(&format!(
            "{EP}?paginationToken={token}&pagination_token={token}"
        ))
        .await;
    resp.assert_error(400, "invalid_field");
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({
            "url": FS_URL,
            "colour": "blue",
            "nested": {"anything": [1, 2, 3]},
            "eventTypes": [{"eventName": "note.created", "priority": 5}],
        }),
    )
    .await;
    assert_eq!(created["id"], FS_ID);
    assert!(created.get("colour").is_none());
    assert_eq!(
        created["eventTypes"],
        json!([{"eventName": "note.created"}])
    );

    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"disabled": true, "whatever": null}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], false);

    let list = app.get(&format!("{EP}?limit=5&sort=desc")).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(page_ids(&list.body), vec![FS_ID.to_owned()]);
}

// ---------------------------------------------------------------------------------------
// Create validation
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_or_empty_url_is_a_required_field() {
    let app = spawn_app().await;
    for body in [
        json!({}),
        json!({"eventTypes": [{"eventName": "note.created"}]}),
        json!({"url": ""}),
        json!({"url": null}),
    ] {
        let resp = app.post(EP, &body).await;
        resp.assert_error(400, "required_field");
        assert!(
            resp.body["message"].as_str().unwrap_or("").contains("url"),
            "message should name url: {}",
            resp.text
        );
    }
    // No body at all.
    let resp = app.call(Method::POST, EP, Some(&app.admin_key), None).await;
    resp.assert_error(400, "required_field");
    assert!(
        list_all(&app).await.is_empty(),
        "a refused Create saved something"
    );
}

#[tokio::test]
async fn bad_urls_are_invalid_fields() {
    let app = spawn_app().await;
    let too_long = format!("https://example.com/{}", "a".repeat(2049 - 20));
    assert_eq!(too_long.len(), 2049);
    for bad in [
        "ftp://example.com/hook",
        "/relative/path",
        "example.com/hook",
        "https://u:p@example.com/",
        "https://user@example.com/",
        too_long.as_str(),
        "not a url",
        "mailto:someone@example.com",
        "https://",
    ] {
        let resp = app.post(EP, &json!({ "url": bad })).await;
        resp.assert_error(400, "invalid_field");
        assert!(
            resp.body["message"].as_str().unwrap_or("").contains("url"),
            "message should name url for {bad}: {}",
            resp.text
        );
    }
    assert!(
        list_all(&app).await.is_empty(),
        "a refused Create saved something"
    );

    // A URL of exactly 2048 characters is fine.
    let longest = format!("https://example.com/{}", "a".repeat(2048 - 20));
    assert_eq!(longest.len(), 2048);
    let created = create_url(&app, &longest).await;
    assert_eq!(created["url"], longest.as_str());
}

#[tokio::test]
async fn url_of_the_wrong_type_is_refused() {
    let app = spawn_app().await;
    for body in [json!({"url": 5}), json!({"url": ["https://example.com/"]})] {
        let resp = app.post(EP, &body).await;
        assert_eq!(resp.status, 400, "{}", resp.text);
        assert!(
            matches!(
                resp.body["code"].as_str(),
                Some("invalid_field" | "invalid_json")
            ),
            "{}",
            resp.text
        );
    }
    assert!(list_all(&app).await.is_empty());
}

#[tokio::test]
async fn non_object_or_malformed_json_is_invalid_json() {
    let app = spawn_app().await;
    for raw in [
        "[1, 2]",
        "\"https://example.com/\"",
        "42",
        "null",
        "true",
        "{\"url\": ",
        "{url: 'https://example.com/'}",
        "not json",
    ] {
        let resp = send_raw(&app, Method::POST, EP, raw).await;
        resp.assert_error(400, "invalid_json");
    }
    assert!(
        list_all(&app).await.is_empty(),
        "a refused Create saved something"
    );

    create_url(&app, FS_URL).await;
    for raw in ["[]", "{\"disabled\": tru"] {
        let resp = send_raw(&app, Method::POST, &path_of(FS_ID), raw).await;
        resp.assert_error(400, "invalid_json");
    }
}

#[tokio::test]
async fn duplicate_url_in_one_org_is_a_conflict() {
    let app = spawn_app().await;
    let first = create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await;
    let resp = app.post(EP, &json!({"url": FS_URL})).await;
    resp.assert_error(409, "already_exists");
    let all = list_all(&app).await;
    assert_eq!(all.len(), 1);
    // The first endpoint is untouched by the refused second Create.
    assert_eq!(all[0]["eventTypes"], first["eventTypes"]);
    assert_eq!(all[0]["created"], first["created"]);
}

#[tokio::test]
async fn same_url_in_another_org_is_fine() {
    let app = spawn_app().await;
    let other = app.key_for_org("o-other", "admin").await;
    create_url(&app, FS_URL).await;
    let resp = app
        .call(
            Method::POST,
            EP,
            Some(&other),
            Some(&json!({"url": FS_URL})),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.body["id"], FS_ID);
    assert_eq!(list_all(&app).await.len(), 1);
    assert_eq!(list_all_with(&app, &other).await.len(), 1);

    // Deleting it in one org leaves the other's.
    let deleted = app
        .call(Method::DELETE, &path_of(FS_ID), Some(&other), None)
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(app.get(&path_of(FS_ID)).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Unknown ids and tenancy
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_id_is_not_found() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let unknown = b64url("https://nowhere.example/hook");
    let path = path_of(&unknown);
    app.get(&path).await.assert_error(404, "resource_not_found");
    app.post(&path, &json!({"disabled": true}))
        .await
        .assert_error(404, "resource_not_found");
    app.delete(&path)
        .await
        .assert_error(404, "resource_not_found");
    assert_eq!(list_all(&app).await.len(), 1);
}

#[tokio::test]
async fn id_that_is_not_base64_is_not_found() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    for id in ["a", "not~base64~at~all", "%21%21%21%21", "____", "gICA"] {
        let path = path_of(id);
        app.get(&path).await.assert_error(404, "resource_not_found");
        app.post(&path, &json!({}))
            .await
            .assert_error(404, "resource_not_found");
        app.delete(&path)
            .await
            .assert_error(404, "resource_not_found");
    }
    assert_eq!(list_all(&app).await.len(), 1);
}

#[tokio::test]
async fn another_orgs_endpoint_is_invisible() {
    let app = spawn_app().await;
    let other = app.key_for_org("o-other", "admin").await;
    let mine = create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await;

    let path = path_of(FS_ID);
    app.call(Method::GET, &path, Some(&other), None)
        .await
        .assert_error(404, "resource_not_found");
    app.call(
        Method::POST,
        &path,
        Some(&other),
        Some(&json!({"disabled": true, "url": "https://evil.example/"})),
    )
    .await
    .assert_error(404, "resource_not_found");
    app.call(Method::DELETE, &path, Some(&other), None)
        .await
        .assert_error(404, "resource_not_found");
    let other_list = app.call(Method::GET, EP, Some(&other), None).await;
    assert_eq!(other_list.status, 200, "{}", other_list.text);
    assert!(page_ids(&other_list.body).is_empty(), "{}", other_list.text);

    // Nothing the other org tried had any effect.
    let got = app.get(&path).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["enabled"], true);
    assert_eq!(got.body["url"], FS_URL);
    assert_eq!(got.body["eventTypes"], mine["eventTypes"]);
    assert_eq!(got.body["modified"], mine["modified"]);
    assert!(list_all_with(&app, &other).await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Update semantics
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn empty_update_keeps_fields_and_enables() {
    let app = spawn_app().await;
    let types = json!([{"eventName": "note.created"}, {"eventName": "segment.created"}]);
    create(
        &app,
        json!({"url": FS_URL, "eventTypes": types, "secret": "s3cret-value-123"}),
    )
    .await;
    let disabled = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(disabled.body["enabled"], false, "{}", disabled.text);

    let updated = app.post(&path_of(FS_ID), &json!({})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], FS_ID);
    assert_eq!(updated.body["url"], FS_URL);
    assert_eq!(updated.body["eventTypes"], types);
    assert_eq!(updated.body["enabled"], true);
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["enabled"], true);
    assert_eq!(got.body["eventTypes"], types);
}

#[tokio::test]
async fn disabled_true_disables_and_a_later_update_without_it_reenables() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await;
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], false);
    assert_eq!(app.get(&path_of(FS_ID)).await.body["enabled"], false);

    // An update that only changes the event types, without `disabled`, enables.
    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"eventTypes": [{"eventName": "segment.created"}]}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], true);
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["enabled"], true);
    assert_eq!(
        got.body["eventTypes"],
        json!([{"eventName": "segment.created"}])
    );
}

#[tokio::test]
async fn disabled_false_enables() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.body["enabled"], false, "{}", updated.text);
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": false})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["enabled"], true);
    assert_eq!(app.get(&path_of(FS_ID)).await.body["enabled"], true);
    // disabled:false on an enabled endpoint keeps it enabled.
    let updated = app.post(&path_of(FS_ID), &json!({"disabled": false})).await;
    assert_eq!(updated.body["enabled"], true, "{}", updated.text);
}

#[tokio::test]
async fn empty_url_event_types_and_secret_leave_fields_unchanged() {
    let app = spawn_app().await;
    let types = json!([{"eventName": "note.created"}]);
    let created = create(&app, json!({"url": FS_URL, "eventTypes": types})).await;
    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"url": "", "eventTypes": [], "secret": ""}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], FS_ID);
    assert_eq!(updated.body["url"], FS_URL);
    assert_eq!(updated.body["eventTypes"], types);
    assert_eq!(updated.body["created"], created["created"]);
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["url"], FS_URL);
    assert_eq!(got.body["eventTypes"], types);

    // The empty secret was skipped, not validated: a too-short one is refused.
    app.post(&path_of(FS_ID), &json!({"secret": "short"}))
        .await
        .assert_error(400, "invalid_field");
    // Null counts as absent too.
    let updated = app
        .post(
            &path_of(FS_ID),
            &json!({"url": null, "eventTypes": null, "secret": null}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["url"], FS_URL);
    assert_eq!(updated.body["eventTypes"], types);
}

#[tokio::test]
async fn non_empty_event_types_replace_the_list() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}, {"eventName": "segment.created"}]}),
    )
    .await;
    let replaced = json!([{"eventName": "nativemobile.event.crash"}]);
    let updated = app
        .post(&path_of(FS_ID), &json!({"eventTypes": replaced}))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["eventTypes"], replaced);
    assert_eq!(app.get(&path_of(FS_ID)).await.body["eventTypes"], replaced);
    let list = app.get(EP).await;
    assert_eq!(list.body["endpoints"][0]["eventTypes"], replaced);
}

#[tokio::test]
async fn update_changes_modified_and_keeps_created() {
    let app = spawn_app().await;
    let created = create_url(&app, FS_URL).await;
    let created_at = created["created"].as_str().expect("created").to_owned();
    assert_eq!(created["modified"], created_at.as_str());
    tokio::time::sleep(Duration::from_millis(20)).await;

    let updated = app.post(&path_of(FS_ID), &json!({"disabled": true})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let modified = updated.body["modified"]
        .as_str()
        .expect("modified")
        .to_owned();
    assert!(is_rfc3339_millis_utc(&modified), "{modified}");
    assert_eq!(updated.body["created"], created_at.as_str());
    assert_ne!(modified, created_at, "modified did not change");
    // Same fixed-width UTC form, so string order is time order.
    assert!(modified > created_at, "{modified} <= {created_at}");

    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["created"], created_at.as_str());
    assert_eq!(got.body["modified"], modified.as_str());
}

#[tokio::test]
async fn url_change_changes_the_id() {
    let app = spawn_app().await;
    let types = json!([{"eventName": "note.created"}]);
    let created = create(&app, json!({"url": FS_URL, "eventTypes": types})).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let new_url = "https://example.com/moved-here";
    let new_id = b64url(new_url);
    let updated = app.post(&path_of(FS_ID), &json!({"url": new_url})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], new_id.as_str());
    assert_eq!(updated.body["url"], new_url);
    assert_eq!(updated.body["created"], created["created"]);
    assert_eq!(updated.body["eventTypes"], types);

    app.get(&path_of(FS_ID))
        .await
        .assert_error(404, "resource_not_found");
    app.post(&path_of(FS_ID), &json!({}))
        .await
        .assert_error(404, "resource_not_found");
    let got = app.get(&path_of(&new_id)).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["id"], new_id.as_str());
    assert_eq!(got.body["url"], new_url);
    assert_eq!(got.body["created"], created["created"]);
    assert_eq!(got.body["eventTypes"], types);

    let all = list_all(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["id"], new_id.as_str());

    // The old URL is free again.
    create_url(&app, FS_URL).await;
    assert_eq!(list_all(&app).await.len(), 2);
}

#[tokio::test]
async fn url_change_to_an_existing_url_is_a_conflict() {
    let app = spawn_app().await;
    let a = create(
        &app,
        json!({"url": "https://example.com/a", "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await;
    let b = create_url(&app, "https://example.com/b").await;
    let resp = app
        .post(
            &path_of(&id_of(&a)),
            &json!({"url": "https://example.com/b", "disabled": true, "eventTypes": [{"eventName": "segment.created"}]}),
        )
        .await;
    resp.assert_error(409, "already_exists");

    let got_a = app.get(&path_of(&id_of(&a))).await;
    assert_eq!(got_a.status, 200, "{}", got_a.text);
    assert_eq!(got_a.body["url"], "https://example.com/a");
    assert_eq!(got_a.body["enabled"], true);
    assert_eq!(got_a.body["eventTypes"], a["eventTypes"]);
    assert_eq!(got_a.body["modified"], a["modified"]);
    let got_b = app.get(&path_of(&id_of(&b))).await;
    assert_eq!(got_b.status, 200, "{}", got_b.text);
    assert!(got_b.body.get("eventTypes").is_none());
    assert_eq!(got_b.body["modified"], b["modified"]);
    assert_eq!(list_all(&app).await.len(), 2);
}

#[tokio::test]
async fn update_to_its_own_url_keeps_the_id() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let updated = app.post(&path_of(FS_ID), &json!({"url": FS_URL})).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], FS_ID);
    assert_eq!(app.get(&path_of(FS_ID)).await.status, 200);
}

#[tokio::test]
async fn update_with_a_bad_url_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    for bad in ["ftp://example.com/", "https://u:p@example.com/", "relative"] {
        let resp = app
            .post(&path_of(FS_ID), &json!({"url": bad, "disabled": true}))
            .await;
        resp.assert_error(400, "invalid_field");
    }
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.body["url"], FS_URL);
    assert_eq!(got.body["enabled"], true);
}

// ---------------------------------------------------------------------------------------
// Delete
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_answers_empty_object_and_removes_the_endpoint() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    create_url(&app, "https://example.com/keep").await;
    let deleted = app.delete(&path_of(FS_ID)).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    assert_eq!(deleted.body, json!({}), "{}", deleted.text);

    app.get(&path_of(FS_ID))
        .await
        .assert_error(404, "resource_not_found");
    app.delete(&path_of(FS_ID))
        .await
        .assert_error(404, "resource_not_found");
    app.post(&path_of(FS_ID), &json!({}))
        .await
        .assert_error(404, "resource_not_found");
    let all = list_all(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["url"], "https://example.com/keep");
}

#[tokio::test]
async fn deleted_url_can_be_created_again_fresh() {
    let app = spawn_app().await;
    let first = create(
        &app,
        json!({"url": FS_URL, "eventTypes": [{"eventName": "note.created"}]}),
    )
    .await;
    assert_eq!(app.delete(&path_of(FS_ID)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = app.post(EP, &json!({"url": FS_URL})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["id"], FS_ID);
    assert_eq!(again.body["enabled"], true);
    assert!(again.body.get("eventTypes").is_none(), "{}", again.text);
    assert!(again.body["secret"].is_string(), "{}", again.text);
    assert_ne!(again.body["secret"], first["secret"]);
    let got = app.get(&path_of(FS_ID)).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert!(got.body.get("eventTypes").is_none(), "{}", got.text);
    assert_eq!(list_all(&app).await.len(), 1);
}

#[tokio::test]
async fn url_change_onto_a_deleted_url_is_fine() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let b = create_url(&app, "https://example.com/b").await;
    assert_eq!(app.delete(&path_of(FS_ID)).await.status, 200);
    let updated = app
        .post(&path_of(&id_of(&b)), &json!({"url": FS_URL}))
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(updated.body["id"], FS_ID);
    assert_eq!(app.get(&path_of(FS_ID)).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Pagination
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn paging_visits_every_endpoint_exactly_once() {
    let app = spawn_app().await;
    let mut expected = HashSet::new();
    for i in 0..7 {
        let body = create_url(&app, &format!("https://example.com/page/{i}")).await;
        expected.insert(id_of(&body));
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("{EP}?limit=3&paginationToken={t}"),
            None => format!("{EP}?limit=3"),
        };
        let resp = app.get(&path).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        let ids = page_ids(&resp.body);
        sizes.push(ids.len());
        seen.extend(ids);
        match resp.body.get("nextPaginationToken") {
            Some(t) => {
                let t = t.as_str().expect("token is a string");
                assert!(!t.is_empty(), "an empty token must be omitted");
                token = Some(t.to_owned());
            }
            None => break,
        }
        assert!(sizes.len() < 10, "pagination never ended");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an endpoint was seen twice: {seen:?}"
    );
    assert_eq!(unique, expected);
}

#[tokio::test]
async fn limit_defaults_to_and_is_clamped_at_100() {
    let app = spawn_app().await;
    let all = create_many(&app, 105).await;
    let mut first_pages = Vec::new();
    for path in [
        EP.to_owned(),
        format!("{EP}?limit=500"),
        format!("{EP}?limit=100"),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
        assert_eq!(page_ids(&resp.body).len(), 100, "{path}");
        let token = resp.body["nextPaginationToken"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no next token"))
            .to_owned();
        first_pages.push(page_ids(&resp.body));
        let rest = app
            .get(&format!("{EP}?limit=500&paginationToken={token}"))
            .await;
        assert_eq!(rest.status, 200, "{}", rest.text);
        assert_eq!(page_ids(&rest.body).len(), 5);
        assert!(rest.body.get("nextPaginationToken").is_none());
        let mut union: HashSet<String> = page_ids(&resp.body).into_iter().collect();
        union.extend(page_ids(&rest.body));
        assert_eq!(union, all);
    }
    assert_eq!(first_pages[0], first_pages[1]);
}

#[tokio::test]
async fn limit_zero_means_the_default() {
    let app = spawn_app().await;
    create_many(&app, 105).await;
    let resp = app.get(&format!("{EP}?limit=0")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(page_ids(&resp.body).len(), 100);
    assert!(
        resp.body["nextPaginationToken"].is_string(),
        "{}",
        resp.text
    );
}

#[tokio::test]
async fn small_limits_are_honoured() {
    let app = spawn_app().await;
    for i in 0..4 {
        create_url(&app, &format!("https://example.com/{i}")).await;
    }
    for (limit, n) in [(1, 1), (2, 2), (4, 4), (5, 4)] {
        let resp = app.get(&format!("{EP}?limit={limit}")).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(page_ids(&resp.body).len(), n, "limit={limit}");
        assert_eq!(
            resp.body.get("nextPaginationToken").is_some(),
            limit < 4,
            "limit={limit}: {}",
            resp.text
        );
    }
}

#[tokio::test]
async fn negative_or_non_numeric_limit_is_invalid() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    for limit in ["-1", "abc", "1.5", "10x"] {
        let resp = app.get(&format!("{EP}?limit={limit}")).await;
        resp.assert_error(400, "invalid_field");
        assert!(
            resp.body["message"]
                .as_str()
                .unwrap_or("")
                .contains("limit"),
            "message should name limit: {}",
            resp.text
        );
    }
}

#[tokio::test]
async fn garbage_pagination_token_is_invalid() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    for token in ["garbage", "%21%21%21", "AAAA", "bm90LWEtdG9rZW4"] {
        let resp = app.get(&format!("{EP}?paginationToken={token}")).await;
        resp.assert_error(400, "invalid_field");
        let resp = app.get(&format!("{EP}?pagination_token={token}")).await;
        resp.assert_error(400, "invalid_field");
    }
}

// ---------------------------------------------------------------------------------------
// Auth schemes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn admin_key_works_as_basic_and_as_bearer() {
    let app = spawn_app().await;
    for (i, scheme) in ["Basic", "Bearer"].into_iter().enumerate() {
        let url = format!("https://example.com/auth/{i}");
        let resp = app
            .client
            .post(format!("{}{EP}", app.base))
            .header("Authorization", format!("{scheme} {}", app.admin_key))
            .json(&json!({ "url": url }))
            .send()
            .await
            .expect("request sent");
        let resp = TestApp::read(resp).await;
        assert_eq!(resp.status, 200, "{scheme}: {}", resp.text);

        let resp = app
            .client
            .get(format!("{}{EP}", app.base))
            .header("Authorization", format!("{scheme} {}", app.admin_key))
            .send()
            .await
            .expect("request sent");
        let resp = TestApp::read(resp).await;
        assert_eq!(resp.status, 200, "{scheme}: {}", resp.text);
        assert_eq!(page_ids(&resp.body).len(), i + 1);

        // The same scheme with a wrong key is refused, so the key is really checked.
        let resp = app
            .client
            .get(format!("{}{EP}", app.base))
            .header("Authorization", format!("{scheme} not-{}", app.admin_key))
            .send()
            .await
            .expect("request sent");
        TestApp::read(resp).await.assert_error(401, "unauthorized");
    }
}

#[tokio::test]
async fn a_huge_limit_is_clamped() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let resp = app.get(&format!("{EP}?limit=1000000000000")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(page_ids(&resp.body), vec![FS_ID.to_owned()]);
}

#[tokio::test]
async fn concurrent_creates_of_one_url_make_one_endpoint() {
    let app = spawn_app().await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = app.client.clone();
        let url = format!("{}{}", app.base, EP);
        let key = app.admin_key.clone();
        set.spawn(async move {
            let resp = client
                .post(url)
                .header("Authorization", format!("Basic {key}"))
                .json(&json!({ "url": FS_URL }))
                .send()
                .await
                .expect("request sent");
            TestApp::read(resp).await
        });
    }
    let mut ok = 0;
    while let Some(joined) = set.join_next().await {
        let resp = joined.expect("task ran");
        if resp.status == 200 {
            ok += 1;
        } else {
            resp.assert_error(409, "already_exists");
        }
    }
    assert_eq!(ok, 1, "exactly one Create of a URL may succeed");
    assert_eq!(list_all(&app).await.len(), 1);
}

#[tokio::test]
async fn update_is_post_not_put() {
    let app = spawn_app().await;
    create_url(&app, FS_URL).await;
    let resp = app
        .call(
            Method::PUT,
            &path_of(FS_ID),
            Some(&app.admin_key),
            Some(&json!({"disabled": true})),
        )
        .await;
    resp.assert_error(405, "method_not_allowed");
    assert_eq!(app.get(&path_of(FS_ID)).await.body["enabled"], true);
    app.delete(EP).await.assert_error(405, "method_not_allowed");
}
