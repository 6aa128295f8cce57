//! One delivery attempt: open the secrets, sign, send, classify. Never touches the store.

use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};

use super::client::USER_AGENT as AGENT;
use super::{sign, Engine};
use crate::domain::{CustomHeaders, ErrorClass, Timestamp};
use crate::store::{AttemptRecord, Claimed, Outcome, Signal};

/// What one POST to an endpoint came to.
#[derive(Debug, Default)]
pub struct Sent {
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    pub error_class: Option<ErrorClass>,
    pub response_body: Option<String>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<std::time::Duration>,
}

impl Sent {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    fn failed(class: ErrorClass, message: String) -> Self {
        Self {
            error: Some(message),
            error_class: Some(class),
            ..Self::default()
        }
    }
}

fn header(value: &str) -> HeaderValue {
    // Signatures, ids and timestamps are ASCII by construction.
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers of a delivery: `Fullstory-Signature` with the first key,
/// `webhook-signature` with every key (new secret first).
fn signed_headers(org: &str, msg_id: &str, body: &[u8], keys: &[Vec<u8>]) -> HeaderMap {
    let ts = Timestamp::now().millis().div_euclid(1000);
    let standard: Vec<String> = keys
        .iter()
        .map(|k| sign::standard_signature(k, msg_id, ts, body))
        .collect();
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
    if let Some(key) = keys.first() {
        headers.insert(
            "fullstory-signature",
            header(&sign::fullstory_header(key, org, ts, body)),
        );
    }
    headers.insert("webhook-id", header(msg_id));
    headers.insert("webhook-timestamp", HeaderValue::from(ts));
    headers.insert("webhook-signature", header(&standard.join(" ")));
    headers
}

/// Signs `body` and POSTs it to `url` with the endpoint's custom headers (the SSRF
/// guard applies), within the attempt timeout.
pub async fn send(
    engine: &Engine,
    url: &str,
    org: &str,
    msg_id: &str,
    body: Bytes,
    keys: &[Vec<u8>],
    custom: Option<&CustomHeaders>,
) -> Sent {
    let mut headers = signed_headers(org, msg_id, &body, keys);
    // None of them can replace one of posthorn's: those names are refused at save.
    for (name, value) in custom
        .map(CustomHeaders::to_header_pairs)
        .unwrap_or_default()
    {
        headers.insert(name, value);
    }
    let clock = Instant::now();
    let answer = match super::tunnel::session_of(url) {
        Some(session) => {
            let timeout = engine.attempt_timeout;
            engine
                .tunnels
                .post(session, org, &headers, body, timeout)
                .await
        }
        None => {
            engine
                .client
                .post(url, headers, body, engine.attempt_timeout)
                .await
        }
    };
    let mut sent = match answer {
        Ok(answer) => {
            let ok = (200..300).contains(&answer.status);
            Sent {
                status: Some(answer.status),
                error: (!ok).then(|| format!("endpoint answered {}", status_text(answer.status))),
                error_class: (!ok).then_some(ErrorClass::HttpStatus),
                response_body: answer.body,
                retry_after: answer.retry_after,
                latency_ms: 0,
            }
        }
        Err(failure) => Sent::failed(failure.class, failure.message),
    };
    sent.latency_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    sent
}

/// How long an overloaded endpoint is held back when it does not say (`Retry-After`).
pub const DEFAULT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// What an answer says of the endpoint as a whole: `410 Gone` (unless that is turned
/// off), or overloaded (`429`, `502`, `503`, `504`: held back for its `Retry-After`,
/// capped, or [`DEFAULT_PAUSE`]; a cap of 0 turns this off).
fn signal(engine: &Engine, sent: &Sent) -> Option<Signal> {
    match sent.status? {
        410 if engine.config.disable_on_gone => Some(Signal::Gone),
        429 | 502 | 503 | 504 if !engine.config.max_pause.is_zero() => {
            let pause = sent
                .retry_after
                .unwrap_or(DEFAULT_PAUSE)
                .min(engine.config.max_pause);
            Some(Signal::Overloaded {
                until: Timestamp::now().plus(pause),
            })
        }
        _ => None,
    }
}

/// `503 Service Unavailable`.
fn status_text(code: u16) -> String {
    match hyper::StatusCode::from_u16(code) {
        Ok(s) => s.to_string(),
        Err(_) => code.to_string(),
    }
}

/// Makes one attempt of a claimed delivery and says what should become of it.
pub async fn make(engine: &Engine, c: &Claimed) -> AttemptRecord {
    let started = Timestamp::now();
    let mut record = AttemptRecord {
        delivery: c.delivery,
        token: c.token,
        endpoint: c.endpoint.uid,
        attempt_no: Some(c.attempts + 1),
        started,
        latency_ms: 0,
        status_code: None,
        error: None,
        error_class: None,
        response_body: None,
        outcome: Outcome::Failed,
        queued: c.endpoint.flow.queued(),
        fifo: c.endpoint.flow.fifo,
        signal: None,
    };
    let target = &c.endpoint;
    if !target.live {
        record.attempt_no = None;
        record.error = Some("endpoint was disabled or deleted before delivery".into());
        return record;
    }
    // Position in the retry schedule: a manual retry or recover starts it over.
    let schedule_no = (c.attempts + 1).saturating_sub(c.retry_base);
    let old = target
        .old_secret
        .as_ref()
        .filter(|(_, until)| *until > started)
        .map(|(sealed, _)| sealed);
    let mut keys = Vec::with_capacity(2);
    for sealed in std::iter::once(&target.sealed_secret).chain(old) {
        match engine.master_key.open_secret(&target.org_id, sealed) {
            Ok(secret) => keys.push(sign::key_bytes(&secret)),
            Err(e) => {
                tracing::error!(delivery.row = c.delivery.0, error = %e, "cannot open endpoint secret")
            }
        }
    }
    let custom = match &target.sealed_headers {
        None => Ok(None),
        Some(sealed) => engine
            .master_key
            .open_headers(&target.org_id, sealed)
            .map(Some),
    };
    let sent = match (keys.is_empty(), custom) {
        (true, _) => Sent::failed(
            ErrorClass::Secret,
            "endpoint secret cannot be decrypted with this master key".into(),
        ),
        (false, Err(e)) => {
            tracing::error!(delivery.row = c.delivery.0, error = %e, "cannot open endpoint headers");
            Sent::failed(
                ErrorClass::Secret,
                "endpoint headers cannot be decrypted with this master key".into(),
            )
        }
        (false, Ok(custom)) => {
            send(
                engine,
                &target.url,
                target.org_id.as_str(),
                c.event.id.as_str(),
                c.event.body.clone(),
                &keys,
                custom.as_ref(),
            )
            .await
        }
    };
    // The next attempt is timed from the end of this one.
    record.outcome = if sent.succeeded() {
        Outcome::Delivered
    } else {
        engine
            .policy
            .after_failure(schedule_no, sent.retry_after, Timestamp::now())
    };
    record.signal = signal(engine, &sent);
    record.status_code = sent.status;
    record.latency_ms = sent.latency_ms;
    record.error = sent.error;
    record.error_class = sent.error_class;
    record.response_body = sent.response_body;
    record
}
