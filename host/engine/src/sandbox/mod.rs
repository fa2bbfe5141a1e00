//! Per-instance sandbox: resource limits and one file per capability grant.
//!
//! Deny by default: a plugin's WASI context starts with no preopened directories, no
//! environment, no network, no HTTP, closed stdin, and stdout/stderr captured into bounded
//! buffers. Each grant in the pipeline opens exactly one thing. A plugin whose imports could
//! use more still instantiates; the calls simply fail inside the guest, and where the host sees
//! the call (sockets, HTTP) it logs which grant would have allowed it.

pub mod clocks;
pub mod deadline;
pub mod descriptors;
pub mod env;
pub mod fs;
pub mod http;
pub mod limits;
pub mod net;
pub mod stdio;
pub mod surface;
pub mod writes;

use std::sync::{Arc, Mutex};

use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use crate::plugin::Origin;
use phasegate_model::events::{Emitter, EventKind, LogLevel};
use phasegate_model::pipeline::Grants;

/// What the write quota and the count of opens need of an instance's state.
pub trait Counted: wasmtime_wasi::WasiView + 'static {
    /// The write quota of the instance's read-write grants.
    fn write_quota(&mut self) -> std::sync::Arc<writes::WriteQuota>;
    /// Counts a file, directory or socket opened.
    fn count_open(&mut self);
}

/// Reports denied calls as warnings in the task's log. Clones share their target, so that an
/// instance serving its next task (`reuse`) reports that task's denials as its own.
#[derive(Clone)]
pub struct Notice {
    target: Arc<Mutex<(Emitter, Origin)>>,
}

impl Notice {
    /// Denials of `origin`'s calls go to `emitter`.
    pub fn new(emitter: Emitter, origin: Origin) -> Self {
        Notice {
            target: Arc::new(Mutex::new((emitter, origin))),
        }
    }

    /// Later denials are `origin`'s, and go to `emitter`.
    pub fn retarget(&self, emitter: Emitter, origin: Origin) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = (emitter, origin);
    }

    /// Logs a denial.
    pub fn deny(&self, message: String) {
        let (emitter, origin) = self
            .target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        emitter.emit(EventKind::TaskLog {
            phase: origin.phase().into(),
            task: origin.task().into(),
            level: LogLevel::Warn,
            message,
        });
    }
}

/// Builds the WASI context for one instance from its grants.
pub fn wasi_ctx(
    grants: &Grants,
    stdout: &stdio::CapturedOutput,
    stderr: &stdio::CapturedOutput,
    notice: Notice,
) -> Result<WasiCtx, String> {
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone()).stderr(stderr.clone());
    fs::grant(&mut b, &grants.dirs)?;
    env::grant(&mut b, &grants.env, &grants.env_set);
    net::grant(&mut b, &grants.net, notice);
    if grants.deterministic {
        clocks::deterministic(&mut b, grants.seed);
    }
    Ok(b.build())
}
