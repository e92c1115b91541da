//! A burst of clients at once: where the proxy's listen backlog is smaller than the burst, the
//! kernel drops the SYNs its accept queue has no room for, and those clients wait for TCP's
//! retransmission (1 s, then 3 s) before they are even connected.

use std::io;
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

/// `BURST_CONNECTS` connects to the proxy, started in waves within about 100 ms. More than
/// `BURST_SLOW_SHARE` of them held up by the proxy's accept queue (the kernel says a SYN was sent
/// again), still connecting at the cut-off, or refused is a warning naming the listen backlog,
/// when the kernel's listen-queue counters rose meanwhile by at least as many. A connect the
/// harness was merely slow to see complete is not held up: on a loaded host that is the host.
/// The proxy need not serve them (the phase is about the door, not the rooms), but once they are
/// gone a new client must echo.
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
                let c = peer::connect(port, None).await.and_then(|c| {
                    // Read before anything is sent: only a SYN can have been sent again.
                    let resent = crate::tcp_info::retransmitted(&c)? > 0;
                    Ok((c, resent))
                });
                (started.elapsed(), c)
            });
        }
    }
    let spread = began.elapsed();
    let cut_off = Instant::now() + BURST_WAIT;
    let mut ended = Ended::default();
    loop {
        tokio::select! {
            r = connects.join_next() => match r {
                None => break,
                Some(joined) => ended.take(joined),
            },
            () = tokio::time::sleep_until(cut_off) => break,
        }
    }
    // Connects that completed while the harness's runtime was busy elsewhere are not pending.
    while let Some(joined) = connects.try_join_next() {
        ended.take(joined);
    }
    let pending = connects.len();
    connects.abort_all();
    drop(ended.clients);
    let dropped = watch.dropped();
    let tally = Tally::of(&ended.times, ended.resent, pending, ended.refused.len());
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
        resent = tally.resent,
        pending,
        refused = ended.refused.len(),
        slowest_ms = tally.slowest.as_secs_f64() * 1000.0,
        ?dropped,
        "connection burst"
    );
    // Each connect the proxy's full queue turned away had a SYN dropped, which the kernel counts;
    // fewer drops than such connects means the pending ones were the loaded host's, and the drops
    // another listener's: the counters are the whole network namespace's, and the suite's
    // Slow destination connect overflows the harness's own destination on purpose meanwhile.
    if !tally.too_many() || dropped.is_some_and(|d| d < tally.turned_away() as u64) {
        return Ok(());
    }
    let mut f = Failure::warning(format!(
        "expected at most {:.0}% of {BURST_CONNECTS} connects started within {:.0} ms to be held up by the proxy's accept queue, but {} were ({:.0}%): {} had their SYN sent again (the slowest connect took {:.1}s), {pending} were still waiting after {:.1}s, {} were refused or reset",
        BURST_SLOW_SHARE * 100.0,
        spread.as_secs_f64() * 1000.0,
        tally.turned_away(),
        tally.share() * 100.0,
        tally.resent,
        tally.slowest.as_secs_f64(),
        BURST_WAIT.as_secs_f64(),
        ended.refused.len(),
    ))
    .detail("a SYN sent again (after 1 s, then 3 s) was dropped first: the proxy's accept queue was full");
    if let Some(first) = ended.refused.first() {
        f = f.detail(format!("the first refused connect: {first}"));
    }
    Err(match dropped {
        Some(_) => f.hint(backlog::hint(tally.turned_away() as u64)),
        None => f.hint("the proxy's listen backlog is too small for a burst: a small listen(2) backlog such as listen(5); use 128 or more (SOMAXCONN)"),
    })
}

/// net.core.somaxconn in this network namespace, where it can be read.
fn somaxconn() -> Option<usize> {
    std::fs::read_to_string(SOMAXCONN).ok()?.trim().parse().ok()
}

/// A connect's task as joined: how long it took, and the client with whether its SYN was sent
/// again.
type Joined = Result<(Duration, io::Result<(TcpStream, bool)>), tokio::task::JoinError>;

/// The connects that have ended, as they were joined.
#[derive(Default)]
struct Ended {
    times: Vec<Duration>,
    resent: usize,
    refused: Vec<String>,
    /// Held until every connect has ended, so that no pair the proxy closes meanwhile makes
    /// room in its queue for the rest.
    clients: Vec<TcpStream>,
}

impl Ended {
    fn take(&mut self, joined: Joined) {
        match joined {
            Ok((took, Ok((client, syn_resent)))) => {
                self.times.push(took);
                self.resent += usize::from(syn_resent);
                self.clients.push(client);
            }
            Ok((_, Err(e))) => self.refused.push(e.to_string()),
            Err(e) => self
                .refused
                .push(format!("the harness's connect task failed: {e}")),
        }
    }
}

/// How the burst's connects went.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tally {
    /// Connected, after the kernel sent their SYN again.
    resent: usize,
    /// Still connecting at the cut-off.
    pending: usize,
    refused: usize,
    /// The longest connect that completed, as the harness saw it.
    slowest: Duration,
}

impl Tally {
    fn of(times: &[Duration], resent: usize, pending: usize, refused: usize) -> Tally {
        Tally {
            resent,
            pending,
            refused,
            slowest: times.iter().copied().max().unwrap_or_default(),
        }
    }

    /// Connects the queue held up or turned away.
    fn turned_away(&self) -> usize {
        self.resent + self.pending + self.refused
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
    fn a_slow_connect_is_held_up_only_when_its_syn_was_sent_again() {
        // Three took seconds by the harness's clock, but the kernel sent one SYN again.
        let t = Tally::of(&[ms(1), ms(1500), ms(2000), ms(3000)], 1, 0, 0);
        assert_eq!(t.turned_away(), 1);
        assert_eq!(t.slowest, ms(3000));
    }

    #[test]
    fn five_percent_is_allowed_and_one_more_is_too_many() {
        let at_limit = (BURST_CONNECTS as f64 * BURST_SLOW_SHARE) as usize;
        let times = vec![ms(1); BURST_CONNECTS];
        assert!(!Tally::of(&times, at_limit, 0, 0).too_many());
        assert!(Tally::of(&times, at_limit + 1, 0, 0).too_many());
        assert!(Tally::of(&times, at_limit, 1, 0).too_many());
        assert!(Tally::of(&times, at_limit, 0, 1).too_many());
    }
}
