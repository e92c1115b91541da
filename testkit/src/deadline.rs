//! Every wait in a test has a deadline that names what it awaited, stretched by one knob for a
//! slow or loaded machine: `TCPPROXY_TEST_TIME_SCALE=3 cargo test -p tcpproxy`. (The harness
//! has its own knob, `--timeout-scale`, and its waits return errors instead of panicking.)

use std::fmt::Display;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};

/// The environment variable that stretches every deadline made by [`scaled`].
pub const TIME_SCALE_VAR: &str = "TCPPROXY_TEST_TIME_SCALE";

/// `secs` times [`TIME_SCALE_VAR`] (default 1, ignored unless a positive number): every
/// deadline of a test is made here.
pub fn scaled(secs: f64) -> Duration {
    static SCALE: OnceLock<f64> = OnceLock::new();
    let scale = *SCALE.get_or_init(|| {
        std::env::var(TIME_SCALE_VAR)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0)
    });
    Duration::from_secs_f64(secs * scale)
}

/// Awaits `fut`, or panics naming `what` it waited for and for how long.
pub async fn with_deadline<F: Future>(limit: Duration, what: impl Display, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!(
            "timed out after {:.1}s waiting for {what}",
            limit.as_secs_f64()
        ),
    }
}

/// Awaits every task of `tasks`, all within `limit`; a task's panic goes on as it was, so the
/// failure reads as the task's own.
pub async fn join_all<T: 'static>(mut tasks: JoinSet<T>, limit: Duration, what: &str) -> Vec<T> {
    with_deadline(limit, what, async {
        let mut done = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(JoinError::try_into_panic) {
                Ok(out) => done.push(out),
                Err(Ok(panic)) => std::panic::resume_unwind(panic),
                Err(Err(e)) => panic!("{what}: a task ended without finishing: {e}"),
            }
        }
        done
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[should_panic(expected = "timed out after 0.1s waiting for the moon")]
    async fn a_deadline_names_what_it_awaited_and_for_how_long() {
        with_deadline(
            Duration::from_millis(100),
            "the moon",
            std::future::pending::<()>(),
        )
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "the task's own words")]
    async fn a_task_s_panic_is_the_failure() {
        let mut tasks = JoinSet::new();
        tasks.spawn(async { panic!("the task's own words") });
        join_all(tasks, Duration::from_secs(5), "tasks").await;
    }
}
