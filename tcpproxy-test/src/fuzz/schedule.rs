//! A fuzz schedule: what both peers of every connection of one case do, in a text form that
//! reads as a description and parses back into the same schedule (the replay format).
//!
//! ```text
//! case
//!   connection client-rcvbuf=small
//!     client->server: write 12, pause 120ms, await-peer-eof, bulk 1000004; latency 10ms; shutdown after-last-byte; reader eager
//!     server->client: no-writes; shutdown at-start; reader bandwidth 512KiB/s, stall 800ms after 4096B
//! ```
//!
//! The vocabulary borrows toxiproxy's where it fits: `latency` (a pause before every write), a
//! `slicer` (each write cut into small pieces with a delay between), a reader's `bandwidth`
//! limit, and a slow close (`shutdown 200ms-after-last-byte`). `shutdown while-held` sends the
//! EOF at the moment the proxy holds bytes it cannot write on yet.
//!
//! The suite's phases are schedules too (`crate::phase`), and need a few words the strategy
//! never generates: `await-read N` (a side writes on only once it has read N bytes: an echo),
//! `connection echo` (the server's bytes are the client's), `reader never`, `shutdown
//! close-at-start` (the side closes its whole socket at once), `shutdown reset-after-last-byte`
//! (after its last step the side resets: SO_LINGER 0 and close, a bare RST), and an `expect` line for a case
//! whose proxy must end a pair rather than keep the contract:
//!
//! ```text
//! case
//!   expect aborted: stall-timeout 3000ms, earliest 2400ms, slack 5000ms, watch 15000ms
//!   connection
//!     client->server: bulk 268435456; shutdown never; reader never
//!     server->client: no-writes; shutdown never; reader eager
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub const KIB: usize = 1024;
/// The largest single write; a `bulk` step is made of writes this size.
pub const MAX_WRITE: usize = 256 * KIB;
/// Bytes a reader asks for at once when nothing limits it.
pub const EAGER_CHUNK: usize = 64 * KIB;
/// A `bandwidth` reader's reads.
pub const BANDWIDTH_CHUNK: usize = 4 * KIB;
/// A bandwidth-limited reader finishes its flow within about this long; slower limits are raised.
pub const BANDWIDTH_SPAN: Duration = Duration::from_secs(2);
pub const MIN_BANDWIDTH_KIB: u32 = 64;
/// A trickling reader trickles for at most this many bytes, then reads eagerly.
pub const MAX_TRICKLE_BYTES: usize = 64 * KIB;
/// A slicer cuts one flow into at most this many pieces, or this many when it pauses between
/// them: a pause takes at least a millisecond (the timer's granularity), so at most 1000 us is
/// asked for and a flow's pauses add up to half a second at most.
pub const MAX_SLICES: usize = 2_000;
pub const MAX_DELAYED_SLICES: usize = 500;
pub const MAX_SLICER_DELAY_US: u32 = 1_000;
/// The most bytes a `shutdown while-held` flow adds after its steps, and the pieces they go in
/// unless it names its own (no smaller than `MIN_HOLD_PIECE`). Above what a proxy's send buffer
/// (Linux's tcp_wmem: 4 MiB at most) and an unshrunk receiver's receive buffer (tcp_rmem: 6 MiB)
/// queue between them.
pub const HOLD_TAIL: usize = 12 * 1024 * KIB;
pub const HOLD_PIECE: usize = 16 * KIB;
pub const MIN_HOLD_PIECE: usize = 64;
/// Reader stalls stay far below any sane stall timeout (the lab's is 10 s).
pub const MAX_STALL_MS: u32 = 1_500;
/// A `slow` reader's ticks: no shorter than the timer's granularity allows to keep, no longer
/// than a second (a longer gap is a stall, not a slow reader).
pub const SLOW_TICK_MS: std::ops::RangeInclusive<u32> = 10..=1_000;
/// A `slow` reader finishes its flow within this long; slower rates are raised. It is what
/// bounds a case that outlasts a long stall timeout.
pub const SLOW_SPAN: Duration = Duration::from_secs(90);

/// One case: connections opened together through the proxy, each running its own schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub connections: Vec<Connection>,
    pub expect: Expect,
}

/// What a run of a case must show. Generated cases keep the contract; a phase may instead
/// require the proxy to end a pair, which no schedule that keeps the contract can ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The proxy contract (`oracle::judge`): bytes, EOF placement, no reset.
    Contract,
    /// The one flow that writes pushes into a reader that never reads: the proxy must abort
    /// the pair (an EOF or a reset at the writer) no earlier than `earliest_ms` after the case
    /// started, and within `stall_timeout_ms + slack_ms` of the writer's last write that made
    /// progress. The run goes on until `watch_ms` after that progress only to explain a
    /// failure (an abort then fits another stall timeout).
    Aborted {
        stall_timeout_ms: u32,
        earliest_ms: u32,
        slack_ms: u32,
        watch_ms: u32,
    },
    /// A side closes its socket at once (`shutdown close-at-start`): within `ms` of the start,
    /// the proxy must close the other side's connection too, seen there as a reset (ECONNRESET
    /// or EPIPE) on a write or a read.
    ClosedWithin { ms: u32 },
}

impl Expect {
    /// Whether the reference proxy the fuzzer runs beside (its stall timeout far longer than
    /// any case) is held to this expectation: not to an abort timed by a stall timeout.
    pub fn binds_reference(self) -> bool {
        !matches!(self, Expect::Aborted { .. })
    }
}

/// One connection through the proxy: the client's and the server's schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The server writes back the client's bytes (the first of them, as many as its own
    /// schedule writes) rather than bytes of its own: an echo.
    pub echo: bool,
    /// The client's socket is a slow receiver (small SO_RCVBUF and MSS, see `peer::SMALL_MSS`),
    /// as the destination server's sockets always are, so the proxy's writes come back short.
    pub small_client_rcvbuf: bool,
    /// Client to server.
    pub up: Flow,
    /// Server to client.
    pub down: Flow,
}

/// A direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Up,
    Down,
}

impl Dir {
    pub const BOTH: [Dir; 2] = [Dir::Up, Dir::Down];

    /// The direction the other way.
    pub fn reverse(self) -> Dir {
        match self {
            Dir::Up => Dir::Down,
            Dir::Down => Dir::Up,
        }
    }

    pub fn sender(self) -> &'static str {
        match self {
            Dir::Up => "client",
            Dir::Down => "server",
        }
    }

    pub fn receiver(self) -> &'static str {
        match self {
            Dir::Up => "server",
            Dir::Down => "client",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Dir::Up => 0,
            Dir::Down => 1,
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.sender(), self.receiver())
    }
}

/// One direction: what the sender does, when it shuts down its write half, how the receiver
/// reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// In order. At most one `AwaitPeerEof`.
    pub steps: Vec<Step>,
    /// A pause before every write (toxiproxy's latency), in milliseconds.
    pub latency_ms: u32,
    pub slicer: Option<Slicer>,
    pub shutdown: Shutdown,
    pub reader: Reader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// One write of this many bytes (at most `MAX_WRITE`).
    Write(usize),
    /// This many bytes in writes of `MAX_WRITE`: long streams.
    Bulk(usize),
    /// Milliseconds of doing nothing.
    Pause(u32),
    /// Wait until this side has read the other side's EOF.
    AwaitPeerEof,
    /// Wait until this side has read this many bytes in all from the other side (never
    /// generated: the phases' echoes).
    AwaitRead(usize),
}

/// Toxiproxy's slicer: every write goes out in pieces of `size` bytes, `delay_us` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicer {
    pub size: usize,
    pub delay_us: u32,
}

/// When the sender shuts down its write half (`shutdown(SHUT_WR)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Right after its last step.
    AfterLastByte,
    /// This many milliseconds after its last step (toxiproxy's slow close).
    SlowClose(u32),
    /// Before anything else: the direction carries no bytes.
    AtStart,
    /// Never: the write half stays open until the case is over.
    Never,
    /// Before anything else, the sender closes its whole socket: it writes nothing and reads
    /// nothing, and bytes the proxy sends it later are answered with a reset (never generated:
    /// the early-close phase's server).
    CloseAtStart,
    /// After the last step, the moment the proxy holds bytes it cannot write on: the receiver
    /// stops reading once it has read the steps' bytes, the sender adds up to `HOLD_TAIL` bytes
    /// in pieces until the proxy holds some (seen in /proc/net/tcp, see `crate::hold`), shuts
    /// down, and the receiver reads on. A short write just before EOF, made to happen.
    WhileHeld(HeldTail),
    /// After its last step, the sender closes its whole socket with SO_LINGER 0: a bare RST
    /// with no FIN before it, and it reads nothing more. The proxy must pass the end on: its
    /// receiver sees EOF or a reset (bytes still in flight may be lost), and whatever the
    /// other side sends it afterwards may fail with a reset.
    Reset,
}

/// How a `shutdown while-held` flow fills the proxy: `while-held`, or with its own piece size
/// and the proxy's stall timeout, `while-held 4096B stall-timeout 10000ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldTail {
    /// Bytes per write.
    pub piece: usize,
    /// The proxy's stall timeout, when it is short enough to matter: the proxy is then kept
    /// holding for a share of it at most, and a reset after the harness kept it so for most of
    /// it is the harness's lateness (`crate::hold`). None: far longer than any fill.
    pub stall_ms: Option<u32>,
}

impl HeldTail {
    /// What the strategy generates: the reference beside it has a stall timeout of minutes.
    pub const GENERATED: HeldTail = HeldTail {
        piece: HOLD_PIECE,
        stall_ms: None,
    };
}

/// How the receiver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reader {
    pub pace: Pace,
    pub stall: Option<Stall>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As much as is there, `EAGER_CHUNK` at a time.
    Eager,
    /// At most this many bytes per read, no pause.
    Chunks(usize),
    /// Never ahead of this many KiB per second (toxiproxy's bandwidth), `BANDWIDTH_CHUNK` at a
    /// time.
    Bandwidth(u32),
    /// Reads of `size` bytes for the first `bytes` bytes, then eager: a reader that wakes up a
    /// byte at a time.
    Trickle { size: usize, bytes: usize },
    /// At most `bytes` every `every_ms`, for as long as the flow lasts: a reader that is always
    /// making progress, however long it takes. Not raised to finish within `BANDWIDTH_SPAN`, so
    /// a flow can outlast the proxy's stall timeout (a proxy must not abort it).
    Slow { bytes: usize, every_ms: u32 },
    /// Never reads: what the proxy sends this way piles up (never generated: the lazy phases).
    Never,
}

impl Pace {
    /// The most bytes one read asks for.
    pub fn chunk(self, read_so_far: usize) -> usize {
        match self {
            Pace::Eager => EAGER_CHUNK,
            Pace::Chunks(n) => n,
            Pace::Bandwidth(_) => BANDWIDTH_CHUNK,
            Pace::Trickle { size, bytes } if read_so_far < bytes => size,
            Pace::Trickle { .. } => EAGER_CHUNK,
            Pace::Slow { bytes, .. } => bytes,
            Pace::Never => 0,
        }
    }

    /// The rate a reader keeps under, in bytes per second, if it has one.
    pub fn rate(self) -> Option<f64> {
        match self {
            Pace::Bandwidth(kib) => Some(kib as f64 * KIB as f64),
            Pace::Slow { bytes, every_ms } => Some(bytes as f64 * 1000.0 / every_ms as f64),
            Pace::Eager | Pace::Chunks(_) | Pace::Trickle { .. } | Pace::Never => None,
        }
    }
}

/// The reader stops reading for `ms` once it has read `after` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub after: usize,
    pub ms: u32,
}

impl Flow {
    /// `steps` with no timing, shut down after the last byte, read eagerly: what the text form
    /// means where it names nothing else.
    pub fn plain(steps: Vec<Step>) -> Flow {
        Flow {
            steps,
            latency_ms: 0,
            slicer: None,
            shutdown: Shutdown::AfterLastByte,
            reader: Reader {
                pace: Pace::Eager,
                stall: None,
            },
        }
    }

    /// Bytes the sender writes in all.
    pub fn total(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Write(n) | Step::Bulk(n) => *n,
                Step::Pause(_) | Step::AwaitPeerEof | Step::AwaitRead(_) => 0,
            })
            .sum()
    }

    pub fn awaits_peer_eof(&self) -> bool {
        self.steps.contains(&Step::AwaitPeerEof)
    }

    /// The sender shuts down whatever the other side does.
    fn shuts_down_unconditionally(&self) -> bool {
        self.shutdown != Shutdown::Never && !self.awaits_peer_eof()
    }

    /// Makes the flow one a run can carry out in bounded time: no writes after a shutdown at
    /// the start, one await at most, reader stalls within the stream, and slow paces raised so a
    /// flow finishes within seconds.
    pub fn normalize(&mut self) {
        if matches!(self.shutdown, Shutdown::AtStart | Shutdown::CloseAtStart) {
            self.steps.clear();
        }
        let mut seen_await = false;
        self.steps.retain(|s| {
            let again = *s == Step::AwaitPeerEof && seen_await;
            seen_await |= *s == Step::AwaitPeerEof;
            !again
        });
        for s in &mut self.steps {
            match s {
                Step::Write(n) => *n = (*n).clamp(1, MAX_WRITE),
                Step::Bulk(n) => *n = (*n).max(1),
                Step::Pause(_) | Step::AwaitPeerEof | Step::AwaitRead(_) => {}
            }
        }
        let total = self.total();
        if let Some(stall) = &mut self.reader.stall {
            stall.after = stall.after.min(total);
            stall.ms = stall.ms.min(MAX_STALL_MS);
        }
        match &mut self.reader.pace {
            Pace::Eager | Pace::Never => {}
            Pace::Chunks(n) => *n = (*n).clamp(1, EAGER_CHUNK),
            Pace::Bandwidth(kib) => {
                let floor = total.div_ceil(KIB * BANDWIDTH_SPAN.as_secs() as usize) as u32;
                *kib = (*kib).max(floor).max(MIN_BANDWIDTH_KIB);
            }
            Pace::Trickle { size, bytes } => {
                *size = (*size).clamp(1, 64);
                *bytes = (*bytes).min(MAX_TRICKLE_BYTES);
            }
            Pace::Slow { bytes, every_ms } => {
                *every_ms = (*every_ms).clamp(*SLOW_TICK_MS.start(), *SLOW_TICK_MS.end());
                let ticks = (SLOW_SPAN.as_millis() as usize / *every_ms as usize).max(1);
                *bytes = (*bytes).max(total.div_ceil(ticks)).clamp(1, EAGER_CHUNK);
            }
        }
        if let Some(s) = &mut self.slicer {
            s.delay_us = s.delay_us.min(MAX_SLICER_DELAY_US);
            let most = if s.delay_us > 0 {
                MAX_DELAYED_SLICES
            } else {
                MAX_SLICES
            };
            s.size = s.size.max(total.div_ceil(most)).max(1);
        }
    }
}

impl Connection {
    /// Normalizes both flows and removes the deadlocks a schedule could describe: a side that
    /// awaits the other's EOF needs the other to shut down whatever happens.
    pub fn normalize(&mut self) {
        self.up.normalize();
        self.down.normalize();
        for (waiter, other) in [(Dir::Up, Dir::Down), (Dir::Down, Dir::Up)] {
            if !self.flow(waiter).awaits_peer_eof() || self.flow(other).shuts_down_unconditionally()
            {
                continue;
            }
            let other = self.flow_mut(other);
            other.steps.retain(|s| *s != Step::AwaitPeerEof);
            if other.shutdown == Shutdown::Never {
                other.shutdown = Shutdown::AfterLastByte;
            }
        }
    }

    /// The sender of direction `dir` ends it with a reset (`shutdown reset-after-last-byte`).
    pub fn resets(&self, dir: Dir) -> bool {
        self.flow(dir).shutdown == Shutdown::Reset
    }

    /// A side of this connection resets.
    pub fn has_reset(&self) -> bool {
        Dir::BOTH.into_iter().any(|d| self.resets(d))
    }

    pub fn flow(&self, dir: Dir) -> &Flow {
        match dir {
            Dir::Up => &self.up,
            Dir::Down => &self.down,
        }
    }

    fn flow_mut(&mut self, dir: Dir) -> &mut Flow {
        match dir {
            Dir::Up => &mut self.up,
            Dir::Down => &mut self.down,
        }
    }
}

impl Case {
    /// Bytes written in all directions of all connections.
    pub fn total_bytes(&self) -> usize {
        self.connections
            .iter()
            .map(|c| c.up.total() + c.down.total())
            .sum()
    }
}

// ---- the text form ----

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "case")?;
        if self.expect != Expect::Contract {
            writeln!(f, "  expect {}", self.expect)?;
        }
        for c in &self.connections {
            f.write_str("  connection")?;
            if c.small_client_rcvbuf {
                f.write_str(" client-rcvbuf=small")?;
            }
            if c.echo {
                f.write_str(" echo")?;
            }
            writeln!(f)?;
            writeln!(f, "    {}: {}", Dir::Up, c.up)?;
            writeln!(f, "    {}: {}", Dir::Down, c.down)?;
        }
        Ok(())
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            f.write_str("no-writes")?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match s {
                Step::Write(n) => write!(f, "write {n}")?,
                Step::Bulk(n) => write!(f, "bulk {n}")?,
                Step::Pause(ms) => write!(f, "pause {ms}ms")?,
                Step::AwaitPeerEof => f.write_str("await-peer-eof")?,
                Step::AwaitRead(n) => write!(f, "await-read {n}")?,
            }
        }
        if self.latency_ms > 0 {
            write!(f, "; latency {}ms", self.latency_ms)?;
        }
        if let Some(s) = self.slicer {
            write!(f, "; slicer {}B/{}us", s.size, s.delay_us)?;
        }
        match self.shutdown {
            Shutdown::AfterLastByte => f.write_str("; shutdown after-last-byte")?,
            Shutdown::SlowClose(ms) => write!(f, "; shutdown {ms}ms-after-last-byte")?,
            Shutdown::AtStart => f.write_str("; shutdown at-start")?,
            Shutdown::Never => f.write_str("; shutdown never")?,
            Shutdown::WhileHeld(h) => {
                f.write_str("; shutdown while-held")?;
                if h.piece != HOLD_PIECE {
                    write!(f, " {}B", h.piece)?;
                }
                if let Some(ms) = h.stall_ms {
                    write!(f, " stall-timeout {ms}ms")?;
                }
            }
            Shutdown::CloseAtStart => f.write_str("; shutdown close-at-start")?,
            Shutdown::Reset => f.write_str("; shutdown reset-after-last-byte")?,
        }
        match self.reader.pace {
            Pace::Eager => f.write_str("; reader eager")?,
            Pace::Chunks(n) => write!(f, "; reader chunks {n}B")?,
            Pace::Bandwidth(kib) => write!(f, "; reader bandwidth {kib}KiB/s")?,
            Pace::Trickle { size, bytes } => write!(f, "; reader trickle {size}B for {bytes}B")?,
            Pace::Slow { bytes, every_ms } => {
                write!(f, "; reader slow {bytes}B every {every_ms}ms")?
            }
            Pace::Never => f.write_str("; reader never")?,
        }
        if let Some(s) = self.reader.stall {
            write!(f, ", stall {}ms after {}B", s.ms, s.after)?;
        }
        Ok(())
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Contract => f.write_str("contract"),
            Expect::Aborted {
                stall_timeout_ms,
                earliest_ms,
                slack_ms,
                watch_ms,
            } => write!(
                f,
                "aborted: stall-timeout {stall_timeout_ms}ms, earliest {earliest_ms}ms, slack {slack_ms}ms, watch {watch_ms}ms"
            ),
            Expect::ClosedWithin { ms } => write!(f, "closed within {ms}ms"),
        }
    }
}

impl FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Expect, String> {
        let s = s.trim();
        if s == "contract" {
            return Ok(Expect::Contract);
        }
        if let Some(ms) = s.strip_prefix("closed within ") {
            return Ok(Expect::ClosedWithin {
                ms: millis(ms.trim())?,
            });
        }
        let Some(rest) = s.strip_prefix("aborted:") else {
            return Err(format!("unknown expectation `{s}`"));
        };
        let mut values = [None; 4];
        let names = ["stall-timeout", "earliest", "slack", "watch"];
        for item in rest.split(',').map(str::trim) {
            let (name, value) = item
                .split_once(' ')
                .ok_or_else(|| format!("expected `NAME 1000ms`, got `{item}`"))?;
            let i = names
                .iter()
                .position(|n| *n == name)
                .ok_or_else(|| format!("unknown item `{name}` of `expect aborted:`"))?;
            values[i] = Some(millis(value.trim())?);
        }
        match values {
            [
                Some(stall_timeout_ms),
                Some(earliest_ms),
                Some(slack_ms),
                Some(watch_ms),
            ] => Ok(Expect::Aborted {
                stall_timeout_ms,
                earliest_ms,
                slack_ms,
                watch_ms,
            }),
            _ => Err(format!("`expect aborted:` needs {}", names.join(", "))),
        }
    }
}

/// A schedule file that does not parse: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Every case in a schedule file, in order. `#` starts a comment; indentation is free.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, ParseError> {
    let mut cases: Vec<Case> = Vec::new();
    // Flows of the connection being read: up, then down.
    let mut pending: Option<(bool, bool, Option<Flow>, Option<Flow>)> = None;
    let err = |line: usize, message: String| ParseError { line, message };
    let finish = |cases: &mut Vec<Case>,
                  pending: &mut Option<(bool, bool, Option<Flow>, Option<Flow>)>,
                  line: usize|
     -> Result<(), ParseError> {
        if let Some((small, echo, up, down)) = pending.take() {
            let (Some(up), Some(down)) = (up, down) else {
                return Err(err(
                    line,
                    "a connection needs a client->server and a server->client line".into(),
                ));
            };
            let case = cases
                .last_mut()
                .expect("a connection is read inside a case");
            let mut c = Connection {
                echo,
                small_client_rcvbuf: small,
                up,
                down,
            };
            c.normalize();
            case.connections.push(c);
        }
        Ok(())
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line == "case" {
            finish(&mut cases, &mut pending, n)?;
            if cases.last().is_some_and(|c| c.connections.is_empty()) {
                return Err(err(n, "a case needs at least one connection".into()));
            }
            cases.push(Case {
                connections: vec![],
                expect: Expect::Contract,
            });
        } else if let Some(rest) = line.strip_prefix("expect ") {
            let Some(case) = cases.last_mut() else {
                return Err(err(n, "`expect` before any `case`".into()));
            };
            case.expect = rest.parse().map_err(|m| err(n, m))?;
        } else if let Some(rest) = line.strip_prefix("connection") {
            if cases.is_empty() {
                return Err(err(n, "`connection` before any `case`".into()));
            }
            finish(&mut cases, &mut pending, n)?;
            let (mut small, mut echo) = (false, false);
            for option in rest.split_whitespace() {
                match option {
                    "client-rcvbuf=small" => small = true,
                    "echo" => echo = true,
                    other => return Err(err(n, format!("unknown connection option `{other}`"))),
                }
            }
            pending = Some((small, echo, None, None));
        } else if let Some((name, rest)) = line.split_once(':') {
            let Some(p) = pending.as_mut() else {
                return Err(err(n, "a flow line before any `connection`".into()));
            };
            let flow: Flow = rest.parse().map_err(|m| err(n, m))?;
            let slot = match name.trim() {
                "client->server" => &mut p.2,
                "server->client" => &mut p.3,
                other => {
                    return Err(err(
                        n,
                        format!("expected client->server or server->client, got `{other}`"),
                    ));
                }
            };
            if slot.replace(flow).is_some() {
                return Err(err(n, format!("{} given twice", name.trim())));
            }
        } else {
            return Err(err(n, format!("cannot read `{line}`")));
        }
    }
    let end = text.lines().count().max(1);
    finish(&mut cases, &mut pending, end)?;
    if cases.last().is_some_and(|c| c.connections.is_empty()) {
        return Err(err(end, "a case needs at least one connection".into()));
    }
    Ok(cases)
}

fn number<T: FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("expected {what}, got `{s}`"))
}

/// `120ms` -> 120.
fn millis(s: &str) -> Result<u32, String> {
    number(
        s.strip_suffix("ms")
            .ok_or_else(|| format!("expected milliseconds like `120ms`, got `{s}`"))?,
        "milliseconds",
    )
}

/// `4096B` -> 4096.
fn bytes(s: &str) -> Result<usize, String> {
    number(
        s.strip_suffix('B')
            .ok_or_else(|| format!("expected bytes like `4096B`, got `{s}`"))?,
        "a byte count",
    )
}

impl FromStr for Flow {
    type Err = String;

    fn from_str(s: &str) -> Result<Flow, String> {
        let mut items = s.split(';').map(str::trim);
        let steps_text = items.next().unwrap_or("");
        let mut steps = Vec::new();
        if steps_text != "no-writes" {
            for step in steps_text.split(',').map(str::trim) {
                let words: Vec<&str> = step.split_whitespace().collect();
                steps.push(match words.as_slice() {
                    ["write", n] => Step::Write(number(n, "a byte count")?),
                    ["bulk", n] => Step::Bulk(number(n, "a byte count")?),
                    ["pause", ms] => Step::Pause(millis(ms)?),
                    ["await-peer-eof"] => Step::AwaitPeerEof,
                    ["await-read", n] => Step::AwaitRead(number(n, "a byte count")?),
                    _ => return Err(format!("unknown step `{step}`")),
                });
            }
        }
        let mut flow = Flow::plain(steps);
        let (mut saw_shutdown, mut saw_reader) = (false, false);
        for item in items {
            let words: Vec<&str> = item.split_whitespace().collect();
            match words.as_slice() {
                ["latency", ms] => flow.latency_ms = millis(ms)?,
                ["slicer", spec] => {
                    let (size, delay) = spec
                        .split_once('/')
                        .ok_or_else(|| format!("expected `slicer 64B/200us`, got `{item}`"))?;
                    let delay = delay
                        .strip_suffix("us")
                        .ok_or_else(|| format!("expected microseconds like `200us` in `{item}`"))?;
                    flow.slicer = Some(Slicer {
                        size: bytes(size)?,
                        delay_us: number(delay, "microseconds")?,
                    });
                }
                ["shutdown", "while-held", rest @ ..] => {
                    saw_shutdown = true;
                    flow.shutdown = Shutdown::WhileHeld(parse_held(rest)?);
                }
                ["shutdown", when] => {
                    saw_shutdown = true;
                    flow.shutdown = match *when {
                        "after-last-byte" => Shutdown::AfterLastByte,
                        "at-start" => Shutdown::AtStart,
                        "never" => Shutdown::Never,
                        "close-at-start" => Shutdown::CloseAtStart,
                        "reset-after-last-byte" => Shutdown::Reset,
                        slow => match slow.strip_suffix("-after-last-byte") {
                            Some(ms) => Shutdown::SlowClose(millis(ms)?),
                            None => return Err(format!("unknown shutdown `{slow}`")),
                        },
                    };
                }
                ["reader", rest @ ..] => {
                    saw_reader = true;
                    flow.reader = parse_reader(&rest.join(" "))?;
                }
                _ => return Err(format!("unknown item `{item}`")),
            }
        }
        if !saw_shutdown || !saw_reader {
            return Err("a flow needs a `shutdown ...` and a `reader ...` item".into());
        }
        Ok(flow)
    }
}

/// The words after `while-held`: a piece size, a stall timeout, both or neither.
fn parse_held(words: &[&str]) -> Result<HeldTail, String> {
    let mut held = HeldTail::GENERATED;
    let mut words = words.iter();
    while let Some(w) = words.next() {
        match *w {
            "stall-timeout" => {
                let ms = words
                    .next()
                    .ok_or("expected `stall-timeout 10000ms` after `while-held`")?;
                held.stall_ms = Some(millis(ms)?);
            }
            piece => held.piece = bytes(piece)?.max(MIN_HOLD_PIECE),
        }
    }
    Ok(held)
}

fn parse_reader(s: &str) -> Result<Reader, String> {
    let mut parts = s.split(',').map(str::trim);
    let pace_words: Vec<&str> = parts.next().unwrap_or("").split_whitespace().collect();
    let pace = match pace_words.as_slice() {
        ["eager"] => Pace::Eager,
        ["never"] => Pace::Never,
        ["chunks", n] => Pace::Chunks(bytes(n)?),
        ["bandwidth", rate] => Pace::Bandwidth(number(
            rate.strip_suffix("KiB/s")
                .ok_or_else(|| format!("expected a rate like `512KiB/s`, got `{rate}`"))?,
            "KiB per second",
        )?),
        ["trickle", size, "for", n] => Pace::Trickle {
            size: bytes(size)?,
            bytes: bytes(n)?,
        },
        ["slow", n, "every", ms] => Pace::Slow {
            bytes: bytes(n)?,
            every_ms: millis(ms)?,
        },
        _ => return Err(format!("unknown reader `{s}`")),
    };
    let stall = match parts.next() {
        None => None,
        Some(stall) => match stall.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["stall", ms, "after", n] => Some(Stall {
                ms: millis(ms)?,
                after: bytes(n)?,
            }),
            _ => return Err(format!("unknown reader option `{stall}`")),
        },
    };
    if let Some(extra) = parts.next() {
        return Err(format!("unknown reader option `{extra}`"));
    }
    Ok(Reader { pace, stall })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(text: &str) -> Flow {
        text.parse().unwrap()
    }

    // ---- the text form ----

    #[test]
    fn the_documented_example_parses() {
        let text = "case\n  connection client-rcvbuf=small\n    client->server: write 12, pause 120ms, await-peer-eof, bulk 1000004; latency 10ms; shutdown after-last-byte; reader eager\n    server->client: no-writes; shutdown at-start; reader bandwidth 512KiB/s, stall 800ms after 4096B\n";
        let cases = parse_cases(text).unwrap();
        assert_eq!(cases.len(), 1);
        let c = &cases[0].connections[0];
        assert!(c.small_client_rcvbuf);
        assert_eq!(
            c.up.steps,
            [
                Step::Write(12),
                Step::Pause(120),
                Step::AwaitPeerEof,
                Step::Bulk(1_000_004)
            ]
        );
        assert_eq!(c.up.latency_ms, 10);
        assert_eq!(c.down.shutdown, Shutdown::AtStart);
        // The stall point lies within the flow, which carries nothing.
        assert_eq!(c.down.reader.stall, Some(Stall { after: 0, ms: 800 }));
        assert_eq!(
            cases[0].to_string(),
            text.replace("after 4096B", "after 0B")
        );
    }

    #[test]
    fn every_item_prints_as_it_parses() {
        for text in [
            "write 1, bulk 300000; slicer 64B/200us; shutdown 250ms-after-last-byte; reader chunks 512B",
            "pause 300ms, write 7; latency 50ms; shutdown never; reader trickle 1B for 4096B, stall 100ms after 7B",
            "no-writes; shutdown after-last-byte; reader bandwidth 64KiB/s",
            "write 5; shutdown while-held; reader eager",
            "no-writes; shutdown while-held 4096B stall-timeout 10000ms; reader eager",
            "no-writes; shutdown while-held stall-timeout 2000ms; reader eager",
            "write 16, await-read 1; shutdown reset-after-last-byte; reader eager",
        ] {
            assert_eq!(flow(text).to_string(), text);
        }
    }

    #[test]
    fn comments_and_several_cases_are_read() {
        let text = "# found by: flip-byte\ncase\n connection\n  client->server: write 3; shutdown after-last-byte; reader eager # three bytes\n  server->client: no-writes; shutdown never; reader eager\n\ncase\n connection\n  client->server: no-writes; shutdown at-start; reader eager\n  server->client: no-writes; shutdown at-start; reader eager\n";
        let cases = parse_cases(text).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].connections[0].up.steps, [Step::Write(3)]);
    }

    #[test]
    fn bad_text_names_its_line() {
        for (text, line, want) in [
            ("connection\n", 1, "before any `case`"),
            ("case\n", 1, "at least one connection"),
            (
                "case\n connection\n  client->server: write x; shutdown never; reader eager\n",
                3,
                "expected a byte count",
            ),
            (
                "case\n connection\n  client->server: no-writes; shutdown never; reader eager\n",
                3,
                "needs a client->server and a server->client",
            ),
            (
                "case\n connection\n  client->server: no-writes; reader eager\n",
                3,
                "needs a `shutdown",
            ),
            ("case\n bogus\n", 2, "cannot read"),
        ] {
            let e = parse_cases(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_phases_words_print_as_they_parse() {
        for text in [
            "case\n  expect aborted: stall-timeout 3000ms, earliest 2400ms, slack 5000ms, watch 15000ms\n  connection client-rcvbuf=small echo\n    client->server: write 4, await-read 4; shutdown never; reader never\n    server->client: await-read 4, write 4; shutdown never; reader eager\n",
            "case\n  expect closed within 15000ms\n  connection\n    client->server: write 1, pause 1000ms; shutdown never; reader never\n    server->client: no-writes; shutdown close-at-start; reader eager\n",
        ] {
            let cases = parse_cases(text).unwrap();
            assert_eq!(cases[0].to_string(), text);
        }
        let e = parse_cases("case\n expect aborted: stall-timeout 3000ms\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.message
                .contains("needs stall-timeout, earliest, slack, watch"),
            "{e}"
        );
        assert!(
            parse_cases("expect closed within 1ms\n")
                .unwrap_err()
                .message
                .contains("before any `case`")
        );
    }

    // ---- normalization ----

    #[test]
    fn a_shutdown_at_start_writes_nothing() {
        let mut f = flow("write 5, await-peer-eof; shutdown at-start; reader eager");
        f.normalize();
        assert!(f.steps.is_empty());
    }

    #[test]
    fn slow_paces_are_raised_so_a_flow_ends_within_seconds() {
        let mut f = flow(
            "bulk 1500000; slicer 1B/500us; shutdown after-last-byte; reader bandwidth 64KiB/s, stall 9000ms after 2000000B",
        );
        f.normalize();
        let Pace::Bandwidth(kib) = f.reader.pace else {
            panic!()
        };
        assert!(1_500_000 / (kib as usize * KIB) <= 2, "{kib} KiB/s");
        let s = f.slicer.unwrap();
        assert_eq!(s.delay_us, 500);
        assert!(1_500_000usize.div_ceil(s.size) <= MAX_DELAYED_SLICES);
        assert_eq!(
            f.reader.stall,
            Some(Stall {
                after: 1_500_000,
                ms: MAX_STALL_MS
            })
        );
    }

    #[test]
    fn two_sides_never_wait_for_each_other() {
        let text = "case\n connection\n  client->server: await-peer-eof, write 1; shutdown after-last-byte; reader eager\n  server->client: await-peer-eof; shutdown never; reader eager\n";
        let c = &parse_cases(text).unwrap()[0].connections[0];
        assert!(c.up.awaits_peer_eof());
        assert!(!c.down.awaits_peer_eof());
        assert_eq!(c.down.shutdown, Shutdown::AfterLastByte);
    }
}
