//! Captured stdout/stderr: bounded buffers that never fail the guest.
//!
//! A plugin may print as much as it likes; the first `capacity` bytes are kept (and shown as
//! the task's log lines) and the rest is counted and dropped. Failing the write instead would
//! turn a chatty plugin into a crashing one (Rust's `println!` panics on a write error).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// One captured stream; clones share the buffer.
#[derive(Clone)]
pub struct CapturedOutput {
    /// `None`: a stream nothing can write to ([`CapturedOutput::none`]).
    shared: Option<Arc<Captured>>,
    capacity: usize,
}

#[derive(Default)]
struct Captured {
    buffer: Mutex<Vec<u8>>,
    dropped: AtomicU64,
}

impl Captured {
    fn buffer(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl CapturedOutput {
    /// Keeps at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        CapturedOutput {
            shared: Some(Arc::default()),
            capacity,
        }
    }

    /// The stream of an instance that has no WASI context, so nothing can write to it: no
    /// buffer is allocated, and anything pushed to it is discarded.
    pub fn none() -> Self {
        CapturedOutput {
            shared: None,
            capacity: 0,
        }
    }

    fn push(&self, bytes: &[u8]) {
        let Some(shared) = &self.shared else { return };
        let mut buf = shared.buffer();
        let room = self.capacity.saturating_sub(buf.len());
        let kept = bytes.len().min(room);
        buf.extend_from_slice(&bytes[..kept]);
        shared
            .dropped
            .fetch_add((bytes.len() - kept) as u64, Ordering::Relaxed);
    }

    /// What was kept.
    pub fn contents(&self) -> Vec<u8> {
        self.shared
            .as_ref()
            .map_or_else(Vec::new, |shared| shared.buffer().clone())
    }

    /// Whether nothing was written (kept or dropped).
    pub fn is_empty(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|shared| shared.buffer().is_empty() && self.dropped() == 0)
    }

    /// How many bytes were written, kept or dropped (before the kept ones are taken).
    pub fn written(&self) -> u64 {
        self.shared.as_ref().map_or(0, |shared| {
            shared.buffer().len() as u64 + shared.dropped.load(Ordering::Relaxed)
        })
    }

    /// Forgets what was written, kept and dropped (an instance serving its next task).
    pub fn clear(&self) {
        if let Some(shared) = &self.shared {
            shared.buffer().clear();
            shared.dropped.store(0, Ordering::Relaxed);
        }
    }

    /// How many bytes were dropped past the capacity.
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept a generous chunk: excess is dropped, never refused.
        Ok(64 << 10)
    }
}
