//! Running one case through one proxy: both peers of every connection do what the schedule
//! says, all connections at once, and what each receiver sees is recorded for the oracle.
//!
//! Nothing here judges. The run ends when every direction is done (EOF seen where the sender
//! shut down; every byte seen where it never does), as soon as something has plainly broken (a
//! reset, an EOF too early, bytes beyond what was sent), or when nothing has moved for the quiet
//! limit while something was still expected.

use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use socket2::SockRef;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::schedule::{
    Case, Dir, EAGER_CHUNK, Expect, Flow, HOLD_TAIL, HeldTail, KIB, MAX_WRITE, Pace, Reader,
    Shutdown, Step,
};
use super::sockets::Ends;
use super::target::{Pair, Target};
use crate::procfs::Queues;
use crate::{deadline, hold};

/// Bytes kept beyond what was sent, to show what the extra bytes were.
const EXTRA_KEPT: usize = 64 * KIB;
/// After everything arrived, how long the receivers of never-closed directions keep listening
/// for an EOF or bytes that must not come. A bug is missed if slower, never invented.
const GRACE: Duration = Duration::from_millis(50);
/// How often the proxy's descriptor table is read while waiting for it to close a pair.
const CLOSE_POLL: Duration = Duration::from_millis(10);
/// How often the run's deadlines are checked when nothing happens: not a deadline itself.
const TICK: Duration = Duration::from_millis(100);

/// The deadlines of one run, already scaled.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection through the proxy, and the proxy's connection on to the destination.
    pub connect: Duration,
    /// Nothing moved on any connection of the case while something was still expected.
    pub quiet: Duration,
    /// The proxy keeps a finished pair's sockets open. None: what the proxy does after both
    /// directions are done is not judged (a phase leaves descriptors to `resources/fd-leak`).
    pub close: Option<Duration>,
    /// The whole case, whatever moves.
    pub backstop: Duration,
}

impl Limits {
    /// The limits a case's expectation needs: an abort is watched for until its `watch`, in
    /// which nothing moves; a close must come within its limit, which ends the run.
    pub fn for_case(self, case: &Case) -> Limits {
        let ms = |ms: u32| Duration::from_millis(ms.into());
        match case.expect {
            Expect::Contract => self,
            Expect::Aborted { watch_ms, .. } => Limits {
                quiet: self.quiet.max(ms(watch_ms)),
                backstop: self.backstop + ms(watch_ms),
                ..self
            },
            Expect::ClosedWithin { ms: within } => Limits {
                quiet: self.quiet.max(ms(within)),
                backstop: ms(within),
                ..self
            },
        }
    }
}

/// Where the pairs of a run go through: the proxy's listening port and process group, and the
/// destination's port.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub proxy: u16,
    pub dest: u16,
    pub pgid: i32,
}

/// What the receiver of one direction saw, and how far the sender got.
#[derive(Debug, Clone, Default)]
pub struct FlowRecord {
    /// The bytes the schedule sends this way.
    pub sent: Arc<Vec<u8>>,
    /// Bytes the sender has handed to its socket.
    pub written: usize,
    /// Since the start of the case: the last write that took at least one byte.
    pub last_write_at: Option<Duration>,
    pub writes_done: bool,
    /// Since the start of the case: when the sender began its shutdown(SHUT_WR).
    pub shut_at: Option<Duration>,
    /// The first `sent.len() + EXTRA_KEPT` bytes read.
    pub got: Vec<u8>,
    pub received: usize,
    pub reads: u64,
    pub last_byte_at: Option<Duration>,
    /// Since the start of the case, for a receiver that never reads: when its kernel last took
    /// bytes in (TCP_INFO), which is when the proxy's writes this way last made progress.
    pub last_arrival_at: Option<Duration>,
    pub eof_at: Option<Duration>,
    /// The EOF came while the sender had not shut down.
    pub eof_before_shutdown: bool,
    /// The receiver's read that failed.
    pub read_failed: Option<IoFailure>,
    /// The sender's write or shutdown that failed.
    pub write_failed: Option<IoFailure>,
    /// The most bytes written and not yet read at any moment.
    pub max_in_flight: usize,
    /// How late, at worst, the receiver woke from a pause it had planned (its pace, or the stall
    /// the schedule gives it): a busy host's delay, during which it left the proxy's writes
    /// this way without room.
    pub reader_late: Duration,
    /// A `shutdown while-held` flow's fill, once it began.
    pub hold: Option<HoldRecord>,
    /// The four sockets' queues as that fill read them: at most one reading per
    /// `timeline::BYTES_EVERY` (and `MAX_SAMPLES`), and the last whatever came before it.
    pub hold_queues: Vec<QueueReading>,
    /// Bytes written and read so far, sampled as they moved (`timeline::BYTES_EVERY` apart, at
    /// most `MAX_SAMPLES`): what the timelines draw as bytes over time.
    pub samples: Vec<Sample>,
}

/// A flow's bytes at one moment, since the start of the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Duration,
    pub written: usize,
    pub received: usize,
}

/// The queues of a held flow's four sockets at one moment (in `hold::Path`'s order: the
/// sender's, the proxy's facing it, the proxy's facing the receiver, the receiver's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueReading {
    /// Since the start of the case.
    pub at: Duration,
    pub queues: [Queues; 4],
}

/// A flow keeps at most this many samples (and held queue readings): a case's timeline stays
/// small however long it runs.
const MAX_SAMPLES: usize = 200;

/// A read or a write that failed, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoFailure {
    pub error: String,
    /// ECONNRESET or EPIPE: the proxy reset or closed the connection.
    pub reset: bool,
    /// Since the start of the case.
    pub at: Duration,
}

impl IoFailure {
    fn new(error: &io::Error, context: &str, at: Duration) -> IoFailure {
        IoFailure {
            error: format!("{context}{error}"),
            reset: crate::peer::is_reset(error),
            at,
        }
    }
}

/// How a held flow's fill went.
#[derive(Debug, Clone, Copy)]
pub struct HoldRecord {
    /// Since the start of the case: when the fill began.
    pub began: Duration,
    /// Since the start of the case: when the proxy was last seen holding nothing. A stall of
    /// the proxy's that the fill caused cannot have begun earlier.
    pub clear: Duration,
    /// Where the fill ended; None when a write failed first.
    pub held: Option<hold::Held>,
}

impl FlowRecord {
    /// Keeps the counts at `at` if the last sample is at least `BYTES_EVERY` old and there is
    /// room; the counts at the end are in `written` and `received` whatever the samples hold.
    fn sample(&mut self, at: Duration) {
        let last = self.samples.last();
        let moved = last.is_none_or(|l| (l.written, l.received) != (self.written, self.received));
        let due = last.is_none_or(|l| at.saturating_sub(l.at) >= crate::timeline::BYTES_EVERY);
        if moved && due && self.samples.len() < MAX_SAMPLES {
            self.samples.push(Sample {
                at,
                written: self.written,
                received: self.received,
            });
        }
    }

    /// Keeps `queues` read at `at`. Every reading kept is `BYTES_EVERY` after the one before it
    /// but the last, which stands for the latest reading and gives way to the next: the fill
    /// reads every millisecond, and how the queues stood when it ended is what matters most.
    fn looked(&mut self, at: Duration, queues: [Queues; 4]) {
        let reading = QueueReading { at, queues };
        let kept = &mut self.hold_queues;
        let n = kept.len();
        let last_is_latest =
            n >= 2 && kept[n - 1].at.saturating_sub(kept[n - 2].at) < crate::timeline::BYTES_EVERY;
        if last_is_latest || n >= MAX_SAMPLES {
            kept[n - 1] = reading;
        } else {
            kept.push(reading);
        }
    }

    fn in_flight(&self) -> usize {
        self.written.saturating_sub(self.received)
    }

    /// Plainly broken already: a reset, an early EOF, or more bytes than were sent. Where a
    /// side of the connection resets, the failures that pass its reset on are the oracle's to
    /// judge, not a reason to stop: a read that fails at the receiver of the side that reset
    /// (`sender_resets`), a write that fails at the sender towards it (`receiver_resets`), and
    /// an EOF that cuts the resetting side's bytes short.
    fn broken(&self, sender_resets: bool, receiver_resets: bool) -> bool {
        (self.read_failed.is_some() && !sender_resets)
            || (self.write_failed.is_some() && !receiver_resets)
            || self.eof_before_shutdown
            || self.received > self.sent.len()
            || (self.eof_at.is_some() && self.received < self.sent.len() && !sender_resets)
    }
}

/// Whether direction `dir` of connection `c` is done: its receiver saw the EOF where the sender
/// shuts down, every byte where it never does. Where the sender resets, an EOF or a failed read
/// (the reset passed on) ends it too; where the receiver resets, it is done once that side has
/// reset and the sender is through its schedule, since nothing it sends can be read any more.
pub fn done(c: &super::schedule::Connection, dir: Dir, rec: &ConnRecord) -> bool {
    let f = &rec.flows[dir.index()];
    if c.resets(dir.reverse()) {
        let reset = rec.flows[dir.reverse().index()].shut_at.is_some();
        let through = match c.flow(dir).shutdown {
            Shutdown::Never => f.writes_done,
            _ => f.shut_at.is_some(),
        };
        return reset && (through || f.write_failed.is_some());
    }
    match c.flow(dir).shutdown {
        Shutdown::Never => f.writes_done && f.received >= f.sent.len(),
        Shutdown::Reset => f.eof_at.is_some() || f.read_failed.is_some(),
        _ => f.eof_at.is_some(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct ConnRecord {
    /// Indexed by `Dir::index`.
    pub flows: [FlowRecord; 2],
    /// The proxy's sockets of this pair still open `Limits::close` after both directions were
    /// done.
    pub lingering: Vec<Ends>,
    /// Errors found pending on our sockets at the end (a reset that no read or write saw).
    pub pending_errors: Vec<String>,
}

/// Everything one run of a case through one proxy saw.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub conns: Vec<ConnRecord>,
    /// A connection could not be opened; nothing ran.
    pub setup_error: Option<String>,
    /// The run was cut short after nothing moved for this long.
    pub quiet_for: Option<Duration>,
    /// The backstop deadline ended the run.
    pub backstop: Option<Duration>,
    /// How the proxy died during the case, and its last words: filled in by the caller.
    pub proxy_died: Option<(String, Vec<String>)>,
    pub elapsed: Duration,
}

/// Runs `case` through `target`.
pub async fn run(target: &Target, case: &Case, limits: Limits) -> Record {
    let started = Instant::now();
    let mut pairs = Vec::new();
    for (i, c) in case.connections.iter().enumerate() {
        match target.open(c.small_client_rcvbuf, limits.connect).await {
            Ok(p) => pairs.push(p),
            Err(msg) => {
                return Record {
                    setup_error: Some(format!("connection {}: {msg}", i + 1)),
                    elapsed: started.elapsed(),
                    ..Record::default()
                };
            }
        }
    }
    let ports = Ports {
        proxy: target.listen_port().await,
        dest: target.dest_port,
        pgid: target.pgid().await,
    };
    drive(pairs, ports, case, limits, started).await
}

/// The bytes every flow of `c` sends: a held flow's tail is cut to what was written when it
/// shuts down; an echo's server sends what its client sent; bytes no reader reads are zeros
/// (drawing a lazy phase's 256 MiB would hold a runtime thread for a second or more).
fn payloads(c: &super::schedule::Connection) -> [Vec<u8>; 2] {
    let len = |d: Dir| {
        c.flow(d).total()
            + if matches!(c.flow(d).shutdown, Shutdown::WhileHeld(_)) {
                HOLD_TAIL
            } else {
                0
            }
    };
    let draw = |d: Dir| {
        if c.flow(d).reader.pace == Pace::Never {
            vec![0; len(d)]
        } else {
            payload(len(d))
        }
    };
    let up = draw(Dir::Up);
    let down = if c.echo && len(Dir::Down) <= up.len() {
        up[..len(Dir::Down)].to_vec()
    } else {
        draw(Dir::Down)
    };
    [up, down]
}

/// Runs `case` on `pairs`, already open through the proxy at `ports`, one pair a connection;
/// `started` is when the case began.
pub async fn drive(
    pairs: Vec<Pair>,
    ports: Ports,
    case: &Case,
    limits: Limits,
    started: Instant,
) -> Record {
    let limits = limits.for_case(case);
    let shared = Arc::new(Shared {
        started,
        state: Mutex::new(State {
            conns: case
                .connections
                .iter()
                .map(|c| ConnRecord {
                    flows: payloads(c).map(|sent| FlowRecord {
                        sent: Arc::new(sent),
                        ..FlowRecord::default()
                    }),
                    ..ConnRecord::default()
                })
                .collect(),
            last_event: Instant::now(),
            never_read: Vec::new(),
        }),
        notify: Notify::new(),
    });
    let (end_tx, end_rx) = watch::channel(false);
    let mut sides = JoinSet::new();
    let mut ends = Vec::new();
    let (proxy_port, pgid) = (ports.proxy, ports.pgid);
    for pair in &pairs {
        ends.push([
            Ends {
                local: proxy_port,
                remote: pair.client_port,
            },
            Ends {
                local: pair.proxy_out_port,
                remote: ports.dest,
            },
        ]);
    }
    // Noted while every pair is established, before anyone can shut down: a closed socket
    // leaves /proc/net/tcp though a leaked descriptor keeps it.
    let wanted: Vec<Ends> = ends.iter().flatten().copied().collect();
    let inodes = tokio::task::spawn_blocking(move || crate::procfs::tcp_inodes(&wanted))
        .await
        .unwrap_or_default();
    for (i, (pair, c)) in pairs.into_iter().zip(&case.connections).enumerate() {
        // Our two sockets, as /proc/net/tcp names them, for held flows.
        let client = Ends {
            local: pair.client_port,
            remote: proxy_port,
        };
        let server = Ends {
            local: ports.dest,
            remote: pair.proxy_out_port,
        };
        let gates = Dir::BOTH.map(|d| {
            let Shutdown::WhileHeld(tail) = c.flow(d).shutdown else {
                return None;
            };
            let path = match d {
                Dir::Up => hold::Path::from_ends(client, server),
                Dir::Down => hold::Path::from_ends(server, client),
            };
            Some(Arc::new(Gate {
                holding: watch::channel(false).0,
                shut: watch::channel(false).0,
                steps_bytes: c.flow(d).total(),
                tail,
                path,
            }))
        });
        for (stream, out, into) in [
            (pair.client, Dir::Up, Dir::Down),
            (pair.server, Dir::Down, Dir::Up),
        ] {
            let side = Side {
                hold_out: gates[out.index()].clone(),
                hold_in: gates[into.index()].clone(),
                shared: shared.clone(),
                conn: i,
                out,
                into,
                sending: c.flow(out).clone(),
                reader: c.flow(into).reader,
                end: end_rx.clone(),
            };
            sides.spawn(async move { (i, side.run(stream).await) });
        }
    }

    let mut record = Record::default();
    // The two deadlines of the run, checked on every event and every tick: the longest stretch
    // in which nothing moved, against the quiet limit, and the whole run against the backstop.
    let mut quietest = Duration::ZERO;
    let finished = loop {
        match shared.progress(case) {
            Progress::Done => break true,
            Progress::Broken => break false,
            Progress::Running => {}
        }
        let quiet = shared.lock().last_event.elapsed();
        quietest = quietest.max(quiet);
        if quiet >= limits.quiet {
            record.quiet_for = Some(quiet);
            break false;
        }
        if started.elapsed() >= limits.backstop {
            record.backstop = Some(started.elapsed());
            break false;
        }
        let notified = shared.notify.notified();
        let _ = tokio::time::timeout(TICK, notified).await;
    };
    {
        // Asked as soon as the case is decided: a proxy that aborted writes no more.
        let at = started.elapsed();
        let mut state = shared.lock();
        for (i, dir, copy) in std::mem::take(&mut state.never_read) {
            if let Ok(Some(ago)) = crate::tcp_info::since_last_data(&copy) {
                state.conns[i].flows[dir.index()].last_arrival_at = Some(at.saturating_sub(ago));
            }
        }
    }
    deadline::observe(
        "the case's peers to move on (its quiet limit)",
        quietest,
        limits.quiet,
    );
    deadline::observe(
        "the case to finish (its backstop)",
        started.elapsed(),
        limits.backstop,
    );

    if let (true, Some(close)) = (finished, limits.close) {
        // Directions that never close end only here: any EOF or byte in the grace is wrong.
        tokio::time::sleep(GRACE).await;
        let _ = end_tx.send(true);
        let mut streams: Vec<Vec<TcpStream>> = case.connections.iter().map(|_| vec![]).collect();
        let all = async {
            while let Some(joined) = sides.join_next().await {
                if let Ok((i, Some(stream))) = joined {
                    streams[i].push(stream);
                }
            }
        };
        let _ = deadline::within(
            limits.connect,
            "the case's peers to hand back their sockets",
            all,
        )
        .await;
        let mut closes = JoinSet::new();
        for (i, (c, ends)) in case.connections.iter().zip(&ends).enumerate() {
            if c.up.shutdown == Shutdown::Never || c.down.shutdown == Shutdown::Never {
                continue;
            }
            let known: Vec<(Ends, u64)> = ends
                .iter()
                .zip(&inodes[2 * i..2 * i + 2])
                .filter_map(|(e, inode)| Some((*e, (*inode)?)))
                .collect();
            let shared = shared.clone();
            closes.spawn(async move {
                let lingering = await_closed(pgid, known, close).await;
                shared.lock().conns[i].lingering = lingering;
            });
        }
        closes.join_all().await;
        let mut state = shared.lock();
        for (i, ss) in streams.iter().enumerate() {
            for s in ss {
                if let Ok(Some(e)) = s.take_error() {
                    state.conns[i].pending_errors.push(e.to_string());
                }
            }
        }
    } else {
        if finished {
            // Not judged after the end, but a byte or an EOF in the grace still is.
            tokio::time::sleep(GRACE).await;
        }
        sides.abort_all();
        while sides.join_next().await.is_some() {}
    }
    record.conns = shared.lock().conns.clone();
    record.elapsed = started.elapsed();
    record
}

/// Waits for the proxy to close the sockets (by inode) of a finished pair; those it still holds
/// after `limit`.
async fn await_closed(pgid: i32, sockets: Vec<(Ends, u64)>, limit: Duration) -> Vec<Ends> {
    let sockets = &sockets;
    let look = || async move {
        let held = tokio::task::spawn_blocking(move || crate::procfs::socket_inodes(pgid))
            .await
            .unwrap_or_default();
        sockets
            .iter()
            .filter(|(_, inode)| held.contains(inode))
            .map(|(e, _)| *e)
            .collect::<Vec<Ends>>()
    };
    let what = "the proxy to close a finished pair's sockets";
    deadline::poll(limit, what, CLOSE_POLL, look, |open| open.is_empty()).await
}

/// Distinct bytes for every flow of every run, so a proxy that crosses two connections' streams
/// is caught by the comparison.
fn payload(len: usize) -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut rng = ChaCha20Rng::seed_from_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut v = vec![0; len];
    rng.fill_bytes(&mut v);
    v
}

struct State {
    conns: Vec<ConnRecord>,
    /// The last time anything happened on any connection of the case: a read, a write, a
    /// shutdown, the end of one of our own pauses; while a pause runs, its end (nothing is
    /// owed by the proxy while a side waits on its own clock).
    last_event: Instant,
    /// A copy of each socket that never reads, to ask its kernel once the case is decided when
    /// it last took bytes in (a side may be aborted first, its own socket with it).
    never_read: Vec<(usize, Dir, socket2::Socket)>,
}

struct Shared {
    started: Instant,
    state: Mutex<State>,
    /// Woken on every event, so the run notices the end at once.
    notify: Notify,
}

enum Progress {
    Running,
    Done,
    Broken,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event on direction `dir` of connection `conn`.
    fn event(&self, conn: usize, dir: Dir, f: impl FnOnce(&mut FlowRecord, Duration)) {
        let at = self.started.elapsed();
        {
            let mut s = self.lock();
            let flow = &mut s.conns[conn].flows[dir.index()];
            f(flow, at);
            flow.max_in_flight = flow.max_in_flight.max(flow.in_flight());
            flow.sample(at);
            s.last_event = s.last_event.max(Instant::now());
        }
        self.notify.notify_one();
    }

    /// A reading of held direction `dir`'s queues: kept, but no progress, so the quiet limit
    /// runs on through a fill that reads them every millisecond.
    fn looked(&self, conn: usize, dir: Dir, queues: [Queues; 4]) {
        let at = self.started.elapsed();
        self.lock().conns[conn].flows[dir.index()].looked(at, queues);
    }

    /// An event that concerns no direction's bytes: one of our pauses ended.
    fn tick(&self) {
        self.until(Instant::now());
    }

    /// Nothing is owed until `at`: one of our own pauses runs until then.
    fn until(&self, at: Instant) {
        let mut s = self.lock();
        s.last_event = s.last_event.max(at);
    }

    fn progress(&self, case: &Case) -> Progress {
        let s = self.lock();
        let mut all_done = true;
        for (c, rec) in case.connections.iter().zip(&s.conns) {
            for d in Dir::BOTH {
                if rec.flows[d.index()].broken(c.resets(d), c.resets(d.reverse())) {
                    return Progress::Broken;
                }
                all_done &= done(c, d, rec);
            }
        }
        if all_done {
            Progress::Done
        } else {
            Progress::Running
        }
    }
}

/// A `shutdown while-held` flow's meeting point between its two ends.
struct Gate {
    /// Set by the receiver once it has read the steps' bytes and stopped reading.
    holding: watch::Sender<bool>,
    /// Set by the sender once it has shut down: the receiver reads on.
    shut: watch::Sender<bool>,
    steps_bytes: usize,
    tail: HeldTail,
    path: hold::Path,
}

/// One end of a connection: it sends one direction and receives the other.
struct Side {
    /// The gate of the direction this end sends, if that one is held.
    hold_out: Option<Arc<Gate>>,
    /// The gate of the direction this end receives, if that one is held.
    hold_in: Option<Arc<Gate>>,
    shared: Arc<Shared>,
    conn: usize,
    /// The direction this end sends.
    out: Dir,
    /// The direction this end receives.
    into: Dir,
    sending: Flow,
    reader: Reader,
    /// True once the case is over.
    end: watch::Receiver<bool>,
}

impl Side {
    /// Sends and receives as scheduled, then holds the socket until the case is over: dropping
    /// the write half would send a FIN the schedule did not ask for. None when the schedule
    /// closed it.
    async fn run(self, stream: TcpStream) -> Option<TcpStream> {
        let mut end = self.end.clone();
        if self.sending.shutdown == Shutdown::CloseAtStart {
            self.shared.event(self.conn, self.out, |f, at| {
                f.writes_done = true;
                f.shut_at = Some(at);
            });
            drop(stream);
            let _ = end.wait_for(|e| *e).await;
            return None;
        }
        let (mut rd, wr) = stream.into_split();
        let (eof_tx, eof_rx) = watch::channel(false);
        let (read_tx, read_rx) = watch::channel(0);
        let resets = self.sending.shutdown == Shutdown::Reset;
        let wr = {
            let mut receiving = pin!(self.receive(&mut rd, eof_tx, read_tx));
            let mut sending = pin!(self.send(wr, eof_rx, read_rx));
            let mut received = false;
            let wr = loop {
                tokio::select! {
                    wr = &mut sending => break wr,
                    () = &mut receiving, if !received => received = true,
                }
            };
            // A side that resets reads nothing more: its socket is gone.
            if !received && !resets {
                receiving.await;
            }
            wr
        };
        let stream = rd.reunite(wr).expect("the two halves of one stream");
        if resets {
            // A bare RST: SO_LINGER 0 and close, with no shutdown before it (a FIN first would
            // make it a plain EOF). `reunite` keeps the write half from shutting down on drop.
            if let Err(e) = SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
                self.write_failed(&e, "setsockopt(SO_LINGER 0) failed: ");
            }
            drop(stream);
            let _ = end.wait_for(|e| *e).await;
            return None;
        }
        let _ = end.wait_for(|e| *e).await;
        Some(stream)
    }

    /// Sleeps, unless the case ends first; false if it did.
    async fn pause(&self, d: Duration) -> bool {
        self.shared.until(Instant::now() + d);
        let mut end = self.end.clone();
        tokio::select! {
            _ = end.wait_for(|e| *e) => false,
            _ = tokio::time::sleep(d) => {
                self.shared.tick();
                true
            }
        }
    }

    /// The receiver's pause until `until`, unless the case ends first (false if it did). How
    /// late it woke goes to its flow's [`FlowRecord::reader_late`] when that beats `worst`, the
    /// latest so far: a paced reader pauses every few kilobytes, and the record is shared.
    async fn pause_reading(&self, until: Instant, worst: &mut Duration) -> bool {
        if !self
            .pause(until.saturating_duration_since(Instant::now()))
            .await
        {
            return false;
        }
        let late = until.elapsed();
        if late > *worst {
            *worst = late;
            self.shared.lock().conns[self.conn].flows[self.into.index()].reader_late = late;
        }
        true
    }

    /// Reads as the schedule says; `read` counts the bytes read so far, for `await-read`.
    async fn receive(
        &self,
        rd: &mut OwnedReadHalf,
        eof_tx: watch::Sender<bool>,
        read_so_far: watch::Sender<usize>,
    ) {
        let (conn, dir) = (self.conn, self.into);
        if self.reader.pace == Pace::Never {
            // Without a copy (dup(2) failing), the oracle keeps its older, laxer anchor.
            if let Ok(copy) = SockRef::from(rd.as_ref()).try_clone() {
                self.shared.lock().never_read.push((conn, dir, copy));
            }
            let mut end = self.end.clone();
            let _ = end.wait_for(|e| *e).await;
            return;
        }
        let keep = self.shared.lock().conns[conn].flows[dir.index()].sent.len() + EXTRA_KEPT;
        let mut buf = vec![0; EAGER_CHUNK];
        let mut total = 0usize;
        let mut stalled = false;
        let mut first_byte: Option<Instant> = None;
        let mut end = self.end.clone();
        let mut held = false;
        let mut late = Duration::ZERO;
        loop {
            if let Some(gate) = self
                .hold_in
                .as_ref()
                .filter(|g| !held && total >= g.steps_bytes)
            {
                held = true;
                gate.holding.send_replace(true);
                let mut shut = gate.shut.subscribe();
                tokio::select! {
                    _ = end.wait_for(|e| *e) => break,
                    _ = shut.wait_for(|s| *s) => self.shared.tick(),
                }
            }
            if let Some(stall) = self.reader.stall {
                if !stalled && total >= stall.after {
                    stalled = true;
                    let planned = Duration::from_millis(stall.ms.into());
                    if !self
                        .pause_reading(Instant::now() + planned, &mut late)
                        .await
                    {
                        break;
                    }
                }
            }
            let chunk = self.reader.pace.chunk(total);
            let read = tokio::select! {
                biased;
                _ = end.wait_for(|e| *e) => break,
                r = rd.read(&mut buf[..chunk]) => r,
            };
            match read {
                Ok(0) => {
                    self.shared.event(conn, dir, |f, at| {
                        f.eof_at = Some(at);
                        f.eof_before_shutdown = f.shut_at.is_none();
                    });
                    let _ = eof_tx.send(true);
                    break;
                }
                Ok(n) => {
                    total += n;
                    read_so_far.send_replace(total);
                    self.shared.event(conn, dir, |f, at| {
                        let room = keep.saturating_sub(f.got.len());
                        f.got.extend_from_slice(&buf[..n.min(room)]);
                        f.received += n;
                        f.reads += 1;
                        f.last_byte_at = Some(at);
                    });
                }
                Err(e) => {
                    self.shared.event(conn, dir, |f, at| {
                        f.read_failed = Some(IoFailure::new(&e, "", at));
                    });
                    break;
                }
            }
            if let Some(rate) = self.reader.pace.rate() {
                let first = *first_byte.get_or_insert_with(Instant::now);
                let due = first + Duration::from_secs_f64(total as f64 / rate);
                if due > Instant::now() && !self.pause_reading(due, &mut late).await {
                    break;
                }
            }
        }
    }

    async fn send(
        &self,
        mut wr: OwnedWriteHalf,
        mut peer_eof: watch::Receiver<bool>,
        mut read: watch::Receiver<usize>,
    ) -> OwnedWriteHalf {
        let (conn, dir, flow) = (self.conn, self.out, &self.sending);
        let data = self.shared.lock().conns[conn].flows[dir.index()]
            .sent
            .clone();
        let mut at = 0;
        for step in &flow.steps {
            match *step {
                Step::Pause(ms) => {
                    if !self.pause(Duration::from_millis(ms.into())).await {
                        return wr;
                    }
                }
                Step::AwaitPeerEof => {
                    let _ = peer_eof.wait_for(|e| *e).await;
                }
                Step::AwaitRead(n) => {
                    // Ends early when this side stops reading (an EOF, an error): whatever
                    // follows is judged on what the run saw.
                    let mut end = self.end.clone();
                    tokio::select! {
                        _ = end.wait_for(|e| *e) => return wr,
                        _ = read.wait_for(|got| *got >= n) => {}
                    }
                }
                Step::Write(n) | Step::Bulk(n) => {
                    if flow.latency_ms > 0
                        && !self
                            .pause(Duration::from_millis(flow.latency_ms.into()))
                            .await
                    {
                        return wr;
                    }
                    if let Err(e) = self.write(&mut wr, &data[at..at + n]).await {
                        self.write_failed(&e, "");
                        return wr;
                    }
                    at += n;
                }
            }
        }
        if let Some(gate) = &self.hold_out {
            if self.fill(&mut wr, gate, &data, at).await.is_none() {
                return wr;
            }
        }
        self.shared.event(conn, dir, |f, _| f.writes_done = true);
        match flow.shutdown {
            Shutdown::AfterLastByte | Shutdown::AtStart | Shutdown::WhileHeld(_) => {}
            Shutdown::SlowClose(ms) => {
                if !self.pause(Duration::from_millis(ms.into())).await {
                    return wr;
                }
            }
            // A closed socket is never sent on (`Side::run`).
            Shutdown::Never | Shutdown::CloseAtStart => return wr,
            // Recorded before the reset, which `Side::run` sends once the reading stops.
            Shutdown::Reset => {
                self.shared.event(conn, dir, |f, at| f.shut_at = Some(at));
                return wr;
            }
        }
        // Recorded before the call: the EOF may reach the receiver before shutdown() returns.
        self.shared.event(conn, dir, |f, at| f.shut_at = Some(at));
        if let Err(e) = wr.shutdown().await {
            self.write_failed(&e, "shutdown(SHUT_WR) failed: ");
        }
        if let Some(gate) = &self.hold_out {
            gate.shut.send_replace(true);
        }
        wr
    }

    /// A held flow's tail: once the receiver holds off, writes from `data[at..]` until the
    /// proxy holds bytes it cannot write on, and cuts what the flow sent to what was written.
    /// The bytes written, or None when the case ended or a write failed (recorded).
    async fn fill(
        &self,
        wr: &mut OwnedWriteHalf,
        gate: &Gate,
        data: &[u8],
        at: usize,
    ) -> Option<usize> {
        let (conn, dir) = (self.conn, self.out);
        let mut holding = gate.holding.subscribe();
        let mut end = self.end.clone();
        tokio::select! {
            _ = end.wait_for(|e| *e) => return None,
            _ = holding.wait_for(|h| *h) => {}
        }
        let received = self.shared.lock().conns[conn].flows[dir.index()].received;
        let stall = gate
            .tail
            .stall_ms
            .map(|ms| Duration::from_millis(ms.into()));
        let settings = hold::Settings::new(gate.tail.piece, stall);
        self.shared.event(conn, dir, |f, at| {
            f.hold = Some(HoldRecord {
                began: at,
                clear: at,
                held: None,
            })
        });
        let seen = |s| match s {
            hold::Seen::Wrote(n) => self.shared.event(conn, dir, |f, at| {
                f.written += n;
                f.last_write_at = Some(at);
            }),
            hold::Seen::Queues(q) => self.shared.looked(conn, dir, q),
        };
        match hold::fill(wr, &data[at..], at, received, &gate.path, &settings, seen).await {
            Ok(fill) => {
                let sent = at + fill.written;
                let clear = fill.clear.saturating_duration_since(self.shared.started);
                self.shared.event(conn, dir, |f, _| {
                    f.sent = Arc::new(f.sent[..sent].to_vec());
                    if let Some(h) = &mut f.hold {
                        h.clear = clear;
                        h.held = Some(fill.held);
                    }
                });
                Some(fill.written)
            }
            Err(e) => {
                self.write_failed(&e, "");
                None
            }
        }
    }

    fn write_failed(&self, e: &io::Error, context: &str) {
        self.shared.event(self.conn, self.out, |f, at| {
            f.write_failed = Some(IoFailure::new(e, context, at));
        });
    }

    /// One write step: writes of at most `MAX_WRITE`, cut by the slicer if there is one. Every
    /// write call that takes bytes is recorded as it returns, so the last progress is known to
    /// the write (an abort is timed from it).
    async fn write(&self, wr: &mut OwnedWriteHalf, bytes: &[u8]) -> io::Result<()> {
        let (piece, delay) = match self.sending.slicer {
            Some(s) => (s.size, Duration::from_micros(s.delay_us.into())),
            None => (MAX_WRITE, Duration::ZERO),
        };
        for part in bytes.chunks(piece.min(MAX_WRITE)) {
            let mut done = 0;
            while done < part.len() {
                let n = wr.write(&part[done..]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                done += n;
                self.shared.event(self.conn, self.out, |f, at| {
                    f.written += n;
                    f.last_write_at = Some(at);
                });
            }
            if !delay.is_zero() && !self.pause(delay).await {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill reads the queues every millisecond; its record keeps one reading per
    /// `BYTES_EVERY` and the last, however the fill ended.
    #[test]
    fn a_fill_s_queue_readings_are_kept_every_so_often_and_the_last_always() {
        let mut f = FlowRecord::default();
        let reading = |n: u64| {
            let q = Queues { send: n, recv: 0 };
            [q; 4]
        };
        for ms in 0..=123u64 {
            f.looked(Duration::from_millis(ms), reading(ms));
        }
        let at: Vec<_> = f.hold_queues.iter().map(|r| r.at.as_millis()).collect();
        assert_eq!(at, [0, 50, 100, 123]);
        assert_eq!(f.hold_queues[3].queues, reading(123));
    }
}
