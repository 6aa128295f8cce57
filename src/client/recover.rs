//! `posthorn recover`: queue an endpoint's failed deliveries again, show how many, and
//! follow them until none of the range is pending.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::api::{segment, Api, ClientError, ClientResult};
use super::output::{self, Format};

/// How often the log is read while following.
const POLL: Duration = Duration::from_secs(1);

/// The publish-time range, as RFC 3339.
pub struct Range {
    since: String,
    until: Option<String>,
}

impl Range {
    pub fn parse(since: &str, until: Option<&str>) -> ClientResult<Self> {
        Ok(Self {
            since: instant("--since", since)?,
            until: until.map(|u| instant("--until", u)).transpose()?,
        })
    }

    fn query(&self, state: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("since", &self.since)
            .append_pair("state", state);
        if let Some(until) = &self.until {
            q.append_pair("until", until);
        }
        q.finish()
    }
}

/// RFC 3339 as given, or a duration ago (`90m`, `2d`) as RFC 3339.
fn instant(flag: &str, raw: &str) -> ClientResult<String> {
    if chrono::DateTime::parse_from_rfc3339(raw).is_ok() {
        return Ok(raw.to_owned());
    }
    let ago = humantime::parse_duration(raw).map_err(|_| {
        ClientError::Usage(format!(
            "{flag} must be an RFC 3339 time (2026-12-01T10:00:00Z) or a duration ago (1h)"
        ))
    })?;
    let at = chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub async fn run(
    api: &Api,
    format: Format,
    endpoint: &str,
    range: Range,
    follow: bool,
    timeout: Duration,
) -> ClientResult<()> {
    let base = format!("/webhooks/v1/endpoints/{}", segment(endpoint));
    let mut body = json!({"since": range.since});
    if let Some(until) = &range.until {
        body["until"] = Value::from(until.clone());
    }
    let answer = api.post(&format!("{base}/recover"), &body).await?;
    let queued = answer.get("queued").and_then(Value::as_u64).unwrap_or(0);
    if !follow || queued == 0 {
        match format {
            Format::Json => output::json(&answer),
            Format::Table => println!("queued {queued} failed deliveries again"),
        }
        return Ok(());
    }
    if format == Format::Table {
        println!("queued {queued} failed deliveries again; following them");
    }
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        ProgressBar::new(queued).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len} finished  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let deadline = Instant::now() + timeout;
    let mut last = None;
    let pending = loop {
        let pending = count(api, &base, &range.query("pending")).await?;
        bar.set_position(queued.saturating_sub(pending));
        if !terminal && last != Some(pending) {
            eprintln!("{pending} pending");
        }
        last = Some(pending);
        if pending == 0 || Instant::now() >= deadline {
            break pending;
        }
        tokio::time::sleep(POLL).await;
    };
    bar.finish_and_clear();
    let failed = count(api, &base, &range.query("failed")).await?;
    match format {
        Format::Json => {
            output::json(&json!({"queued": queued, "pending": pending, "failed": failed}))
        }
        Format::Table => println!(
            "{} finished: {failed} failed in the range now, {pending} still pending",
            queued.saturating_sub(pending)
        ),
    }
    if pending > 0 {
        return Err(ClientError::Partial(format!(
            "{pending} deliveries still pending after {}",
            humantime::format_duration(timeout)
        )));
    }
    Ok(())
}

/// How many deliveries of the endpoint match `query` (every page).
async fn count(api: &Api, base: &str, query: &str) -> ClientResult<u64> {
    let mut total = 0;
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("{base}/deliveries?{query}&limit=100");
        if let Some(t) = &token {
            path.push_str(&format!("&paginationToken={}", segment(t)));
        }
        let page = api.get(&path).await?;
        total += page
            .get("deliveries")
            .and_then(Value::as_array)
            .map_or(0, |d| d.len() as u64);
        match page.get("nextPaginationToken").and_then(Value::as_str) {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(total),
        }
    }
}
