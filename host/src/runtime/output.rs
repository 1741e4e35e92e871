//! The guest's stdout and stderr: in-memory buffers with a hard cap.
//!
//! Threat: a guest that floods output to exhaust host memory, and one that ignores write
//! errors to keep flooding. Once a stream is full, every further write or write-readiness
//! check traps, which ends the run; the stream remembers that it overflowed so the run
//! can report the output limit as its reason.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// A capped output buffer; clones share it.
#[derive(Clone)]
pub struct CappedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
    overflowed: Arc<AtomicBool>,
    cap: usize,
}

impl CappedOutput {
    /// An empty buffer holding at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        CappedOutput {
            buffer: Arc::default(),
            overflowed: Arc::default(),
            cap,
        }
    }

    /// What the guest wrote (at most `cap` bytes).
    pub fn contents(&self) -> Vec<u8> {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True once the guest tried to write past the cap.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Appends what fits; returns false (and marks overflow) when `bytes` did not fit.
    fn append(&self, bytes: &[u8]) -> bool {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.cap.saturating_sub(buffer.len());
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            self.overflowed.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn full_trap(&self) -> StreamError {
        self.overflowed.store(true, Ordering::Relaxed);
        StreamError::Trap(wasmtime::Error::msg(format!(
            "output limit of {} bytes exceeded",
            self.cap
        )))
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        if self.append(&bytes) {
            Ok(())
        } else {
            Err(self.full_trap())
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        let used = self
            .buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        if used >= self.cap {
            return Err(self.full_trap());
        }
        Ok(self.cap - used)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.append(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(std::io::Error::other("output limit exceeded")))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_traps_past_the_cap() {
        let mut out = CappedOutput::new(8);
        assert!(out.write(Bytes::from_static(b"12345")).is_ok());
        assert!(!out.overflowed());
        assert!(matches!(
            out.write(Bytes::from_static(b"6789")),
            Err(StreamError::Trap(_))
        ));
        assert_eq!(out.contents(), b"12345678");
        assert!(out.overflowed());
        assert!(matches!(out.check_write(), Err(StreamError::Trap(_))));
    }
}
