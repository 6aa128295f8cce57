//! `posthorn events publish --file F.ndjson`: a file of any size, one event per line,
//! streamed through the batch API.
//!
//! Policy: lines are read as they are sent (memory is one batch), in batches of at most
//! [`BATCH_EVENTS`] events and [`BATCH_BYTES`] bytes. A line that is not a JSON object
//! is refused here; an event the server refuses (its 400 names `events[i]`) is taken
//! out of its batch and the rest sent again, so every good line is published once and
//! every bad one is reported by its 1-based line number with the server's reason. A
//! batch too large for the server (413) is split. 429 and 503 are waited out as
//! `Retry-After` says. On a terminal a progress bar shows rate and ETA; otherwise a
//! plain line every few seconds.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::api::{Api, ClientError, ClientResult};
use super::output::Format;

/// Events per batch request (the server takes up to 1000).
const BATCH_EVENTS: usize = 500;
/// Bytes of events per batch request (the server's default body limit is 1 MiB).
const BATCH_BYTES: usize = 512 * 1024;
/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// A refused line and why.
struct Refused {
    line: u64,
    code: String,
    message: String,
}

struct Run<'a> {
    api: &'a Api,
    accepted: u64,
    refused: Vec<Refused>,
    bar: ProgressBar,
    started: Instant,
    last_plain: Instant,
    plain: bool,
}

pub async fn file(api: &Api, format: Format, path: &Path) -> ClientResult<()> {
    let (reader, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = if path == Path::new("-")
    {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Usage(format!("cannot open {}: {e}", path.display())))?;
        let size = file.metadata().await.ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let terminal = std::io::stderr().is_terminal();
    let bar = match (terminal, size) {
        (false, _) => ProgressBar::hidden(),
        (true, Some(size)) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{wide_bar}] {percent}% ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        (true, None) => ProgressBar::new_spinner(),
    };
    let mut run = Run {
        api,
        accepted: 0,
        refused: Vec::new(),
        bar,
        started: Instant::now(),
        last_plain: Instant::now(),
        plain: !terminal,
    };
    let mut lines = BufReader::new(reader);
    let (mut batch, mut batch_bytes) = (Vec::new(), 0);
    let (mut line_no, mut read) = (0u64, 0u64);
    let mut buf = String::new();
    loop {
        buf.clear();
        let n = lines
            .read_line(&mut buf)
            .await
            .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        read += n as u64;
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(event @ Value::Object(_)) => {
                batch_bytes += text.len();
                batch.push((line_no, event));
            }
            Ok(_) => run.refuse(line_no, "invalid_json", "the line is not a JSON object"),
            Err(e) => run.refuse(
                line_no,
                "invalid_json",
                &format!("the line is not JSON: {e}"),
            ),
        }
        if batch.len() >= BATCH_EVENTS || batch_bytes >= BATCH_BYTES {
            run.send(std::mem::take(&mut batch)).await?;
            batch_bytes = 0;
            run.progress(read);
        }
    }
    if !batch.is_empty() {
        run.send(batch).await?;
    }
    run.progress(read);
    run.bar.finish_and_clear();
    run.summary(format)
}

impl Run<'_> {
    fn refuse(&mut self, line: u64, code: &str, message: &str) {
        self.refused.push(Refused {
            line,
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Publishes a batch; what the server refuses is taken out and the rest sent again.
    async fn send(&mut self, batch: Vec<(u64, Value)>) -> ClientResult<()> {
        let mut pending = vec![batch];
        while let Some(mut batch) = pending.pop() {
            if batch.is_empty() {
                continue;
            }
            let events: Vec<&Value> = batch.iter().map(|(_, e)| e).collect();
            let body = json!({ "events": events });
            match self.api.post("/webhooks/v1/events/batch", &body).await {
                Ok(_) => self.accepted += batch.len() as u64,
                Err(ClientError::Api {
                    status,
                    code,
                    message,
                }) if status == 400 || status == 413 => match at_index(&message) {
                    Some(i) if i < batch.len() => {
                        let (line, _) = batch.remove(i);
                        self.refuse(line, &code, without_index(&message));
                        pending.push(batch);
                    }
                    _ if status == 413 && batch.len() > 1 => {
                        let back = batch.split_off(batch.len() / 2);
                        pending.push(back);
                        pending.push(batch);
                    }
                    _ if batch.len() == 1 => {
                        self.refuse(batch[0].0, &code, without_index(&message))
                    }
                    _ => {
                        return Err(ClientError::Api {
                            status,
                            code,
                            message,
                        })
                    }
                },
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    fn progress(&mut self, read: u64) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.accepted as f64 / secs;
        let msg = format!(
            "{} published ({rate:.0}/s), {} refused",
            self.accepted,
            self.refused.len()
        );
        self.bar.set_position(read);
        self.bar.set_message(msg.clone());
        if self.plain && self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            eprintln!("{msg}");
        }
    }

    fn summary(mut self, format: Format) -> ClientResult<()> {
        self.refused.sort_by_key(|r| r.line);
        let secs = self.started.elapsed().as_secs_f64();
        match format {
            Format::Json => super::output::json(&json!({
                "accepted": self.accepted,
                "refused": self.refused.iter().map(|r| json!({
                    "line": r.line, "code": r.code, "message": r.message
                })).collect::<Vec<_>>(),
            })),
            Format::Table => {
                println!(
                    "accepted {} events in {secs:.1} s, refused {}",
                    self.accepted,
                    self.refused.len()
                );
                for r in &self.refused {
                    println!("line {}: {} ({})", r.line, r.message, r.code);
                }
            }
        }
        match self.refused.len() {
            0 => Ok(()),
            n => Err(ClientError::Partial(format!(
                "{n} of the file's events were refused"
            ))),
        }
    }
}

/// A message about `events[i]` told of the line instead: `events[3].data must be ...`
/// becomes `data must be ...` (the batch index means nothing to the file's reader).
fn without_index(message: &str) -> &str {
    match message
        .strip_prefix("events[")
        .and_then(|r| r.split_once(']'))
    {
        Some((_, rest)) => rest.strip_prefix('.').unwrap_or(rest).trim_start(),
        None => message,
    }
}

/// `i` of a message about `events[i]`.
fn at_index(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("events[")?;
    let end = rest.find(']')?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_event_a_message_names() {
        assert_eq!(
            super::at_index("events[12].eventName is required"),
            Some(12)
        );
        assert_eq!(super::at_index("events[x] bad"), None);
        assert_eq!(
            super::without_index("events[3].data must be a JSON object"),
            "data must be a JSON object"
        );
        assert_eq!(super::without_index("events[3] is bad"), "is bad");
        assert_eq!(super::without_index("plain"), "plain");
        assert_eq!(
            super::at_index("events must hold at most 1000 events"),
            None
        );
    }
}
