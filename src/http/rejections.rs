//! Bodies for the rejections hyper writes itself.
//!
//! When a request cannot be parsed (a malformed request line or header, a repeated or
//! invalid `Content-Length`, a head over the read buffer, a target too long), hyper
//! answers before any handler runs, with a bodiless `400`, `431` or `414`, and closes
//! the connection. [`Answering`] wraps a connection's socket and puts in place of such
//! an answer the same status with the API's `{message, code}` body.
//!
//! It recognises hyper's answer by its shape: the whole of one write, a `400`, `414` or
//! `431` status line, `content-length: 0` and nothing after the head. Every answer of
//! posthorn's own handlers with one of those statuses carries a JSON body, so none of
//! them has that shape.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ApiError;

/// A socket whose writes of hyper's own rejections get the `{message, code}` body.
pub struct Answering<T> {
    inner: T,
    /// The replacement answer and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> Answering<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pending: None,
        }
    }
}

/// The error whose answer should replace `written`, if it is one of hyper's.
fn hyper_rejection(written: &[u8]) -> Option<ApiError> {
    let rest = written.strip_prefix(b"HTTP/1.1 ")?;
    let error = match rest.get(..4)? {
        b"400 " => ApiError::MalformedRequest,
        b"414 " => ApiError::UriTooLong,
        b"431 " => ApiError::HeadersTooLarge,
        _ => return None,
    };
    let head_end = written.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let bodiless = written
        .windows(21)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    (head_end == written.len() && bodiless).then_some(error)
}

impl<T: AsyncWrite + Unpin> Answering<T> {
    /// Writes what is left of the replacement answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written if it is one of hyper's rejections (its replacement is
    /// written instead, now or at the next flush).
    fn replaced(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let error = hyper_rejection(buf)?;
        self.pending = Some((error.wire_response(), 0));
        Some(match self.drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Still pending: the flush that follows finishes it.
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Answering<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Answering<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if let Some(done) = this.replaced(cx, buf) {
            return done;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if let Some(done) = this.replaced(cx, only) {
                return done;
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::hyper_rejection;

    #[test]
    fn only_bodiless_rejections_are_replaced() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(hyper_rejection(hyper_400).is_some());
        assert!(hyper_rejection(b"HTTP/1.1 431 x\r\ncontent-length: 0\r\n\r\n").is_some());
        // posthorn's own 400s have a body; other statuses are left alone.
        let own = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 30\r\n\r\n";
        assert!(hyper_rejection(own).is_none());
        let with_body = b"HTTP/1.1 400 B\r\ncontent-length: 0\r\n\r\n{}";
        assert!(hyper_rejection(with_body).is_none());
        assert!(hyper_rejection(b"HTTP/1.1 404 x\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(hyper_rejection(b"HTTP/1.1 400 x\r\ncontent-length: 05\r\n\r\n").is_none());
    }
}
