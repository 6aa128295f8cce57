//! The HTTP client deliveries go out on: hyper with pooled keep-alive connections
//! (HTTP/1.1, or HTTP/2 where TLS negotiates it), rustls, no redirects, no proxies, and
//! the SSRF guard on the address actually dialled.
//!
//! Policy: literal addresses are checked before anything is sent; names are resolved by
//! a resolver that drops every address the guard refuses, so the connector can only
//! dial what passed. Requests are sent to the URL as parsed and normalised, the form
//! that was checked.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, RETRY_AFTER};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use url::{Host, Url};

use crate::domain::net::is_forbidden;
use crate::domain::ErrorClass;

pub const USER_AGENT: &str = concat!("posthorn/", env!("CARGO_PKG_VERSION"));
/// How much of a response body is kept in the delivery log.
pub const MAX_LOGGED_BODY: usize = 1024;

/// The error a refused name produces; found again in the error chain to say why.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0} resolves only to non-public addresses (SSRF guard)")]
pub struct SsrfRefused(pub String);

/// Resolves names with the system resolver; with the guard on, drops every address it
/// refuses.
#[derive(Clone)]
pub struct GuardedResolver {
    guard: bool,
}

type Resolved = std::vec::IntoIter<SocketAddr>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Name> for GuardedResolver {
    type Response = Resolved;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Resolved, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.guard;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !guard || !is_forbidden(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(SsrfRefused(host)) as BoxError);
            }
            Ok(addrs.into_iter())
        })
    }
}

type Inner =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

#[derive(Clone)]
pub struct Client {
    inner: Inner,
    guard: bool,
}

/// A receiver's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` as seconds or an HTTP date.
    pub retry_after: Option<Duration>,
    /// The first [`MAX_LOGGED_BODY`] bytes of the body, as text the log can keep.
    pub body: Option<String>,
}

/// Why no answer came.
#[derive(Debug)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
}

impl Client {
    /// `guard`: refuse non-public addresses (the default; off for development and tests).
    pub fn new(guard: bool, pool_per_host: usize) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { guard });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Self { inner, guard })
    }

    /// POSTs `body` with `headers` to `url`, within `timeout` (connecting included).
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let parsed = Url::parse(url).map_err(|e| Failure {
            class: ErrorClass::Request,
            message: format!("request failed: the URL does not parse ({e})"),
        })?;
        if self.guard {
            if let Some(refused) = refused_literal(&parsed) {
                return Err(Failure {
                    class: ErrorClass::Ssrf,
                    message: refused,
                });
            }
        }
        let mut request = hyper::Request::post(parsed.as_str())
            .body(Full::new(body))
            .map_err(|e| Failure {
                class: ErrorClass::Request,
                message: format!("request failed: {e}"),
            })?;
        *request.headers_mut() = headers;
        let exchange = async {
            let response = self
                .inner
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            let status = response.status().as_u16();
            let retry_after = matches!(status, 429 | 502 | 503 | 504)
                .then(|| parse_retry_after(response.headers()))
                .flatten();
            let body = read_truncated(response.into_body()).await;
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Failure {
                    class: ErrorClass::Timeout,
                    message: format!("timed out after {}", humantime::format_duration(timeout)),
                })
            })
    }
}

/// The literal address of the URL's host, when it is one that may not be dialled.
fn refused_literal(url: &Url) -> Option<String> {
    let forbidden = match url.host()? {
        Host::Ipv4(ip) => is_forbidden(ip.into()),
        Host::Ipv6(ip) => is_forbidden(ip.into()),
        Host::Domain(_) => false,
    };
    forbidden.then(|| {
        format!(
            "refused: {} is not a public address (SSRF guard)",
            url.host_str().unwrap_or("")
        )
    })
}

/// The class and text of why a request failed, without secrets or payloads.
fn describe(err: &hyper_util::client::legacy::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut root: &(dyn std::error::Error + 'static) = err;
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<SsrfRefused>() {
            return Failure {
                class: ErrorClass::Ssrf,
                message: refused.to_string(),
            };
        }
        root = e;
        source = e.source();
    }
    if err.is_connect() {
        Failure {
            class: ErrorClass::Connect,
            message: storable(&format!("connection failed: {root}")),
        }
    } else {
        Failure {
            class: ErrorClass::Request,
            message: storable(&format!("request failed: {root}")),
        }
    }
}

fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    crate::delivery::retry::parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

async fn read_truncated(mut body: hyper::body::Incoming) -> Option<String> {
    let mut buf = Vec::new();
    while buf.len() < MAX_LOGGED_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    buf.truncate(MAX_LOGGED_BODY);
    (!buf.is_empty()).then(|| storable(&String::from_utf8_lossy(&buf)))
}

/// Text as the delivery log can keep it: no store keeps a NUL inside text.
pub fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}
