//! `phasegate worker`: pulls jobs from the shared consumer, runs each in the same sandbox as a
//! local run (within the worker's policy), publishes the result, and only then acknowledges the
//! job. A job whose worker dies before that is delivered again once its ack deadline passes;
//! a long attempt keeps extending its deadline while it runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer, object_store};
use futures_util::StreamExt;
use phasegate_engine::call::Reuse;
use phasegate_engine::plugin::wit;
use phasegate_engine::{LoadedPlugin, PluginHost, compile_cache::CompileCache};
use phasegate_model::error::Problem;
use phasegate_model::events::Emitter;
use phasegate_model::job::Attempt;
use phasegate_model::pipeline::{EngineLimits, PluginRef};
use phasegate_model::progress::FailureKind;
use phasegate_model::units::ByteSize;
use tokio::sync::Semaphore;

use crate::connect::{connect, ensure};
use crate::policy::WorkerPolicy;
use crate::recent::Recent;
use crate::shelf::{Asking, Shelf};
use crate::wire::{JOBS_STREAM, JobMessage, ResultMessage, WORKERS, results_subject};

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The NATS server.
    pub url: String,
    /// The worker's name, recorded with every task it runs.
    pub name: String,
    /// Attempts run at once.
    pub concurrency: usize,
    /// How long a job may go unacknowledged before it is delivered to another worker; a
    /// running attempt extends it every third of this.
    pub ack_wait: Duration,
    /// Where fetched components are kept (by digest).
    pub components: PathBuf,
}

/// What a worker did, for its command to print.
#[derive(Clone, Debug)]
pub enum WorkerEvent {
    /// Connected and waiting for jobs.
    Ready,
    /// Ran an attempt (`error`: why it failed, if it did).
    Ran {
        key: String,
        duration_ms: u64,
        error: Option<String>,
    },
    /// A job could not be handled (bad message, result not published): it is not acknowledged
    /// (or, unreadable, terminated).
    Trouble { key: String, why: String },
}

/// Connects, then pulls and runs jobs until the process ends. A server that cannot be reached
/// at the start is an error; one that goes away later is waited for.
pub async fn run(
    options: WorkerOptions,
    policy: WorkerPolicy,
    on_event: Arc<dyn Fn(WorkerEvent) + Send + Sync>,
) -> anyhow::Result<()> {
    let js = connect(&options.url, &format!("phasegate worker {}", options.name))
        .await?
        .js;
    let buckets = ensure(&js).await?;
    let consumer: consumer::PullConsumer = js
        .get_stream(JOBS_STREAM)
        .await
        .map_err(|e| Problem::new(format!("cannot open the jobs stream: {e}")))?
        .get_or_create_consumer(
            WORKERS,
            consumer::pull::Config {
                durable_name: Some(WORKERS.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Problem::new(format!("cannot join the workers' consumer: {e}")))?;
    std::fs::create_dir_all(&options.components).map_err(|e| {
        Problem::new(format!(
            "cannot create {}: {e}",
            options.components.display()
        ))
    })?;
    let worker = Arc::new(Worker {
        js,
        store: buckets.components,
        contexts: buckets.contexts,
        fetched: tokio::sync::Mutex::new(Recent::new()),
        policy,
        options: options.clone(),
        hosts: Mutex::new(HashMap::new()),
        loaded: Mutex::new(HashMap::new()),
        shelf: Shelf::default(),
        on_event,
    });
    (worker.on_event)(WorkerEvent::Ready);
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    loop {
        let slot = slots.clone().acquire_owned().await?;
        // While the server is away (restarting), the client reconnects by itself: wait and
        // ask again rather than give up on the jobs to come.
        let message = match consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
        {
            Ok(mut batch) => match batch.next().await {
                Some(Ok(message)) => message,
                None => continue,
                Some(Err(e)) => {
                    away(&worker, &options.url, &e).await;
                    continue;
                }
            },
            Err(e) => {
                away(&worker, &options.url, &e).await;
                continue;
            }
        };
        let worker = worker.clone();
        tokio::spawn(async move {
            worker.handle(message).await;
            drop(slot);
        });
    }
}

/// Reports that the server cannot be reached and waits a moment before the next try.
async fn away(worker: &Worker, url: &str, e: &dyn std::fmt::Display) {
    (worker.on_event)(WorkerEvent::Trouble {
        key: String::new(),
        why: format!("the NATS server at {url} does not answer ({e}); trying again"),
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
}

struct Worker {
    js: jetstream::Context,
    store: object_store::ObjectStore,
    /// Contexts too large for a job, by digest ([`crate::wire::CONTEXTS`]).
    contexts: object_store::ObjectStore,
    /// The contexts fetched lately (a phase's jobs share one). Held while one is fetched, so
    /// that jobs arriving together fetch it once.
    fetched: tokio::sync::Mutex<Recent<String, Arc<str>>>,
    policy: WorkerPolicy,
    options: WorkerOptions,
    /// One engine per engine configuration a run asks for.
    hosts: Mutex<HashMap<EngineLimits, Arc<PluginHost>>>,
    /// Components loaded on each engine, by digest.
    loaded: Mutex<HashMap<(EngineLimits, String), Arc<LoadedPlugin>>>,
    /// Instances kept for later jobs of the same run and phase (a task's `reuse`).
    shelf: Shelf,
    on_event: Arc<dyn Fn(WorkerEvent) + Send + Sync>,
}

impl Worker {
    async fn handle(&self, message: jetstream::Message) {
        let job: JobMessage<'_> = match serde_json::from_slice(&message.payload) {
            Ok(job) => job,
            Err(e) => {
                (self.on_event)(WorkerEvent::Trouble {
                    key: String::new(),
                    why: format!("not a phasegate job ({e}); dropped"),
                });
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let started = Instant::now();
        let attempt = self.attempt(&job, &message).await;
        let error = attempt.result.as_ref().err().map(|f| f.message.clone());
        let result = ResultMessage {
            key: job.key.clone(),
            worker: self.options.name.clone(),
            attempt,
        };
        // Acknowledged only once the result is stored: a worker that dies before leaves the
        // job to be delivered again.
        let published = match self.encode(&job, result) {
            Ok(payload) => {
                let payload = bytes::Bytes::from(payload);
                crate::connect::retrying(|| async {
                    self.js
                        .publish(results_subject(&job.job.run_id), payload.clone())
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await
            }
            Err(e) => Err(e.to_string()),
        };
        match published {
            Ok(()) => {
                let _ = message.ack().await;
                (self.on_event)(WorkerEvent::Ran {
                    key: job.key.clone(),
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    error,
                });
            }
            Err(why) => (self.on_event)(WorkerEvent::Trouble {
                key: job.key.clone(),
                why: format!("cannot publish the result ({why}); the job will be delivered again"),
            }),
        }
    }

    /// The result as it is published. One too large for the server's `max_payload` (an output
    /// or log within the task's limits can be) could never be published, and its job would be
    /// delivered again and again: it is replaced by a `limit` failure that says so.
    fn encode(&self, job: &JobMessage<'_>, result: ResultMessage) -> serde_json::Result<Vec<u8>> {
        let payload = serde_json::to_vec(&result)?;
        let Err(max) = crate::connect::fits(&self.js, payload.len()) else {
            return Ok(payload);
        };
        let (task, phase) = (&job.job.task, &job.job.phase);
        let failed = Attempt {
            usage: result.attempt.usage,
            ..Attempt::failed(
                FailureKind::Limit,
                format!(
                    "the result of task `{task}` in phase `{phase}` is {} with its output and log, over the NATS server's `max_payload` of {}; lower the task's `limits.max-output` and `limits.max-log` below it, or raise `max_payload` in the server's configuration",
                    ByteSize(payload.len() as u64),
                    ByteSize(max as u64)
                ),
            )
        };
        serde_json::to_vec(&ResultMessage {
            attempt: failed,
            ..result
        })
    }

    /// Checks the job against the policy (grants and ceilings), gets its component and, when
    /// it names one, its context (each checked against its digest), and runs it while extending
    /// the job's ack deadline.
    async fn attempt(&self, job: &JobMessage<'_>, message: &jetstream::Message) -> Attempt {
        let refused = |problem: Problem| Attempt::host_failure(problem.to_string());
        let grants = match self.policy.admit(&self.options.name, &job.job.grants) {
            Ok(grants) => grants,
            Err(problem) => return refused(problem),
        };
        if let Err(problem) =
            self.policy
                .ceilings
                .check(&self.options.name, &job.job.limits, job.engine.max_stack)
        {
            return Attempt::failed(FailureKind::Limit, problem.to_string());
        }
        let plugin = match self.plugin(job).await {
            Ok(plugin) => plugin,
            Err((kind, problem)) => return Attempt::failed(kind, problem.to_string()),
        };
        let host = match self.host(job.engine) {
            Ok(host) => host,
            Err(problem) => return refused(problem),
        };
        let context = match &job.context {
            None => job.job.context.to_string(),
            Some(digest) => match self.context(digest).await {
                Ok(context) => context.to_string(),
                Err((kind, problem)) => return Attempt::failed(kind, problem.to_string()),
            },
        };
        let request = Arc::new(wit::TaskRequest {
            run_id: job.job.run_id.to_string(),
            phase: job.job.phase.to_string(),
            task: job.job.task.to_string(),
            attempt: job.job.attempt,
            input: job.job.input.to_string(),
            context,
            config: job.job.config.to_string(),
        });
        // With `reuse`, an instance an earlier job of this run and phase left (see `shelf`).
        let asking = Asking {
            engine: job.engine,
            run: &job.job.run_id,
            phase: &job.job.phase,
            plugin: &plugin,
            limits: &job.job.limits,
            grants: &grants,
            reuse: job.job.reuse,
        };
        let mut kept = self.shelf.take(&asking);
        let attempt = {
            let reuse = Reuse {
                tasks: job.job.reuse,
                plugin: &plugin,
                kept: &mut kept,
            };
            let run = host.run_task_reusing(
                &request,
                &job.job.limits,
                &grants,
                Emitter::discard(),
                reuse,
            );
            tokio::pin!(run);
            let mut extend =
                tokio::time::interval((self.options.ack_wait / 3).max(Duration::from_millis(100)));
            extend.tick().await;
            loop {
                tokio::select! {
                    attempt = &mut run => break attempt,
                    _ = extend.tick() => {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        if let Some(instance) = kept {
            self.shelf
                .put(job.engine, &job.job.run_id, &job.job.phase, instance);
        }
        attempt
    }

    /// A context a job names by digest, from the contexts bucket (or the last few fetched). It
    /// is read no further than the `memory` ceiling (the guest holds it in its memory) and
    /// checked against the digest.
    async fn context(&self, digest: &str) -> Result<Arc<str>, (FailureKind, Problem)> {
        let host_fault = |problem: Problem| (FailureKind::Host, problem);
        let mut fetched = self.fetched.lock().await;
        if let Some(context) = fetched.find(|d| d == digest) {
            return Ok(context);
        }
        let most = self.policy.ceilings.memory.map_or(u64::MAX, |m| m.0);
        let bytes = crate::connect::read_bounded(&self.contexts, digest, most)
            .await
            .map_err(|e| {
                host_fault(Problem::new(format!(
                    "context {digest} in the bucket `{}`: {e}",
                    crate::wire::CONTEXTS
                )))
            })?;
        if let Some(problem) =
            self.policy
                .ceilings
                .context_over(&self.options.name, digest, bytes.len() as u64)
        {
            return Err((FailureKind::Limit, problem));
        }
        let actual = phasegate_model::digest::sha256_bytes(&bytes);
        let text = String::from_utf8(bytes).ok().filter(|_| actual == digest);
        let Some(text) = text else {
            return Err(host_fault(Problem::new(format!(
                "refused context {digest}: the object in bucket `{}` hashes to {actual} (tampered with, or corrupt)",
                crate::wire::CONTEXTS
            ))));
        };
        let context: Arc<str> = Arc::from(text);
        fetched.remember(digest.to_owned(), context.clone());
        Ok(context)
    }

    /// The engine for jobs of `engine`'s configuration. Its instance pool is sized for this
    /// worker, not for the run: a run's limits count the instances of one run, and a worker
    /// runs up to `--concurrency` jobs of any number of runs at once (and the shelf keeps kept
    /// plus running instances within that).
    fn host(&self, engine: EngineLimits) -> Result<Arc<PluginHost>, Problem> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(host) = hosts.get(&engine) {
            return Ok(host.clone());
        }
        let sized = EngineLimits {
            max_instances: engine.max_instances.max(self.options.concurrency),
            ..engine
        };
        let host = PluginHost::with_cache(sized, CompileCache::default_root())
            .map_err(|e| Problem::new(format!("cannot start an engine: {e:#}")))?;
        hosts.insert(engine, host.clone());
        Ok(host)
    }

    /// The job's component, loaded: from memory, the worker's folder, or the bucket. Its bytes
    /// are checked against the digest before anything compiles them, and against the
    /// `component` ceiling before they are read whole (`limit` when over it).
    async fn plugin(
        &self,
        job: &JobMessage<'_>,
    ) -> Result<Arc<LoadedPlugin>, (FailureKind, Problem)> {
        let host_fault = |problem: Problem| (FailureKind::Host, problem);
        let id = (job.engine, job.digest.clone());
        if let Some(p) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(p.clone());
        }
        let hex = job.digest.trim_start_matches("sha256:");
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(host_fault(Problem::new(format!(
                "`{}` is not a sha256 digest",
                job.digest
            ))));
        }
        let path = self.options.components.join(format!("{hex}.wasm"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) if phasegate_model::digest::sha256_bytes(&bytes) == job.digest => bytes,
            _ => {
                // Read no further than the ceiling allows, whatever the object's info says.
                let most = self.policy.ceilings.component.map_or(u64::MAX, |c| c.0);
                let bytes = crate::connect::read_bounded(&self.store, &job.digest, most)
                    .await
                    .map_err(|e| {
                        host_fault(Problem::new(format!(
                            "component {} in the bucket `{}`: {e}",
                            job.digest,
                            crate::wire::BUCKET
                        )))
                    })?;
                if let Some(problem) = self.policy.ceilings.component_over(
                    &self.options.name,
                    &job.digest,
                    bytes.len() as u64,
                ) {
                    return Err((FailureKind::Limit, problem));
                }
                let actual = phasegate_model::digest::sha256_bytes(&bytes);
                if actual != job.digest {
                    return Err(host_fault(Problem::new(format!(
                        "refused component {}: the object in bucket `{}` hashes to {actual} (tampered with, or corrupt)",
                        job.digest,
                        crate::wire::BUCKET
                    ))
                    .help("put the right bytes back (a run with `--nats` puts a missing component), or remove the object")));
                }
                // Kept whole or not at all; a damaged copy fails the digest check next time
                // and is fetched again.
                let _ = phasegate_store::write_atomically(&path, &bytes);
                bytes
            }
        };
        let host = self.host(job.engine).map_err(host_fault)?;
        let plugin = PluginRef {
            spec: job.job.plugin.spec.clone(),
            path: path.clone(),
            installed: None,
            digest: Some(job.digest.clone()),
        };
        let loaded = Arc::new(
            host.load_bytes(&plugin, &bytes)
                .map_err(|e| host_fault(Problem::new(e.to_string())))?,
        );
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, loaded.clone());
        Ok(loaded)
    }
}
