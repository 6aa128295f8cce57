//! One delivery attempt: sign, send, classify. Never touches the store.

use std::time::{Duration, Instant};

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use url::{Host, Url};

use super::{client, sign, Engine};
use crate::domain::net::is_forbidden;
use crate::domain::Timestamp;
use crate::store::{AttemptRecord, Claimed, Outcome};

/// How much of a response body is kept in the delivery log.
pub const MAX_LOGGED_BODY: usize = 1024;

/// The class and text of why an attempt failed, without secrets or payloads.
fn describe(err: &reqwest::Error, timeout: Duration) -> (&'static str, String) {
    if err.is_timeout() {
        return (
            "timeout",
            format!("timed out after {}", humantime::format_duration(timeout)),
        );
    }
    if client::is_ssrf_refusal(err) {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<client::SsrfRefused>() {
                return ("ssrf", refused.to_string());
            }
            source = e.source();
        }
    }
    let mut root: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = root.source() {
        root = next;
    }
    if err.is_connect() {
        ("connect", format!("connection failed: {root}"))
    } else {
        ("request", format!("request failed: {root}"))
    }
}

/// The literal address of `url`'s host, when it is one that may not be dialled.
fn refused_literal(url: &str) -> Option<String> {
    let parsed = Url::parse(url).ok()?;
    let forbidden = match parsed.host()? {
        Host::Ipv4(ip) => is_forbidden(ip.into()),
        Host::Ipv6(ip) => is_forbidden(ip.into()),
        Host::Domain(_) => false,
    };
    forbidden.then(|| {
        format!(
            "refused: {} is not a public address (SSRF guard)",
            parsed.host_str().unwrap_or("")
        )
    })
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

async fn read_truncated(mut resp: reqwest::Response) -> Option<String> {
    let mut buf = Vec::new();
    while buf.len() < MAX_LOGGED_BODY {
        match resp.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            _ => break,
        }
    }
    buf.truncate(MAX_LOGGED_BODY);
    (!buf.is_empty()).then(|| storable(&String::from_utf8_lossy(&buf)))
}

/// Text as the delivery log can keep it: no store keeps a NUL inside text.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// What one POST to an endpoint came to.
#[derive(Debug, Default)]
pub struct Sent {
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub error_class: Option<&'static str>,
    pub response_body: Option<String>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
}

impl Sent {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// Signs `body` (Fullstory-Signature with the first key, `webhook-signature` with
/// every key) and POSTs it to `url`, applying the SSRF guard.
pub async fn send(
    engine: &Engine,
    url: &str,
    org: &str,
    msg_id: &str,
    body: &[u8],
    keys: &[Vec<u8>],
) -> Sent {
    let mut sent = Sent::default();
    if !engine.allow_private {
        if let Some(refused) = refused_literal(url) {
            sent.error = Some(refused);
            sent.error_class = Some("ssrf");
            return sent;
        }
    }
    let ts = Timestamp::now().millis().div_euclid(1000);
    let standard: Vec<String> = keys
        .iter()
        .map(|k| sign::standard_signature(k, msg_id, ts, body))
        .collect();
    let fullstory = keys
        .first()
        .map(|k| sign::fullstory_header(k, org, ts, body))
        .unwrap_or_default();
    let request = engine
        .client
        .post(url)
        .timeout(engine.attempt_timeout)
        .header(CONTENT_TYPE, "application/json")
        .header("Fullstory-Signature", fullstory)
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", standard.join(" "))
        .body(body.to_vec());
    let clock = Instant::now();
    match request.send().await {
        Ok(resp) => {
            let status = resp.status();
            sent.retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| parse_retry_after(&resp))
                .flatten();
            sent.status = Some(status.as_u16());
            sent.response_body = read_truncated(resp).await;
            if !status.is_success() {
                sent.error = Some(format!("endpoint answered {status}"));
                sent.error_class = Some("http_status");
            }
        }
        Err(e) => {
            let (class, text) = describe(&e, engine.attempt_timeout);
            sent.error = Some(storable(&text));
            sent.error_class = Some(class);
        }
    }
    sent.latency_ms = clock.elapsed().as_millis() as u64;
    sent
}

/// Makes one attempt of a claimed delivery and says what should become of it.
pub async fn attempt(engine: &Engine, c: &Claimed, token: &str) -> AttemptRecord {
    let started = Timestamp::now();
    let mut record = AttemptRecord {
        delivery_id: c.delivery_id,
        claim_token: token.to_owned(),
        attempt_no: Some(c.attempts + 1),
        started,
        latency_ms: 0,
        status_code: None,
        error: None,
        error_class: None,
        response_body: None,
        outcome: Outcome::Failed,
        endpoint_uid: c.endpoint_uid,
    };
    if !c.endpoint_live {
        record.attempt_no = None;
        record.error = Some("endpoint was disabled or deleted before delivery".into());
        return record;
    }
    // Position in the retry schedule: a manual retry or recover starts it over.
    let schedule_no = (c.attempts + 1).saturating_sub(c.retry_base);
    let mut keys = Vec::with_capacity(2);
    for sealed in std::iter::once(&c.sealed_secret).chain(c.old_sealed_secret.as_ref()) {
        match engine.master_key.open_secret(&c.org_id, sealed) {
            Ok(secret) => keys.push(sign::key_bytes(&secret)),
            Err(e) => {
                tracing::error!(delivery.id = c.delivery_id, error = %e, "cannot open endpoint secret")
            }
        }
    }
    let sent = if keys.is_empty() {
        Sent {
            error: Some("endpoint secret cannot be decrypted with this master key".into()),
            error_class: Some("secret"),
            ..Sent::default()
        }
    } else {
        send(
            engine,
            &c.url,
            c.org_id.as_str(),
            &c.event_id,
            &c.body,
            &keys,
        )
        .await
    };
    // The next attempt is timed from the end of this one.
    record.outcome = if sent.succeeded() {
        Outcome::Delivered
    } else {
        engine
            .policy
            .after_failure(schedule_no, sent.retry_after, Timestamp::now())
    };
    record.status_code = sent.status;
    record.latency_ms = sent.latency_ms;
    record.error = sent.error;
    record.error_class = sent.error_class;
    record.response_body = sent.response_body;
    record
}
