//! The load generator: C workers, each with its own keep-alive HTTP/1.1 connection,
//! sending requests until N have been sent. The same generator measures the ceiling
//! (straight to the receiver) and posthorn.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One connection that sends requests one after another.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { sender, addr })
    }

    /// POSTs `body` to `path`; returns the status and the response body.
    pub async fn post(
        &mut self,
        path: &str,
        auth: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::post(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        if let Some(key) = auth {
            req = req.header("authorization", format!("Basic {key}"));
        }
        self.sender.ready().await?;
        let resp = self.sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

impl Conn {
    /// GETs `path`; returns the status and the body.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        let req = Request::get(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::new()))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

impl Conn {
    /// Sends a request without a body; the whole answer.
    pub async fn send(
        &mut self,
        req: hyper::http::request::Builder,
    ) -> anyhow::Result<hyper::Response<Bytes>> {
        self.send_body(req, Bytes::new()).await
    }

    pub async fn send_body(
        &mut self,
        req: hyper::http::request::Builder,
        body: Bytes,
    ) -> anyhow::Result<hyper::Response<Bytes>> {
        let req = req
            .header("host", self.addr.to_string())
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        Ok(hyper::Response::from_parts(
            parts,
            body.collect().await?.to_bytes(),
        ))
    }
}

/// Sends `total` requests from `concurrency` connections; `make(i)` gives request i's
/// path and body. Fails on any non-2xx answer.
pub async fn run<F>(
    addr: SocketAddr,
    concurrency: usize,
    total: usize,
    auth: Option<String>,
    make: F,
) -> anyhow::Result<()>
where
    F: Fn(usize) -> (String, Bytes) + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, make, auth) = (next.clone(), make.clone(), auth.clone());
        workers.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let (path, body) = make(i);
                let (status, answer) = conn.post(&path, auth.as_deref(), body).await?;
                anyhow::ensure!(
                    (200..300).contains(&status),
                    "{path} answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}
