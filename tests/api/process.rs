//! Real `posthorn` processes: killed with SIGKILL mid-run, and `posthorn listen`.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::api::helpers::{posthorn_bin, spawn_app};
use crate::api::receiver::{Reply, TestReceiver};

const KEY: &str = "crash-test-admin-key";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

async fn start_serve(db: &str, port: u16) -> Child {
    let child = Command::new(posthorn_bin())
        .arg("serve")
        .env("POSTHORN_DATABASE_URL", db)
        .env("POSTHORN_LISTEN", format!("127.0.0.1:{port}"))
        .env("POSTHORN_BOOTSTRAP_KEY", KEY)
        .env("POSTHORN_ALLOW_PRIVATE_TARGETS", "true")
        .env("POSTHORN_RATE_LIMIT", "0")
        .env("POSTHORN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("posthorn serve starts");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "posthorn serve did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child
}

#[tokio::test]
async fn sigkill_mid_run_loses_no_accepted_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let rx = TestReceiver::start().await;
    rx.always("/crash", Reply::Slow(20));
    let port = free_port();
    let mut server = start_serve(&db, port).await;
    let base = format!("http://127.0.0.1:{port}/webhooks/v1");
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/endpoints"))
        .header("Authorization", format!("Basic {KEY}"))
        .json(&json!({"url": rx.url("/crash")}))
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(r.status(), 200);

    // Publish in batches until the server dies; remember every accepted event.
    let publisher = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            for batch in 0..40 {
                let events: Vec<_> = (0..100)
                    .map(|i| json!({"eventName": "note.created", "data": {"b": batch, "i": i}}))
                    .collect();
                let sent = client
                    .post(format!("{base}/events/batch"))
                    .header("Authorization", format!("Basic {KEY}"))
                    .json(&json!({ "events": events }))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                if resp.status() != 202 {
                    break;
                }
                let body: serde_json::Value = resp.json().await.expect("json");
                for e in body["events"].as_array().expect("events") {
                    accepted.push(e["id"].as_str().expect("id").to_owned());
                }
            }
            accepted
        })
    };
    rx.wait_for("/crash", 300, Duration::from_secs(30)).await;
    server.start_kill().expect("SIGKILL");
    server.wait().await.expect("reaped");
    let accepted = publisher.await.expect("publisher");
    let delivered_before = rx.ids("/crash").len();
    assert!(
        accepted.len() >= delivered_before + 1000,
        "only {} of {} accepted events were pending at the kill; the test proves little",
        accepted.len() - delivered_before.min(accepted.len()),
        accepted.len()
    );
    eprintln!(
        "killed with {} accepted, {delivered_before} delivered",
        accepted.len()
    );

    let _server = start_serve(&db, port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = rx.ids("/crash");
        let missing = accepted.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} accepted events lost after SIGKILL",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: HashSet<_> = rx.ids("/crash");
    assert!(ids.len() >= accepted.len());
}

#[tokio::test]
async fn posthorn_listen_prints_deliveries_and_checks_signatures() {
    let app = spawn_app().await;
    let port = free_port();
    let mut listen = Command::new(posthorn_bin())
        .args([
            "listen",
            "--port",
            &port.to_string(),
            "--secret",
            "s3cret-value",
            "--org",
            crate::api::helpers::ORG,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("posthorn listen starts");
    let mut lines = BufReader::new(listen.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "listen did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (path, secret) in [("/good", "s3cret-value"), ("/bad", "wrong-secret")] {
        let r = app
            .post(
                "/webhooks/v1/endpoints",
                &json!({"url": format!("http://127.0.0.1:{port}{path}"), "secret": secret}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"hello": "world"}}),
        )
        .await;
    let id = r.body["id"].as_str().expect("id").to_owned();
    let (mut ok, mut invalid) = (false, false);
    while !(ok && invalid) {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .expect("read")
            .expect("a line");
        assert!(
            line.contains(&id) && line.contains("note.created"),
            "{line}"
        );
        ok |= line.contains("fullstory-signature=ok webhook-signature=ok");
        invalid |= line.contains("fullstory-signature=INVALID webhook-signature=INVALID");
    }
}
