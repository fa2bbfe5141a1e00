//! The controller's side: an [`Executor`] that publishes each task attempt as a job and waits
//! for a worker's result. Gates run here, on the local engine.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, consumer, object_store};
use futures_util::StreamExt;
use phasegate_engine::{LoadedPlugins, LocalExecutor};
use phasegate_model::error::Problem;
use phasegate_model::events::{Emitter, EventKind, LogLevel};
use phasegate_model::job::{Attempt, Executor, GateJob, Lane, TaskJob};
use phasegate_model::pipeline::{EngineLimits, PluginRef};
use phasegate_model::progress::{FailureKind, VerdictRecord};
use phasegate_model::units::ByteSize;
use tokio::sync::oneshot;

use crate::connect::{Server, ensure};
use crate::recent::Recent;
use crate::wire::{
    CONTEXT_INLINE, JobMessage, RESULTS_STREAM, ResultMessage, jobs_subject, key, results_subject,
};

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
    /// Where contexts too large for a job go ([`crate::wire::CONTEXTS`]).
    contexts: object_store::ObjectStore,
    /// The contexts put there lately, with their digests (a phase's jobs share one). Held
    /// while one is put, so that the lanes of a phase that start together put it once.
    put: tokio::sync::Mutex<Recent<Arc<str>, String>>,
}

impl Shared {
    /// The digest of `context`, put into the contexts bucket (once: a phase's jobs share it).
    async fn context_object(&self, context: &Arc<str>) -> Result<String, String> {
        let mut put = self.put.lock().await;
        // Each lane of a phase holds its own copy: compared by content when not the same.
        if let Some(digest) = put.find(|c| Arc::ptr_eq(c, context) || **c == **context) {
            return Ok(digest);
        }
        let digest = phasegate_model::digest::sha256_bytes(context.as_bytes());
        if self.contexts.info(&digest).await.is_err() {
            crate::connect::retrying(|| async {
                self.contexts
                    .put(digest.as_str(), &mut context.as_bytes())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await?;
        }
        put.remember(context.clone(), digest.clone());
        Ok(digest)
    }
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
    /// On a connected `server`, makes sure the streams and bucket exist, puts every plugin's component
    /// into the bucket (once: objects are named by digest), and starts following the run's
    /// results. `gates` runs the phases' gates; `emitter` hears of duplicate results.
    pub async fn start(
        server: Server,
        run_id: &str,
        engine: EngineLimits,
        plugins: &LoadedPlugins,
        gates: LocalExecutor,
        emitter: Emitter,
    ) -> anyhow::Result<NatsExecutor> {
        let Server { url, js } = server;
        let url = url.as_str();
        let buckets = ensure(&js).await?;
        let store = buckets.components;
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
        // Opened once here, so that a server that cannot follow results is an error now.
        let messages = follow(&js, run_id, 0)
            .await
            .map_err(|e| Problem::new(format!("cannot follow the results on {url}: {e}")))?;
        let shared = Arc::new(Shared {
            js,
            url: url.to_owned(),
            engine,
            digests,
            pending: Mutex::new(Pending::default()),
            contexts: buckets.contexts,
            put: tokio::sync::Mutex::new(Recent::new()),
        });
        let listening = shared.clone();
        let run_id = run_id.to_owned();
        let listener = tokio::spawn(async move {
            // The results from the start of the run, in order. When the server goes away the
            // stream of them ends or errs: follow again from the last one seen.
            let mut messages = Some(messages);
            let mut seen = 0;
            loop {
                let mut current = match messages.take() {
                    Some(m) => m,
                    None => match follow(&listening.js, &run_id, seen).await {
                        Ok(m) => m,
                        Err(_) => {
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                    },
                };
                while let Some(Ok(message)) = current.next().await {
                    if let Ok(info) = message.info() {
                        seen = info.stream_sequence;
                    }
                    if let Ok(result) = serde_json::from_slice::<ResultMessage>(&message.payload) {
                        listening.deliver(result, &emitter);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        Ok(NatsExecutor {
            shared,
            gates,
            listener,
        })
    }
}

/// An ordered consumer of the run's results after stream sequence `after` (0: all of them).
async fn follow(
    js: &jetstream::Context,
    run_id: &str,
    after: u64,
) -> anyhow::Result<consumer::pull::Ordered> {
    let deliver_policy = if after == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    };
    let consumer = js
        .get_stream(RESULTS_STREAM)
        .await?
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: results_subject(run_id),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    Ok(consumer.messages().await?)
}

impl Drop for NatsExecutor {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Shared {
    /// Hands a result to its attempt, or notes a duplicate.
    fn deliver(&self, result: ResultMessage, emitter: &Emitter) {
        let duplicate = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deliver(result);
        if let Some(result) = duplicate {
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
        }
    }
}

impl Pending {
    /// Hands a result to the attempt waiting for it, or keeps it for one that will ask.
    /// Returns it back when it is a duplicate (a worker presumed dead that finished after
    /// all): the first result of an attempt counts.
    fn deliver(&mut self, result: ResultMessage) -> Option<ResultMessage> {
        if self.taken.contains(&result.key) || self.early.contains_key(&result.key) {
            return Some(result);
        }
        match self.waiting.remove(&result.key) {
            Some(waiter) => {
                self.taken.insert(result.key.clone());
                let _ = waiter.send(result);
            }
            None => {
                self.early.insert(result.key.clone(), result);
            }
        }
        None
    }

    /// The result of `key` if it came already; else a receiver for it.
    fn ask(&mut self, key: &str) -> Answer {
        match self.early.remove(key) {
            Some(result) => {
                self.taken.insert(key.to_owned());
                Answer::Came(Box::new(result))
            }
            None => {
                let (tx, rx) = oneshot::channel();
                self.waiting.insert(key.to_owned(), tx);
                Answer::Wait(rx)
            }
        }
    }
}

/// An attempt's result, or where it will come.
enum Answer {
    Came(Box<ResultMessage>),
    Wait(oneshot::Receiver<ResultMessage>),
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

impl Lane for NatsLane {
    async fn run(&mut self, job: &TaskJob<'_>) -> Attempt {
        let shared = &self.shared;
        let key = key(&job.run_id, &job.phase, &job.task, job.attempt);
        let Some(digest) = shared.digests.get(&*job.plugin) else {
            return Attempt::host_failure(format!("plugin `{}` was not loaded", job.plugin.spec));
        };
        let answer = shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ask(&key);
        let rx = match answer {
            Answer::Came(result) => return attempt_of(*result),
            Answer::Wait(rx) => rx,
        };
        // A large context goes by digest through its bucket, once for all the phase's jobs.
        let (job, context) = if job.context.len() > CONTEXT_INLINE {
            match shared.context_object(&job.context).await {
                Ok(digest) => (
                    TaskJob {
                        context: Arc::from(""),
                        ..job.clone()
                    },
                    Some(digest),
                ),
                Err(e) => {
                    return Attempt::host_failure(format!(
                        "cannot put the context of job {key} into the bucket on {}: {e}",
                        shared.url
                    ));
                }
            }
        } else {
            (job.clone(), None)
        };
        let job = &job;
        let message = JobMessage {
            key: key.clone(),
            job: job.clone(),
            digest: digest.clone(),
            engine: shared.engine,
            context,
        };
        let payload = match serde_json::to_vec(&message) {
            Ok(p) => p,
            Err(e) => return Attempt::host_failure(format!("cannot encode job {key}: {e}")),
        };
        if let Err(max) = crate::connect::fits(&shared.js, payload.len()) {
            return Attempt::failed(
                FailureKind::Limit,
                format!(
                    "the job of task `{}` in phase `{}` is {} with its input, config and context, over the NATS server's `max_payload` of {}; raise `max_payload` in the server's configuration, or give the task large data through a read-only `dirs` grant rather than its input or a var",
                    job.task,
                    job.phase,
                    ByteSize(payload.len() as u64),
                    ByteSize(max as u64)
                ),
            );
        }
        let payload = bytes::Bytes::from(payload);
        let published = crate::connect::retrying(|| async {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", key.as_str());
            shared
                .js
                .publish_with_headers(jobs_subject(&job.run_id), headers, payload.clone())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        if let Err(e) = published {
            return Attempt::host_failure(format!(
                "cannot publish job {key} to the NATS server at {}: {e}",
                shared.url
            ));
        }
        match rx.await {
            Ok(result) => attempt_of(result),
            Err(_) => Attempt::host_failure(format!("the result of job {key} never came")),
        }
    }
}

fn attempt_of(result: ResultMessage) -> Attempt {
    Attempt {
        worker: Some(result.worker),
        ..result.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(key: &str, worker: &str) -> ResultMessage {
        ResultMessage {
            key: key.into(),
            worker: worker.into(),
            attempt: Attempt {
                result: Ok(format!("\"{worker}\"")),
                log: Vec::new(),
                worker: None,
                usage: Default::default(),
            },
        }
    }

    #[test]
    fn the_first_result_of_an_attempt_counts_and_later_ones_are_duplicates() {
        let mut pending = Pending::default();
        // Asked first, answered once; a second answer is a duplicate.
        let Answer::Wait(mut rx) = pending.ask("r/p/a/1") else {
            panic!("nothing came yet")
        };
        assert!(pending.deliver(result("r/p/a/1", "slow")).is_none());
        assert_eq!(rx.try_recv().unwrap().worker, "slow");
        let dup = pending.deliver(result("r/p/a/1", "fast")).unwrap();
        assert_eq!(dup.worker, "fast");
        // Answered before it was asked (a resumed controller): kept, then taken.
        assert!(pending.deliver(result("r/p/b/1", "w")).is_none());
        assert!(pending.deliver(result("r/p/b/1", "again")).is_some());
        let Answer::Came(early) = pending.ask("r/p/b/1") else {
            panic!("it came before it was asked")
        };
        assert_eq!(early.worker, "w");
        assert!(pending.deliver(result("r/p/b/1", "late")).is_some());
    }
}
