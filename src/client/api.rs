//! Calls to a posthorn's HTTP API, and what a failed one means to a script.
//!
//! Policy: every failure becomes a [`ClientError`] whose [`ClientError::exit_code`] a
//! script can switch on, and whose text is the API's own `message` in plain words
//! (with its `code`), never a raw body. 429 and 503 are retried as `Retry-After` says,
//! a few times, before they are reported.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Exit codes (README, "The CLI client").
pub mod exit {
    /// The API refused the request (4xx other than the ones below), or some of a bulk
    /// request was refused.
    pub const REFUSED: u8 = 1;
    /// The command line is wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// 404: no such resource in the key's org.
    pub const NOT_FOUND: u8 = 3;
    /// 401 or 403: the key is unknown, revoked, or its role may not do this.
    pub const DENIED: u8 = 4;
    /// The server cannot be reached, timed out, or answered 5xx.
    pub const UNAVAILABLE: u8 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered an error.
    #[error("{message} ({status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached or did not answer in time.
    #[error("cannot reach {url}: {why}")]
    Unreachable { url: String, why: String },
    /// The command cannot be carried out as given (no server configured, a bad file).
    #[error("{0}")]
    Usage(String),
    /// Part of a bulk command was refused; the summary was printed.
    #[error("{0}")]
    Partial(String),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Api { status: 404, .. } => exit::NOT_FOUND,
            Self::Api {
                status: 401 | 403, ..
            } => exit::DENIED,
            Self::Api { status, .. } if *status >= 500 => exit::UNAVAILABLE,
            Self::Api { .. } | Self::Partial(_) => exit::REFUSED,
            Self::Unreachable { .. } => exit::UNAVAILABLE,
            Self::Usage(_) => exit::USAGE,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// How many times a 429 or 503 is retried before it is reported.
const RETRIES: u32 = 5;
/// The longest `Retry-After` waited for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A posthorn server and the key to call it with.
#[derive(Clone)]
pub struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(base: &str, key: &str) -> ClientResult<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "the server URL must start with http:// or https:// (got {base:?})"
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("posthorn-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            base,
            key: key.to_owned(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request builder with the key, for the calls that stream.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
    }

    pub async fn get(&self, path: &str) -> ClientResult<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> ClientResult<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> ClientResult<Value> {
        self.call(Method::DELETE, path, None).await
    }

    /// One API call: the answer's JSON, or what went wrong. 429 and 503 are waited out.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ClientResult<Value> {
        let mut tries = 0;
        loop {
            let mut req = self
                .request(method.clone(), path)
                .timeout(Duration::from_secs(60));
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
            let status = resp.status();
            if matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) && tries < RETRIES
            {
                tries += 1;
                tokio::time::sleep(retry_after(&resp)).await;
                continue;
            }
            let text = resp.text().await.map_err(|e| self.unreachable(&e))?;
            return answer(status, &text);
        }
    }

    pub fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        let why = if e.is_timeout() {
            "no answer in time".to_owned()
        } else if e.is_connect() {
            "connection refused or failed".to_owned()
        } else {
            crate::error::chain(e)
        };
        ClientError::Unreachable {
            url: self.base.clone(),
            why,
        }
    }
}

/// `Retry-After` of an answer (seconds), 1 s when absent, capped.
pub fn retry_after(resp: &reqwest::Response) -> Duration {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_WAIT)
}

/// The JSON of a 2xx answer, or the API's error in plain words.
pub fn answer(status: StatusCode, text: &str) -> ClientResult<Value> {
    let json: Option<Value> = serde_json::from_str(text).ok();
    if status.is_success() {
        return Ok(json.unwrap_or(Value::Null));
    }
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Err(ClientError::Api {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| "unknown".into()),
        message: field("message").unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("the server answered an error")
                .to_owned()
        }),
    })
}

/// `s` for a path segment.
pub fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
