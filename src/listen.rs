//! `posthorn listen`: a local receiver for developers. It prints each delivery and
//! whether its two signatures verify, and answers 200 when both do (401 otherwise, so
//! a wrong secret shows up as failed attempts in posthorn too).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;

use crate::delivery::sign;
use crate::domain::Timestamp;

/// How far `webhook-timestamp` may be from now (Standard Webhooks' tolerance).
const TOLERANCE_SECS: i64 = 300;

struct Listener {
    key: Vec<u8>,
    org: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "ok",
        Some(false) => "INVALID",
        None => "missing",
    }
}

async fn receive(State(l): State<Arc<Listener>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let fullstory = header(&headers, "fullstory-signature").map(|h| {
        let org_ok = l
            .org
            .as_deref()
            .is_none_or(|org| h.starts_with(&format!("o:{org},")));
        org_ok && sign::verify_fullstory(&l.key, h, &body)
    });
    let id = header(&headers, "webhook-id").unwrap_or("-");
    let standard = match (
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
    ) {
        (Some(ts), Some(sig)) => Some(ts.parse::<i64>().is_ok_and(|ts| {
            let now = Timestamp::now().millis() / 1000;
            (now - ts).abs() <= TOLERANCE_SECS && sign::verify_standard(&l.key, id, ts, sig, &body)
        })),
        _ => None,
    };
    let event = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("eventName")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into());
    let text = String::from_utf8_lossy(&body);
    let short: String = text.chars().take(160).collect();
    let ellipsis = if text.chars().count() > 160 {
        "…"
    } else {
        ""
    };
    println!(
        "{} {event} id={id} fullstory-signature={} webhook-signature={} body={short}{ellipsis}",
        Timestamp::now().to_rfc3339(),
        verdict(fullstory),
        verdict(standard),
    );
    if fullstory == Some(true) && standard == Some(true) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

pub async fn run(addr: SocketAddr, secret: &str, org: Option<String>) -> anyhow::Result<()> {
    let state = Arc::new(Listener {
        key: sign::raw_key_bytes(secret),
        org,
    });
    let app = Router::new().fallback(receive).with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("posthorn listen: receiving on http://{addr}/ (Ctrl-C to stop)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("receiver failed")
}
