//! Slow and idle clients over real sockets: header, idle and body timeouts, the bound
//! on connections, and a shutdown that does not wait for clients that never finished
//! a request.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Node, TestApp, TestDb, ADMIN_KEY};

pub(crate) fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `within` passes: then panics);
/// returns what it sent.
pub(crate) async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&got).into_owned()
}

async fn short_timeouts() -> TestApp {
    spawn_app_with(|c| {
        c.connections.header_timeout = Duration::from_millis(300);
        c.connections.body_timeout = Duration::from_millis(300);
    })
    .await
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_dropped() {
    let app = short_timeouts().await;
    let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
    read_until_closed(&mut s, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn headers_sent_a_line_at_a_time_are_cut_off() {
    let app = short_timeouts().await;
    let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut closed = false;
    // A header line every 100 ms for up to 5 s: each alone is quick, the whole is not.
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "still open after {:?} of dripping",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = short_timeouts().await;
    let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let app = short_timeouts().await;
    let mut s = TcpStream::connect(addr(&app)).await.expect("connect");
    let head = format!(
        "POST /webhooks/v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Basic {ADMIN_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"eventName\""
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let answer = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    let events = app.sql_i64("SELECT COUNT(*) FROM events").await;
    assert_eq!(events, 0, "nothing stored");
}

/// Opens a connection in the middle of a request: its headers sent, its body not.
async fn mid_request(app: &TestApp) -> TcpStream {
    let mut s = TcpStream::connect(addr(app)).await.expect("connect");
    let head = format!(
        "POST /webhooks/v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Basic {ADMIN_KEY}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s
}

#[tokio::test]
async fn a_connection_over_the_limit_is_answered_503_and_the_slot_comes_back() {
    // Idle connections give their slot up to a new one (tests/api/hostile/connections.rs);
    // these two are in the middle of a request, so they keep theirs.
    let app = spawn_app_with(|c| c.connections.max_connections = 2).await;
    let a = mid_request(&app).await;
    let _b = mid_request(&app).await;
    // Both are accepted and their requests started before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = TcpStream::connect(addr(&app)).await.expect("connect");
    let answer = read_until_closed(&mut c, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains(r#""code":"unavailable""#), "{answer}");
    drop(a);
    // The slot is free once the server has seen the close.
    let mut ok = false;
    for _ in 0..50 {
        let mut d = TcpStream::connect(addr(&app)).await.expect("connect");
        d.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        if read_until_closed(&mut d, Duration::from_secs(5))
            .await
            .starts_with("HTTP/1.1 200")
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a closed connection's slot never came back");
}

#[tokio::test]
async fn sigterm_does_not_wait_for_clients_that_never_sent_a_whole_request() {
    let db = TestDb::new().await;
    let mut node = Node::start(
        &db.url,
        &[
            ("POSTHORN_SHUTDOWN_GRACE_SECS", "30"),
            ("POSTHORN_HEADER_TIMEOUT", "60s"),
        ],
    )
    .await;
    let addr = node.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nx-half: ")
                .await
                .expect("write");
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = node.terminate().await;
    assert!(status.success(), "{status}: {}", node.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: the 30 s grace was waited out",
        started.elapsed()
    );
}

/// Sends `raw` on a new connection and returns the status and JSON body of the answer
/// the server closes the connection after.
async fn rejected(app: &TestApp, raw: &[u8]) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr(app)).await.expect("connect");
    // The server may answer and close before it has read all of a large request.
    let _ = s.write_all(raw).await;
    let answer = read_until_closed(&mut s, Duration::from_secs(5)).await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let status = head[9..12].parse().expect("a status");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, body)
}

#[tokio::test]
async fn requests_hyper_rejects_get_the_error_body() {
    let app = spawn_app_with(|_| {}).await;
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        (
            "a malformed request line",
            b"GARBAGE\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "a header without a colon",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "two different Content-Length headers",
            b"POST /webhooks/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
              Content-Length: 6\r\n\r\nhello"
                .to_vec(),
            400,
            "malformed_request",
        ),
        (
            "headers over the read buffer",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(200_000)
            )
            .into_bytes(),
            431,
            "headers_too_large",
        ),
    ];
    for (what, raw, status, code) in cases {
        let (got, body) = rejected(&app, &raw).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A URI too long for the buffer is refused the same way.
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(200_000));
    let (got, body) = rejected(&app, long.as_bytes()).await;
    assert!(matches!(got, 414 | 431), "{got}: {body}");
    // And the server still answers the next client.
    let health = reqwest::get(format!("{}/healthz", app.base))
        .await
        .expect("get");
    assert!(health.status().is_success());
}
