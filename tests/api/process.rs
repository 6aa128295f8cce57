//! Real `posthorn` processes: killed with SIGKILL mid-run, and `posthorn listen`.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{
    free_port, posthorn_bin, spawn_app, Backend, ChildGuard, Node, TestDb, NODE_KEY,
};
use crate::receiver::{Reply, TestReceiver};

#[tokio::test]
async fn sigkill_mid_run_loses_no_accepted_event() {
    let db = TestDb::new().await;
    let rx = TestReceiver::start().await;
    rx.always("/crash", Reply::Slow(20));
    // On SQLite a restart voids the dead process's leases at once; PostgreSQL nodes wait
    // for them to run out (other nodes may still be working), so make leases short.
    let env: &[(&str, &str)] = match db.backend() {
        Backend::Sqlite => &[],
        Backend::Postgres => &[
            ("POSTHORN_ATTEMPT_TIMEOUT", "2s"),
            ("POSTHORN_LEASE_MARGIN", "1s"),
        ],
    };
    let mut server = Node::start(&db.url, env).await;
    let port = server.port;
    let base = format!("{}/webhooks/v1", server.base);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/endpoints"))
        .header("Authorization", format!("Basic {NODE_KEY}"))
        .json(&json!({"url": rx.url("/crash")}))
        .send()
        .await
        .expect("create endpoint");
    assert_eq!(r.status(), 200);

    // Publish in batches until the server dies; remember every accepted event.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (client, base, accepted) = (client.clone(), base.clone(), accepted.clone());
        tokio::spawn(async move {
            for batch in 0..40 {
                let events: Vec<_> = (0..100)
                    .map(|i| json!({"eventName": "note.created", "data": {"b": batch, "i": i}}))
                    .collect();
                let sent = client
                    .post(format!("{base}/events/batch"))
                    .header("Authorization", format!("Basic {NODE_KEY}"))
                    .json(&json!({ "events": events }))
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                if resp.status() != 202 {
                    break;
                }
                let Ok(body) = resp.json::<serde_json::Value>().await else {
                    break;
                };
                let ids = body["events"].as_array().expect("events").iter();
                accepted
                    .lock()
                    .expect("lock")
                    .extend(ids.map(|e| e["id"].as_str().expect("id").to_owned()));
            }
        })
    };
    // Kill it mid-delivery, with at least 1000 accepted events not delivered yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (pending, total) = loop {
        let delivered = rx.ids("/crash").len();
        let total = accepted.lock().expect("lock").len();
        let pending = total.saturating_sub(delivered);
        if delivered >= 100 && pending >= 1000 {
            break (pending, total);
        }
        assert!(
            Instant::now() < deadline,
            "never {delivered} >= 100 delivered with {pending} >= 1000 of {total} accepted \
             events pending; the test would prove little"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    server.kill().await;
    publisher.await.expect("publisher");
    let accepted = accepted.lock().expect("lock").clone();
    eprintln!(
        "killed with {total} accepted, {pending} of them pending; {} accepted in all",
        accepted.len()
    );

    let _server = Node::start_on(&db.url, port, env).await;
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
            crate::helpers::ORG,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("posthorn listen starts");
    let _guard = ChildGuard::new(listen.id());
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
