//! Every wait in the harness has a deadline, scaled by one knob, and says what it awaited.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::timeline::{Kind, Lane, Recorder, ms};

/// The two timing knobs: the proxy's own stall timeout (what the lazy phases judge against) and
/// the scale that stretches every other deadline for a slow or loaded host.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub stall: Duration,
    pub scale: f64,
}

impl Timing {
    /// A harness deadline, stretched by `--timeout-scale`.
    pub fn scaled(&self, base: Duration) -> Duration {
        base.mul_f64(self.scale)
    }
}

/// A wait that ran out: what it awaited and for how long.
#[derive(Debug, Clone)]
pub struct Expired {
    pub what: String,
    pub waited: Duration,
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timed out after {:.1}s waiting for {}",
            self.waited.as_secs_f64(),
            self.what
        )
    }
}

/// The wait of a phase that came closest to its deadline: how much room a slower machine has
/// before that wait, and so the verdict, flips (what `ci/soak` reports).
#[derive(Debug, Clone, PartialEq)]
pub struct Closest {
    pub what: String,
    pub waited: Duration,
    pub limit: Duration,
}

impl Closest {
    /// The share of the limit used.
    pub fn used(&self) -> f64 {
        self.waited.as_secs_f64() / self.limit.as_secs_f64().max(1e-9)
    }
}

tokio::task_local! {
    static CLOSEST: RefCell<Option<Closest>>;
    static TIMELINE: Option<Recorder>;
}

/// A wait that used at least this share of its limit is drawn on the phase's timeline (as is
/// one that ran out); the many quick ones would only hide the connections' events.
const DRAWN_FROM: f64 = 0.25;

/// Runs `fut` and returns with it the closest of the waits it made through [`within`] (or
/// counted with [`observe`]) in its own task (tasks it spawns are not followed: their waits end
/// in one of the phase's own). The waits that came near their limit go on `timeline` too.
pub async fn tracking<F: Future>(
    timeline: Option<Recorder>,
    fut: F,
) -> (F::Output, Option<Closest>) {
    TIMELINE
        .scope(
            timeline,
            CLOSEST.scope(RefCell::new(None), async {
                let out = fut.await;
                (out, CLOSEST.with(|c| c.borrow().clone()))
            }),
        )
        .await
}

fn note(what: &str, waited: Duration, limit: Duration) {
    let _ = TIMELINE.try_with(|t| {
        let Some(t) = t else { return };
        if limit.is_zero() || waited.as_secs_f64() / limit.as_secs_f64() < DRAWN_FROM {
            return;
        }
        let armed = t.elapsed().saturating_sub(waited);
        t.note_at(
            armed,
            Lane::Proxy,
            Kind::Deadline {
                what: what.to_string(),
                due_ms: ms(armed + limit),
            },
        );
    });
    let _ = CLOSEST.try_with(|c| {
        let mut c = c.borrow_mut();
        let this = Closest {
            what: what.to_string(),
            waited: waited.min(limit),
            limit,
        };
        if c.as_ref().is_none_or(|best| this.used() > best.used()) {
            *c = Some(this);
        }
    });
}

/// Counts a wait the caller timed itself, such as how long a scenario kept the proxy stalled
/// against the proxy's stall timeout, as one of the phase's waits.
pub fn observe(what: &str, waited: Duration, limit: Duration) {
    note(what, waited, limit);
}

/// Runs `fut` for at most `limit`.
pub async fn within<F: Future>(
    limit: Duration,
    what: impl Into<String>,
    fut: F,
) -> Result<F::Output, Expired> {
    let started = Instant::now();
    let what = what.into();
    let out = tokio::time::timeout(limit, fut).await;
    note(&what, started.elapsed(), limit);
    out.map_err(|_| Expired {
        what,
        waited: limit,
    })
}

/// Looks with `look` every `every` until what it sees is `done`, or `limit` has passed, and
/// returns the last look: for what offers nothing to await (another process's descriptors, the
/// kernel's tables). Counted as one of the phase's waits.
pub async fn poll<T, F: Future<Output = T>>(
    limit: Duration,
    what: &str,
    every: Duration,
    mut look: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    loop {
        let seen = look().await;
        if done(&seen) || started.elapsed() >= limit {
            note(what, started.elapsed(), limit);
            return seen;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_closest_wait_is_the_one_that_used_most_of_its_limit() {
        let (_, closest) = tracking(None, async {
            let _ = within(
                Duration::from_secs(10),
                "a",
                tokio::time::sleep(Duration::from_secs(5)),
            )
            .await;
            let _ = within(
                Duration::from_secs(2),
                "b",
                tokio::time::sleep(Duration::from_secs(3)),
            )
            .await;
            let _ = within(
                Duration::from_secs(100),
                "c",
                tokio::time::sleep(Duration::from_secs(60)),
            )
            .await;
        })
        .await;
        let c = closest.unwrap();
        assert_eq!(
            (c.what.as_str(), c.waited, c.limit),
            ("b", Duration::from_secs(2), Duration::from_secs(2))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_returns_what_it_saw_once_done_or_at_its_limit() {
        let (seen, closest) = tracking(None, async {
            let mut n = 0;
            let found = poll(
                Duration::from_secs(10),
                "n to reach 3",
                Duration::from_secs(1),
                || {
                    n += 1;
                    std::future::ready(n)
                },
                |n| *n >= 3,
            )
            .await;
            let never = poll(
                Duration::from_secs(5),
                "never",
                Duration::from_secs(1),
                || std::future::ready(0),
                |n| *n > 0,
            )
            .await;
            (found, never)
        })
        .await;
        assert_eq!(seen, (3, 0));
        let c = closest.unwrap();
        assert_eq!(
            (c.what.as_str(), c.limit),
            ("never", Duration::from_secs(5))
        );
        assert!(c.waited >= Duration::from_secs(5), "{c:?}");
    }

    /// A wait near its limit is drawn on the timeline, armed when it began and due at its
    /// limit; a quick one is not.
    #[tokio::test(start_paused = true)]
    async fn a_wait_near_its_limit_goes_on_the_timeline() {
        let recorder = Recorder::new(Instant::now());
        tracking(Some(recorder.clone()), async {
            let quick = tokio::time::sleep(Duration::from_millis(100));
            let _ = within(Duration::from_secs(10), "quick", quick).await;
            let slow = tokio::time::sleep(Duration::from_secs(6));
            let _ = within(Duration::from_secs(10), "slow", slow).await;
        })
        .await;
        let events = recorder.timeline().events;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].at_ms, 100.0);
        assert_eq!(
            events[0].kind,
            Kind::Deadline {
                what: "slow".into(),
                due_ms: 10_100.0
            }
        );
    }
}
