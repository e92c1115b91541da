//! A burst of clients at once: where the proxy's listen backlog is smaller than the burst, the
//! kernel drops the SYNs its accept queue has no room for, and those clients wait for TCP's
//! retransmission (1 s, then 3 s) before they are even connected.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::backlog;
use crate::peer;

const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

/// `BURST_CONNECTS` connects to the proxy, started in waves within about 100 ms; each is timed
/// to its completion. More than `BURST_SLOW_SHARE` of them slower than `BURST_SLOW` (or
/// refused) is a warning naming the listen backlog, when the kernel's listen-queue counters
/// rose meanwhile by at least as many: without that, what held the connects up was the host,
/// not the queue. The proxy need not serve them (the phase is about the door, not the rooms),
/// but once they are gone a new client must echo.
pub async fn connection_burst(ctx: Arc<Ctx>) -> PhaseResult {
    if let Some(cap) = somaxconn().filter(|&c| c < BURST_CONNECTS) {
        return Err(Failure::skipped(format!(
            "net.core.somaxconn is {cap} here: the kernel caps every listen backlog at it, so a burst of {BURST_CONNECTS} overflows any proxy's queue"
        )));
    }
    let watch = backlog::Watch::start();
    let port = ctx.proxy_port;
    let mut connects = JoinSet::new();
    let per_wave = BURST_CONNECTS.div_ceil(BURST_WAVES);
    let began = Instant::now();
    for wave in 0..BURST_WAVES {
        // The waves' pace is the scenario: the burst is spread over about 100 ms.
        tokio::time::sleep_until(began + BURST_WAVE_EVERY * wave as u32).await;
        let left = BURST_CONNECTS - connects.len();
        for _ in 0..per_wave.min(left) {
            connects.spawn(async move {
                let started = Instant::now();
                let c = peer::connect(port, None).await;
                (started.elapsed(), c)
            });
        }
    }
    let spread = began.elapsed();
    let cut_off = Instant::now() + BURST_WAIT;
    let mut times = Vec::with_capacity(BURST_CONNECTS);
    let mut refused: Vec<String> = Vec::new();
    // Held until every connect has ended, so that no pair the proxy closes meanwhile makes room
    // in its queue for the rest.
    let mut clients: Vec<TcpStream> = Vec::with_capacity(BURST_CONNECTS);
    loop {
        tokio::select! {
            r = connects.join_next() => match r {
                None => break,
                Some(Ok((took, Ok(c)))) => {
                    times.push(took);
                    clients.push(c);
                }
                Some(Ok((_, Err(e)))) => refused.push(e.to_string()),
                Some(Err(e)) => refused.push(format!("the harness's connect task failed: {e}")),
            },
            () = tokio::time::sleep_until(cut_off) => break,
        }
    }
    let pending = connects.len();
    connects.abort_all();
    drop(clients);
    let dropped = watch.dropped();
    let tally = Tally::of(&times, pending, refused.len());
    // The door must lead somewhere: once the burst has gone, a new client echoes (contract
    // rule 1: no client can hang the proxy). A proxy that only accepts fails here.
    let mut servers = JoinSet::new();
    let mut client = ctx.connect(None).await?;
    super::echo::echo_server(ctx.clone(), &mut servers).await?;
    super::echo::round_trip(
        &ctx,
        &mut client,
        &ctx.payload(0, ECHO_MESSAGE_LEN),
        "a message after the burst",
    )
    .await?;
    tracing::debug!(
        slow = tally.slow,
        pending,
        refused = refused.len(),
        slowest_ms = tally.slowest.as_secs_f64() * 1000.0,
        ?dropped,
        "connection burst"
    );
    // Each connect the proxy's full queue turned away had a SYN dropped, which the kernel counts;
    // fewer drops than such connects means the slow ones were the loaded host's, and the drops
    // another listener's: the counters are the whole network namespace's, and the suite's
    // Slow destination connect overflows the harness's own destination on purpose meanwhile.
    if !tally.too_many() || dropped.is_some_and(|d| d < tally.turned_away() as u64) {
        return Ok(());
    }
    let mut f = Failure::warning(format!(
        "expected at most {:.0}% of {BURST_CONNECTS} connects started within {:.0} ms to take over {} ms, but {} did ({:.0}%): {} connected after more than that (the slowest after {:.1}s), {pending} were still waiting after {:.1}s, {} were refused or reset",
        BURST_SLOW_SHARE * 100.0,
        spread.as_secs_f64() * 1000.0,
        BURST_SLOW.as_millis(),
        tally.turned_away(),
        tally.share() * 100.0,
        tally.slow,
        tally.slowest.as_secs_f64(),
        BURST_WAIT.as_secs_f64(),
        refused.len(),
    ))
    .detail("a connect over 900 ms waited for its SYN to be sent again: the proxy's accept queue was full and the kernel dropped it");
    if let Some(first) = refused.first() {
        f = f.detail(format!("the first refused connect: {first}"));
    }
    Err(match dropped {
        Some(d) => f.hint(backlog::hint(d)),
        None => f.hint("the proxy's listen backlog is too small for a burst: a small listen(2) backlog such as listen(5); use 128 or more (SOMAXCONN)"),
    })
}

/// net.core.somaxconn in this network namespace, where it can be read.
fn somaxconn() -> Option<usize> {
    std::fs::read_to_string(SOMAXCONN).ok()?.trim().parse().ok()
}

/// How the burst's connects went.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tally {
    /// Connected, but only after `BURST_SLOW`.
    slow: usize,
    /// Still connecting at the cut-off.
    pending: usize,
    refused: usize,
    /// The longest connect that completed.
    slowest: Duration,
}

impl Tally {
    fn of(times: &[Duration], pending: usize, refused: usize) -> Tally {
        Tally {
            slow: times.iter().filter(|&&t| t > BURST_SLOW).count(),
            pending,
            refused,
            slowest: times.iter().copied().max().unwrap_or_default(),
        }
    }

    /// Connects the queue held up or turned away.
    fn turned_away(&self) -> usize {
        self.slow + self.pending + self.refused
    }

    fn share(&self) -> f64 {
        self.turned_away() as f64 / BURST_CONNECTS as f64
    }

    fn too_many(&self) -> bool {
        self.share() > BURST_SLOW_SHARE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_connect_over_the_threshold_is_slow_and_one_at_it_is_not() {
        let t = Tally::of(&[ms(1), BURST_SLOW, BURST_SLOW + ms(1), ms(3000)], 0, 0);
        assert_eq!(t.slow, 2);
        assert_eq!(t.slowest, ms(3000));
    }

    #[test]
    fn five_percent_is_allowed_and_one_more_is_too_many() {
        let at_limit = (BURST_CONNECTS as f64 * BURST_SLOW_SHARE) as usize;
        let mut times = vec![ms(1000); at_limit];
        times.extend(vec![ms(1); BURST_CONNECTS - at_limit]);
        assert!(!Tally::of(&times, 0, 0).too_many());
        // One fast connect fewer: it was slow, still connecting at the cut-off, or refused.
        times.pop();
        assert!(!Tally::of(&times, 0, 0).too_many());
        let mut one_more = times.clone();
        one_more.push(ms(901));
        assert!(Tally::of(&one_more, 0, 0).too_many());
        assert!(Tally::of(&times, 1, 0).too_many());
        assert!(Tally::of(&times, 0, 1).too_many());
    }
}
