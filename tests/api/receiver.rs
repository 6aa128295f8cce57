//! A recording webhook receiver that can be told to succeed, fail, hang, redirect or
//! answer 429 with `Retry-After`, per path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Never answers (until the client gives up).
    Hang,
    /// 302 to this path of the same receiver.
    Redirect(&'static str),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// 200 after this many milliseconds.
    Slow(u64),
    /// This status with this body.
    Body(u16, &'static str),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Default)]
struct Inner {
    received: HashMap<String, Vec<Received>>,
    scripts: HashMap<String, VecDeque<Reply>>,
    always: HashMap<String, Reply>,
}

#[derive(Clone)]
pub struct TestReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let reply = {
        let mut inner = inner.lock().expect("lock");
        inner
            .received
            .entry(path.clone())
            .or_default()
            .push(Received {
                headers,
                body,
                at: Instant::now(),
            });
        let scripted = inner.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        scripted
            .or_else(|| inner.always.get(&path).cloned())
            .unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::OK)
            .into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Reply::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Reply::Body(code, body) => {
            (StatusCode::from_u16(code).unwrap_or(StatusCode::OK), body).into_response()
        }
        Reply::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            StatusCode::OK.into_response()
        }
        Reply::TooMany(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
        )
            .into_response(),
    }
}

impl TestReceiver {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// A receiver on `port` of 127.0.0.1 (0: any free port).
    pub async fn start_on(port: u16) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Answers the next requests to `path` with `replies`, then as `always` (or 200).
    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .expect("lock")
            .scripts
            .insert(path.into(), replies.into());
    }

    pub fn always(&self, path: &str, reply: Reply) {
        self.inner
            .lock()
            .expect("lock")
            .always
            .insert(path.into(), reply);
    }

    /// Distinct `webhook-id`s received on `path`.
    pub fn ids(&self, path: &str) -> std::collections::HashSet<String> {
        self.received(path)
            .iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect()
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.inner
            .lock()
            .expect("lock")
            .received
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `path` has received at least `n` requests, or panics after `within`.
    pub async fn wait_for(&self, path: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: received {} of {n} within {within:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
