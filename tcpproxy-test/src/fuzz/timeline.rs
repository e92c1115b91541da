//! A case's record as timeline events (`crate::timeline`): what each connection's two legs did,
//! read from what the driver recorded, so the driver itself carries no second bookkeeping.

use std::time::Duration;

use super::peers::{FlowRecord, QueueReading, Record};
use super::schedule::Dir;
use crate::timeline::{End, Kind, Lane, Recorder, Timeline, ms};

/// One run of a case on its own, as a timeline: its connections open together at 0.
pub fn of(record: &Record) -> Timeline {
    let recorder = Recorder::new(tokio::time::Instant::now());
    for k in 1..=record.conns.len() as u32 {
        recorder.note_at(Duration::ZERO, Lane::Client(k), Kind::Connect);
        recorder.note_at(Duration::ZERO, Lane::Server(k), Kind::Connect);
    }
    note(&recorder, Duration::ZERO, 1, record);
    if let Some((how, _)) = &record.proxy_died {
        recorder.note_at(
            record.elapsed,
            Lane::Proxy,
            Kind::Exit {
                status: how.clone(),
            },
        );
    }
    recorder.timeline()
}

/// Notes `record`'s events on `recorder`, for a case that began `began` after the phase did;
/// connection k of the case is lane k + `first`, so several cases of a phase keep apart. The
/// connects are the opener's to note: it knows when each happened.
pub fn note(recorder: &Recorder, began: Duration, first: u32, record: &Record) {
    for (k, conn) in record.conns.iter().enumerate() {
        let k = first + k as u32;
        for dir in Dir::BOTH {
            let (from, to) = match dir {
                Dir::Up => (Lane::Client(k), Lane::Server(k)),
                Dir::Down => (Lane::Server(k), Lane::Client(k)),
            };
            flow(recorder, began, from, to, &conn.flows[dir.index()]);
        }
    }
}

/// One direction: the sender's writes and shutdown on its lane, the receiver's reads, EOF and
/// errors on its own, the window the proxy was seen holding the sender's bytes, and the queues
/// of the four sockets on the way while the fill ran.
fn flow(recorder: &Recorder, began: Duration, from: Lane, to: Lane, f: &FlowRecord) {
    let at = |d: Duration| began + d;
    // The counts as they moved, then the final ones below: the recorder's own sampling keeps
    // the last before each end.
    let mut last = (0, 0);
    for s in &f.samples {
        if s.written != last.0 {
            let total = s.written as u64;
            recorder.note_at(at(s.at), from, Kind::Wrote { total });
        }
        if s.received != last.1 {
            let total = s.received as u64;
            recorder.note_at(at(s.at), to, Kind::Read { total });
        }
        last = (s.written, s.received);
    }
    if let Some(t) = f.last_write_at {
        recorder.note_at(
            at(t),
            from,
            Kind::Wrote {
                total: f.written as u64,
            },
        );
    }
    if let Some(t) = f.shut_at {
        recorder.note_at(at(t), from, Kind::HalfClose);
    }
    if let Some(e) = &f.write_failed {
        recorder.note_at(
            at(e.at),
            from,
            Kind::Reset {
                error: e.error.clone(),
            },
        );
    }
    if let Some(t) = f.last_byte_at {
        recorder.note_at(
            at(t),
            to,
            Kind::Read {
                total: f.received as u64,
            },
        );
    }
    if let Some(t) = f.eof_at {
        recorder.note_at(at(t), to, Kind::Eof);
    }
    if let Some(e) = &f.read_failed {
        recorder.note_at(
            at(e.at),
            to,
            Kind::Reset {
                error: e.error.clone(),
            },
        );
    }
    queues(recorder, began, from, to, &f.hold_queues);
    if let Some(h) = f.hold {
        let until = f.last_byte_at.or(f.eof_at).unwrap_or(h.clear).max(h.clear);
        recorder.note_at(
            at(h.clear),
            to,
            Kind::Held {
                until_ms: ms(at(until)),
            },
        );
    }
}

/// A held flow's queue readings, each socket on the lane of the leg it is an end of: the
/// sender's and the proxy's socket facing it on the sender's leg, the proxy's socket facing the
/// receiver and the receiver's on the receiver's. A socket's reading is noted when it changed,
/// and its last one however it stood, so a still queue costs two events.
fn queues(recorder: &Recorder, began: Duration, from: Lane, to: Lane, readings: &[QueueReading]) {
    let sockets = [
        (from, End::Harness),
        (from, End::Proxy),
        (to, End::Proxy),
        (to, End::Harness),
    ];
    for (i, (lane, end)) in sockets.into_iter().enumerate() {
        let mut noted = None;
        for (k, r) in readings.iter().enumerate() {
            let q = r.queues[i];
            if noted != Some(q) || k + 1 == readings.len() {
                noted = Some(q);
                let kind = Kind::Queues {
                    end,
                    send: q.send,
                    recv: q.recv,
                };
                recorder.note_at(began + r.at, lane, kind);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::peers::ConnRecord;

    #[test]
    fn a_half_closed_echo_reads_as_its_legs_did() {
        let d = Duration::from_millis;
        let up = FlowRecord {
            written: 16,
            last_write_at: Some(d(1)),
            shut_at: Some(d(2)),
            received: 16,
            last_byte_at: Some(d(3)),
            eof_at: Some(d(4)),
            ..FlowRecord::default()
        };
        let record = Record {
            conns: vec![ConnRecord {
                flows: [up, FlowRecord::default()],
                ..ConnRecord::default()
            }],
            ..Record::default()
        };
        let r = Recorder::new(tokio::time::Instant::now());
        note(&r, d(100), 1, &record);
        let seen: Vec<_> = r
            .timeline()
            .events
            .into_iter()
            .map(|e| (e.at_ms, e.lane, e.kind))
            .collect();
        assert_eq!(
            seen,
            vec![
                (101.0, Lane::Client(1), Kind::Wrote { total: 16 }),
                (102.0, Lane::Client(1), Kind::HalfClose),
                (103.0, Lane::Server(1), Kind::Read { total: 16 }),
                (104.0, Lane::Server(1), Kind::Eof),
            ]
        );
    }

    /// Each of a held flow's four sockets goes on the leg it is an end of, noted when it
    /// changed and at the last reading.
    #[test]
    fn a_held_flow_s_queues_go_on_their_legs_by_socket() {
        use crate::procfs::Queues;
        let d = Duration::from_millis;
        let q = |send, recv| Queues { send, recv };
        let still = q(0, 0);
        let readings =
            [(0, 0), (50, 4096), (100, 4096), (120, 4096)].map(|(ms, held)| QueueReading {
                at: d(ms),
                queues: [still, q(0, held), q(held, 0), q(0, 2 * held)],
            });
        let r = Recorder::new(tokio::time::Instant::now());
        let up = FlowRecord {
            hold_queues: readings.to_vec(),
            ..FlowRecord::default()
        };
        flow(&r, d(10), Lane::Client(1), Lane::Server(1), &up);
        let mut seen: Vec<_> = r
            .timeline()
            .events
            .into_iter()
            .filter_map(|e| match e.kind {
                Kind::Queues { end, send, recv } => Some((e.lane, end, e.at_ms, send, recv)),
                _ => None,
            })
            .collect();
        seen.sort_by_key(|a| (a.0, a.1 == End::Proxy));
        let (c, s) = (Lane::Client(1), Lane::Server(1));
        let (h, p) = (End::Harness, End::Proxy);
        assert_eq!(
            seen,
            vec![
                (c, h, 10.0, 0, 0),
                (c, h, 130.0, 0, 0),
                (c, p, 10.0, 0, 0),
                (c, p, 60.0, 0, 4096),
                (c, p, 130.0, 0, 4096),
                (s, h, 10.0, 0, 0),
                (s, h, 60.0, 0, 8192),
                (s, h, 130.0, 0, 8192),
                (s, p, 10.0, 0, 0),
                (s, p, 60.0, 4096, 0),
                (s, p, 130.0, 4096, 0),
            ]
        );
    }
}
