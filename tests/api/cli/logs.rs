//! What `posthorn serve` logs: JSON one object per line, no key or secret even at trace
//! level, and no terminal escapes when written to a pipe.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::TestDb;

use super::Serve;

#[tokio::test]
async fn json_logs_are_one_object_per_line_without_keys() {
    const BOOT: &str = "json-log-key-0123456789abc";
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[
            ("POSTHORN_BOOTSTRAP_KEY", BOOT),
            ("POSTHORN_LOG_FORMAT", "json"),
        ],
    )
    .await;
    for path in ["/webhooks/v1/endpoints", "/webhooks/v1/nope"] {
        server.call(Method::GET, path, Some(BOOT), None).await;
    }
    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    let lines: Vec<&String> = lines.iter().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at all");
    for line in lines {
        let parsed: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(parsed.is_object(), "{line}");
        assert!(!line.contains(BOOT), "key logged: {line}");
    }
}

#[tokio::test]
async fn no_key_or_secret_is_logged_even_at_trace_level() {
    const BOOT: &str = "trace-level-key-0123456789";
    const SECRET: &str = "endpoint-secret-value-0123456789";
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[("POSTHORN_BOOTSTRAP_KEY", BOOT), ("POSTHORN_LOG", "trace")],
    )
    .await;
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(BOOT),
            Some(&json!({"url": "https://example.com/given", "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, minted) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(BOOT),
            Some(&json!({"url": "https://example.com/minted"})),
        )
        .await;
    assert_eq!(status, 200, "{minted}");
    let minted_secret = minted["secret"]
        .as_str()
        .expect("a minted secret in the Create answer")
        .to_owned();
    let (status, created) = server
        .call(
            Method::POST,
            "/webhooks/v1/keys",
            Some(BOOT),
            Some(&json!({"role": "publisher"})),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let new_key = created["key"].as_str().expect("key").to_owned();
    server
        .call(
            Method::GET,
            "/webhooks/v1/event-types",
            Some(&new_key),
            None,
        )
        .await;
    server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("wrong-key-presented-0123"),
            None,
        )
        .await;

    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    assert!(lines.len() > 5, "trace logging produced almost nothing");
    // The master key: given (PostgreSQL) or in its file (SQLite).
    let master = db.master_key().map(str::to_owned).or_else(|| {
        let text = std::fs::read_to_string(db.master_key_file()?).ok()?;
        Some(text.trim().to_owned()).filter(|t| t.len() >= 16)
    });
    for secret in [
        BOOT,
        SECRET,
        &minted_secret,
        &new_key,
        "wrong-key-presented-0123",
    ]
    .into_iter()
    .chain(master.as_deref())
    {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} appears in the log: {leaks:?}");
    }
}

#[tokio::test]
async fn text_logs_to_a_pipe_have_no_terminal_escapes() {
    // Logs are for people by default; written to a file or a pipe (journald, docker,
    // `2>log`) they must not carry ANSI colour codes, which also break grep on
    // `key=value` fields.
    let db = TestDb::new().await;
    let server = Serve::start(
        &db,
        &[("POSTHORN_BOOTSTRAP_KEY", "ansi-key-0123456789abcdef")],
    )
    .await;
    server
        .call(
            Method::GET,
            "/webhooks/v1/endpoints",
            Some("ansi-key-0123456789abcdef"),
            None,
        )
        .await;
    let (status, _, lines) = server.terminate().await;
    assert!(status.success());
    assert!(
        lines.iter().any(|l| l.contains("/webhooks/v1/endpoints")),
        "no request log line:\n{}",
        lines.join("\n")
    );
    let escaped: Vec<&String> = lines.iter().filter(|l| l.contains('\u{1b}')).collect();
    assert!(
        escaped.is_empty(),
        "ANSI escape codes in logs written to a pipe: {:?}",
        escaped.first()
    );
}
