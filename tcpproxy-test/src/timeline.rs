//! What happened in a phase, in time order: the proxy's start, readiness and exit, each
//! connection leg's connect, bytes, half-close, EOF, reset and close, the windows in which the
//! proxy held bytes it could not write (and the kernel's queues of each leg's two sockets while a
//! held tail was filled), the deadlines the phase ran under, and the moment the
//! verdict was decided. Times are milliseconds since the phase began. A phase's recorder is
//! shared by every task of its scenario; it keeps at most [`MAX_EVENTS`] events and counts what
//! it turned away, so a report stays small whatever the phase does.
//!
//! The JSON report carries a timeline per phase (docs/grading.md, "Timelines"); the HTML report
//! draws it.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The version of the events' JSON form; bumped when a field changes meaning.
pub const VERSION: u32 = 1;

/// At most this many events per phase; the rest are counted in [`Timeline::dropped`].
pub const MAX_EVENTS: usize = 600;

/// Byte counts of one leg and direction, and one socket's queues, are sampled at most this often;
/// the last count before a half-close, an EOF, a reset or a close is always kept.
pub const BYTES_EVERY: Duration = Duration::from_millis(50);

/// The connections whose legs' events are kept; the rest are counted in [`Timeline::dropped`].
/// A phase that opens thousands of connections shows how the first ones went, which is what
/// the HTML report draws (two lanes each), rather than a mass of connects and no bytes.
pub const MAX_CONNECTIONS: u32 = 20;

/// Room kept for the proxy's own events (its exit, its stderr, the verdict) however busy the
/// connections are: a full timeline still says how the phase ended.
const PROXY_ROOM: usize = 16;

/// Byte samples (and queue readings) stop once the timeline holds this many events, so the ends of every leg (and
/// the last counts before them) still fit after a long transfer on many legs: a connection's
/// two connects, half-closes, EOFs, closes and four last counts are about ten events, and
/// [`MAX_CONNECTIONS`] of them fit in the rest beside [`PROXY_ROOM`].
const SAMPLES_UNTIL: usize = MAX_EVENTS * 2 / 3;

/// Where an event happened: the proxy process, or one leg of a connection through it. The
/// client leg of connection `k` is the harness's socket to the proxy; the server leg is the
/// destination server's socket the proxy connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Proxy,
    Client(u32),
    Server(u32),
}

impl Lane {
    /// The proxy first, then each connection's client leg beside its server leg.
    fn order(self) -> (u32, u8) {
        match self {
            Lane::Proxy => (0, 0),
            Lane::Client(k) => (k, 1),
            Lane::Server(k) => (k, 2),
        }
    }
}

impl Ord for Lane {
    fn cmp(&self, other: &Lane) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl PartialOrd for Lane {
    fn partial_cmp(&self, other: &Lane) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lane::Proxy => f.write_str("proxy"),
            Lane::Client(k) => write!(f, "client {k}"),
            Lane::Server(k) => write!(f, "server {k}"),
        }
    }
}

impl Serialize for Lane {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which socket of a leg a queue reading is of. A leg is one TCP connection: the harness's
/// socket the lane is named for, and the proxy's socket at its other end (the proxy's accepted
/// socket on a client leg, the socket it connected on a server leg), which the harness reads
/// through the kernel (sock_diag) as `ss` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum End {
    Harness,
    Proxy,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            End::Harness => "the harness's socket",
            End::Proxy => "the proxy's socket",
        })
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    /// The harness began starting the proxy.
    Start,
    /// The proxy (process group `pid`) listened.
    Ready { pid: i32 },
    /// The proxy exited, as described (`exited with status 1`, `killed by signal SIGSEGV`).
    Exit { status: String },
    /// The proxy wrote this much on stderr during the phase.
    Stderr { bytes: u64 },
    /// The leg's connection was established.
    Connect,
    /// This leg's bytes written so far.
    Wrote { total: u64 },
    /// This leg's bytes read so far.
    Read { total: u64 },
    /// This leg sent shutdown(SHUT_WR).
    HalfClose,
    /// This leg read EOF.
    Eof,
    /// This leg saw a reset (or a broken pipe), or an error named here.
    Reset { error: String },
    /// This leg's socket was closed.
    Close,
    /// The proxy held bytes toward this leg that it could not write, from `at` until `until`:
    /// the window its stall timer runs in.
    Held { until_ms: f64 },
    /// The kernel's queues of one socket of this leg (`end`): bytes written on it and not yet
    /// acknowledged (`send`), and bytes it received and its owner has not read (`recv`).
    Queues { end: End, send: u64, recv: u64 },
    /// A deadline the phase ran under, armed at `at` and due at `due_ms`.
    Deadline { what: String, due_ms: f64 },
    /// The phase's verdict was decided.
    Verdict { verdict: String },
}

/// A sampled kind of event on a lane: its bytes one way, or one socket's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    Wrote,
    Read,
    Queues(End),
}

impl Kind {
    fn series(&self) -> Option<Series> {
        match self {
            Kind::Wrote { .. } => Some(Series::Wrote),
            Kind::Read { .. } => Some(Series::Read),
            Kind::Queues { end, .. } => Some(Series::Queues(*end)),
            _ => None,
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Milliseconds since the phase began.
    pub at_ms: f64,
    pub lane: Lane,
    #[serde(flatten)]
    pub kind: Kind,
}

/// A phase's events, in time order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    pub events: Vec<Event>,
    /// Events turned away once the timeline was full.
    pub dropped: usize,
}

impl Timeline {
    /// The lanes that have events, proxy first, then each connection's client and server legs.
    pub fn lanes(&self) -> Vec<Lane> {
        let mut lanes: Vec<Lane> = self.events.iter().map(|e| e.lane).collect();
        lanes.sort();
        lanes.dedup();
        lanes
    }

    /// The time of the last event, in milliseconds (0 for none).
    pub fn end_ms(&self) -> f64 {
        self.events
            .iter()
            .map(|e| match &e.kind {
                Kind::Held { until_ms } => e.at_ms.max(*until_ms),
                Kind::Deadline { due_ms, .. } => e.at_ms.max(*due_ms),
                _ => e.at_ms,
            })
            .fold(0.0, f64::max)
    }
}

/// A phase's recorder: cheap to clone, shared by every task of the scenario.
#[derive(Debug, Clone)]
pub struct Recorder {
    began: Instant,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    timeline: Timeline,
    /// Connections opened so far; the next is lane `connections + 1`.
    connections: u32,
    /// Per lane and series, the sampling.
    samples: Vec<Sampling>,
}

/// One lane's series (its bytes one way, or one socket's queues): when a sample was last kept,
/// and the latest and its time, kept or not.
#[derive(Debug)]
struct Sampling {
    lane: Lane,
    series: Series,
    kept_at: Duration,
    latest: (Duration, Kind),
    /// The latest is among the events.
    kept: bool,
}

impl Recorder {
    /// A recorder whose clock starts at `began`, the phase's start.
    pub fn new(began: Instant) -> Recorder {
        Recorder {
            began,
            inner: Arc::default(),
        }
    }

    /// A new connection's number (from 1): its legs are lanes `Client(k)` and `Server(k)`.
    /// Each leg's connect is its opener's to note, when it happens.
    pub fn opened(&self) -> u32 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.connections += 1;
        inner.connections
    }

    /// How many connections have been opened so far.
    pub fn connections(&self) -> u32 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
    }

    /// How long since the phase began.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    /// Records `kind` on `lane`, now.
    pub fn note(&self, lane: Lane, kind: Kind) {
        self.note_at(self.began.elapsed(), lane, kind);
    }

    /// Records `kind` on `lane` at `at` since the phase began. Byte counts and queue readings
    /// are sampled (one per [`BYTES_EVERY`] per lane and series); any other event on a lane
    /// first keeps the lane's latest samples, so the line drawn through them ends where the
    /// bytes did.
    pub fn note_at(&self, at: Duration, lane: Lane, kind: Kind) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Lane::Client(k) | Lane::Server(k) = lane
            && k > MAX_CONNECTIONS
        {
            inner.timeline.dropped += 1;
            return;
        }
        if let Some(series) = kind.series() {
            let fresh = Sampling {
                lane,
                series,
                kept_at: at,
                latest: (at, kind.clone()),
                kept: true,
            };
            let full = inner.timeline.events.len() >= SAMPLES_UNTIL;
            match inner
                .samples
                .iter_mut()
                .find(|s| s.lane == lane && s.series == series)
            {
                Some(s) if full || at.saturating_sub(s.kept_at) < BYTES_EVERY => {
                    s.latest = (at, kind);
                    s.kept = false;
                    return;
                }
                Some(s) => *s = fresh,
                None if full => {
                    inner.samples.push(Sampling {
                        kept: false,
                        ..fresh
                    });
                    return;
                }
                None => inner.samples.push(fresh),
            }
        } else {
            inner.flush(Some(lane));
        }
        inner.push(at, lane, kind);
    }

    /// The events so far, in time order.
    pub fn timeline(&self) -> Timeline {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.flush(None);
        let mut t = inner.timeline.clone();
        t.events.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        t
    }
}

impl Inner {
    /// Keeps the latest samples not yet among the events, of `lane` or of every lane, at their
    /// own times: a line drawn through the samples then ends where the bytes did.
    fn flush(&mut self, lane: Option<Lane>) {
        let unkept: Vec<_> = self
            .samples
            .iter_mut()
            .filter(|s| !s.kept && lane.is_none_or(|l| s.lane == l))
            .map(|s| {
                s.kept = true;
                (s.lane, s.latest.clone())
            })
            .collect();
        for (lane, (at, kind)) in unkept {
            self.push(at, lane, kind);
        }
    }

    fn push(&mut self, at: Duration, lane: Lane, kind: Kind) {
        let room = match lane {
            Lane::Proxy => MAX_EVENTS,
            Lane::Client(_) | Lane::Server(_) => MAX_EVENTS - PROXY_ROOM,
        };
        if self.timeline.events.len() >= room {
            self.timeline.dropped += 1;
            return;
        }
        self.timeline.events.push(Event {
            at_ms: ms(at),
            lane,
            kind,
        });
    }
}

/// `d` in milliseconds, to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A 2 MiB transfer read 4 KiB at a time over a second keeps about 20 samples, not 512,
    /// and the last count before the EOF survives the sampling.
    #[test]
    fn byte_counts_are_sampled_and_the_last_before_an_end_is_kept() {
        let r = Recorder::new(Instant::now());
        let lane = Lane::Client(1);
        let reads = 512u64;
        for k in 1..=reads {
            r.note_at(at(k * 1000 / reads), lane, Kind::Read { total: k * 4096 });
        }
        r.note_at(at(1001), lane, Kind::Eof);
        let t = r.timeline();
        let samples = t
            .events
            .iter()
            .filter(|e| e.kind.series().is_some())
            .count();
        assert!((18..=24).contains(&samples), "{samples} samples");
        let before_eof = &t.events[t.events.len() - 2];
        assert_eq!(before_eof.kind, Kind::Read { total: 2 << 20 });
        assert_eq!(t.events.last().unwrap().kind, Kind::Eof);
    }

    #[test]
    fn a_full_timeline_counts_what_it_turned_away_and_still_has_the_verdict() {
        let r = Recorder::new(Instant::now());
        let legs = MAX_EVENTS - PROXY_ROOM;
        for k in 0..legs + 7 {
            let lane = Lane::Server(1 + k as u32 % MAX_CONNECTIONS);
            r.note_at(at(k as u64), lane, Kind::Eof);
        }
        r.note_at(
            at(9999),
            Lane::Proxy,
            Kind::Verdict {
                verdict: "passed".into(),
            },
        );
        let t = r.timeline();
        assert_eq!(t.events.len(), legs + 1);
        assert_eq!(t.dropped, 7);
        assert_eq!(t.events.last().unwrap().lane, Lane::Proxy);
    }

    #[test]
    fn connections_past_the_first_few_are_counted_not_kept() {
        let r = Recorder::new(Instant::now());
        for _ in 0..MAX_CONNECTIONS + 3 {
            let k = r.opened();
            r.note(Lane::Client(k), Kind::Connect);
            r.note(Lane::Server(k), Kind::Connect);
        }
        let t = r.timeline();
        assert_eq!(t.events.len(), 2 * MAX_CONNECTIONS as usize);
        assert_eq!(t.dropped, 6);
    }

    /// Many legs moving bytes for long fill the timeline's sampling share, not all of it: each
    /// leg's last count and its EOF are still kept.
    #[test]
    fn long_transfers_on_many_legs_still_keep_every_leg_s_end() {
        let r = Recorder::new(Instant::now());
        let legs = MAX_CONNECTIONS;
        for step in 1..=200u64 {
            for k in 1..=legs {
                r.note_at(at(step * 60), Lane::Client(k), Kind::Read { total: step });
            }
        }
        for k in 1..=legs {
            r.note_at(at(20_000), Lane::Client(k), Kind::Eof);
        }
        let t = r.timeline();
        for k in 1..=legs {
            let mine: Vec<_> = t
                .events
                .iter()
                .filter(|e| e.lane == Lane::Client(k))
                .collect();
            let n = mine.len();
            assert_eq!(mine[n - 1].kind, Kind::Eof, "client {k}");
            assert_eq!(mine[n - 2].kind, Kind::Read { total: 200 }, "client {k}");
        }
    }

    fn queued(end: End, send: u64) -> Kind {
        Kind::Queues { end, send, recv: 0 }
    }

    /// A leg's two sockets are sampled apart, and neither keeps a byte count the bytes' own
    /// sampling would not: a queue reading is a sample, not an end.
    #[test]
    fn queue_readings_are_sampled_per_socket_beside_the_byte_counts() {
        let r = Recorder::new(Instant::now());
        let lane = Lane::Server(1);
        for k in 0..100u64 {
            r.note_at(at(k * 10), lane, Kind::Read { total: k });
            r.note_at(at(k * 10), lane, queued(End::Harness, k));
            r.note_at(at(k * 10), lane, queued(End::Proxy, 2 * k));
        }
        let t = r.timeline();
        let count = |f: &dyn Fn(&Kind) -> bool| t.events.iter().filter(|e| f(&e.kind)).count();
        let harness = count(&|k| {
            matches!(
                k,
                Kind::Queues {
                    end: End::Harness,
                    ..
                }
            )
        });
        let proxy = count(&|k| {
            matches!(
                k,
                Kind::Queues {
                    end: End::Proxy,
                    ..
                }
            )
        });
        let reads = count(&|k| matches!(k, Kind::Read { .. }));
        // A second of readings 10 ms apart: one per 50 ms and the last.
        assert_eq!((harness, proxy, reads), (21, 21, 21));
        assert!(t.events.contains(&Event {
            at_ms: 990.0,
            lane,
            kind: queued(End::Proxy, 198)
        }));
    }

    /// Queue readings stop with the byte samples: a long hold on every leg leaves the proxy's
    /// room, and the verdict, alone.
    #[test]
    fn queue_readings_cannot_crowd_out_the_verdict() {
        let r = Recorder::new(Instant::now());
        for step in 0..1000u64 {
            for k in 1..=MAX_CONNECTIONS {
                r.note_at(at(step * 60), Lane::Client(k), queued(End::Proxy, step));
            }
        }
        let verdict = Kind::Verdict {
            verdict: "failed".into(),
        };
        r.note_at(at(60_001), Lane::Proxy, verdict.clone());
        let t = r.timeline();
        assert!(t.events.len() < MAX_EVENTS, "{} events", t.events.len());
        assert_eq!(t.events.last().unwrap().kind, verdict);
    }

    #[test]
    fn events_serialize_flat_with_their_lane_as_words() {
        let e = Event {
            at_ms: 1.5,
            lane: Lane::Server(3),
            kind: Kind::Held { until_ms: 9.0 },
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"at_ms": 1.5, "lane": "server 3", "kind": "held", "until_ms": 9.0})
        );
        let e = Event {
            at_ms: 2.0,
            lane: Lane::Client(1),
            kind: Kind::Queues {
                end: End::Proxy,
                send: 0,
                recv: 4096,
            },
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"at_ms": 2.0, "lane": "client 1", "kind": "queues", "end": "proxy", "send": 0, "recv": 4096})
        );
    }
}
