//! The live log's streams: the pool, the caps per session, link, key and org, and one
//! poll per org and filter.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::helpers::{spawn_app, spawn_app_with, TestApp};

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
