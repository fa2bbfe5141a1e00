//! The controller's side: an [`Executor`] that publishes each task attempt as a job and waits
//! for a worker's result. Gates run here, on the local engine.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use phasegate_engine::{LoadedPlugins, LocalExecutor};
use phasegate_model::error::Problem;
use phasegate_model::events::{Emitter, EventKind, LogLevel};
use phasegate_model::job::{Attempt, Executor, GateJob, Lane, TaskJob};
use phasegate_model::pipeline::{EngineLimits, PluginRef};
use phasegate_model::progress::{Failure, FailureKind, VerdictRecord};
use tokio::sync::oneshot;

use crate::connect::{connect, ensure};
use crate::wire::{JobMessage, RESULTS_STREAM, ResultMessage, jobs_subject, key, results_subject};

/// Runs task attempts on `phasegate worker`s through NATS JetStream; gates run locally.
pub struct NatsExecutor {
    shared: Arc<Shared>,
    gates: LocalExecutor,
    listener: tokio::task::JoinHandle<()>,
}

struct Shared {
    js: jetstream::Context,
    url: String,
    engine: EngineLimits,
    /// Each plugin's digest: the name of its object in the bucket.
    digests: HashMap<PluginRef, String>,
    pending: Mutex<Pending>,
}

/// Results and the attempts waiting for them.
#[derive(Default)]
struct Pending {
    waiting: HashMap<String, oneshot::Sender<ResultMessage>>,
    /// Results that came before their attempt asked (published before this controller
    /// started: a run resumed after the controller was killed).
    early: HashMap<String, ResultMessage>,
    /// Keys whose result was taken: another result for one is a duplicate.
    taken: HashSet<String>,
}

impl NatsExecutor {
    /// Connects to `url`, makes sure the streams and bucket exist, puts every plugin's component
    /// into the bucket (once: objects are named by digest), and starts following the run's
    /// results. `gates` runs the phases' gates; `emitter` hears of duplicate results.
    pub async fn start(
        url: &str,
        run_id: &str,
        engine: EngineLimits,
        plugins: &LoadedPlugins,
        gates: LocalExecutor,
        emitter: Emitter,
    ) -> anyhow::Result<NatsExecutor> {
        let js = connect(url, &format!("phasegate controller {run_id}")).await?;
        let store = ensure(&js).await?;
        let mut digests = HashMap::new();
        for (plugin, loaded) in plugins {
            if store.info(&loaded.digest).await.is_err() {
                let bytes = std::fs::read(&plugin.path).map_err(|e| {
                    Problem::new(format!("cannot read {}: {e}", plugin.path.display()))
                })?;
                let digest = phasegate_model::digest::sha256_bytes(&bytes);
                if digest != loaded.digest {
                    return Err(Problem::new(format!(
                        "{} changed since it was loaded (it hashes to {digest}, not {})",
                        plugin.path.display(),
                        loaded.digest
                    ))
                    .help("run again")
                    .into());
                }
                store
                    .put(loaded.digest.as_str(), &mut bytes.as_slice())
                    .await
                    .map_err(|e| {
                        Problem::new(format!(
                            "cannot put {} into the bucket on {url}: {e}",
                            plugin.spec
                        ))
                    })?;
            }
            digests.insert(plugin.clone(), loaded.digest.clone());
        }
        let results = js
            .get_stream(RESULTS_STREAM)
            .await
            .map_err(|e| Problem::new(format!("cannot open the results stream on {url}: {e}")))?;
        let consumer = results
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: results_subject(run_id),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| Problem::new(format!("cannot follow the results on {url}: {e}")))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| Problem::new(format!("cannot follow the results on {url}: {e}")))?;
        let shared = Arc::new(Shared {
            js,
            url: url.to_owned(),
            engine,
            digests,
            pending: Mutex::new(Pending::default()),
        });
        let listening = shared.clone();
        let listener = tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                if let Ok(result) = serde_json::from_slice::<ResultMessage>(&message.payload) {
                    listening.deliver(result, &emitter);
                }
            }
        });
        Ok(NatsExecutor {
            shared,
            gates,
            listener,
        })
    }
}

impl Drop for NatsExecutor {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Shared {
    /// Hands a result to the attempt waiting for it, keeps it for one that will ask, or notes
    /// a duplicate (a worker presumed dead that finished after all): the first result counts.
    fn deliver(&self, result: ResultMessage, emitter: &Emitter) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.taken.contains(&result.key) || pending.early.contains_key(&result.key) {
            let mut parts = result.key.splitn(4, '/').skip(1);
            let (phase, task) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            emitter.emit(EventKind::TaskLog {
                phase: phase.into(),
                task: task.into(),
                level: LogLevel::Warn,
                message: format!(
                    "ignored a duplicate result of attempt {} from worker `{}` (the first result counts)",
                    result.key, result.worker
                ),
            });
            return;
        }
        match pending.waiting.remove(&result.key) {
            Some(waiter) => {
                pending.taken.insert(result.key.clone());
                let _ = waiter.send(result);
            }
            None => {
                pending.early.insert(result.key.clone(), result);
            }
        }
    }
}

impl Executor for NatsExecutor {
    type Lane = NatsLane;

    fn lane(&self, _emitter: Emitter) -> NatsLane {
        NatsLane {
            shared: self.shared.clone(),
        }
    }

    async fn run_gate(&self, job: GateJob<'_>, emitter: Emitter) -> VerdictRecord {
        self.gates.run_gate(job, emitter).await
    }
}

/// A worker's way to the jobs stream.
pub struct NatsLane {
    shared: Arc<Shared>,
}

fn host_failure(message: String) -> Attempt {
    Attempt {
        result: Err(Failure {
            kind: FailureKind::Host,
            message,
        }),
        log: Vec::new(),
        worker: None,
    }
}

impl Lane for NatsLane {
    async fn run(&mut self, job: &TaskJob<'_>) -> Attempt {
        let shared = &self.shared;
        let key = key(&job.run_id, &job.phase, &job.task, job.attempt);
        let Some(digest) = shared.digests.get(&*job.plugin) else {
            return host_failure(format!("plugin `{}` was not loaded", job.plugin.spec));
        };
        let answer = {
            let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            match pending.early.remove(&key) {
                Some(result) => {
                    pending.taken.insert(key.clone());
                    Err(result)
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    pending.waiting.insert(key.clone(), tx);
                    Ok(rx)
                }
            }
        };
        let rx = match answer {
            Err(already) => return attempt_of(already),
            Ok(rx) => rx,
        };
        let message = JobMessage {
            key: key.clone(),
            job: job.clone(),
            digest: digest.clone(),
            engine: shared.engine,
        };
        let payload = match serde_json::to_vec(&message) {
            Ok(p) => p,
            Err(e) => return host_failure(format!("cannot encode job {key}: {e}")),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", key.as_str());
        let published = match shared
            .js
            .publish_with_headers(jobs_subject(&job.run_id), headers, payload.into())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = published {
            return host_failure(format!(
                "cannot publish job {key} to the NATS server at {}: {e}",
                shared.url
            ));
        }
        match rx.await {
            Ok(result) => attempt_of(result),
            Err(_) => host_failure(format!("the result of job {key} never came")),
        }
    }
}

fn attempt_of(result: ResultMessage) -> Attempt {
    Attempt {
        worker: Some(result.worker),
        ..result.attempt
    }
}
