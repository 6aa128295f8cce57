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

/// Why an attempt failed, said once, without secrets or payloads.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    if client::is_ssrf_refusal(err) {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = source {
            if let Some(refused) = e.downcast_ref::<client::SsrfRefused>() {
                return refused.to_string();
            }
            source = e.source();
        }
    }
    let mut root: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = root.source() {
        root = next;
    }
    let kind = if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{kind}: {root}")
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

fn parse_retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let value = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
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
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
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
        response_body: None,
        outcome: Outcome::Failed,
    };
    if !c.endpoint_live {
        record.attempt_no = None;
        record.error = Some("endpoint was disabled or deleted before delivery".into());
        return record;
    }
    let attempt_no = c.attempts + 1;
    let secret = match engine.master_key.open_secret(&c.org_id, &c.sealed_secret) {
        Ok(secret) => secret,
        Err(e) => {
            tracing::error!(delivery.id = c.delivery_id, error = %e, "cannot open endpoint secret");
            record.error = Some("endpoint secret cannot be decrypted with this master key".into());
            record.outcome = engine.policy.after_failure(attempt_no, None, started);
            return record;
        }
    };
    if !engine.allow_private {
        if let Some(refused) = refused_literal(&c.url) {
            record.error = Some(refused);
            record.outcome = engine.policy.after_failure(attempt_no, None, started);
            return record;
        }
    }
    let ts = started.millis().div_euclid(1000);
    let key = sign::key_bytes(&secret);
    let request = engine
        .client
        .post(&c.url)
        .timeout(engine.attempt_timeout)
        .header(CONTENT_TYPE, "application/json")
        .header(
            "Fullstory-Signature",
            sign::fullstory_header(&key, c.org_id.as_str(), ts, &c.body),
        )
        .header("webhook-id", &c.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign::standard_signature(&key, &c.event_id, ts, &c.body),
        )
        .body(c.body.clone());
    let clock = Instant::now();
    let result = request.send().await;
    match result {
        Ok(resp) => {
            let status = resp.status();
            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| parse_retry_after(&resp))
                .flatten();
            record.status_code = Some(status.as_u16());
            record.response_body = read_truncated(resp).await;
            record.latency_ms = clock.elapsed().as_millis() as u64;
            if status.is_success() {
                record.outcome = Outcome::Delivered;
            } else {
                record.error = Some(format!("endpoint answered {status}"));
                record.outcome = engine
                    .policy
                    .after_failure(attempt_no, retry_after, started);
            }
        }
        Err(e) => {
            record.latency_ms = clock.elapsed().as_millis() as u64;
            record.error = Some(describe(&e, engine.attempt_timeout));
            record.outcome = engine.policy.after_failure(attempt_no, None, started);
        }
    }
    record
}
