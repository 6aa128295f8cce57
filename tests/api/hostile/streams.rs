//! Event streams, over raw sockets: the live log of the portal and the console and
//! `GET /webhooks/v1/listen` come from a pool of their own with caps per session, per
//! key and per org (so a thousand stream attempts leave the API and `/healthz`
//! serving), share one poll per org and filter, end at their maximum life, and a
//! `listen` stream ends as soon as its key is revoked.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

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

#[tokio::test]
async fn a_thousand_portal_stream_attempts_leave_the_api_and_healthz_serving() {
    let app = spawn_app().await;
    let token = portal_link(&app, &app.admin_key).await;
    // One link traded a few times: several sessions of one org, as one customer can.
    let mut cookies = Vec::new();
    for _ in 0..3 {
        cookies.push(portal_cookie(&app, &token).await);
    }
    let mut held = Vec::new();
    let mut refused = 0;
    // 1,024 attempts, 32 at a time; what is accepted stays open.
    for wave in 0..32 {
        let mut attempts = tokio::task::JoinSet::new();
        for i in 0..32 {
            let cookie = cookies[(wave * 32 + i) % cookies.len()].clone();
            let addr = addr(&app);
            attempts.spawn(async move {
                open(&addr, "/portal/log/stream", &[("Cookie", &cookie)]).await
            });
        }
        while let Some(opened) = attempts.join_next().await {
            let mut opened = opened.expect("attempt");
            match opened.status {
                200 => held.push(opened),
                429 => {
                    if refused == 0 {
                        let body = opened.json_body().await;
                        assert_eq!(body["code"], "too_many_requests", "{body}");
                    }
                    refused += 1;
                }
                other => panic!("a stream attempt answered {other}: {}", opened.head),
            }
        }
    }
    // At most the link's 8 (POSTHORN_MAX_STREAMS_PER_KEY), and 4 per session.
    assert!(
        !held.is_empty() && held.len() <= 8,
        "{} streams held",
        held.len()
    );
    assert_eq!(held.len() + refused, 1024);
    assert_serving(&app).await;
    // The held streams are live: each gets the log's rows.
    for stream in &mut held {
        assert!(
            stream
                .wait_for("event: rows", Duration::from_secs(10))
                .await,
            "no rows: {}",
            stream.text()
        );
    }
    assert_serving(&app).await;
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

#[tokio::test]
async fn the_caps_hold_per_session_per_key_and_per_org() {
    let app = spawn_app_with(|c| {
        c.streams.per_session = 2;
        c.streams.per_key = 3;
        c.streams.per_org = 8;
    })
    .await;
    let link = portal_link(&app, &app.admin_key).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(portal_cookie(&app, &link).await);
    }
    let mut held = Vec::new();
    // Per session.
    for _ in 0..2 {
        held.push(accepted(&app, &sessions[0]).await);
    }
    assert_refused(portal_stream(&app, &sessions[0]).await, "this session").await;
    // Per link (a key's cap): all of its sessions together.
    held.push(accepted(&app, &sessions[1]).await);
    assert_refused(portal_stream(&app, &sessions[1]).await, "this portal link").await;
    assert_refused(portal_stream(&app, &sessions[2]).await, "this portal link").await;
    // Per key: the customer's portal did not use up the places of the key that minted
    // its link, but the key has its own cap.
    for _ in 0..3 {
        held.push(listening(&app, &app.admin_key).await);
    }
    assert_refused(listen_stream(&app, &app.admin_key).await, "this API key").await;
    // Per org, whatever the keys.
    let second = app.create_key("admin").await;
    for _ in 0..2 {
        held.push(listening(&app, &second).await);
    }
    assert_refused(listen_stream(&app, &second).await, "this org").await;
    let third = app.create_key("admin").await;
    assert_refused(listen_stream(&app, &third).await, "this org").await;
    // Another org is not held back by this one.
    let other = app.key_for_org("o-other", "admin").await;
    held.push(listening(&app, &other).await);
    assert_serving(&app).await;
    // A stream that closes gives its place back.
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = portal_stream(&app, &sessions[0]).await;
        if again.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `data` of the first `event` in `text`, as JSON.
fn event_data(text: &str, event: &str) -> Value {
    let after = text
        .split(&format!("event: {event}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {event} event in {text}"));
    let data = after
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {after}"));
    serde_json::from_str(data).unwrap_or_else(|e| panic!("{data}: {e}"))
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

/// Waits (≤ 10 s) until the endpoint `id` answers 404.
async fn endpoint_gone(app: &TestApp, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = app.get(&format!("/webhooks/v1/endpoints/{id}")).await;
        if got.status == 404 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the temporary endpoint stayed: {}",
            got.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revoked_key_s_listen_stream_ends_within_2s_and_gets_nothing_more() {
    let app = spawn_app().await;
    let made = app
        .post("/webhooks/v1/keys", &json!({"role": "admin"}))
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let key = made.body["key"].as_str().expect("key").to_owned();
    let key_id = made.body["id"].as_str().expect("id").to_owned();
    let mut stream = listen_stream(&app, &key).await;
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert!(
        stream
            .wait_for("event: ready", Duration::from_secs(5))
            .await
    );
    let endpoint = event_data(&stream.text(), "ready")["endpointId"]
        .as_str()
        .expect("endpointId")
        .to_owned();
    // It works: an event reaches it.
    assert_eq!(publish(&app, 1).await["deliveries"], 1);
    assert!(
        stream
            .wait_for("event: delivery", Duration::from_secs(10))
            .await,
        "{}",
        stream.text()
    );
    let seen = stream.rest.len();
    let revoked = Instant::now();
    let answer = app.delete(&format!("/webhooks/v1/keys/{key_id}")).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // Published right after the revocation, while the stream may still be open.
    publish(&app, 2).await;
    assert!(
        stream.closed_within(Duration::from_secs(2)).await,
        "the stream of a revoked key is still open 2 s later"
    );
    assert!(revoked.elapsed() < Duration::from_millis(2500));
    let after = String::from_utf8_lossy(&stream.rest[seen..]).into_owned();
    assert!(!after.contains("event: delivery"), "{after}");
    assert!(after.contains("event: ended"), "{after}");
    // Its temporary endpoint is gone, and later events go nowhere.
    endpoint_gone(&app, &endpoint).await;
    assert_eq!(publish(&app, 3).await["deliveries"], 0);
}

#[tokio::test]
async fn a_stream_ends_at_its_maximum_life() {
    let app = spawn_app_with(|c| c.streams.max_life = Duration::from_secs(1)).await;
    let mut listen = listen_stream(&app, &app.admin_key).await;
    assert_eq!(listen.status, 200, "{}", listen.head);
    let token = portal_link(&app, &app.admin_key).await;
    let cookie = portal_cookie(&app, &token).await;
    let mut page = accepted(&app, &cookie).await;
    assert!(
        listen.closed_within(Duration::from_secs(5)).await,
        "a listen stream outlived its maximum life"
    );
    assert!(listen.text().contains("event: ended"), "{}", listen.text());
    let endpoint = event_data(&listen.text(), "ready")["endpointId"]
        .as_str()
        .expect("endpointId")
        .to_owned();
    endpoint_gone(&app, &endpoint).await;
    assert!(
        page.closed_within(Duration::from_secs(5)).await,
        "a live log stream outlived its maximum life"
    );
    // Their places come back: more streams than the key's cap, one after the other.
    for _ in 0..10 {
        let mut again = listen_stream(&app, &app.admin_key).await;
        assert_eq!(again.status, 200, "{}", again.head);
        assert!(again.closed_within(Duration::from_secs(5)).await);
    }
}

/// `posthorn_live_polls_total` from `/metrics`.
async fn live_polls(app: &TestApp) -> u64 {
    let text = reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("posthorn_live_polls_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no posthorn_live_polls_total in /metrics"))
}

#[tokio::test]
async fn streams_of_one_org_and_filter_share_one_poll() {
    let app = spawn_app().await;
    // A delivery in the log (to a port nobody listens on: it stays pending).
    let made = app
        .post(
            "/webhooks/v1/endpoints",
            &json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    assert_eq!(publish(&app, 1).await["deliveries"], 1);
    let token = portal_link(&app, &app.admin_key).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let cookie = portal_cookie(&app, &token).await;
        for _ in 0..3 {
            streams.push(accepted(&app, &cookie).await);
        }
    }
    for stream in &mut streams {
        assert!(
            stream
                .wait_for("event: rows", Duration::from_secs(10))
                .await,
            "{}",
            stream.text()
        );
    }
    // A measured window: one poll every 2 s serves all six streams (a poll per stream
    // would be about 15 in it).
    let before = live_polls(&app).await;
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let polled = live_polls(&app).await - before;
    eprintln!(
        "{polled} live-log polls in {:?} for six streams",
        window.elapsed()
    );
    assert!(
        (1..=3).contains(&polled),
        "{polled} polls in {:?} for six streams of one filter",
        window.elapsed()
    );
    // Once its streams are gone, the poll ends.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = live_polls(&app).await;
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = live_polls(&app).await;
        if now == last {
            break;
        }
        last = now;
        assert!(
            Instant::now() < deadline,
            "the poll goes on with nobody following"
        );
    }
}

/// A console session cookie (`posthorn_console=...`) signed in with `key`.
async fn console_cookie(app: &TestApp, key: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie_of = |resp: &reqwest::Response, name: &str| {
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .unwrap_or_else(|| panic!("no {name} cookie"))
            .to_owned()
    };
    let form = client
        .get(format!("{}/console/sign-in", app.base))
        .send()
        .await
        .expect("sign-in page");
    let signin = cookie_of(&form, "posthorn_signin");
    let html = form.text().await.expect("html");
    let token = html
        .split("name=\"signin\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the form's token")
        .to_owned();
    let signed_in = client
        .post(format!("{}/console/sign-in", app.base))
        .header("cookie", signin)
        .form(&[("signin", token.as_str()), ("key", key)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 303);
    cookie_of(&signed_in, "posthorn_console")
}

#[tokio::test]
async fn the_console_s_live_log_has_the_same_caps_and_counts_against_its_key() {
    let app = spawn_app_with(|c| {
        c.streams.per_session = 2;
        c.streams.per_key = 3;
    })
    .await;
    let (first, second) = (
        console_cookie(&app, &app.admin_key).await,
        console_cookie(&app, &app.admin_key).await,
    );
    let console = |cookie: String| {
        let addr = addr(&app);
        async move { open(&addr, "/console/log/stream", &[("Cookie", &cookie)]).await }
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let opened = console(first.clone()).await;
        assert_eq!(opened.status, 200, "{}", opened.head);
        held.push(opened);
    }
    assert_refused(console(first.clone()).await, "this session").await;
    let opened = console(second.clone()).await;
    assert_eq!(opened.status, 200, "{}", opened.head);
    held.push(opened);
    // The key signed in twice has its three.
    assert_refused(console(second).await, "this API key").await;
    assert_refused(listen_stream(&app, &app.admin_key).await, "this API key").await;
    assert_serving(&app).await;
}

#[tokio::test]
async fn streams_never_take_more_than_half_the_connection_slots() {
    let app = spawn_app_with(|c| c.connections.max_connections = 8).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(listening(&app, &app.admin_key).await);
    }
    assert_refused(listen_stream(&app, &app.admin_key).await, "this server").await;
    let token = portal_link(&app, &app.admin_key).await;
    let cookie = portal_cookie(&app, &token).await;
    assert_refused(portal_stream(&app, &cookie).await, "this server").await;
    assert_serving(&app).await;
}
