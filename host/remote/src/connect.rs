//! Connecting to NATS and making sure the streams and the bucket exist.

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};
use phasegate_model::error::Problem;

use crate::wire::{BUCKET, CONTEXTS, JOBS_STREAM, RESULTS_STREAM};

/// How long results are kept: long enough for any run to be resumed.
const RESULTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A connected NATS server.
#[derive(Clone)]
pub struct Server {
    /// Its address, as given (for messages).
    pub url: String,
    /// Its JetStream context.
    pub js: jetstream::Context,
}

/// Connects to `url` (named `name` on the server). An unreachable server is a [`Problem`]
/// naming the URL.
pub async fn connect(url: &str, name: &str) -> Result<Server, Problem> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| {
            Problem::new(format!("cannot reach the NATS server at {url}: {e}")).help(
                "start one with JetStream (`nats-server -js`), or pass its address with `--nats nats://HOST:PORT` (or PHASEGATE_NATS)",
            )
        })?;
    Ok(Server {
        url: url.to_owned(),
        js: jetstream::new(client),
    })
}

/// The buckets jobs refer to by digest.
pub struct Buckets {
    /// Components ([`BUCKET`]).
    pub components: object_store::ObjectStore,
    /// Large contexts ([`CONTEXTS`]).
    pub contexts: object_store::ObjectStore,
}

/// Creates the jobs and results streams and the buckets where they do not exist.
pub async fn ensure(js: &jetstream::Context) -> anyhow::Result<Buckets> {
    let problem = |what: &str, e: &dyn std::fmt::Display| {
        Problem::new(format!("cannot set up {what} on the NATS server: {e}"))
            .help("the server must run with JetStream enabled (`nats-server -js`)")
    };
    js.get_or_create_stream(stream::Config {
        name: JOBS_STREAM.into(),
        subjects: vec!["phasegate.jobs.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| problem("the jobs stream", &e))?;
    js.get_or_create_stream(stream::Config {
        name: RESULTS_STREAM.into(),
        subjects: vec!["phasegate.results.>".into()],
        storage: stream::StorageType::File,
        max_age: RESULTS_MAX_AGE,
        ..Default::default()
    })
    .await
    .map_err(|e| problem("the results stream", &e))?;
    let components = bucket(js, BUCKET, Duration::ZERO)
        .await
        .map_err(|e| problem("the components bucket", &e))?;
    let contexts = bucket(js, CONTEXTS, RESULTS_MAX_AGE)
        .await
        .map_err(|e| problem("the contexts bucket", &e))?;
    Ok(Buckets {
        components,
        contexts,
    })
}

/// The object store `name`, created (file storage; objects older than `max_age` dropped, none
/// when zero) where it does not exist.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
) -> Result<object_store::ObjectStore, String> {
    if let Ok(store) = js.get_object_store(name).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: name.into(),
        storage: stream::StorageType::File,
        max_age,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// Reads object `name` of `store`, no further than `most` bytes and one: whatever its info
/// says, a caller that finds more than `most` refuses it without holding the rest.
pub async fn read_bounded(
    store: &object_store::ObjectStore,
    name: &str,
    most: u64,
) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let object = store
        .get(name)
        .await
        .map_err(|e| format!("cannot fetch it: {e}"))?;
    let mut bytes = Vec::new();
    object
        .take(most.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(bytes)
}

/// Bytes of a message's budget its headers may take (a job's `Nats-Msg-Id`).
const HEADERS: usize = 256;

/// Whether a message of `len` bytes fits the server's `max_payload` (as the server's INFO told
/// the client); `Err(max)` when it does not. Publishing one that does not fit can never succeed,
/// so it is not tried again like a publish to a server that is away.
pub fn fits(js: &jetstream::Context, len: usize) -> Result<(), usize> {
    let max = js.client().max_payload();
    if len.saturating_add(HEADERS) > max {
        Err(max)
    } else {
        Ok(())
    }
}

/// How long a publish is tried again while the server is away (restarting, say) before the
/// attempt is given up as a host failure.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `publish` until it succeeds or [`PUBLISH_PATIENCE`] has passed, a second between
/// tries. Safe for jobs, which carry a `Nats-Msg-Id` the stream de-duplicates by, and for
/// results, of which the controller counts the first.
pub async fn retrying<F, Fut>(mut publish: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
    loop {
        match publish().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}
