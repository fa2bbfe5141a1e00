//! The wall-clock deadline of one plugin call (`limits.timeout`).
//!
//! The deadline runs from when the call starts, and covers time spent blocked in host calls as
//! well as in guest code (epoch interruption makes the guest yield at every tick, so a spinning
//! guest is stopped too). Its timer is armed only if the call has to wait: a task that
//! finishes in its first poll, as most small tasks do, never registers with the runtime's
//! timer. (`tokio::time::timeout` takes a reference to the runtime for every call; on two
//! cores that shared count was one of the cache lines the workers fought over.)

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The call did not finish within its timeout.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

/// Runs `call` until it finishes or `timeout` has passed since this was called.
pub async fn within<F: Future>(timeout: Duration, call: F) -> Result<F::Output, Elapsed> {
    let started = Instant::now();
    let mut call = pin!(call);
    // One poll without a timer; if the call is pending, its waker is registered and the poll
    // below (with the timer) is simply its next one.
    let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    if let Poll::Ready(output) = first {
        return Ok(output);
    }
    let deadline = started.checked_add(timeout);
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.into(), call)
            .await
            .map_err(|_| Elapsed),
        // A timeout too large to add to a clock reading: no deadline at all.
        None => Ok(call.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(timers: bool) -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        if timers {
            builder.enable_time();
        }
        builder.build().expect("runtime")
    }

    #[test]
    fn a_call_that_finishes_at_once_never_touches_the_timer() {
        // Without timers, arming one panics ("timers are disabled"): so none was armed.
        let out = runtime(false).block_on(within(Duration::from_millis(1), async { 7 }));
        assert_eq!(out, Ok(7));
    }

    #[test]
    fn a_call_that_waits_and_then_finishes_in_time_returns_its_output() {
        let out = runtime(true).block_on(within(Duration::from_secs(10), async {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
            "done"
        }));
        assert_eq!(out, Ok("done"));
    }

    #[test]
    fn a_call_that_never_finishes_is_stopped_at_its_deadline() {
        let start = Instant::now();
        let out = runtime(true).block_on(within(
            Duration::from_millis(50),
            std::future::pending::<()>(),
        ));
        assert_eq!(out, Err(Elapsed));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn the_deadline_counts_from_the_start_not_from_the_first_wait() {
        // Busy for 1 s before it first waits, with a timeout of 1.2 s: stopped at 1.2 s, where
        // a deadline counted from the first wait would stop it at 2.2 s (wide margins: this
        // checks which clock, not how fast).
        let start = Instant::now();
        let out = runtime(true).block_on(within(Duration::from_millis(1_200), async {
            std::thread::sleep(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_secs(30)).await;
        }));
        assert_eq!(out, Err(Elapsed));
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(2_000),
            "stopped after {took:?}"
        );
    }

    #[test]
    fn an_unrepresentable_timeout_means_no_deadline() {
        let out = runtime(true).block_on(within(Duration::MAX, async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            1
        }));
        assert_eq!(out, Ok(1));
    }
}
