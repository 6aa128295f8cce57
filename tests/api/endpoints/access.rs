//! Who reaches which endpoint: unknown and malformed ids, another org's endpoints, and
//! the admin key as `Basic` and as `Bearer`.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, TestApp};

use super::{
    b64url, create, create_url, list_all, list_all_with, page_ids, path_of, EP, FS_ID, FS_URL,
};

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
