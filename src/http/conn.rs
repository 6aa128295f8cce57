//! Serving connections: the accept loop, with the limits a hostile or broken client
//! meets before any handler runs.
//!
//! - At most `max_connections` connections are served at once, and at most
//!   `max_connections_per_client` from one client address (IPv6: one /64). A new
//!   connection over either cap takes the slot of a connection that is only waiting
//!   (idle, or its headers still arriving) for at least `SETTLE`: the one of its own
//!   client that has waited longest, or over the global cap the one of the client
//!   holding the most (`conn_limits.rs`). If there is none (each is in the middle
//!   of a request or only just opened) it is answered `503` with `Retry-After` and
//!   closed, so the listener never stops accepting and idle or half-sent connections
//!   keep a normal request out for a second at most.
//! - A request's headers must arrive within `header_timeout`, counted from the moment
//!   the connection is ready for a request: right after it opens, and after each
//!   response (so it is the keep-alive idle timeout too). A client that sends nothing,
//!   or its headers a line at a time, is dropped then.
//! - A request's body must arrive within `body_timeout` (`JsonBody` answers `408`).
//! - Each connection reads into a buffer of at most `READ_BUFFER` bytes, which also
//!   bounds the request line and headers (beyond it: `431`).
//! - Requests hyper rejects itself (unparsable, head too large) get the API's
//!   `{message, code}` body ([`super::rejections`]).
//! - On shutdown, connections with no request in progress are closed at once; those in
//!   the middle of one get the grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::conn_limits::{InRequest, Slot, Slots};
use super::rejections::Answering;
use crate::config::ConnectionConfig;
use crate::error::ApiError;

/// Largest read buffer of one connection (and so of a request's line and headers).
const READ_BUFFER: usize = 64 * 1024;

/// How long a connection has been waiting (idle, or its headers arriving) before its
/// slot may go to a new connection: a client's headers follow its connect at once.
const SETTLE: Duration = Duration::from_secs(1);

/// How long a request's body may take to arrive, for the extractors that read it.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Serves `router` on `listener` until `shutdown`, then gives requests in progress
/// `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionConfig,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let slots = Slots::new(
        limits.max_connections,
        limits.max_connections_per_client,
        SETTLE.min(limits.header_timeout / 2),
    );
    // HTTP/1.1 only (TLS and HTTP/2 are a reverse proxy's job): a protocol sniff would
    // wait for the client's first bytes outside the header timeout.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUFFER);
    loop {
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, mostly: wait a little rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.admit(remote.ip()) else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            router: router.clone(),
            remote,
            slot,
        };
        let (builder, stop) = (builder.clone(), shutdown.clone());
        tokio::spawn(async move { conn.serve(&builder, stream, stop, grace).await });
    }
    drop(listener);
    if !slots.all_closed(grace).await {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "requests still in flight at the end of the grace period"
        );
    }
}

/// One client connection.
struct Connection {
    router: Router,
    remote: SocketAddr,
    /// Its slot (and what the slot table knows of its requests), given back on drop.
    slot: Slot,
}

impl Connection {
    async fn serve(
        self,
        builder: &http1::Builder,
        stream: TcpStream,
        stop: CancellationToken,
        grace: Duration,
    ) {
        let Self {
            router,
            remote,
            slot,
        } = self;
        let held = slot.held.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            let request = InRequest::start(&held);
            let router = router.clone();
            async move {
                let Ok(answer) = router.oneshot(req).await;
                Ok::<_, Infallible>(request.answered(answer))
            }
        });
        let mut conn =
            std::pin::pin!(builder.serve_connection(TokioIo::new(Answering::new(stream)), service));
        let held = &slot.held;
        tokio::select! {
            ended = conn.as_mut() => {
                // Errors here are the client's (reset, timed out, malformed).
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = held.evicted() => {
                // Its slot went to a new connection while it was only waiting. Should a
                // request have started since, it is answered first.
                if !held.in_request() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = stop.cancelled() => {}
                }
            }
            _ = stop.cancelled() => {}
        }
        // Shutting down: a connection with no request in progress (idle, or its headers
        // still arriving) is closed now; one in the middle of a request gets the grace
        // period to answer it.
        if !held.answering() {
            return;
        }
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(grace, conn).await;
    }
}

/// Answers a connection over the limit and closes it, within a second.
async fn refuse(mut stream: TcpStream) {
    let answer = ApiError::TooManyConnections.wire_response();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// The client's address, for handlers that need it (the failed-authentication
/// throttle). `None` where a request did not come through [`serve`] (tests that call
/// the router directly).
pub fn client_addr(parts: &axum::http::request::Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}
