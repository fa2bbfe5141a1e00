//! `phasegate worker --nats URL`: run the tasks of pipelines started elsewhere with `--nats`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use phasegate_model::units::ByteSize;
use phasegate_remote::ceilings::Ceilings;
use phasegate_remote::{WorkerEvent, WorkerOptions, WorkerPolicy};

use super::{Exit, bad_input};

/// Run tasks for controllers started with `--nats`: pull jobs from the NATS server, run each in
/// the same sandbox as a local run, publish the result.
///
/// The worker's policy is the trust boundary: a task whose grants exceed what the flags below
/// allow is refused, with an error naming the grant. By default nothing is allowed.
#[derive(Args)]
pub struct WorkerArgs {
    /// The NATS server (JetStream enabled), e.g. nats://127.0.0.1:4222.
    #[arg(long, env = "PHASEGATE_NATS", value_name = "URL")]
    nats: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = default_concurrency())]
    concurrency: usize,
    /// The name recorded with every task this worker runs [default: HOST-PID].
    #[arg(long)]
    name: Option<String>,
    /// Seconds a job may go unacknowledged before it is given to another worker (a running
    /// task keeps extending it).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    ack_wait: u64,
    /// Map a task's granted directory GUEST to this worker's HOST directory, read-only unless
    /// `:rw` (repeatable), e.g. `--allow-dir /data=/srv/data:ro`.
    #[arg(long, value_name = "GUEST=HOST[:ro|:rw]")]
    allow_dir: Vec<String>,
    /// Allow granting this environment variable (repeatable).
    #[arg(long, value_name = "NAME")]
    allow_env: Vec<String>,
    /// Allow sockets to this `host:port` (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    allow_net: Vec<String>,
    /// Allow HTTP requests to this host (repeatable).
    #[arg(long, value_name = "HOST")]
    allow_http: Vec<String>,
    /// The most a job's limits may ask for here, as `KEY=VALUE` (repeatable; `unlimited`
    /// removes one): memory, timeout, descriptors, max-written, max-output, max-log, max-stack,
    /// component. A job over one is refused. [default: memory = this machine's memory /
    /// concurrency, timeout = 1h, descriptors = the open-file limit / (concurrency + 1),
    /// max-stack = 16MiB, component = 256MiB]
    #[arg(long, value_name = "KEY=VALUE")]
    max: Vec<String>,
    /// Where fetched components are kept [default: the compile cache's folder, `components/`].
    #[arg(long)]
    components: Option<PathBuf>,
}

/// Ceilings that keep `concurrency` jobs, each at its ceiling, within this machine: its memory
/// shared between them, the process's open-file limit too (one share kept for the worker's
/// own files and connections), an hour of wall time, 16 MiB of Wasm stack (32 times the
/// pipeline's default), and components of up to 256 MiB (the largest interpreters are ~20 MB).
fn machine_ceilings(concurrency: usize) -> Ceilings {
    let jobs = concurrency.max(1) as u64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| ByteSize((kib * 1024 / jobs) & !((1 << 20) - 1)));
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    Ceilings {
        memory,
        timeout: Some(Duration::from_secs(3600)),
        max_stack: Some(ByteSize(16 << 20)),
        component: Some(ByteSize(256 << 20)),
        descriptors: files.map(|n| u32::try_from(n / (jobs + 1)).unwrap_or(u32::MAX)),
        ..Ceilings::default()
    }
}

fn default_concurrency() -> usize {
    phasegate_model::pipeline::default_concurrency()
}

impl WorkerArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let dirs = self
            .allow_dir
            .iter()
            .map(|d| WorkerPolicy::parse_dir(d).map_err(bad_input))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut ceilings = machine_ceilings(self.concurrency);
        for spec in &self.max {
            ceilings
                .set(spec)
                .map_err(|e| bad_input(format!("--max {spec}: {e}")))?;
        }
        let policy = WorkerPolicy {
            dirs,
            env: self.allow_env,
            net: self.allow_net,
            http: self.allow_http,
            ceilings,
        };
        let most = policy.ceilings.describe();
        let name = self.name.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{}", std::process::id())
        });
        let components = self.components.unwrap_or_else(|| {
            phasegate_engine::compile_cache::CompileCache::default_root()
                .unwrap_or_else(std::env::temp_dir)
                .join("components")
        });
        let options = WorkerOptions {
            url: self.nats.clone(),
            name: name.clone(),
            concurrency: self.concurrency,
            ack_wait: Duration::from_secs(self.ack_wait.max(1)),
            components,
        };
        let url = self.nats;
        let on_event = Arc::new(move |event: WorkerEvent| match event {
            WorkerEvent::Ready => eprintln!(
                "worker `{name}` waiting for tasks on {url} (a job may ask for at most: {most})"
            ),
            WorkerEvent::Ran {
                key,
                duration_ms,
                error: None,
            } => eprintln!("ran {key} in {duration_ms} ms"),
            WorkerEvent::Ran {
                key,
                duration_ms,
                error: Some(error),
            } => eprintln!("ran {key} in {duration_ms} ms: failed: {error}"),
            WorkerEvent::Trouble { key, why } => eprintln!("warning: {key}: {why}"),
        });
        let runtime = super::runtime()?;
        runtime.block_on(phasegate_remote::worker::run(options, policy, on_event))?;
        Ok(Exit::Success)
    }
}
