//! The oracle: the proxy contract, judged on what the peers saw, never on how long it took.
//!
//! Per direction, the bytes received equal the bytes sent (length and hash, with the first
//! differing offset); the EOF comes exactly when the sender shut down, after its last byte, and
//! never where the sender kept its write half open; the proxy closes a pair once both directions
//! are done; and nothing is reset, since no schedule aborts. The only deadlines are generous
//! ones for liveness: a case in which nothing moves for seconds while something is still owed.
//!
//! Differences between two proxies that both keep the contract are information, not failures.
//!
//! A case may expect otherwise ([`Expect`]): the suite's timeout phases require the proxy to
//! abort a pair whose reader never reads within a window set by its stall timeout, and the
//! early-close phase requires it to close a client whose server closed. Those are judged here
//! too, on the same record.

use std::time::Duration;

use super::peers::{self, FlowRecord, IoFailure, Record};
use super::schedule::{Case, Dir, Expect, HeldTail, Pace, Shutdown, Step};
use crate::{check, hold};

/// Which rule broke. Shrinking keeps to the kind it started from, so a smaller schedule that
/// fails some other way (another bug, or a host too loaded) is not taken for the same failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A connection could not be opened through the proxy.
    Setup,
    /// Bytes that differ from those sent, or more of them.
    Bytes,
    /// A read or write failed (a reset) though no side aborted.
    Reset,
    /// An EOF before the sender shut down, or where it never does.
    EarlyEof,
    /// An EOF before every byte arrived.
    LostTail,
    /// Nothing moved while something was still owed (an EOF, bytes).
    Stuck,
    /// The proxy kept a finished pair's sockets open.
    Lingering,
    /// An error pending on one of our sockets at the end.
    PendingError,
    /// The proxy died.
    Died,
    /// The proxy did not abort a stalled pair within its window (`Expect::Aborted`).
    Abort,
    /// The proxy kept a client open after its server closed (`Expect::ClosedWithin`).
    NotClosed,
}

/// A broken contract: one line, details, and a hint naming the likely bug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub kind: Kind,
    pub summary: String,
    pub details: Vec<String>,
    pub hint: Option<String>,
}

impl Violation {
    fn new(kind: Kind, summary: impl Into<String>) -> Violation {
        Violation {
            kind,
            summary: summary.into(),
            details: vec![],
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Violation {
        self.hint = Some(hint.into());
        self
    }

    fn details(mut self, lines: impl IntoIterator<Item = String>) -> Violation {
        self.details.extend(lines);
        self
    }
}

fn other(dir: Dir) -> Dir {
    match dir {
        Dir::Up => Dir::Down,
        Dir::Down => Dir::Up,
    }
}

fn name(conn: usize, dir: Dir) -> String {
    format!("connection {}, {dir}", conn + 1)
}

/// Judges one run of `case` against its expectation: the first broken rule, most specific
/// first.
pub fn judge(case: &Case, rec: &Record) -> Result<(), Violation> {
    let found = match case.expect {
        Expect::Contract => contract(case, rec),
        _ if rec.setup_error.is_some() => contract(case, rec),
        Expect::Aborted {
            stall_timeout_ms,
            earliest_ms,
            slack_ms,
            watch_ms,
        } => {
            let ms = |ms: u32| Duration::from_millis(ms.into());
            let window = Window {
                stall: ms(stall_timeout_ms),
                earliest: ms(earliest_ms),
                slack: ms(slack_ms),
                watch: ms(watch_ms),
            };
            aborted(case, rec, window)
        }
        Expect::ClosedWithin { ms } => closed(case, rec, Duration::from_millis(ms.into())),
    };
    match (found, &rec.proxy_died) {
        (None, None) => Ok(()),
        (found, Some((how, last_words))) => {
            let mut v = Violation::new(
                Kind::Died,
                format!("the proxy died during the case ({how})"),
            );
            if let Some(f) = found {
                v.details.push(format!("before that: {}", f.summary));
            }
            Err(v.details(last_words.iter().cloned()))
        }
        (Some(v), None) => Err(v),
    }
}

/// Why a run could not be judged either way, so the case is run again. Only a held flow given
/// the proxy's stall timeout (`HeldTail::stall_ms`) can say so: there the harness keeps a
/// correct proxy stalled, and may be too late for it on a loaded host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Again {
    /// The harness left the proxy stalled long enough that its stall timer may have fired (a
    /// reset then is the harness's lateness), or confirmed no hold within its budget.
    Late(String),
    /// The proxy stopped reading within a piece, holding about this many bytes, so its EOF may
    /// have come with nothing held: again with smaller pieces.
    Overshot(u64),
}

/// Whether `verdict`, the judgement of `rec`, stands, or the case must run again ([`Again`]).
pub fn again(case: &Case, rec: &Record, verdict: &Result<(), Violation>) -> Option<Again> {
    let secs = |d: Duration| d.as_secs_f64();
    for (c, conn) in case.connections.iter().zip(&rec.conns) {
        for d in Dir::BOTH {
            let Shutdown::WhileHeld(HeldTail {
                stall_ms: Some(ms), ..
            }) = c.flow(d).shutdown
            else {
                continue;
            };
            let stall = Duration::from_millis(ms.into());
            let f = &conn.flows[d.index()];
            let Some(h) = f.hold else { continue };
            match verdict {
                Err(v) if v.kind == Kind::Reset => {
                    // A write is late by the time since the fill began (no stall it set off
                    // can predate that), a read by how long the proxy held bytes before the
                    // receiver read on; a read counts only if every byte before it was right.
                    let clean = f.got.len() <= f.sent.len() && f.sent.starts_with(&f.got);
                    let write = f.write_failed.as_ref().map(|e| {
                        let into = e.at.saturating_sub(h.began);
                        let what = format!(
                            "the {}'s write, {:.2}s into the fill,",
                            d.sender(),
                            secs(into)
                        );
                        (e, into, what)
                    });
                    let read = f.read_failed.as_ref().filter(|_| clean).zip(f.shut_at).map(|(e, shut)| {
                        let stalled = shut.saturating_sub(h.clear);
                        let what = format!(
                            "the {}'s read after {} bytes, begun {:.2}s after the proxy was last seen holding nothing,",
                            d.receiver(),
                            f.received,
                            secs(stalled)
                        );
                        (e, stalled, what)
                    });
                    let late = [write, read]
                        .into_iter()
                        .flatten()
                        .find(|(e, waited, _)| e.reset && hold::harness_late(*waited, stall));
                    if let Some((e, _, what)) = late {
                        return Some(Again::Late(format!(
                            "{what} was reset (stall timeout {:.2}s): {}",
                            secs(stall),
                            e.error
                        )));
                    }
                }
                Err(_) => {}
                Ok(()) => match h.held {
                    Some(hold::Held::Overshot(n)) if n > 0 => return Some(Again::Overshot(n)),
                    Some(hold::Held::OutOfTime) => {
                        return Some(Again::Late(format!(
                            "no hold confirmed within {:.2}s of the proxy last holding nothing",
                            secs(hold::budget(stall))
                        )));
                    }
                    _ => {}
                },
            }
        }
    }
    None
}

/// For a held flow whose bytes went wrong: how much the proxy held when the EOF reached it.
fn held_detail(f: &FlowRecord) -> Option<String> {
    match f.hold?.held? {
        hold::Held::Holding(n) => Some(format!(
            "when the EOF reached the proxy it held at least {n} bytes it could not yet write (from the kernel's socket queues)"
        )),
        _ => None,
    }
}

/// The contract's first broken rule.
fn contract(case: &Case, rec: &Record) -> Option<Violation> {
    let flows = || {
        rec.conns.iter().enumerate().flat_map(|(i, c)| {
            Dir::BOTH
                .into_iter()
                .map(move |d| (i, d, &c.flows[d.index()]))
        })
    };
    let mut found = rec.setup_error.as_ref().map(|msg| {
        Violation::new(Kind::Setup, msg.clone())
            .hint("the proxy must accept every client and connect it to the destination at once")
    });
    // A run that could not open its connections has no flows to judge.
    for (i, d, f) in flows() {
        if let Some(v) = wrong_bytes(i, d, f) {
            found = Some(v);
            break;
        }
    }
    if found.is_none() {
        for (i, d, f) in flows() {
            let c = &case.connections[i];
            let never = c.flow(d).shutdown == Shutdown::Never;
            let reset_at = |dir: Dir| {
                c.resets(dir)
                    .then(|| rec.conns[i].flows[dir.index()].shut_at)
                    .flatten()
            };
            let ends = Ends {
                never_shut: never,
                sender_reset: reset_at(d),
                receiver_reset: reset_at(d.reverse()),
            };
            if let Some(mut v) = wrong_end(i, d, f, ends) {
                let slow = [Dir::Up, Dir::Down].into_iter().find_map(|x| {
                    match case.connections[i].flow(x).reader.pace {
                        Pace::Slow { bytes, every_ms } => Some((x, bytes, every_ms)),
                        _ => None,
                    }
                });
                if let (Kind::Reset, Some((x, bytes, every_ms))) = (v.kind, slow) {
                    v = v.hint(format!(
                        "the {} took up to {bytes} bytes every {every_ms}ms, so the proxy always had a write that moved bytes, yet it aborted the pair: its stall timer must restart whenever a write makes progress, not only when its buffer empties",
                        x.receiver()
                    ));
                }
                found = Some(v);
                break;
            }
        }
    }
    if found.is_none() {
        if let Some(quiet) = rec.quiet_for.or(rec.backstop) {
            found = Some(stuck(case, rec, quiet));
        }
    }
    if found.is_none() {
        for (i, c) in rec.conns.iter().enumerate() {
            if !c.lingering.is_empty() {
                let sockets: Vec<String> = c
                    .lingering
                    .iter()
                    .map(|e| format!("127.0.0.1:{} <-> 127.0.0.1:{}", e.local, e.remote))
                    .collect();
                found = Some(
                    Violation::new(Kind::Lingering, format!(
                        "connection {}: both directions were done, but the proxy still held {} of the pair's sockets open afterwards ({})",
                        i + 1,
                        c.lingering.len(),
                        sockets.join(", ")
                    ))
                    .hint("the proxy does not close a pair once EOF has gone both ways: it leaks descriptors"),
                );
                break;
            }
            // A side reset: a reset our other socket holds is the proxy passing it on.
            let reset = case.connections[i].has_reset();
            if let Some(e) = c.pending_errors.first().filter(|_| !reset) {
                found = Some(
                    Violation::new(Kind::PendingError, format!(
                        "connection {}: a socket of ours held a pending error after the case ({e}), though no side aborted",
                        i + 1
                    ))
                    .hint("the proxy reset the connection (RST) instead of closing it with FIN"),
                );
                break;
            }
        }
    }
    found
}

/// An abort's window (`Expect::Aborted`), in durations.
#[derive(Debug, Clone, Copy)]
struct Window {
    stall: Duration,
    earliest: Duration,
    slack: Duration,
    watch: Duration,
}

/// How the lazy phases name a writer.
fn writer_name(dir: Dir) -> &'static str {
    match dir {
        Dir::Up => "client",
        Dir::Down => "destination server",
    }
}

/// The hint for an abort at a time that fits another stall timeout than the one the harness
/// was told: the two were most likely given different values.
fn mismatch_hint(writer: &str, after_progress: Duration, told: Duration) -> String {
    let told = told.as_secs_f64();
    format!(
        "the proxy aborted {:.1}s after the {writer}'s last progress: its stall timeout looks like about {:.0}s, not the {told}s the harness was told; pass the same --stall-timeout to both (tcpproxy-test --stall-timeout {told} -- ./proxy --stall-timeout {told}), unless the proxy ignores the one it is given",
        after_progress.as_secs_f64(),
        after_progress.as_secs_f64()
    )
}

/// `Expect::Aborted`: the writer (the one flow that writes) must see the pair end (an EOF or
/// a reset) no earlier than `earliest` after the proxy's writes to the reader last made progress
/// (the reader's kernel last took bytes in; the start, where that is unknown), and no later than
/// the stall timeout plus slack after the writer's last write that made progress. A proxy's
/// stall timer cannot start before its own last progress, so the first bound holds for a correct
/// proxy however long a loaded host takes to fill the buffers. What the run saw after that
/// window changes only the hint and details, never the verdict.
fn aborted(case: &Case, rec: &Record, w: Window) -> Option<Violation> {
    let (i, dir) = case.connections.iter().enumerate().find_map(|(i, c)| {
        Dir::BOTH
            .into_iter()
            .find(|d| c.flow(*d).total() > 0)
            .map(|d| (i, d))
    })?;
    let conn = rec.conns.get(i)?;
    let (out, back) = (&conn.flows[dir.index()], &conn.flows[other(dir).index()]);
    let writer = writer_name(dir);
    let last_progress = out.last_write_at.unwrap_or_default();
    let stalled_from = out.last_arrival_at.unwrap_or_default();
    let reader = writer_name(other(dir));
    let secs = |d: Duration| d.as_secs_f64();
    // When and how the writer saw the pair end, the first of what it saw.
    let closed = [
        (out.write_failed.as_ref()).map(|e| (e.at, format!("write error: {}", e.error))),
        (back.read_failed.as_ref()).map(|e| (e.at, format!("read error: {}", e.error))),
        back.eof_at.map(|at| (at, "EOF".to_string())),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|(at, _)| *at);
    let share = secs(w.earliest) / secs(w.stall).max(1e-9);
    // Would an abort at `at` pass against a stall timeout of `timeout`?
    let fits = |at: Duration, timeout: Duration| {
        at.saturating_sub(stalled_from) >= timeout.mul_f64(share)
            && at.saturating_sub(last_progress) <= timeout + w.slack
    };
    let mut facts = format!(
        "the {writer} wrote {} bytes; its last write that made progress was {:.1}s after connecting",
        out.written,
        secs(last_progress)
    );
    if let Some(arrived) = out.last_arrival_at {
        facts.push_str(&format!(
            "; the {reader}'s kernel last took bytes in {:.1}s after connecting",
            secs(arrived)
        ));
    }
    let never = "the proxy holds data it cannot write but never times out (no stall timer in this direction, or blocking writes)";
    match closed {
        Some((at, how)) if at.saturating_sub(last_progress) <= w.stall + w.slack => {
            if at.saturating_sub(stalled_from) >= w.earliest {
                return None;
            }
            let default = crate::contract::STALL_TIMEOUT;
            let hint = if w.stall != default && fits(at, default) {
                mismatch_hint(writer, at.saturating_sub(last_progress), w.stall)
            } else {
                "the proxy's stall timeout is far shorter than the one it was given: it would abort slow peers".into()
            };
            Some(
                Violation::new(
                    Kind::Abort,
                    match out.last_arrival_at {
                        Some(arrived) => format!(
                            "expected the pair to stay open at least {:.1}s ({:.0}% of the {:.1}s stall timeout) after the proxy's last write to the {reader}, but the {writer} saw {how} {:.1}s after it ({:.1}s after connecting)",
                            secs(w.earliest),
                            share * 100.0,
                            secs(w.stall),
                            secs(at.saturating_sub(arrived)),
                            secs(at)
                        ),
                        None => format!(
                            "expected the pair to stay open at least {:.1}s ({:.0}% of the {:.1}s stall timeout), but the {writer} saw {how} {:.1}s after connecting",
                            secs(w.earliest),
                            share * 100.0,
                            secs(w.stall),
                            secs(at)
                        ),
                    },
                )
                .details([facts])
                .hint(hint),
            )
        }
        late => {
            let v = Violation::new(
                Kind::Abort,
                format!(
                    "expected the proxy to abort the pair within {:.1}s (stall timeout {:.1}s + {:.1}s) of the {writer}'s writes blocking, but it was still open {:.1}s after connecting",
                    secs(w.stall + w.slack),
                    secs(w.stall),
                    secs(w.slack),
                    secs(last_progress + w.stall + w.slack),
                ),
            )
            .details([facts]);
            Some(match late {
                _ if out.writes_done => v.hint(format!(
                    "the proxy took {} bytes that its peer never read: it buffers without limit",
                    out.written
                )),
                Some((at, how)) => {
                    let after_progress = at.saturating_sub(last_progress);
                    v.details([format!(
                        "watching on only to diagnose, the harness saw the proxy abort the pair ({how}) {:.1}s after the {writer}'s last progress, {:.1}s after connecting",
                        secs(after_progress),
                        secs(at)
                    )])
                    .hint(mismatch_hint(writer, after_progress, w.stall))
                }
                None => v
                    .details([format!(
                        "watching on only to diagnose, the harness saw the pair still open {:.1}s after the {writer}'s last progress",
                        secs(w.watch)
                    )])
                    .hint(never),
            })
        }
    }
}

/// `Expect::ClosedWithin`: one side closed its socket at the start; the other must see the
/// proxy close its connection too (a reset on a write or a read) before the run's limit,
/// which the driver enforces. An EOF alone is only the forwarded half-close.
fn closed(case: &Case, rec: &Record, within: Duration) -> Option<Violation> {
    let (i, closer) = case.connections.iter().enumerate().find_map(|(i, c)| {
        Dir::BOTH
            .into_iter()
            .find(|d| c.flow(*d).shutdown == Shutdown::CloseAtStart)
            .map(|d| (i, d))
    })?;
    let conn = rec.conns.get(i)?;
    // The other side writes `out` and reads what the closer would have sent, `back`.
    let (out, back) = (
        &conn.flows[other(closer).index()],
        &conn.flows[closer.index()],
    );
    let (me, gone) = (closer.receiver(), closer.sender());
    let errors = [
        out.write_failed.as_ref().map(|e| (e, "write")),
        back.read_failed.as_ref().map(|e| (e, "read")),
    ];
    if let Some((failed, op)) = errors.into_iter().flatten().min_by_key(|x| x.0.at) {
        if failed.reset {
            return None;
        }
        let e = &failed.error;
        let expected = if op == "write" {
            "ECONNRESET or EPIPE"
        } else {
            "ECONNRESET"
        };
        return Some(Violation::new(
            Kind::NotClosed,
            format!(
                "expected {expected} once the proxy closed, but the {me}'s {op} failed with: {e}"
            ),
        ));
    }
    let eof = if back.eof_at.is_some() {
        format!("it forwarded the {gone}'s EOF, but ")
    } else {
        String::new()
    };
    Some(
        Violation::new(
            Kind::NotClosed,
            format!(
                "expected the proxy to close the {me}'s connection within {:.0}s of the {gone} closing; {eof}the {me} wrote {} bytes{}, and every write succeeded",
                within.as_secs_f64(),
                out.written,
                pace(&case.connections[i].flow(other(closer)).steps),
            ),
        )
        .hint(format!(
            "the proxy ignores the failed write to the closed {gone} and keeps the {me}'s side open"
        )),
    )
}

/// `, one a second` for steps that write a byte at a time with the same pause between.
fn pace(steps: &[Step]) -> String {
    let ones = steps
        .iter()
        .all(|s| matches!(s, Step::Write(1) | Step::Pause(_)));
    let mut pauses = steps.iter().filter_map(|s| match s {
        Step::Pause(ms) => Some(*ms),
        _ => None,
    });
    match (ones, pauses.next()) {
        (true, Some(1000)) if pauses.all(|ms| ms == 1000) => ", one a second".into(),
        (true, Some(ms)) if pauses.all(|p| p == ms) => format!(", one every {ms}ms"),
        _ => String::new(),
    }
}

/// Bytes that differ from what was sent, or bytes beyond it.
fn wrong_bytes(conn: usize, dir: Dir, f: &FlowRecord) -> Option<Violation> {
    let m = check::compare(&f.sent, &f.got)?;
    let common = f.sent.len().min(f.got.len());
    let extra = f.received > f.sent.len();
    if m.offset >= common && !extra {
        // A prefix of what was sent: missing bytes, judged with the EOF.
        return None;
    }
    let summary = if f.received > f.got.len() {
        format!(
            "{} ({} bytes): got at least {} bytes, of {} sent; {} at offset {}",
            name(conn, dir),
            f.sent.len(),
            f.received,
            f.sent.len(),
            if m.offset < common {
                "first difference"
            } else {
                "extra bytes start"
            },
            m.offset
        )
    } else {
        format!(
            "{} ({} bytes): {}",
            name(conn, dir),
            f.sent.len(),
            m.summary()
        )
    };
    let mut v = Violation::new(Kind::Bytes, summary)
        .details(m.details())
        .details(held_detail(f));
    let changed = || f.sent.iter().zip(&f.got).filter(|(a, b)| a != b).count();
    if let Some(h) = check::explain(&f.sent, &f.got, m.offset) {
        v = v.hint(h);
    } else if f.received == f.sent.len() && changed() == 1 {
        // The last byte, say, where `explain` has nothing after it to compare.
        v = v.hint(format!(
            "one byte was changed at offset {} (0x{:02x} became 0x{:02x}) and every other byte is intact: the proxy corrupts data",
            m.offset, f.sent[m.offset], f.got[m.offset]
        ));
    } else if extra {
        v = v.hint("the proxy delivered more bytes than were sent: it writes some bytes twice");
    }
    Some(v)
}

/// What a direction's end may look like: whether its sender never shuts down, and when its
/// sender or its receiver reset (`shutdown reset-after-last-byte`), if one does.
#[derive(Debug, Clone, Copy, Default)]
struct Ends {
    never_shut: bool,
    sender_reset: Option<Duration>,
    receiver_reset: Option<Duration>,
}

/// Resets, and EOFs that come too early, too short, or where none may come. Where the sender
/// reset, its receiver may see the end as a reset and lose bytes still in flight; where the
/// receiver reset, the sender's writes after it may fail with a reset: the proxy passing the
/// reset on, as it should, never before it.
fn wrong_end(conn: usize, dir: Dir, f: &FlowRecord, ends: Ends) -> Option<Violation> {
    let who = name(conn, dir);
    let (sender, receiver) = (dir.sender(), dir.receiver());
    let passed_on =
        |e: &IoFailure, reset: Option<Duration>| e.reset && reset.is_some_and(|r| r <= e.at);
    if let Some(e) = f
        .read_failed
        .as_ref()
        .filter(|e| !passed_on(e, ends.sender_reset))
    {
        let v = Violation::new(
            Kind::Reset,
            format!(
                "{who}: the {receiver}'s read failed after {} of {} bytes: {}; no side aborted",
                f.received,
                f.sent.len(),
                e.error
            ),
        );
        return Some(if e.reset {
            v.hint("the proxy reset the connection though both peers were well behaved")
        } else {
            v
        });
    }
    if let Some(e) = f
        .write_failed
        .as_ref()
        .filter(|e| !passed_on(e, ends.receiver_reset))
    {
        return Some(
            Violation::new(
                Kind::Reset,
                format!(
                    "{who}: the {sender}'s write failed after {} of {} bytes: {}; no side aborted",
                    f.written,
                    f.sent.len(),
                    e.error
                ),
            )
            .hint("the proxy closed or reset the connection while the sender was still sending"),
        );
    }
    let never_shut = ends.never_shut;
    if f.eof_before_shutdown {
        let when = if never_shut {
            "though it never shuts down"
        } else {
            "before it did"
        };
        return Some(
            Violation::new(Kind::EarlyEof, format!(
                "{who}: EOF reached the {receiver} after {} of {} bytes, but the {sender} had not shut down its write half ({when})",
                f.received,
                f.sent.len()
            ))
            .hint("the proxy ends a pair early: it closes both directions when one ends, or on its own"),
        );
    }
    // A reset may discard what was in flight: only the bytes that did arrive are judged.
    if f.eof_at.is_some() && f.received < f.sent.len() && ends.sender_reset.is_none() {
        let v = Violation::new(
            Kind::LostTail,
            format!(
                "{who}: EOF reached the {receiver} after only {} of {} bytes",
                f.received,
                f.sent.len()
            ),
        )
        .details(
            check::compare(&f.sent, &f.got)
                .map(|m| m.details())
                .unwrap_or_default(),
        )
        .details(held_detail(f));
        return Some(v.hint(format!(
            "the last {} bytes never arrived, and EOF did: the proxy discards what it still holds when EOF arrives instead of writing it out first",
            f.sent.len() - f.received
        )));
    }
    None
}

/// Nothing moved for `quiet` while something was still owed: says what each unfinished
/// direction was waiting for, and names the likely bug from the first.
fn stuck(case: &Case, rec: &Record, quiet: Duration) -> Violation {
    // (rank, line, hint) per unfinished direction; the most specific names the failure.
    let mut lines: Vec<(u8, String, String)> = Vec::new();
    for (i, c) in rec.conns.iter().enumerate() {
        for d in Dir::BOTH {
            let f = &c.flows[d.index()];
            if peers::done(&case.connections[i], d, c) {
                continue;
            }
            let (sender, receiver) = (d.sender(), d.receiver());
            let mut line = if f.sent.is_empty() {
                format!("{}: the {sender} sent nothing", name(i, d))
            } else {
                format!(
                    "{}: the {sender} wrote {} of {} bytes",
                    name(i, d),
                    f.written,
                    f.sent.len()
                )
            };
            if let Some(at) = f.shut_at {
                let ago = rec.elapsed.saturating_sub(at).as_secs_f64();
                line.push_str(&format!(
                    " and shut down its write half {ago:.1}s before the end"
                ));
            }
            let waits = case.connections[i].flow(d).awaits_peer_eof()
                && c.flows[other(d).index()].eof_at.is_none();
            // The likeliest bug, most specific first: a missing EOF, bytes held back, a
            // sender the proxy stopped reading from.
            let (rank, why) = if case.connections[i].resets(d) && f.shut_at.is_some() {
                line = line.replace(
                    "shut down its write half",
                    "reset its connection (SO_LINGER 0)",
                );
                line.push_str(&format!(
                    "; the {receiver} read {}, but neither EOF nor a reset followed",
                    f.received
                ));
                (
                    0,
                    format!(
                        "the proxy does not pass on the {sender}'s reset: once a read from the {sender} fails (ECONNRESET) it must close the {receiver}'s side (with a reset, or at least shut it down), not stop that direction and leave the pair open"
                    ),
                )
            } else if f.received == f.sent.len() && f.shut_at.is_some() {
                if f.sent.is_empty() {
                    line.push_str(&format!(", but no EOF reached the {receiver}"));
                } else {
                    line.push_str(&format!(
                        "; the {receiver} read all {}, but no EOF followed",
                        f.received
                    ));
                }
                (
                    0,
                    format!(
                        "the proxy does not forward the {sender}'s EOF (no shutdown(SHUT_WR) towards the {receiver} after the {sender}'s EOF)"
                    ),
                )
            } else if f.received < f.written {
                line.push_str(&format!("; the {receiver} read {}", f.received));
                (
                    1,
                    format!(
                        "the proxy holds {} bytes from the {sender} that it does not deliver",
                        f.written - f.received
                    ),
                )
            } else if waits {
                let end = if case.connections[i].resets(other(d)) {
                    "EOF or reset"
                } else {
                    "EOF"
                };
                line.push_str(&format!(
                    "; the {receiver} read {} (the {sender} waits for the {receiver}'s {end} before writing on)",
                    f.received
                ));
                (3, String::new())
            } else if !f.writes_done {
                line.push_str(&format!("; the {receiver} read {}", f.received));
                (
                    2,
                    format!("the {sender} is blocked writing: the proxy stopped reading from it"),
                )
            } else {
                line.push_str(&format!("; the {receiver} read {}", f.received));
                (3, String::new())
            };
            lines.push((rank, line, why));
        }
    }
    let lead = (0..lines.len())
        .min_by_key(|&i| lines[i].0)
        .map(|i| lines.remove(i))
        .unwrap_or_default();
    let what = if rec.backstop.is_some() {
        format!("the case was not done after {:.1}s", quiet.as_secs_f64())
    } else {
        format!(
            "nothing moved for {:.1}s while the case was not done",
            quiet.as_secs_f64()
        )
    };
    let mut v = Violation::new(Kind::Stuck, format!("{what}: {}", lead.1))
        .details(lines.into_iter().map(|l| l.1));
    v.hint = Some(lead.2).filter(|h| !h.is_empty());
    v
}

/// Ways the proxy under test and the reference differed on one case that the contract allows:
/// time taken, how much was in flight at once, how long an EOF took to arrive.
pub fn differences(case: &Case, proxy: &Record, reference: &Record) -> Vec<String> {
    const SLOWER: f64 = 3.0;
    const SLOWER_BY: Duration = Duration::from_secs(1);
    const MORE_IN_FLIGHT: usize = 4;
    const IN_FLIGHT_BY: usize = 4 << 20;
    let mut out = Vec::new();
    if proxy.elapsed > reference.elapsed.mul_f64(SLOWER)
        && proxy.elapsed > reference.elapsed + SLOWER_BY
    {
        out.push(format!(
            "took {:.1}s through PROXY, {:.1}s through the reference",
            proxy.elapsed.as_secs_f64(),
            reference.elapsed.as_secs_f64()
        ));
    }
    for (i, (p, r)) in proxy.conns.iter().zip(&reference.conns).enumerate() {
        for d in Dir::BOTH {
            let (p, r) = (&p.flows[d.index()], &r.flows[d.index()]);
            if p.max_in_flight > r.max_in_flight * MORE_IN_FLIGHT
                && p.max_in_flight > r.max_in_flight + IN_FLIGHT_BY
            {
                out.push(format!(
                    "{}: up to {} bytes were in flight through PROXY at once, {} through the reference (it buffers more)",
                    name(i, d),
                    p.max_in_flight,
                    r.max_in_flight
                ));
            }
            // From the moment the EOF was due (the sender had shut down and the last byte was
            // read) to its arrival: a pause of the reader's own can add at most its stall.
            let eof_delay = |f: &FlowRecord| {
                let due = f.shut_at?.max(f.last_byte_at.unwrap_or_default());
                Some(f.eof_at?.saturating_sub(due))
            };
            // Only where the reader waited in read() for it: its own pauses would count too.
            let reader = case.connections[i].flow(d).reader;
            let waits_in_read =
                reader.stall.is_none() && !matches!(reader.pace, Pace::Bandwidth(_));
            if let (true, Some(pd), Some(rd)) = (waits_in_read, eof_delay(p), eof_delay(r)) {
                if pd > rd + SLOWER_BY && case.connections[i].flow(d).shutdown != Shutdown::Never {
                    out.push(format!(
                        "{}: the EOF arrived {:.1}s after the {} had shut down and its last byte had arrived through PROXY, {:.1}s through the reference (it forwards EOF late)",
                        name(i, d),
                        pd.as_secs_f64(),
                        d.sender(),
                        rd.as_secs_f64()
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::peers::{ConnRecord, HoldRecord, IoFailure};
    use super::super::schedule::parse_cases;
    use super::*;

    fn one_connection(up: &str, down: &str) -> Case {
        parse_cases(&format!(
            "case\n connection\n  client->server: {up}\n  server->client: {down}\n"
        ))
        .unwrap()
        .remove(0)
    }

    /// As [`clean`], but the receiver got only the first `received` bytes before the EOF.
    fn cut(len: usize, received: usize) -> FlowRecord {
        let mut f = clean(len);
        f.got.truncate(received);
        f.received = received;
        f
    }

    /// A reset seen `ms` after the start.
    fn reset(error: &str, ms: u64) -> IoFailure {
        IoFailure {
            error: error.into(),
            reset: true,
            at: Duration::from_millis(ms),
        }
    }

    /// A direction that went exactly right: everything sent, shut down, read, then EOF.
    fn clean(len: usize) -> FlowRecord {
        let sent: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        FlowRecord {
            got: sent.clone(),
            sent: Arc::new(sent),
            written: len,
            writes_done: true,
            shut_at: Some(Duration::from_millis(10)),
            received: len,
            eof_at: Some(Duration::from_millis(11)),
            ..FlowRecord::default()
        }
    }

    fn record(up: FlowRecord, down: FlowRecord) -> Record {
        Record {
            conns: vec![ConnRecord {
                flows: [up, down],
                ..ConnRecord::default()
            }],
            ..Record::default()
        }
    }

    /// The violation a run of [`case`] with these two directions breaks the contract with.
    #[track_caller]
    fn broken(up: FlowRecord, down: FlowRecord) -> Violation {
        judge(&case(), &record(up, down)).unwrap_err()
    }

    #[track_caller]
    fn says(text: &str, part: &str) {
        assert!(text.contains(part), "{text:?} does not say {part:?}");
    }

    fn case() -> Case {
        one_connection(
            "write 100; shutdown after-last-byte; reader eager",
            "write 50; shutdown after-last-byte; reader eager",
        )
    }

    #[test]
    fn a_clean_run_keeps_the_contract() {
        assert_eq!(judge(&case(), &record(clean(100), clean(50))), Ok(()));
    }

    // ---- bytes ----

    /// The violation for 100 bytes up, one of them changed on the way.
    fn flipped(at: usize) -> Violation {
        let mut up = clean(100);
        up.got[at] ^= 1;
        broken(up, clean(50))
    }

    #[test]
    fn a_changed_byte_is_found_with_its_offset() {
        let v = flipped(60);
        assert!(
            v.summary.starts_with("connection 1, client->server (100 bytes): got 100 of 100 bytes (hash differs); first difference at offset 60"),
            "{}",
            v.summary
        );
        assert!(v.hint.unwrap().contains("one byte was changed"));
    }

    #[test]
    fn a_changed_last_byte_is_named_too() {
        let v = flipped(99);
        assert!(
            v.hint
                .unwrap()
                .starts_with("one byte was changed at offset 99"),
            "{}",
            v.summary
        );
    }

    #[test]
    fn extra_bytes_are_a_failure_even_before_eof() {
        let mut up = clean(100);
        up.eof_at = None;
        let again = up.got[..40].to_vec();
        up.got.extend_from_slice(&again);
        up.received = 140;
        let v = broken(up, clean(50));
        says(&v.summary, "extra bytes start at offset 100");
    }

    #[test]
    fn a_short_prefix_alone_is_not_judged_as_bytes() {
        // Missing bytes without an EOF: that is for the liveness check, not a byte mismatch.
        let mut up = cut(100, 30);
        up.eof_at = None;
        assert_eq!(wrong_bytes(0, Dir::Up, &up), None);
    }

    // ---- ends ----

    #[test]
    fn an_eof_before_the_sender_shut_down_is_a_failure() {
        let mut down = clean(50);
        down.eof_before_shutdown = true;
        down.shut_at = None;
        let v = broken(clean(100), down);
        says(&v.summary, "server had not shut down its write half");
    }

    #[test]
    fn an_early_eof_names_the_lost_tail() {
        let up = cut(100, 70);
        let v = broken(up, clean(50));
        says(
            &v.summary,
            "EOF reached the server after only 70 of 100 bytes",
        );
        assert!(v.hint.unwrap().contains("the last 30 bytes never arrived"));
    }

    #[test]
    fn a_reset_is_a_failure() {
        let mut down = clean(50);
        down.read_failed = Some(reset("Connection reset by peer (os error 104)", 0));
        down.eof_at = None;
        let v = broken(clean(100), down);
        says(&v.summary, "client's read failed");
        assert!(v.hint.unwrap().contains("reset"));
    }

    /// The violation of a run of `c` that ended after nothing moved for 5 s.
    #[track_caller]
    fn quiet_for_5s(c: &Case, up: FlowRecord, down: FlowRecord) -> Violation {
        let mut rec = record(up, down);
        rec.quiet_for = Some(Duration::from_secs(5));
        rec.elapsed = Duration::from_secs(5);
        judge(c, &rec).unwrap_err()
    }

    #[test]
    fn a_missing_eof_is_named_when_nothing_moves() {
        let c = one_connection(
            "write 100; shutdown after-last-byte; reader eager",
            "await-peer-eof, write 50; shutdown after-last-byte; reader eager",
        );
        let mut up = clean(100);
        up.eof_at = None;
        let mut down = FlowRecord {
            sent: Arc::new(vec![0; 50]),
            ..FlowRecord::default()
        };
        down.shut_at = None;
        let v = quiet_for_5s(&c, up, down);
        assert!(
            v.summary.starts_with("nothing moved for 5.0s"),
            "{}",
            v.summary
        );
        says(&v.summary, "the server read all 100, but no EOF followed");
        assert_eq!(
            v.details,
            [
                "connection 1, server->client: the server wrote 0 of 50 bytes; the client read 0 (the server waits for the client's EOF before writing on)"
            ]
        );
        assert!(
            v.hint
                .unwrap()
                .contains("does not forward the client's EOF")
        );
    }

    #[test]
    fn the_missing_eof_leads_whichever_direction_it_is() {
        // The client waits for the server's EOF, which never comes: the report leads with the
        // server->client direction, not the client's, which is only waiting.
        let c = one_connection(
            "await-peer-eof; shutdown after-last-byte; reader eager",
            "no-writes; shutdown after-last-byte; reader eager",
        );
        let waiting = FlowRecord::default();
        let mut down = clean(0);
        down.eof_at = None;
        let v = quiet_for_5s(&c, waiting, down);
        assert_eq!(
            v.summary,
            "nothing moved for 5.0s while the case was not done: connection 1, server->client: the server sent nothing and shut down its write half 5.0s before the end, but no EOF reached the client"
        );
        assert_eq!(
            v.details,
            [
                "connection 1, client->server: the client sent nothing; the server read 0 (the client waits for the server's EOF before writing on)"
            ]
        );
        assert!(
            v.hint
                .unwrap()
                .contains("does not forward the server's EOF")
        );
    }

    #[test]
    fn a_pair_left_open_is_a_failure() {
        let mut rec = record(clean(100), clean(50));
        rec.conns[0].lingering = vec![super::super::sockets::Ends {
            local: 4000,
            remote: 5000,
        }];
        let v = judge(&case(), &rec).unwrap_err();
        says(&v.summary, "still held 1 of the pair's sockets");
    }

    #[test]
    fn a_death_at_accept_is_a_death() {
        let rec = Record {
            setup_error: Some("connection 1: expected ..., but the proxy exited first".into()),
            proxy_died: Some(("killed by signal SIGSEGV".into(), vec![])),
            ..Record::default()
        };
        let v = judge(&case(), &rec).unwrap_err();
        assert_eq!(v.kind, Kind::Died);
        assert_eq!(
            v.details[0],
            "before that: connection 1: expected ..., but the proxy exited first"
        );
    }

    #[test]
    fn a_death_comes_first_and_keeps_what_was_seen() {
        let mut up = clean(100);
        up.read_failed = Some(reset("Connection reset by peer", 0));
        let mut rec = record(up, clean(50));
        rec.proxy_died = Some(("killed by signal SIGSEGV".into(), vec![]));
        let v = judge(&case(), &rec).unwrap_err();
        assert_eq!(
            v.summary,
            "the proxy died during the case (killed by signal SIGSEGV)"
        );
        assert!(v.details[0].starts_with("before that: "));
    }

    // ---- expectations ----

    fn lazy() -> Case {
        parse_cases(
            "case\n expect aborted: stall-timeout 3000ms, earliest 2400ms, slack 5000ms, watch 15000ms\n connection\n  client->server: bulk 1000000; shutdown never; reader never\n  server->client: no-writes; shutdown never; reader eager\n",
        )
        .unwrap()
        .remove(0)
    }

    /// A lazy run: the client's last progress at 1 s, and what it saw of the pair's end.
    fn pushed(closed: Option<(u64, &str)>) -> Record {
        let up = FlowRecord {
            sent: Arc::new(vec![0; 1_000_000]),
            written: 300_000,
            last_write_at: Some(Duration::from_secs(1)),
            ..FlowRecord::default()
        };
        let mut down = FlowRecord::default();
        if let Some((ms, how)) = closed {
            down.read_failed = Some(reset(how, ms));
        }
        record(up, down)
    }

    #[test]
    fn an_abort_in_its_window_passes_and_one_too_early_names_the_short_timer() {
        assert_eq!(
            judge(&lazy(), &pushed(Some((4000, "Connection reset by peer")))),
            Ok(())
        );
        let v = judge(&lazy(), &pushed(Some((1500, "Connection reset by peer")))).unwrap_err();
        assert_eq!(v.kind, Kind::Abort);
        assert_eq!(
            v.summary,
            "expected the pair to stay open at least 2.4s (80% of the 3.0s stall timeout), but the client saw read error: Connection reset by peer 1.5s after connecting"
        );
        assert!(v.hint.unwrap().contains("far shorter"));
    }

    #[test]
    fn the_earliest_abort_counts_from_the_proxy_s_last_write_to_the_reader_when_known() {
        // Filling the buffers took a loaded host 2.3 s: an abort 3.0 s after connecting is
        // 0.7 s after the proxy last wrote to the destination server, far under 80% of 3 s.
        let mut slow_fill = pushed(Some((3000, "Connection reset by peer")));
        slow_fill.conns[0].flows[0].last_arrival_at = Some(Duration::from_millis(2300));
        let v = judge(&lazy(), &slow_fill).unwrap_err();
        assert_eq!(v.kind, Kind::Abort);
        assert_eq!(
            v.summary,
            "expected the pair to stay open at least 2.4s (80% of the 3.0s stall timeout) after the proxy's last write to the destination server, but the client saw read error: Connection reset by peer 0.7s after it (3.0s after connecting)"
        );
        assert!(
            v.details[0].ends_with(
                "the destination server's kernel last took bytes in 2.3s after connecting"
            )
        );
        // The same abort with the last write at 0.5 s is a stall timer of about 2.5 s: in time.
        slow_fill.conns[0].flows[0].last_arrival_at = Some(Duration::from_millis(500));
        assert_eq!(judge(&lazy(), &slow_fill), Ok(()));
    }

    #[test]
    fn an_abort_after_its_window_or_none_fails_with_what_the_watch_saw() {
        let v = judge(&lazy(), &pushed(Some((11_000, "EOF")))).unwrap_err();
        assert!(
            v.summary
                .ends_with("but it was still open 9.0s after connecting"),
            "{}",
            v.summary
        );
        assert!(
            v.hint
                .unwrap()
                .starts_with("the proxy aborted 10.0s after the client's last progress: its stall timeout looks like about 10s, not the 3s")
        );
        let v = judge(&lazy(), &pushed(None)).unwrap_err();
        assert!(v.hint.unwrap().contains("never times out"));
        let mut all_taken = pushed(None);
        all_taken.conns[0].flows[0].writes_done = true;
        let v = judge(&lazy(), &all_taken).unwrap_err();
        assert!(v.hint.unwrap().contains("buffers without limit"));
    }

    #[test]
    fn a_close_must_reach_the_other_side_as_a_reset() {
        let c = parse_cases(
            "case\n expect closed within 3000ms\n connection\n  client->server: write 1, pause 1000ms, write 1, pause 1000ms; shutdown never; reader never\n  server->client: no-writes; shutdown close-at-start; reader eager\n",
        )
        .unwrap()
        .remove(0);
        let mut up = FlowRecord {
            sent: Arc::new(vec![0; 2]),
            written: 2,
            ..FlowRecord::default()
        };
        let down = FlowRecord {
            eof_at: Some(Duration::from_millis(5)),
            shut_at: Some(Duration::ZERO),
            ..FlowRecord::default()
        };
        let v = judge(&c, &record(up.clone(), down.clone())).unwrap_err();
        assert_eq!(v.kind, Kind::NotClosed);
        assert_eq!(
            v.summary,
            "expected the proxy to close the client's connection within 3s of the server closing; it forwarded the server's EOF, but the client wrote 2 bytes, one a second, and every write succeeded"
        );
        up.write_failed = Some(reset("Broken pipe (os error 32)", 1000));
        assert_eq!(judge(&c, &record(up, down)), Ok(()));
    }

    // ---- resets ----

    /// The destination sends 16 bytes and, once the client's 1-byte answer is in, resets; the
    /// client waits for the end, then shuts down.
    fn reset_by_server() -> Case {
        one_connection(
            "await-read 16, write 1, await-peer-eof; shutdown after-last-byte; reader eager",
            "write 16, await-read 1; shutdown reset-after-last-byte; reader eager",
        )
    }

    /// A run of [`reset_by_server`]: the server reset at 20 ms; `down` is what the client saw.
    fn reset_run(down: FlowRecord) -> Record {
        let mut up = clean(1);
        up.eof_at = None;
        up.shut_at = Some(Duration::from_millis(40));
        let mut down = FlowRecord {
            shut_at: Some(Duration::from_millis(20)),
            eof_at: None,
            ..down
        };
        down.eof_before_shutdown = false;
        record(up, down)
    }

    #[test]
    fn a_reset_passed_on_as_eof_or_as_a_reset_keeps_the_contract() {
        let c = reset_by_server();
        let mut fin = clean(16);
        fin.shut_at = None;
        let mut as_fin = reset_run(fin);
        as_fin.conns[0].flows[1].eof_at = Some(Duration::from_millis(21));
        assert_eq!(judge(&c, &as_fin), Ok(()));
        let mut as_rst = reset_run(clean(16));
        as_rst.conns[0].flows[1].read_failed = Some(reset("Connection reset by peer", 21));
        // The client's shutdown after the reset fails too, and a reset stays pending.
        as_rst.conns[0].flows[0].write_failed =
            Some(reset("Transport endpoint is not connected", 40));
        as_rst.conns[0].pending_errors = vec!["Connection reset by peer".into()];
        assert_eq!(judge(&c, &as_rst), Ok(()));
    }

    #[test]
    fn a_reset_before_the_peer_reset_is_the_proxys() {
        let mut early = reset_run(clean(16));
        early.conns[0].flows[1].read_failed = Some(reset("Connection reset by peer", 10));
        let v = judge(&reset_by_server(), &early).unwrap_err();
        assert_eq!(v.kind, Kind::Reset);
    }

    #[test]
    fn a_reset_never_passed_on_is_named_when_nothing_moves() {
        let mut rec = reset_run(clean(16));
        rec.quiet_for = Some(Duration::from_secs(5));
        rec.elapsed = Duration::from_secs(5);
        let v = judge(&reset_by_server(), &rec).unwrap_err();
        assert_eq!(v.kind, Kind::Stuck);
        says(
            &v.summary,
            "the server wrote 16 of 16 bytes and reset its connection (SO_LINGER 0)",
        );
        says(&v.summary, "neither EOF nor a reset followed");
        says(&v.hint.unwrap(), "does not pass on the server's reset");
    }

    #[test]
    fn a_pair_left_open_after_a_reset_is_still_a_failure() {
        let mut rec = reset_run(clean(16));
        rec.conns[0].flows[1].eof_at = Some(Duration::from_millis(21));
        rec.conns[0].lingering = vec![super::super::sockets::Ends {
            local: 4000,
            remote: 5000,
        }];
        let v = judge(&reset_by_server(), &rec).unwrap_err();
        assert_eq!(v.kind, Kind::Lingering);
    }

    // ---- runs the harness could not judge ----

    fn held(stall: &str) -> Case {
        one_connection(
            &format!("no-writes; shutdown while-held{stall}; reader eager"),
            "no-writes; shutdown never; reader never",
        )
    }

    /// A held tail: the proxy last held nothing at 1 s, the sender shut down at `shut_ms`, and
    /// the receiver's read was reset after the first 40 of 100 bytes, all correct.
    fn held_reset(shut_ms: u64) -> Record {
        let mut up = cut(100, 40);
        up.eof_at = None;
        up.shut_at = Some(Duration::from_millis(shut_ms));
        up.read_failed = Some(reset("Connection reset by peer", shut_ms + 5));
        up.hold = Some(HoldRecord {
            began: Duration::from_millis(500),
            clear: Duration::from_secs(1),
            held: Some(hold::Held::Holding(60)),
        });
        let mut rec = record(up, FlowRecord::default());
        rec.conns[0].flows[1].writes_done = true;
        rec
    }

    #[test]
    fn a_held_tail_reset_after_the_harness_kept_the_proxy_stalled_too_long_runs_again() {
        let c = held(" stall-timeout 2000ms");
        let late = held_reset(2600);
        let v = judge(&c, &late);
        assert_eq!(v.as_ref().unwrap_err().kind, Kind::Reset);
        assert!(
            matches!(again(&c, &late, &v), Some(Again::Late(why)) if why.contains("begun 1.60s after"))
        );
        // Well within the stall timeout the reset is the proxy's.
        let early = held_reset(1500);
        assert_eq!(again(&c, &early, &judge(&c, &early)), None);
        // A generated held flow knows no stall timeout: every verdict stands.
        let c = held("");
        assert_eq!(again(&c, &late, &judge(&c, &late)), None);
    }

    #[test]
    fn a_held_tail_that_passed_without_a_hold_to_judge_runs_again() {
        let c = held(" stall-timeout 2000ms");
        let mut rec = record(clean(100), FlowRecord::default());
        rec.conns[0].flows[1].writes_done = true;
        let run = |held| {
            let mut rec = rec.clone();
            rec.conns[0].flows[0].hold = Some(HoldRecord {
                began: Duration::ZERO,
                clear: Duration::ZERO,
                held: Some(held),
            });
            let v = judge(&c, &rec);
            assert_eq!(v, Ok(()));
            again(&c, &rec, &v)
        };
        assert_eq!(run(hold::Held::Overshot(300)), Some(Again::Overshot(300)));
        assert!(matches!(run(hold::Held::OutOfTime), Some(Again::Late(_))));
        assert_eq!(run(hold::Held::Holding(300)), None);
        assert_eq!(run(hold::Held::Overshot(0)), None);
    }

    // ---- differences ----

    #[test]
    fn a_late_eof_is_information_not_a_failure() {
        let mut slow = clean(100);
        slow.eof_at = Some(Duration::from_secs(3));
        let p = record(slow, clean(50));
        assert_eq!(judge(&case(), &p), Ok(()));
        let d = differences(&case(), &p, &record(clean(100), clean(50)));
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("forwards EOF late"));
    }
}
