//! Event streams, over raw sockets: the live log of the portal and the console and
//! `GET /webhooks/v1/listen` come from a pool of their own with caps per session, per
//! key and per org (so a thousand stream attempts leave the API and `/healthz`
//! serving), share one poll per org and filter, end at their maximum life, and a
//! `listen` stream ends as soon as its key is revoked.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::TestApp;

mod listen;
mod live;

/// A stream request's answer: its status and head, and the connection (with what was
/// read past the head).
struct Opened {
    status: u16,
    head: String,
    stream: TcpStream,
    rest: Vec<u8>,
}

impl Opened {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.rest).into_owned()
    }

    /// Reads until `want` is in what came after the head, or the server closes the
    /// connection, or `within` passes. True when `want` came.
    async fn wait_for(&mut self, want: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 8192];
        loop {
            if self.text().contains(want) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => return self.text().contains(want),
                Ok(Ok(n)) => self.rest.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads until the server closes the connection; false if it is still open after
    /// `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(n)) => self.rest.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// The JSON body of a refusal (its `Content-Length` bytes).
    async fn json_body(&mut self) -> Value {
        let len: usize = self
            .head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("a Content-Length");
        let mut buf = [0u8; 4096];
        while self.rest.len() < len {
            let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf))
                .await
                .expect("the body in time")
                .expect("read");
            assert!(n > 0, "closed before the body: {}", self.text());
            self.rest.extend_from_slice(&buf[..n]);
        }
        serde_json::from_slice(&self.rest[..len]).expect("a JSON body")
    }
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Sends `GET path` with `headers` to `addr` on a new connection and reads the
/// answer's head.
async fn open(addr: &str, path: &str, headers: &[(&str, &str)]) -> Opened {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no answer to GET {path} within 10 s"))
            .unwrap_or(0);
        assert!(
            n > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {head}"));
    Opened {
        status,
        head,
        stream,
        rest: got[end..].to_vec(),
    }
}

/// The token of a read-only portal link minted with `key`.
async fn portal_link(app: &TestApp, key: &str) -> String {
    let minted = app
        .call(
            reqwest::Method::POST,
            "/webhooks/v1/portal-sessions",
            Some(key),
            Some(&json!({"readOnly": true})),
        )
        .await;
    assert_eq!(minted.status, 200, "{}", minted.text);
    minted.body["token"].as_str().expect("token").to_owned()
}

/// A portal session cookie (`posthorn_portal=...`) traded for the link `token`.
async fn portal_cookie(app: &TestApp, token: &str) -> String {
    let traded = reqwest::Client::new()
        .post(format!("{}/portal/session", app.base))
        .header("x-posthorn-portal", "1")
        .form(&[("token", token)])
        .send()
        .await
        .expect("trade");
    assert_eq!(traded.status(), 204);
    traded
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("posthorn_portal="))
        .and_then(|v| v.split(';').next())
        .expect("a portal cookie")
        .to_owned()
}

async fn portal_stream(app: &TestApp, cookie: &str) -> Opened {
    open(&addr(app), "/portal/log/stream", &[("Cookie", cookie)]).await
}

async fn listen_stream(app: &TestApp, key: &str) -> Opened {
    open(
        &addr(app),
        "/webhooks/v1/listen",
        &[("Authorization", &format!("Basic {key}"))],
    )
    .await
}

/// Asserts a refusal: 429 with the `{message, code}` body naming `whose` cap, after
/// which the server closes the connection (it holds no slot).
async fn assert_refused(mut refused: Opened, whose: &str) {
    assert_eq!(refused.status, 429, "{}", refused.head);
    assert!(
        refused.head.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        refused.head
    );
    let body = refused.json_body().await;
    assert_eq!(body["code"], "too_many_requests", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(whose), "{body}");
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
    assert!(
        refused.closed_within(Duration::from_secs(2)).await,
        "a refused stream kept its connection"
    );
}

/// `/healthz` and an API call answer promptly.
async fn assert_serving(app: &TestApp) {
    let started = Instant::now();
    let health = reqwest::get(format!("{}/healthz", app.base))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let endpoints = app.get("/webhooks/v1/endpoints").await;
    assert_eq!(endpoints.status, 200, "{}", endpoints.text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// Opens a portal stream on `cookie`, which must be accepted.
async fn accepted(app: &TestApp, cookie: &str) -> Opened {
    let opened = portal_stream(app, cookie).await;
    assert_eq!(opened.status, 200, "{}", opened.head);
    opened
}

/// Opens a `listen` stream with `key`, which must be accepted.
async fn listening(app: &TestApp, key: &str) -> Opened {
    let mut opened = listen_stream(app, key).await;
    assert_eq!(opened.status, 200, "{}", opened.head);
    assert!(
        opened
            .wait_for("event: ready", Duration::from_secs(5))
            .await
    );
    opened
}

async fn publish(app: &TestApp, n: u32) -> Value {
    let published = app
        .post(
            "/webhooks/v1/events",
            &json!({"eventName": "note.created", "data": {"n": n}}),
        )
        .await;
    assert_eq!(published.status, 202, "{}", published.text);
    published.body
}
