//! Everything one plugin instance owns (one per Store): its limiter, captured stdio, log, and
//! the WASI side built from its grants; and the `host` interface every plugin imports.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::plugin::{Level, Origin, host_iface, usage_iface, wit};
use crate::sandbox::http::HttpPolicy;
use crate::sandbox::limits::Limiter;
use crate::sandbox::stdio::CapturedOutput;
use crate::sandbox::writes::WriteQuota;
use crate::sandbox::{self, Notice};
use phasegate_model::events::{Emitter, EventKind, LogLevel};
use phasegate_model::outcome::Usage;
use phasegate_model::pipeline::{Grants, Limits};
use phasegate_model::units::ByteSize;

/// Everything one plugin instance owns (one per Store).
pub struct HostState {
    /// What WASI and `wasi:http` calls use, once built; `None` for a plugin that imports no
    /// WASI interface (see [`HostState::without_wasi`]) and until the first WASI call of one
    /// whose grants open nothing (see [`Deferred`]). Boxed: a WASI context is large, and the
    /// state is built, moved into its store and dropped once per task.
    wasi: Option<Box<WasiState>>,
    /// The grants to build the WASI side from at the first WASI call.
    deferred: Option<Box<Deferred>>,
    /// Resource limits (memory, tables, instances).
    pub limiter: Limiter,
    origin: Origin,
    emitter: Emitter,
    log_records: u32,
    log_bytes: u64,
    max_log_records: u32,
    max_log_bytes: u64,
    /// Captured stdout.
    pub stdout: CapturedOutput,
    /// Captured stderr.
    pub stderr: CapturedOutput,
    kept_log: Vec<String>,
    /// For a gate: what each task of the phase it judges used, in the phase's order.
    phase_usage: Vec<(String, Usage)>,
}

/// The WASI side of an instance: its WASI context (the grants), the resource table WASI and
/// `wasi:http` share, the outbound HTTP policy, and the write quota of its read-write grants.
struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    http_hooks: HttpPolicy,
    writes: Arc<WriteQuota>,
    /// Files, directories and sockets opened.
    opened: u64,
    /// Where denied calls are reported (shared with the context's socket check and the HTTP
    /// policy).
    notice: Notice,
}

/// What building the WASI side needs, kept until the first WASI call. Most tasks (every Rust
/// plugin that only computes, for one) import WASI through their language's runtime but never
/// call it: building the context (its random generators, clocks, stdio and table) for each of
/// them cost ~0.8 µs, more than a tenth of a trivial task. Only grants that cannot fail are
/// deferred: a directory grant opens its directory when the instance is made, so that a
/// directory that cannot be opened fails the attempt before the plugin runs.
struct Deferred {
    grants: Grants,
    limits: Limits,
}

impl WasiState {
    fn new(ctx: WasiCtx, http: Vec<String>, notice: Notice, max_written: u64) -> Box<Self> {
        Box::new(WasiState {
            ctx,
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http_hooks: HttpPolicy::new(http, notice.clone()),
            writes: WriteQuota::new(max_written),
            opened: 0,
            notice,
        })
    }
}

impl HostState {
    /// A deny-by-default instance state: only what `grants` lists, within `limits`.
    pub fn new(
        limits: &Limits,
        grants: &Grants,
        origin: Origin,
        emitter: Emitter,
    ) -> Result<Self, String> {
        // Nothing can write to stdout or stderr before the WASI side exists: they are
        // captured from then on.
        let none = [CapturedOutput::none(), CapturedOutput::none()];
        let mut state = Self::with_stdio(limits, origin, emitter, none);
        if grants.dirs.is_empty() {
            state.deferred = Some(Box::new(Deferred {
                grants: grants.clone(),
                limits: *limits,
            }));
        } else {
            state.wasi = Some(state.build_wasi(grants, limits)?);
        }
        Ok(state)
    }

    /// The WASI side of `grants` within `limits`: its context, stdout and stderr captured,
    /// the HTTP policy, the write quota and the bound on descriptors.
    fn build_wasi(&mut self, grants: &Grants, limits: &Limits) -> Result<Box<WasiState>, String> {
        let capture = usize::try_from(limits.max_log.0).unwrap_or(usize::MAX);
        self.stdout = CapturedOutput::new(capture);
        self.stderr = CapturedOutput::new(capture);
        let notice = self.notice();
        let ctx = sandbox::wasi_ctx(grants, &self.stdout, &self.stderr, notice.clone())?;
        let mut wasi = WasiState::new(ctx, grants.http.clone(), notice, limits.max_written.0);
        sandbox::descriptors::bound(&mut wasi.table, limits.descriptors);
        Ok(wasi)
    }

    /// As [`new`](Self::new), for a plugin that imports no `wasi:` interface and so can never
    /// call into WASI: the WASI side (context, random generators, clocks, stdio, grants, HTTP
    /// policy) is not built, and no stdout or stderr is captured (nothing can write to them).
    /// Should WASI be reached anyway, it gets a context with nothing granted.
    pub fn without_wasi(limits: &Limits, origin: Origin, emitter: Emitter) -> Self {
        let none = [CapturedOutput::none(), CapturedOutput::none()];
        Self::with_stdio(limits, origin, emitter, none)
    }

    /// The state without its WASI side, with its `[stdout, stderr]`.
    fn with_stdio(
        limits: &Limits,
        origin: Origin,
        emitter: Emitter,
        [stdout, stderr]: [CapturedOutput; 2],
    ) -> Self {
        HostState {
            wasi: None,
            deferred: None,
            limiter: Limiter::new(limits),
            origin,
            emitter,
            log_records: 0,
            log_bytes: 0,
            max_log_records: limits.log_records,
            max_log_bytes: limits.max_log.0,
            stdout,
            stderr,
            kept_log: Vec::new(),
            phase_usage: Vec::new(),
        }
    }

    /// Makes the state of an instance that served a task ready for `origin`, the next task it
    /// serves (`reuse`): its log, stdout and stderr, log budget, write quota and count of opens
    /// start again from nothing, and what it does is reported as `origin`'s to `emitter`. What
    /// the instance itself holds (its memory, its open descriptors) stays: that is what reuse
    /// shares.
    pub fn next_task(&mut self, origin: Origin, emitter: Emitter) {
        self.origin = origin;
        self.emitter = emitter;
        self.log_records = 0;
        self.log_bytes = 0;
        self.kept_log.clear();
        self.stdout.clear();
        self.stderr.clear();
        if let Some(wasi) = &mut self.wasi {
            wasi.writes.reset();
            wasi.opened = 0;
            wasi.notice
                .retarget(self.emitter.clone(), self.origin.clone());
        }
    }

    /// Lets go of the task an idle kept instance last served (its request is the caller's to
    /// reuse).
    pub fn release(&mut self) {
        self.origin = Origin::Named {
            phase: String::new(),
            task: String::new(),
        };
        if let Some(wasi) = &self.wasi {
            wasi.notice
                .retarget(self.emitter.clone(), self.origin.clone());
        }
    }

    /// Emits captured stdout/stderr as log events, one per line, and says what was dropped
    /// and whether a write was refused.
    pub fn flush_stdio(&mut self) {
        if let (written, Some(refused)) = self.written() {
            let limit = self.wasi().writes.limit_size();
            self.emit_log(
                LogLevel::Warn,
                format!(
                    "a write of {} into a read-write grant was refused with `quota`: {} written of the limit of {} (raise `limits.max-written`)",
                    ByteSize(refused),
                    ByteSize(written),
                    limit
                ),
            );
        }
        if self.stdout.is_empty() && self.stderr.is_empty() {
            return;
        }
        let pipes = [
            (self.stdout.clone(), LogLevel::Stdout, "stdout"),
            (self.stderr.clone(), LogLevel::Stderr, "stderr"),
        ];
        for (pipe, level, name) in pipes {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty())
            {
                self.emit_log(level, line.to_owned());
            }
            if pipe.dropped() > 0 {
                self.emit_log(
                    LogLevel::Warn,
                    format!(
                        "{} bytes of {name} dropped past the limit of {} (raise `limits.max-log`)",
                        pipe.dropped(),
                        ByteSize(self.max_log_bytes)
                    ),
                );
            }
        }
    }

    /// The captured stderr as text (for trap messages: panics print there).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_owned()
    }

    /// Bytes of log text, stdout and stderr the plugin produced, kept or dropped (read before
    /// [`flush_stdio`](Self::flush_stdio) takes the kept output).
    pub fn produced_bytes(&self) -> u64 {
        self.log_bytes
            .saturating_add(self.stdout.written())
            .saturating_add(self.stderr.written())
    }

    /// Takes the log lines kept so far (they are stored with the task's result).
    pub fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.kept_log)
    }

    /// What the tasks of the phase a gate judges used (what `usage.of-task` answers).
    pub fn set_phase_usage(&mut self, usage: Vec<(String, Usage)>) {
        self.phase_usage = usage;
    }

    /// Bytes written into read-write grants, and the size of the first write the quota
    /// refused, if one was.
    pub fn written(&self) -> (u64, Option<u64>) {
        self.wasi
            .as_ref()
            .map_or((0, None), |w| (w.writes.written(), w.writes.refused()))
    }

    /// Files, directories and sockets opened.
    pub fn opened(&self) -> u64 {
        self.wasi.as_ref().map_or(0, |w| w.opened)
    }

    /// Where this instance's denied calls are reported.
    fn notice(&self) -> Notice {
        Notice::new(self.emitter.clone(), self.origin.clone())
    }

    /// The WASI side, built at the first call from the deferred grants, or with nothing granted
    /// if the instance had none (a plugin declared without WASI imports cannot get here; should
    /// one anyway, it is denied everything).
    fn wasi(&mut self) -> &mut WasiState {
        let wasi = match self.wasi.take() {
            Some(wasi) => wasi,
            None => {
                // Deferred grants open nothing, so building from them cannot fail; should it,
                // the plugin is denied everything rather than given more.
                let built = self
                    .deferred
                    .take()
                    .and_then(|d| self.build_wasi(&d.grants, &d.limits).ok());
                built.unwrap_or_else(|| {
                    let denied = wasmtime_wasi::WasiCtxBuilder::new().build();
                    WasiState::new(denied, Vec::new(), self.notice(), 0)
                })
            }
        };
        self.wasi.insert(wasi)
    }

    fn emit_log(&mut self, level: LogLevel, message: String) {
        self.kept_log.push(format!("{}: {message}", level.name()));
        self.emitter.emit(EventKind::TaskLog {
            phase: self.origin.phase().into(),
            task: self.origin.task().into(),
            level,
            message,
        });
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let wasi = self.wasi();
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl sandbox::Counted for HostState {
    fn write_quota(&mut self) -> Arc<WriteQuota> {
        self.wasi().writes.clone()
    }

    fn count_open(&mut self) {
        self.wasi().opened += 1;
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        let wasi = self.wasi();
        WasiHttpCtxView {
            hooks: &mut wasi.http_hooks,
            table: &mut wasi.table,
            ctx: &mut wasi.http_ctx,
        }
    }
}

impl host_iface::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log_records = self.log_records.saturating_add(1);
        self.log_bytes = self.log_bytes.saturating_add(message.len() as u64);
        if self.log_records > self.max_log_records || self.log_bytes > self.max_log_bytes {
            if self.log_records != u32::MAX {
                // Say it once, then stay silent.
                self.log_records = u32::MAX;
                self.emit_log(
                    LogLevel::Warn,
                    format!(
                        "log limit reached ({} records or {}); further lines dropped (raise `limits.log-records` or `limits.max-log`)",
                        self.max_log_records,
                        ByteSize(self.max_log_bytes)
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
            phase: self.origin.phase().into(),
            task: self.origin.task().into(),
            done,
            total,
            message,
        });
    }
}

impl wit::Host for HostState {}

impl usage_iface::Host for HostState {
    fn of_task(&mut self, task: String) -> Option<usage_iface::TaskUsage> {
        let (_, u) = self.phase_usage.iter().find(|(id, _)| *id == task)?;
        Some(usage_iface::TaskUsage {
            wall_us: u.wall_us,
            fuel: u.fuel,
            memory: u.memory,
            log_bytes: u.log_bytes,
            written: u.written,
            opened: u.opened,
        })
    }
}
