//! The API keys API: a created key is shown once and works at once, revocation holds at
//! once, the key list never shows a key or its hash, and roles are validated.

use std::collections::HashSet;

use base64::Engine;
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app, ADMIN_KEY};

use super::{
    assert_timestamp, assert_unauthorized, create_key_full, list_keys, with_authorization,
};

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
async fn a_revoked_bootstrap_key_stays_revoked_across_restarts() {
    use crate::helpers::{Node, TestDb, NODE_KEY};
    let db = TestDb::new().await;
    let mut node = Node::start(&db.url, &[]).await;
    let other = node
        .post("/webhooks/v1/keys", &json!({"role": "admin"}))
        .await;
    assert_eq!(other.status, 200, "{}", other.text);
    let other_key = other.body["key"].as_str().expect("key").to_owned();
    let other_id = other.body["id"].as_str().expect("id").to_owned();
    let keys = node
        .call(Method::GET, "/webhooks/v1/keys", None, None)
        .await;
    let boot_id = keys.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_owned())
        .find(|id| *id != other_id)
        .expect("the bootstrap key is listed");
    let revoked = node
        .call(
            Method::DELETE,
            &format!("/webhooks/v1/keys/{boot_id}"),
            Some(&other_key),
            None,
        )
        .await;
    assert!(revoked.status < 300, "{}", revoked.text);
    let port = node.port;
    assert!(node.terminate().await.success());
    // The same POSTHORN_BOOTSTRAP_KEY again.
    let node = Node::start_on(&db.url, port, &[]).await;
    let refused = node
        .call(Method::GET, "/webhooks/v1/endpoints", Some(NODE_KEY), None)
        .await;
    assert_unauthorized(&refused, "the revoked bootstrap key");
    let ok = node
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some(&other_key),
            None,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(
        node.log().contains("revoked; it stays revoked"),
        "the refusal is not in the log:\n{}",
        node.log()
    );
}
