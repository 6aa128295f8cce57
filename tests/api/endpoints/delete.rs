//! Delete: the empty answer, and a deleted URL free to be used again (by Create or by
//! an Update's URL change).

use std::time::Duration;

use serde_json::json;

use crate::helpers::spawn_app;

use super::{create, create_url, id_of, list_all, path_of, EP, FS_ID, FS_URL};

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
