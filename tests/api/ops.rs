//! Operations: health, readiness, metrics, and the OpenAPI document,
//! with drift tests that hold the document and the router to each other.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{posthorn_bin, spawn_app, TestApp};

/// Every operation the document must describe.
const REQUIRED_PATHS: &[&str] = &[
    "/webhooks/v1/endpoints",
    "/webhooks/v1/endpoints/{id}",
    "/webhooks/v1/event-types",
    "/webhooks/v1/event-types/{event_name}/subcategories",
    "/webhooks/v1/keys",
    "/webhooks/v1/keys/{id}",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "options"];

async fn served_document(app: &TestApp) -> Value {
    let resp = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(resp.body.is_object(), "not JSON: {}", resp.text);
    resp.body
}

/// (path template, lowercase method) of every documented operation.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths object") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) || method == "head" || method == "trace" {
                out.push((path.clone(), method.clone()));
            }
        }
    }
    out
}

/// `{param}` → a dummy value.
fn fill(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("dummy");
            }
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).expect("method")
}

#[tokio::test]
async fn healthz_and_readyz_answer_without_a_key() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let resp = app.call(Method::GET, path, None, None).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text);
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    assert_eq!(app.get("/webhooks/v1/event-types").await.status, 200);
    assert_eq!(
        app.get("/webhooks/v1/event-types/metric.alert/subcategories")
            .await
            .status,
        200
    );
    assert_eq!(app.get("/webhooks/v1/no-such-route-xyz").await.status, 404);

    let resp = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let text = &resp.text;
    let counter_line = |route: &str| {
        text.lines().find(|l| {
            l.starts_with("posthorn_http_requests_total{")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains("status=\"200\"")
        })
    };
    let line = counter_line("/webhooks/v1/event-types")
        .unwrap_or_else(|| panic!("no request counter for event-types:\n{text}"));
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no value: {line}"));
    assert!(value >= 1.0, "{line}");
    // Routes are labelled by template, not by the concrete path.
    assert!(
        counter_line("/webhooks/v1/event-types/{event_name}/subcategories").is_some(),
        "no templated route label:\n{text}"
    );
    assert!(
        !text.contains("metric.alert"),
        "a concrete path became a label:\n{text}"
    );
    assert!(
        !text.contains("no-such-route-xyz"),
        "an unknown path became a label (unbounded cardinality):\n{text}"
    );

    assert!(
        text.lines()
            .any(|l| l.starts_with("# TYPE posthorn_http_request_duration_seconds histogram")),
        "no latency histogram:\n{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("posthorn_http_request_duration_seconds_bucket{")
                && l.contains("route=\"/webhooks/v1/event-types\"")
                && l.contains("le=\"+Inf\"")
        ),
        "no +Inf bucket for event-types:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("posthorn_http_request_duration_seconds_count{")),
        "{text}"
    );
}

#[tokio::test]
async fn openapi_document_is_openapi_3_and_lists_every_path() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    let version = doc["openapi"].as_str().expect("openapi field");
    assert!(version.starts_with("3."), "openapi: {version}");
    assert!(doc["info"]["title"].is_string(), "info.title");
    assert!(doc["info"]["version"].is_string(), "info.version");
    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    for required in REQUIRED_PATHS {
        assert!(
            paths.contains(required),
            "{required} missing from {paths:?}"
        );
    }

    for (path, m) in operations(&doc) {
        let op = &doc["paths"][&path][&m];
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{m} {path} has no responses"
        );
        // Every path parameter is declared, as OpenAPI requires.
        let declared: HashSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                doc["paths"][&path]["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            )
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    declared.contains(name),
                    "{m} {path}: path parameter {name} is not declared"
                );
            }
        }
    }

    // Every $ref points at something the document defines.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Drift (1): every documented operation is routed: no 404 from the router, no 405.
#[tokio::test]
async fn every_documented_operation_exists() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    for (path, m) in operations(&doc) {
        let url = fill(&path);
        let body = (m == "post" || m == "put" || m == "patch").then(|| json!({}));
        // No key: a routed /webhooks/v1 handler answers 401 before anything else, so a
        // 404 here can only come from the router's fallback.
        let resp = app.call(method(&m), &url, None, body.as_ref()).await;
        assert_ne!(
            resp.status,
            405,
            "documented {} {path} answers 405: {}",
            m.to_uppercase(),
            resp.text
        );
        assert_ne!(
            resp.status,
            404,
            "documented {} {path} is not routed: {}",
            m.to_uppercase(),
            resp.text
        );
    }
}

/// Drift (2): on every documented path, the undocumented methods answer 405.
#[tokio::test]
async fn undocumented_methods_answer_405() {
    let app = spawn_app().await;
    let doc = served_document(&app).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let documented: HashSet<&str> = item
            .as_object()
            .expect("item")
            .keys()
            .map(String::as_str)
            .collect();
        let url = fill(path);
        for m in METHODS.iter().filter(|m| !documented.contains(*m)) {
            for key in [None, Some(app.admin_key.as_str())] {
                let body = (*m != "get").then(|| json!({}));
                let resp = app.call(method(m), &url, key, body.as_ref()).await;
                assert_eq!(
                    resp.status,
                    405,
                    "undocumented {} {path} (key: {}) answers {}: {}",
                    m.to_uppercase(),
                    key.is_some(),
                    resp.status,
                    resp.text
                );
                resp.assert_error(405, "method_not_allowed");
                // The 405's Allow header names exactly the documented methods.
                let allow: HashSet<String> = resp
                    .headers
                    .get("allow")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_else(|| panic!("405 on {path} without an Allow header"))
                    .split(',')
                    .map(|m| m.trim().to_ascii_lowercase())
                    .filter(|m| m != "head")
                    .collect();
                let expected: HashSet<String> = documented
                    .iter()
                    .filter(|m| METHODS.contains(*m))
                    .map(|m| (*m).to_owned())
                    .collect();
                assert_eq!(allow, expected, "Allow header of {path}");
            }
        }
    }
}

/// Drift (3): the served document is the committed `docs/openapi.json`.
/// `UPDATE_OPENAPI=1 cargo test --test api openapi_snapshot` rewrites the file.
#[tokio::test]
async fn openapi_snapshot_matches_docs_openapi_json() {
    let app = spawn_app().await;
    let resp = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(resp.status, 200);
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(file.parent().expect("docs dir")).expect("mkdir docs");
        let mut text = resp.text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        std::fs::write(&file, text).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `UPDATE_OPENAPI=1 cargo test --test api openapi_snapshot`",
            file.display()
        )
    });
    let committed: Value = serde_json::from_str(&committed).expect("docs/openapi.json is JSON");
    assert!(
        committed == resp.body,
        "the served OpenAPI document differs from docs/openapi.json; if the change is \
         intended, run `UPDATE_OPENAPI=1 cargo test --test api openapi_snapshot` and commit"
    );
}

#[tokio::test]
async fn openapi_cli_prints_the_served_document() {
    let app = spawn_app().await;
    let served = served_document(&app).await;
    let out = tokio::process::Command::new(posthorn_bin())
        .arg("openapi")
        .env_clear()
        .output()
        .await
        .expect("posthorn openapi runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert!(
        printed == served,
        "`posthorn openapi` differs from /openapi.json"
    );
}
