//! Driving a proxy into holding bytes it cannot pass on yet, so that an EOF reaches it while it
//! does: the moment that tells a proxy which flushes before forwarding EOF from one which
//! discards what it holds.
//!
//! Left to chance, that moment rarely comes on loopback. A proxy is woken to write only when a
//! third of its (often megabyte-sized) send buffer is free, so each burst of writes empties its
//! own buffer and it reads the EOF holding nothing: a drop-on-EOF proxy once passed a sweep of 31
//! transfer sizes built to catch it (docs/reliability.md, "The held tail").
//!
//! Linux shows every socket's queues (sock_diag, /proc/net/tcp), the proxy's as well as ours, so the bytes
//! the proxy holds in its own memory (a buffer, or a pipe for splice) are what the sender wrote,
//! less what the receiver read and what the four queues on the way hold. The receiver stops
//! reading; the sender writes in small pieces and, after each, waits until the proxy has taken
//! the piece (our send queue and the proxy's receive queue are empty). Once the proxy holds
//! bytes and the count stays put, its side toward the receiver is full while it still reads:
//! an EOF sent now reaches it with those bytes held.
//!
//! While it holds them the proxy is stalled, and a correct proxy's stall timer runs: a fill
//! given a [`Settings::budget`] gives up once the proxy may have been stalled that long, counted
//! from the last moment it was seen holding nothing, not from when the harness got round to
//! looking: on a loaded host that can be seconds later, long enough for a correct proxy's timer
//! to fire first.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::procfs::{self, Ends, Queues};
use crate::sockdiag::Diag;

/// How often the queues are read while waiting for the proxy. Another process's socket queues
/// offer nothing to await, so this is a poll, bounded by `Settings::settle`.
const POLL: Duration = Duration::from_millis(1);
/// How long the proxy may take to read a piece before it counts as not reading (at most a
/// quarter of its stall timeout, so a correct proxy's timer never fires while the harness
/// waits), and how long what it holds must stay put.
const SETTLE: Duration = Duration::from_secs(1);
const CONFIRM: Duration = Duration::from_millis(20);
/// The share of the proxy's stall timeout a fill may keep it stalled, from the last moment it
/// held nothing; a reset once the receiver was held off `LATE` of it is the harness's lateness,
/// not the proxy's fault.
const BUDGET: f64 = 0.4;
const LATE: f64 = 0.75;

/// The four sockets between a sender and a receiver through the proxy, read in this order:
/// the sender's, the proxy's facing the sender, the proxy's facing the receiver, the receiver's.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    sender: Ends,
    proxy_in: Ends,
    proxy_out: Ends,
    receiver: Ends,
}

impl Path {
    /// From the (local, remote) ports of the sender's and the receiver's sockets.
    pub fn from_ends(sender: Ends, receiver: Ends) -> Path {
        let facing = |e: Ends| Ends {
            local: e.remote,
            remote: e.local,
        };
        Path {
            sender,
            proxy_in: facing(sender),
            proxy_out: facing(receiver),
            receiver,
        }
    }

    /// All four queues, or None when a socket is not found (it was closed, or neither
    /// sock_diag nor /proc is there). By sock_diag when it answers, else from /proc.
    fn read(&self, diag: &mut Option<Diag>) -> Option<[Queues; 4]> {
        let all = [self.sender, self.proxy_in, self.proxy_out, self.receiver];
        if let Some(d) = diag {
            let mut q = [Queues::default(); 4];
            for (q, ends) in q.iter_mut().zip(all) {
                match d.queues(ends) {
                    Ok(found) => *q = found?,
                    Err(_) => {
                        *diag = None;
                        return self.read(diag);
                    }
                }
            }
            return Some(q);
        }
        let q = procfs::tcp_queues(&all);
        Some([q[0]?, q[1]?, q[2]?, q[3]?])
    }
}

/// How the fill proceeds.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bytes per write. A proxy whose buffer is smaller stops reading within a piece; see
    /// [`Held::Overshot`].
    pub piece: usize,
    /// How long the proxy may take to read a piece before it counts as not reading.
    pub settle: Duration,
    /// How long the held count must stay put: the proxy is not about to write it on.
    pub confirm: Duration,
    /// How long the proxy may be left holding bytes it cannot write, from the last moment it
    /// was seen holding none; past it the fill ends [`Held::OutOfTime`]. None: no limit (the
    /// proxy's stall timeout is far longer than any fill).
    pub budget: Option<Duration>,
}

impl Settings {
    /// A fill in pieces of `piece` bytes. With the proxy's `stall` timeout known, the proxy is
    /// kept stalled for [`budget`] of it at most; without, the timeout is taken to be far longer
    /// than any fill.
    pub fn new(piece: usize, stall: Option<Duration>) -> Settings {
        Settings {
            piece,
            settle: stall.map_or(SETTLE, |s| SETTLE.min(s / 4)),
            confirm: CONFIRM,
            budget: stall.map(budget),
        }
    }
}

/// How long a fill may keep the proxy stalled: a share of its stall timeout, so a correct
/// proxy's timer has the rest as margin for a harness that is late to read.
pub fn budget(stall: Duration) -> Duration {
    stall.mul_f64(BUDGET)
}

/// Whose fault a reset during or after a fill is, from how long the proxy may have been
/// stalled (from the last moment it held nothing) when the receiver began reading. A correct
/// proxy aborts a stalled pair only at its stall timeout, so a reset well before it is the
/// proxy's; one after the harness left it stalled for most of it is the harness's lateness.
pub fn harness_late(stalled_for: Duration, stall: Duration) -> bool {
    stalled_for.as_secs_f64() >= stall.as_secs_f64() * LATE
}

/// The instant a fill must give up: `budget` after `clear`, when the proxy was last seen
/// holding nothing. Its stall cannot have begun earlier, so a stall the fill causes lasts at
/// most the budget plus however late the caller is to let the receiver read.
pub fn give_up_at(clear: Instant, budget: Option<Duration>) -> Option<Instant> {
    budget.map(|b| clear + b)
}

/// Where a fill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The proxy took every byte written and holds this many it does not write on.
    Holding(u64),
    /// The proxy stopped reading in the middle of a piece, holding about this many bytes: its
    /// buffer is smaller than a piece (or it reads only when it can write).
    Overshot(u64),
    /// Every byte went through without the proxy ever holding any.
    PassedThrough,
    /// A socket of the path is not in /proc.
    Unseen,
    /// The budget ran out before the proxy was seen to hold bytes steadily: the harness was too
    /// slow to confirm it (or the proxy kept moving them) in time; nothing is known either way.
    OutOfTime,
}

/// What a fill tells its caller as it goes.
#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// A write took this many bytes.
    Wrote(usize),
    /// The four sockets' queues, in [`Path`]'s order.
    Queues([Queues; 4]),
}

/// What a fill wrote and where it ended.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    /// Bytes of `data` written.
    pub written: usize,
    pub held: Held,
    /// When the proxy was last seen holding nothing (at first, when the fill began): no stall
    /// of the proxy's that the fill caused can have begun before this.
    pub clear: Instant,
}

/// Writes `data` in pieces through the proxy until the proxy holds bytes it cannot pass on
/// (see the module's comment), and stops there: the caller shuts down at once. `before` bytes
/// were written on this socket earlier and `received` of everything read at the far end, and
/// the receiver reads nothing while this runs. `seen` hears of every write and every reading of
/// the queues as it is made.
pub async fn fill(
    wr: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    before: usize,
    received: usize,
    path: &Path,
    settings: &Settings,
    mut seen: impl FnMut(Seen),
) -> io::Result<Fill> {
    let mut at = 0;
    let mut clear = Instant::now();
    let done = |at, held, clear| {
        Ok(Fill {
            written: at,
            held,
            clear,
        })
    };
    let mut diag = Diag::open().ok();
    let Some(mut queues) = path.read(&mut diag) else {
        return done(at, Held::Unseen, clear);
    };
    seen(Seen::Queues(queues));
    // Holding: the proxy's own share of what was written and not yet read.
    let held = |at: usize, q: &[Queues; 4]| {
        let beyond: u64 = q.iter().map(|q| q.send + q.recv).sum();
        (before + at) as i64 - received as i64 - beyond as i64
    };
    let taken = |q: &[Queues; 4]| q[0].send == 0 && q[1].recv == 0;
    loop {
        if at >= data.len() {
            return done(at, Held::PassedThrough, clear);
        }
        let give_up = give_up_at(clear, settings.budget);
        if give_up.is_some_and(|g| Instant::now() >= g) {
            return done(at, Held::OutOfTime, clear);
        }
        let end = Instant::now() + settings.settle;
        let write_until = give_up.map_or(end, |g| g.min(end));
        let piece = &data[at..(at + settings.piece).min(data.len())];
        let mut off = 0;
        while off < piece.len() {
            // Cancelling a TCP write writes nothing, so the count stays exact. A probe, not a
            // deadline (so not `crate::deadline`): a write that does not finish in time is how
            // a proxy that stopped reading shows, and the caller counts how long the fill kept
            // the proxy stalled against its stall timeout.
            match tokio::time::timeout_at(write_until, wr.write(&piece[off..])).await {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => {
                    off += n;
                    seen(Seen::Wrote(n));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) if Instant::now() < end => return done(at + off, Held::OutOfTime, clear),
                Err(_) => {
                    return done(
                        at + off,
                        Held::Overshot(held(at + off, &queues).max(0) as u64),
                        clear,
                    );
                }
            }
        }
        at += off;
        let mut steady: Option<([Queues; 4], Instant)> = None;
        loop {
            let looked = Instant::now();
            if give_up_at(clear, settings.budget).is_some_and(|g| looked >= g) {
                return done(at, Held::OutOfTime, clear);
            }
            let Some(q) = path.read(&mut diag) else {
                return done(at, Held::Unseen, clear);
            };
            seen(Seen::Queues(q));
            queues = q;
            let h = held(at, &q);
            if taken(&q) {
                if h <= 0 {
                    // Holding nothing when the read began, so any stall starts after it. Only
                    // once taken: bytes moving between our first two reads count twice.
                    clear = looked;
                    break;
                }
                match steady {
                    Some((prev, since)) if prev == q => {
                        if since.elapsed() >= settings.confirm {
                            return done(at, Held::Holding(h as u64), clear);
                        }
                    }
                    _ => steady = Some((q, Instant::now())),
                }
            } else {
                steady = None;
            }
            if Instant::now() >= end + settings.confirm {
                // Still moving after all this time: what it holds now is as good a moment as
                // any; still not taken: it stopped reading.
                let held = if taken(&q) {
                    Held::Holding(h as u64)
                } else {
                    Held::Overshot(h.max(0) as u64)
                };
                return done(at, held, clear);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(1500);

    #[test]
    fn a_fill_keeps_a_proxy_stalled_for_well_under_its_stall_timeout() {
        assert_eq!(budget(T), Duration::from_millis(600));
        let s = Settings::new(16, Some(T));
        // The settle wait fits inside the budget, so a proxy that stops reading is seen to
        // before the fill gives up.
        assert!(s.settle < s.budget.unwrap());
        // And the budget leaves the harness's own lateness room before a reset is blamed on it.
        assert!(!harness_late(budget(T), T));
        assert_eq!(Settings::new(16, None).budget, None);
    }

    #[test]
    fn a_reset_long_after_the_budget_is_the_harness_and_one_within_it_the_proxy() {
        assert!(!harness_late(Duration::ZERO, T));
        assert!(!harness_late(Duration::from_millis(1000), T));
        assert!(harness_late(Duration::from_millis(1125), T));
        assert!(harness_late(Duration::from_secs(2), T));
        // Scales with the stall timeout it is judged against.
        assert!(!harness_late(
            Duration::from_secs(2),
            Duration::from_secs(10)
        ));
    }

    #[test]
    fn a_fill_gives_up_a_budget_after_the_proxy_last_held_nothing_or_never() {
        let clear = Instant::now();
        let b = Duration::from_millis(600);
        assert_eq!(give_up_at(clear, Some(b)), Some(clear + b));
        assert_eq!(give_up_at(clear, None), None);
    }
}
