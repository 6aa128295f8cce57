//! `posthorn listen --forward-to URL`: the org's deliveries, taken over an outbound
//! stream from a (remote) server and forwarded to a local URL; each local answer is
//! reported back and becomes the attempt's outcome in the server's log.
//!
//! Policy: each forwarded request carries the headers posthorn signed it with, so the
//! local app verifies it with the `secret` printed at start. Redirects are not
//! followed, as posthorn does not follow them. One line per delivery is printed on
//! stdout. The stream is server-sent events; its few rules (`event:`, `data:`, a blank
//! line ends an event, `:` a comment) are read here.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{answer, segment, Api, ClientError, ClientResult};
use super::Remote;

/// How long the local app has to answer: under posthorn's default attempt timeout
/// (15 s), so that the report arrives while the attempt waits.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(12);
/// How much of the local answer's body is reported.
const REPORTED_BODY: usize = 1024;

pub async fn run(remote: &Remote, target: &str, events: &[String]) -> ClientResult<()> {
    let api = remote.api()?;
    let local = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(LOCAL_TIMEOUT)
        .build()
        .map_err(|e| ClientError::Usage(format!("cannot build an HTTP client: {e}")))?;
    url::Url::parse(target)
        .map_err(|e| ClientError::Usage(format!("--forward-to is not a URL: {e}")))?;
    let mut path = "/webhooks/v1/listen".to_owned();
    if !events.is_empty() {
        path.push_str(&format!("?events={}", segment(&events.join(","))));
    }
    let resp = api
        .request(Method::GET, &path)
        .send()
        .await
        .map_err(|e| api.unreachable(&e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        answer(status, &text)?;
        return Ok(());
    }
    let mut stream = resp.bytes_stream();
    let mut buffer = Vec::new();
    let mut event = SseEvent::default();
    let mut session = String::new();
    loop {
        let chunk = tokio::select! {
            chunk = stream.next() => chunk,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped; the temporary endpoint is removed");
                return Ok(());
            }
        };
        let chunk = match chunk {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(api.unreachable(&e)),
            None => {
                return Err(ClientError::Unreachable {
                    url: api.base().to_owned(),
                    why: "the server closed the stream".into(),
                })
            }
        };
        buffer.extend_from_slice(&chunk);
        while let Some(at) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=at).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(done) = event.feed(line.trim_end_matches(['\n', '\r'])) else {
                continue;
            };
            match done.name.as_str() {
                "ready" => {
                    let ready: Value = serde_json::from_str(&done.data).unwrap_or_default();
                    session = ready["session"].as_str().unwrap_or_default().to_owned();
                    println!(
                        "Ready: forwarding {} deliveries to {target}",
                        if events.is_empty() {
                            "every".to_owned()
                        } else {
                            events.join(",")
                        }
                    );
                    println!(
                        "Temporary endpoint {}",
                        ready["endpointId"].as_str().unwrap_or("-")
                    );
                    println!(
                        "Signing secret {} (verify with it in your app)",
                        ready["secret"].as_str().unwrap_or("-")
                    );
                }
                "delivery" => {
                    let forward: Value = serde_json::from_str(&done.data).unwrap_or_default();
                    let (api, local, target, session) = (
                        api.clone(),
                        local.clone(),
                        target.to_owned(),
                        session.clone(),
                    );
                    tokio::spawn(
                        async move { deliver(&api, &local, &target, &session, forward).await },
                    );
                }
                _ => {}
            }
        }
    }
}

/// Forwards one request, prints its line, and reports the answer.
async fn deliver(api: &Api, local: &reqwest::Client, target: &str, session: &str, forward: Value) {
    let id = forward["id"].as_u64().unwrap_or_default();
    let body = forward["body"].as_str().unwrap_or_default().to_owned();
    let mut req = local.post(target);
    let mut msg_id = "-".to_owned();
    for pair in forward["headers"].as_array().map_or(&[][..], Vec::as_slice) {
        if let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) {
            if name == "webhook-id" {
                msg_id = value.to_owned();
            }
            req = req.header(name, value);
        }
    }
    let event_name = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|b| b["eventName"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".into());
    let started = Instant::now();
    let report = match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let text: String = text.chars().take(REPORTED_BODY).collect();
            json!({"id": id, "status": status, "body": text})
        }
        Err(e) => json!({"id": id, "error": crate::error::chain(&e)}),
    };
    let took = started.elapsed().as_millis();
    let outcome = match report["status"].as_u64() {
        Some(status) => status.to_string(),
        None => format!("no answer ({})", report["error"].as_str().unwrap_or("-")),
    };
    println!(
        "{}  {event_name}  {msg_id}  -> {outcome}  {took} ms",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let path = format!("/webhooks/v1/listen/{}", segment(session));
    if let Err(e) = api.post(&path, &report).await {
        eprintln!("could not report the answer to {msg_id}: {e}");
    }
}

/// An event of the stream being read.
#[derive(Debug, Default)]
struct SseEvent {
    name: String,
    data: String,
}

impl SseEvent {
    /// Takes one line; a blank one ends the event and gives it.
    fn feed(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let done = std::mem::take(self);
            return (!done.data.is_empty() || !done.name.is_empty()).then_some(done);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = value.to_owned(),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {} // comments (keep-alives), `id`, `retry`
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::SseEvent;

    #[test]
    fn reads_events_and_skips_comments() {
        let mut e = SseEvent::default();
        assert!(e.feed(": keep-alive").is_none());
        assert!(e.feed("").is_none());
        assert!(e.feed("event: delivery").is_none());
        assert!(e.feed("data: {\"id\":1}").is_none());
        let done = e.feed("").expect("an event");
        assert_eq!(
            (done.name.as_str(), done.data.as_str()),
            ("delivery", "{\"id\":1}")
        );
    }
}
