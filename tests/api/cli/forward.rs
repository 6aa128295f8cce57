//! `posthorn listen --forward-to`: a server's deliveries reach a local app over the
//! CLI's outbound connection, the app's answers are the attempts' outcomes in the log,
//! and the temporary endpoint goes away with the connection, or with its key.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::TestDb;
use crate::receiver::{Reply, TestReceiver};

use super::client::{server, KEY};
use super::{posthorn, Serve};

/// Waits (≤ 10 s) for a line of `lines` starting with `prefix`.
async fn line_with(lines: &Arc<Mutex<Vec<String>>>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = lines
            .lock()
            .expect("lock")
            .iter()
            .find(|l| l.starts_with(prefix))
        {
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no line {prefix:?}: {:?}",
            lines.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attempts(server: &Serve, endpoint: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, log) = server
            .call(
                Method::GET,
                &format!("/webhooks/v1/endpoints/{endpoint}/deliveries"),
                Some(KEY),
                None,
            )
            .await;
        assert_eq!(status, 200, "{log}");
        if let Some(id) = log["deliveries"][0]["id"].as_str() {
            let (_, body) = server
                .call(
                    Method::GET,
                    &format!("/webhooks/v1/deliveries/{id}/attempts"),
                    Some(KEY),
                    None,
                )
                .await;
            let got = body["attempts"].as_array().cloned().unwrap_or_default();
            if got.len() >= want && log["deliveries"][0]["state"] != "pending" {
                return got;
            }
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {want} attempts: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn deliveries_reach_a_local_app_and_its_answers_are_the_attempts() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let app = TestReceiver::start().await;
    // The app fails the first request: the delivery is retried (1 s later) over the
    // same connection.
    app.script("/app", vec![Reply::Status(500)]);
    let mut cmd = posthorn(db.dir.path());
    cmd.args([
        "listen",
        "--forward-to",
        &app.url("/app"),
        "--events",
        "note.created",
        "--url",
        &server.base,
        "--key",
        KEY,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("listen starts");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let pipe = child.stdout.take().expect("stdout");
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().expect("lock").push(line);
        }
    });
    line_with(&lines, "Ready: forwarding note.created").await;
    let endpoint = line_with(&lines, "Temporary endpoint ").await;
    let endpoint = endpoint
        .trim_start_matches("Temporary endpoint ")
        .to_owned();
    let secret = line_with(&lines, "Signing secret ").await;
    let secret = secret.split_whitespace().nth(2).expect("secret").to_owned();

    // Other event types are not its business.
    let (status, answer) = server
        .call(
            Method::POST,
            "/webhooks/v1/events",
            Some(KEY),
            Some(&json!({"eventName": "segment.created", "data": {}})),
        )
        .await;
    assert_eq!(
        (status, answer["deliveries"].as_u64()),
        (202, Some(0)),
        "{answer}"
    );
    let (status, answer) = server
        .call(
            Method::POST,
            "/webhooks/v1/events",
            Some(KEY),
            Some(&json!({"eventName": "note.created", "data": {"n": 1}})),
        )
        .await;
    assert_eq!(
        (status, answer["deliveries"].as_u64()),
        (202, Some(1)),
        "{answer}"
    );
    let event_id = answer["id"].as_str().expect("id").to_owned();

    let got = app.wait_for("/app", 2, Duration::from_secs(15)).await;
    for request in &got {
        assert_eq!(request.header("webhook-id"), event_id);
        assert_eq!(
            &request.body[..],
            br#"{"eventName":"note.created","version":1,"data":{"n":1}}"#
        );
        // Signed as posthorn signs: the printed secret verifies it.
        let webhook = standardwebhooks::Webhook::new(&secret).expect("secret");
        webhook
            .verify(&request.body, &request.headers)
            .expect("signature verifies");
    }
    let tried = attempts(&server, &endpoint, 2).await;
    let statuses: Vec<_> = tried.iter().map(|a| a["statusCode"].as_u64()).collect();
    assert!(
        statuses.contains(&Some(500)) && statuses.contains(&Some(200)),
        "{tried:?}"
    );
    let printed = line_with(&lines, "20").await; // a timestamped delivery line
    assert!(
        printed.contains("note.created") && printed.contains(&event_id),
        "{printed}"
    );

    // The connection goes, and the temporary endpoint with it.
    child.kill().await.expect("kill listen");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = server
            .call(
                Method::GET,
                &format!("/webhooks/v1/endpoints/{endpoint}"),
                Some(KEY),
                None,
            )
            .await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the temporary endpoint stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_listen_host_is_not_an_endpoint_of_anyone_s_own() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let (status, body) = server
        .call(
            Method::POST,
            "/webhooks/v1/endpoints",
            Some(KEY),
            Some(&json!({"url": "http://listen.posthorn.invalid/0123"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_field");
}

#[tokio::test]
async fn revoking_its_key_ends_a_listen_at_once_and_removes_its_endpoint() {
    let db = TestDb::new().await;
    let server = server(&db).await;
    let app = TestReceiver::start().await;
    let (status, made) = server
        .call(
            Method::POST,
            "/webhooks/v1/keys",
            Some(KEY),
            Some(&json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let key = made["key"].as_str().expect("key");
    let mut cmd = posthorn(db.dir.path());
    cmd.args([
        "listen",
        "--forward-to",
        &app.url("/app"),
        "--url",
        &server.base,
        "--key",
        key,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("listen starts");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let pipe = child.stdout.take().expect("stdout");
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().expect("lock").push(line);
        }
    });
    let endpoint = line_with(&lines, "Temporary endpoint ").await;
    let endpoint = endpoint
        .trim_start_matches("Temporary endpoint ")
        .to_owned();
    let revoked = Instant::now();
    let (status, answer) = server
        .call(
            Method::DELETE,
            &format!("/webhooks/v1/keys/{}", made["id"].as_str().expect("id")),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let exited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    assert!(exited.is_ok(), "posthorn listen went on with a revoked key");
    assert!(revoked.elapsed() < Duration::from_secs(3));
    let (status, answer) = server
        .call(
            Method::POST,
            "/webhooks/v1/events",
            Some(KEY),
            Some(&json!({"eventName": "note.created", "data": {}})),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = server
            .call(
                Method::GET,
                &format!("/webhooks/v1/endpoints/{endpoint}"),
                Some(KEY),
                None,
            )
            .await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the temporary endpoint stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.received("/app").is_empty());
}
