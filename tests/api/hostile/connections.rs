//! Connections and metric labels against a hostile client (items 4 and 9): method names
//! and paths a client makes up do not become metric labels, one client address cannot
//! take every connection slot with idle or half-sent connections, and the SQLite lock
//! file is private.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::connections::{addr, read_until_closed};
use crate::helpers::{spawn_app_on, spawn_app_with, Backend, TestApp};

/// Small caps so that a flood is quick: 20 connections in all, 8 per client address.
async fn small_caps() -> TestApp {
    spawn_app_with(|c| {
        c.connections.max_connections = 20;
        c.connections.max_connections_per_client = 8;
    })
    .await
}

/// A loopback address other than 127.0.0.1: every address of 127.0.0.0/8 is this host,
/// so a socket bound to one is another client to the server.
fn client(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Connects to `app` from the loopback address `from`.
async fn connect_from(app: &TestApp, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    let server: SocketAddr = addr(app).parse().expect("server address");
    socket.connect(server).await.expect("connect")
}

/// Sends one request on `stream` and reads its whole answer (by `content-length`),
/// leaving the connection open: the status.
async fn exchange(stream: &mut TcpStream, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no whole answer within 5 s");
    let text = String::from_utf8_lossy(&got);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an answer: {text:?}"))
}

/// One normal request from `from` on a new connection: its answer (empty if the
/// connection was closed without one).
async fn normal_request(app: &TestApp, from: IpAddr) -> String {
    let mut s = connect_from(app, from).await;
    let _ = s
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await;
    read_until_closed(&mut s, Duration::from_secs(5)).await
}

/// Whether a normal request from `from` is answered 200 within 5 s (a 503 is tried
/// again: the server may refuse while what it could close is only just opened).
async fn served(app: &TestApp, from: IpAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = normal_request(app, from).await;
        if answer.starts_with("HTTP/1.1 200") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(answer.lines().next().unwrap_or("closed").to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the server has closed `stream` (it reads the end, or an error, at once).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Waits up to 5 s for the server to close `stream`.
async fn closed_within(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if closed(stream).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn metrics(app: &TestApp) -> String {
    reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("get /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Sends `raw` on a new connection and waits for the answer and the close.
async fn one_shot(app: &TestApp, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr(app)).await.expect("connect");
    let _ = s.write_all(raw).await;
    read_until_closed(&mut s, Duration::from_secs(5)).await
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let app = spawn_app_with(|_| {}).await;
    // Every label a normal scrape and a 404 make, before the probe.
    assert_eq!(
        reqwest::get(format!("{}/nope", app.base))
            .await
            .expect("get")
            .status(),
        404
    );
    let before = metrics(&app).await.len();
    // 300 different 16 KiB method names, each on its own connection.
    for i in 0..300 {
        let method = format!("{}{i:03}", "M".repeat(16 * 1024 - 3));
        let raw = format!("{method} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let answer = one_shot(&app, raw.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 4"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    // 300 paths no route matches.
    for i in 0..300 {
        let raw = format!(
            "GET /probe-{i}-{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            "p".repeat(1000)
        );
        let answer = one_shot(&app, raw.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 404"),
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    let after = metrics(&app).await;
    assert!(
        after.len() < before + 64 * 1024,
        "/metrics grew from {before} to {} bytes",
        after.len()
    );
    assert!(!after.contains("MMMM"), "a made-up method became a label");
    assert!(
        !after.contains("probe-"),
        "an unmatched path became a label"
    );
    // Still counted, under one label each.
    assert!(after.contains(r#"method="other""#), "{after}");
    assert!(after.contains(r#"route="unmatched""#), "{after}");
}

#[tokio::test]
async fn a_client_over_its_cap_loses_its_oldest_idle_connection_not_the_new_request() {
    let app = small_caps().await;
    let me = client(1);
    // Eight keep-alive connections, each idle after one request: the client's cap.
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut s = connect_from(&app, me).await;
        assert_eq!(exchange(&mut s, "/healthz").await, 200);
        idle.push(s);
    }
    // A ninth request from the same address is served, and the oldest idle connection
    // is the one closed for it.
    served(&app, me)
        .await
        .expect("a request over the client's cap");
    assert!(
        closed_within(&mut idle[0]).await,
        "the oldest idle connection is still open"
    );
    for s in &mut idle[1..] {
        assert!(!closed(s).await, "a newer idle connection was closed");
    }
}

#[tokio::test]
async fn idle_sockets_of_one_client_do_not_stop_another() {
    let app = small_caps().await;
    // More idle sockets than the client's cap and the global cap together.
    let mut held = Vec::new();
    for _ in 0..(8 + 20 + 2) {
        held.push(connect_from(&app, client(1)).await);
    }
    served(&app, client(2))
        .await
        .expect("another client was refused while one held idle sockets");
    // The one client's own requests get through too, in place of its idle sockets.
    served(&app, client(1))
        .await
        .expect("the holder's own request was refused");
}

#[tokio::test]
async fn idle_sockets_from_several_addresses_filling_every_slot_do_not_stop_another() {
    let app = small_caps().await;
    // Every one of the 20 slots held idle: 8 by one address, 8 by another, 4 by a third.
    let mut held = Vec::new();
    for (n, count) in [(1, 8), (3, 8), (4, 4)] {
        for _ in 0..count {
            let mut s = connect_from(&app, client(n)).await;
            assert_eq!(exchange(&mut s, "/healthz").await, 200);
            held.push(s);
        }
    }
    served(&app, client(2))
        .await
        .expect("a new client was refused while every slot was held idle");
    // The slot came from a client holding the most (the first: its idle connection had
    // waited longest), not from the one holding fewest.
    assert!(
        closed_within(&mut held[0]).await,
        "the longest-idle connection of the biggest holder is still open"
    );
    for s in &mut held[16..] {
        assert!(
            !closed(s).await,
            "a connection of the smallest holder was closed"
        );
    }
}

#[tokio::test]
async fn a_flood_of_stalled_half_headers_does_not_block_a_normal_request() {
    let app = small_caps().await;
    let mut flood = Vec::new();
    for n in [1, 3, 4] {
        for _ in 0..15 {
            let mut s = connect_from(&app, client(n)).await;
            // Half a header line, then nothing (until the 10 s header timeout).
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nx-stall: ").await;
            flood.push(s);
        }
    }
    served(&app, client(2))
        .await
        .expect("a normal request from another address was refused");
    served(&app, client(1))
        .await
        .expect("a normal request from a flooding address was refused");
}

#[tokio::test]
async fn the_sqlite_lock_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app_on(Backend::Sqlite, |_| {}).await;
    let answer = one_shot(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let db = app
        .database_url
        .strip_prefix("sqlite://")
        .expect("an SQLite store");
    let lock = format!("{db}.lock");
    let mode = std::fs::metadata(&lock)
        .unwrap_or_else(|e| panic!("{lock}: {e}"))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{lock} is mode {:o}", mode & 0o777);
}
