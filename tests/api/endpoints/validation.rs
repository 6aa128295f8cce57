//! What Create refuses: a missing, malformed or mistyped URL, bad JSON, and a URL the
//! org already has (also when created concurrently).

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

use super::{create, create_url, list_all, list_all_with, path_of, send_raw, EP, FS_ID, FS_URL};

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
