//! The write quota: bytes an instance may write into its read-write directory grants
//! (`limits.max-written`), counted on the host's write path.
//!
//! Every byte a plugin puts into a file passes through one of three `wasi:filesystem` calls,
//! which this file puts in front of wasmtime-wasi's own: `descriptor.write` (a positioned
//! write), `descriptor.write-via-stream` / `append-via-stream` (whose output stream is wrapped,
//! so `write`, `blocking-write-and-flush`, `write-zeroes` and `splice` into it are counted), and
//! `descriptor.set-size` (growing a file counts its growth). Only a read-write grant lets any of
//! them succeed, so what is counted is what went into those grants. A write past the quota fails
//! inside the guest with `quota` (EDQUOT, "disk quota exceeded"), as a full disk quota would;
//! the attempt's failure, if it fails, names the limit and its key.
//!
//! The count is of bytes written, not of disk space held: rewriting one 1 KiB file a thousand
//! times counts 1000 KiB. So it bounds both what a plugin can leave on disk and the disk
//! bandwidth it can take from its neighbours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{WasiFilesystemCtxView, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, ErrorCode, Host as _, HostDescriptor,
};
use wasmtime_wasi::p2::{
    DynOutputStream, FsResult, OutputStream, Pollable, StreamError, StreamResult,
};

use crate::sandbox::Counted;

/// `wasi:filesystem/types` as wasmtime-wasi links it (guests importing any 0.2.x reach it).
pub(crate) const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// What one instance may still write, shared by the instance and the file streams it opened.
#[derive(Debug)]
pub struct WriteQuota {
    limit: u64,
    written: AtomicU64,
    /// Bytes of the first write refused (0: none was).
    refused: AtomicU64,
}

/// The error a refused write raises inside a stream; [`add_to_linker`]'s
/// `filesystem-error-code` turns it into `error-code::quota` for the guest.
#[derive(Debug)]
struct QuotaExceeded;

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("write quota of the instance's read-write grants exceeded")
    }
}

impl std::error::Error for QuotaExceeded {}

impl WriteQuota {
    /// A quota of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(WriteQuota {
            limit,
            written: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The size of the first write that was refused, if one was.
    pub fn refused(&self) -> Option<u64> {
        Some(self.refused.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Starts counting again from nothing (an instance serving its next task: the quota is
    /// each task's).
    pub fn reset(&self) {
        self.written.store(0, Ordering::Relaxed);
        self.refused.store(0, Ordering::Relaxed);
    }

    /// The quota.
    pub fn limit_size(&self) -> phasegate_model::units::ByteSize {
        phasegate_model::units::ByteSize(self.limit)
    }

    /// Counts `n` bytes about to be written, or refuses them all if they do not fit.
    fn take(&self, n: u64) -> Result<(), QuotaExceeded> {
        let fits = self
            .written
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                w.checked_add(n).filter(|&after| after <= self.limit)
            });
        match fits {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = self.refused.compare_exchange(
                    0,
                    n.max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                Err(QuotaExceeded)
            }
        }
    }

    /// Gives back bytes counted by [`take`](Self::take) that were not written after all.
    fn give_back(&self, n: u64) {
        self.written.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A file's output stream, counted against its instance's quota.
struct QuotaStream {
    inner: DynOutputStream,
    quota: Arc<WriteQuota>,
}

impl QuotaStream {
    fn take(&self, n: usize) -> StreamResult<()> {
        self.quota
            .take(n as u64)
            .map_err(|e| StreamError::LastOperationFailed(e.into()))
    }
}

#[async_trait::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(bytes.len())?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Not capped by the quota: a guest told "0 bytes writable" waits for readiness that
        // never comes; a write that does not fit fails instead.
        self.inner.check_write()
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(bytes.len())?;
        self.inner.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, n: usize) -> StreamResult<()> {
        self.take(n)?;
        self.inner.write_zeroes(n)
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner.write_ready().await
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// Whether `fd` is a file this instance may write: only such a write is counted (any other
/// fails as it always has, with its own error, not `quota`).
fn writable(fs: &WasiFilesystemCtxView<'_>, fd: &Resource<Descriptor>) -> wasmtime::Result<bool> {
    Ok(matches!(
        fs.table.get(fd)?,
        Descriptor::File(f) if !f.perms.write_not_permitted()
            && f.open_mode.contains(wasmtime_wasi::filesystem::OpenMode::WRITE)
    ))
}

/// Swaps a file stream wasmtime-wasi just opened for one counted against `quota` (nothing
/// else refers to it yet).
fn counted_stream(
    fs: &mut WasiFilesystemCtxView<'_>,
    opened: FsResult<Resource<DynOutputStream>>,
    quota: Arc<WriteQuota>,
) -> wasmtime::Result<Result<Resource<DynOutputStream>, ErrorCode>> {
    let stream = match opened {
        Ok(stream) => stream,
        Err(e) => return Ok(Err(fs.convert_error_code(e)?)),
    };
    let inner = fs.table.delete(stream)?;
    let counted: DynOutputStream = Box::new(QuotaStream { inner, quota });
    Ok(Ok(fs.table.push(counted)?))
}

/// Puts the quota in front of wasmtime-wasi's write paths (call after it is linked).
pub fn add_to_linker<T: Counted>(linker: &mut Linker<T>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.write",
        |mut store: StoreContextMut<'_, T>,
         (fd, buf, offset): (Resource<Descriptor>, Vec<u8>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.write_quota();
                let mut fs = state.filesystem();
                let n = if writable(&fs, &fd)? {
                    buf.len() as u64
                } else {
                    0
                };
                if quota.take(n).is_err() {
                    return Ok((Err(ErrorCode::Quota),));
                }
                match HostDescriptor::write(&mut fs, fd, buf, offset).await {
                    Ok(written) => {
                        quota.give_back(n.saturating_sub(written));
                        Ok((Ok(written),))
                    }
                    Err(e) => {
                        quota.give_back(n);
                        Ok((Err(fs.convert_error_code(e)?),))
                    }
                }
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, T>, (fd, offset): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.write_quota();
                let mut fs = state.filesystem();
                let opened = HostDescriptor::write_via_stream(&mut fs, fd, offset);
                Ok((counted_stream(&mut fs, opened, quota)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, T>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.write_quota();
                let mut fs = state.filesystem();
                let opened = HostDescriptor::append_via_stream(&mut fs, fd);
                Ok((counted_stream(&mut fs, opened, quota)?,))
            })
        },
    )?;
    types.func_wrap_async(
        "[method]descriptor.set-size",
        |mut store: StoreContextMut<'_, T>, (fd, size): (Resource<Descriptor>, u64)| {
            Box::new(async move {
                let state = store.data_mut();
                let quota = state.write_quota();
                let mut fs = state.filesystem();
                let before =
                    match HostDescriptor::stat(&mut fs, Resource::new_borrow(fd.rep())).await {
                        Ok(stat) => stat.size,
                        Err(e) => return Ok((Err(fs.convert_error_code(e)?),)),
                    };
                let growth = if writable(&fs, &fd)? {
                    size.saturating_sub(before)
                } else {
                    0
                };
                if quota.take(growth).is_err() {
                    return Ok((Err(ErrorCode::Quota),));
                }
                match HostDescriptor::set_size(&mut fs, fd, size).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => {
                        quota.give_back(growth);
                        Ok((Err(fs.convert_error_code(e)?),))
                    }
                }
            })
        },
    )?;
    // A stream write the quota refused reads as `quota` to the guest (wasmtime-wasi would map
    // it to a generic I/O error).
    types.func_wrap(
        "filesystem-error-code",
        |mut store: StoreContextMut<'_, T>, (err,): (Resource<wasmtime::Error>,)| {
            let mut fs = store.data_mut().filesystem();
            if fs
                .table
                .get(&err)?
                .downcast_ref::<QuotaExceeded>()
                .is_some()
            {
                return Ok((Some(ErrorCode::Quota),));
            }
            Ok((fs.filesystem_error_code(err)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
