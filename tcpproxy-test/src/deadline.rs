//! Every wait in the harness has a deadline, scaled by one knob, and says what it awaited.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

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

/// Runs `fut` for at most `limit`.
pub async fn within<F: Future>(
    limit: Duration,
    what: impl Into<String>,
    fut: F,
) -> Result<F::Output, Expired> {
    tokio::time::timeout(limit, fut).await.map_err(|_| Expired {
        what: what.into(),
        waited: limit,
    })
}

/// Runs `fut` until the instant `end`.
pub async fn until<F: Future>(
    end: Instant,
    what: impl Into<String>,
    fut: F,
) -> Result<F::Output, Expired> {
    let started = Instant::now();
    tokio::time::timeout_at(end, fut)
        .await
        .map_err(|_| Expired {
            what: what.into(),
            waited: started.elapsed(),
        })
}
