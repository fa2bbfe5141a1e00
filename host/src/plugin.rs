//! Host side of the WIT contract: generated bindings, per-instance state, the `host` interface.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::events::{Emitter, EventKind, LogLevel};
use crate::sandbox::limits::Limiter;

/// Bindings of the `task` world.
pub mod task_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "task",
        exports: { default: async },
    });
}

/// Bindings of the `gate` world (shares `types` and `host` with the task world).
pub mod gate_world {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "gate",
        exports: { default: async },
        with: {
            "phasegate:plugin/types": crate::plugin::task_world::phasegate::plugin::types,
            "phasegate:plugin/host": crate::plugin::task_world::phasegate::plugin::host,
        },
    });
}

pub use task_world::phasegate::plugin::host::{self as host_iface, Level};
pub use task_world::phasegate::plugin::types as wit;

/// Host log records kept per instance; past this a plugin's lines are dropped (and counted).
pub const MAX_LOG_RECORDS: u32 = 1_000;
/// Bytes of stdout and of stderr kept per instance.
pub const STDIO_CAPTURE: usize = 64 << 10;

/// Who an instance works for, for its log and progress events.
#[derive(Clone)]
pub struct Origin {
    /// Phase id.
    pub phase: String,
    /// Task id, or `gate`.
    pub task: String,
}

/// Everything one plugin instance owns (one per Store).
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Resource limits (memory, tables).
    pub limiter: Limiter,
    origin: Origin,
    emitter: Emitter,
    log_records: u32,
    /// Captured stdout.
    pub stdout: MemoryOutputPipe,
    /// Captured stderr.
    pub stderr: MemoryOutputPipe,
}

impl HostState {
    /// A deny-by-default instance state: no dirs, env, network; stdio captured.
    pub fn new(memory_limit: u64, origin: Origin, emitter: Emitter) -> Self {
        let stdout = MemoryOutputPipe::new(STDIO_CAPTURE);
        let stderr = MemoryOutputPipe::new(STDIO_CAPTURE);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_limit),
            origin,
            emitter,
            log_records: 0,
            stdout,
            stderr,
        }
    }

    /// Emits captured stdout/stderr as log events, one per line.
    pub fn flush_stdio(&self) {
        for (pipe, level) in [
            (&self.stdout, LogLevel::Stdout),
            (&self.stderr, LogLevel::Stderr),
        ] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty())
            {
                self.emit_log(level, line.to_owned());
            }
        }
    }

    /// The captured stderr as text (for trap messages: panics print there).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_owned()
    }

    fn emit_log(&self, level: LogLevel, message: String) {
        self.emitter.emit(EventKind::TaskLog {
            phase: self.origin.phase.clone(),
            task: self.origin.task.clone(),
            level,
            message,
        });
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host_iface::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log_records = self.log_records.saturating_add(1);
        if self.log_records > MAX_LOG_RECORDS {
            if self.log_records == MAX_LOG_RECORDS + 1 {
                self.emit_log(
                    LogLevel::Warn,
                    format!(
                        "log limit of {MAX_LOG_RECORDS} records reached; further lines dropped"
                    ),
                );
            }
            return;
        }
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        self.emit_log(level, message);
    }

    fn progress(&mut self, done: u32, total: u32, message: String) {
        self.emitter.emit(EventKind::TaskProgress {
            phase: self.origin.phase.clone(),
            task: self.origin.task.clone(),
            done,
            total,
            message,
        });
    }
}

impl wit::Host for HostState {}
