//! The five Fullstory endpoint operations, over real HTTP: one file per
//! concern, sharing the local helpers below (which do not reuse the server's code).

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{Resp, TestApp};

mod access;
mod casing;
mod create;
mod delete;
mod headers;
mod pagination;
mod update;
mod validation;

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
