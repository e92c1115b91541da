//! Every parameter of every phase, in one place.

use std::time::Duration;

use crate::peer::Pacing;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Echo phases: messages of this size, each echoed before the next is sent.
pub const ECHO_MESSAGES: usize = 10;
pub const ECHO_MESSAGE_LEN: usize = 4;
pub const CHAIN_SHORT: usize = 2;
pub const CHAIN_LONG: usize = 20;
/// Any echo through the proxy (one message, a whole chain of hops) arrives within this.
pub const ECHO_DEADLINE: Duration = secs(10);
/// A client the proxy closed before its destination connection was seen: how long that
/// connection's tag may still take to be read, should the proxy have made it just before.
pub const TAG_GRACE: Duration = secs(1);
/// A flow phase's whole schedule ends within this, plus twice the stall timeout, whatever
/// moves: a bound on the harness, far beyond what any of them takes.
pub const FLOWS_BACKSTOP: Duration = secs(60);

/// Bulk: seeded random bytes through the long chain, every reader slow on purpose so the
/// proxy's writes come back short.
pub const BULK_BYTES: usize = 2 * MIB;
pub const BULK_WRITE_PIECE: usize = 64 * KIB;
pub const SLOW_READER: Pacing = Pacing {
    chunk: 4 * KIB,
    pause: millis(1),
};
pub const BULK_DEADLINE: Duration = secs(30);

/// The blocked connection of "Mix of blocked and normal" stops writing after this much, and
/// is replaced at most this many times as the proxy aborts it.
pub const BLOCKED_WRITE_LIMIT: usize = 256 * MIB;
pub const BLOCKED_ROUNDS: usize = 100;

/// One-way shutdown: what the client sends, and how long the server waits after EOF.
pub const ONE_WAY_REQUEST: usize = 16;
pub const ONE_WAY_PAUSE: Duration = secs(1);

/// Early close: the client writes a byte this often, and the proxy must have closed its
/// connection within the limit.
pub const EARLY_CLOSE_EVERY: Duration = secs(1);
pub const EARLY_CLOSE_LIMIT: Duration = secs(15);

/// Active client: a small echo this often, for the stall timeout plus `ACTIVE_EXTRA`.
pub const ACTIVE_EVERY: Duration = secs(2);
pub const ACTIVE_EXTRA: Duration = secs(4);
pub const ACTIVE_MESSAGE_LEN: usize = 16;

/// Lazy peers: a close before this fraction of the stall timeout is too early; one later than
/// the stall timeout plus `LAZY_SLACK` after the writer's last progress is too late.
pub const LAZY_EARLIEST: f64 = 0.8;
pub const LAZY_SLACK: Duration = secs(5);
/// A proxy that buffers without limit would take everything; stop feeding it after this.
pub const LAZY_WRITE_LIMIT: usize = 256 * MIB;
pub const LAZY_WRITE_PIECE: usize = 64 * KIB;

/// Slow reader: the reader takes at most `SLOW_READ_CHUNK` every `SLOW_READ_EVERY` for the
/// stall timeout plus `SLOW_EXTRA` while its peer writes as fast as the proxy takes bytes
/// (at most `SLOW_WRITE_LIMIT`), in blocks of `SLOW_BLOCK`. Not scaled: the phase is about
/// the proxy's timer, and a loaded host only makes the reader slower, never stop.
/// 64 KiB/s: a third of a 4 MiB send buffer (tcp_wmem's autotuning limit) then takes about 21 s
/// to drain, twice the default stall timeout, so a timer restarted only by the proxy's writes
/// fires at the first full queue; at 128 KiB/s it took 10.4 s, and such a timer outlived the
/// first stretch as often as not and fired only at 19 s.
pub const SLOW_READ_CHUNK: usize = 16 * KIB;
pub const SLOW_READ_EVERY: Duration = millis(250);

/// The slow reader's piece for a stall timeout of `stall`: `SLOW_READ_CHUNK`, and twice that
/// under `SLOW_FASTER_BELOW`. At 64 KiB/s the reader's kernel reopens its receive window to the
/// proxy too seldom for a short timeout: with 1.5 s the reference, which counts the window's
/// movement as progress, saw none for longer than that and aborted, 6 runs of 6, splice and
/// copy alike (at 3 s and 5 s it passed). At 128 KiB/s a third of the send buffer still takes
/// about 10 s to drain, far beyond such a timeout, so both timer bugs are still caught.
pub fn slow_read_chunk(stall: Duration) -> usize {
    if stall < SLOW_FASTER_BELOW {
        2 * SLOW_READ_CHUNK
    } else {
        SLOW_READ_CHUNK
    }
}
pub const SLOW_FASTER_BELOW: Duration = secs(3);
pub const SLOW_EXTRA: Duration = secs(4);
/// A slow-reader try whose pair ended early while the reader had woken this share of the stall
/// timeout late (a starved harness) is tried again on a fresh pair, at most `SLOW_ATTEMPTS` in
/// all, and is inconclusive if every try was so.
///
/// A late read delays the next reopening of the window by as much, and the proxy sees no
/// progress between reopenings: they came every 0.74-0.99 s at 128 KiB/s, and every 0.2-1.32 s
/// at 64 KiB/s, with the reference in between sampling its send queue (2026-12-07). So with a
/// stall timeout of 1.5 s, 0.4 of it (0.6 s) late plus a 0.75 s wait plus a sample (0.15 s)
/// reaches the timeout, and a correct proxy may abort a try that is judged: the reference
/// failed it 2 times in 7 under two CPU hogs. A quarter leaves 0.2 s at 1.5 s and 0.7 s at 3 s.
pub const SLOW_LATE_SHARE: f64 = 0.25;
pub const SLOW_ATTEMPTS: usize = 3;
pub const SLOW_WRITE_LIMIT: usize = 64 * MIB;
pub const SLOW_BLOCK: usize = 64 * KIB;

/// Idle client: silent for the stall timeout plus this, then an echo.
pub const IDLE_EXTRA: Duration = secs(2);

/// Flush before shutdown: this many connections at once, of `FLUSH_BASE + k * FLUSH_STEP`
/// bytes, so their tails reach the proxy at different points of its drain cycle, read by
/// slow receivers (the bulk phase's 4 KiB a millisecond).
pub const FLUSH_CONNECTIONS: usize = 8;
pub const FLUSH_BASE: usize = 5_000_000;
pub const FLUSH_STEP: usize = 16_000;
/// The base size is above what a proxy's kernel send buffer can queue (tcp_wmem's 4 MiB
/// at most; 1.8 MiB seen even toward a 1000-byte-MSS receiver), so the proxy's own buffer
/// is full, and its writes short, when the EOF arrives.
pub const FLUSH_READ_KIB_PER_S: usize =
    SLOW_READER.chunk / KIB * 1000 / SLOW_READER.pause.as_millis() as usize;

/// Half-open trickle: the client's request, and the server's pace and span after its EOF.
pub const TRICKLE_REQUEST: usize = 16;
pub const TRICKLE_EVERY: Duration = secs(2);
pub const TRICKLE_EXTRA: Duration = secs(2);

/// Reset by destination / by client: the resetting side sends `RESET_BYTES`, and resets once
/// the other side has read them all and answered with a byte. The other side must see EOF or a
/// reset within `RESET_END_WITHIN`; it then keeps its side open for `RESET_HOLD` (the proxy's
/// CPU over the phase shows a spin on the dead socket) and shuts down, and the proxy must have
/// closed both of the pair's sockets within `RESET_CLOSED_WITHIN`. Above `RESET_CPU_LIMIT` of a
/// core over the phase is a warning.
pub const RESET_BYTES: usize = 16;
pub const RESET_END_WITHIN: Duration = secs(5);
pub const RESET_HOLD: Duration = secs(1);
pub const RESET_CLOSED_WITHIN: Duration = secs(5);
pub const RESET_CPU_LIMIT: f64 = 0.1;

/// A flow phase's case is run at most this many times in all while a run cannot be judged
/// (`crate::fuzz::oracle::Again`: the flush's held tail, when the harness was late).
pub const FLOWS_ATTEMPTS: usize = 3;

/// Destination refused: the client must be closed within this.
pub const REFUSED_CLOSE_WITHIN: Duration = secs(5);

/// Slow destination connect: an established pair echoes `SLOW_CONNECT_MESSAGE` bytes every
/// `SLOW_CONNECT_EVERY`, each round trip within `SLOW_CONNECT_RTT`, for `SLOW_CONNECT_SPAN`
/// while the destination's accept queue is full (its backlog shrunk to `SLOW_CONNECT_BACKLOG`)
/// and the connects the proxy makes for `SLOW_CONNECT_CLIENTS` new clients hang; once the
/// destination accepts again they are served or closed within `SLOW_CONNECT_SERVED_WITHIN`.
/// The span ends before the proxy's third SYN (7 s after its first), which then gets in.
pub const SLOW_CONNECT_MESSAGE: usize = 16;
pub const SLOW_CONNECT_EVERY: Duration = millis(100);
/// A proxy whose connect blocks its loop freezes until the destination accepts again and its
/// SYN is sent once more (at 3 s, then 7 s): over `SLOW_CONNECT_SPAN`. A round trip a loaded
/// host delays stays well under this.
pub const SLOW_CONNECT_RTT: Duration = millis(2500);
pub const SLOW_CONNECT_SPAN: Duration = secs(4);
pub const SLOW_CONNECT_CLIENTS: usize = 3;
pub const SLOW_CONNECT_SERVED_WITHIN: Duration = secs(15);
pub const SLOW_CONNECT_BACKLOG: i32 = 1;
/// The destination's backlog again afterwards: the one `testkit::peer` listens with.
pub const SLOW_CONNECT_USUAL_BACKLOG: i32 = 4096;
/// A harness connect to the full queue not answered within this (a loopback handshake takes
/// microseconds) and found in SYN-SENT has had its SYN dropped; the queue is full after at
/// most this many.
pub const SLOW_CONNECT_PROBE: Duration = millis(250);
pub const SLOW_CONNECT_FILL_MOST: usize = 8;

/// Descriptor leaks: short connections in all, at most this many at a time, each echoing
/// this much; afterwards the group may hold a few more descriptors than at the start.
pub const LEAK_CONNECTIONS: usize = 2_000;
pub const LEAK_CONCURRENCY: usize = 200;
pub const LEAK_ECHO: usize = 1024;
pub const LEAK_FD_SLACK: usize = 5;
/// A connection refused or reset before any echo (the kernel turns a burst away from a
/// full listen queue before the proxy sees it) is tried at most this many times in all.
pub const LEAK_ATTEMPTS: usize = 3;
/// Echo deadlines one try may take, each granted only while the request is newly taken in.
pub const LEAK_ECHO_WINDOWS: usize = 3;
/// Connections turned away on every try that still leave the phase judged on leaks alone,
/// while the kernel's listen queues overflow: half of them, since a server with a short listen
/// queue that accepts slowly loses far more than a few percent on a loaded host.
pub const LEAK_UNSERVED_LIMIT: usize = LEAK_CONNECTIONS / 2;
/// How long the proxy has to close what it should after the last connection ends.
pub const LEAK_SETTLE: Duration = secs(5);

/// Descriptor exhaustion: the proxy starts with RLIMIT_NOFILE `EXHAUSTION_NOFILE`; up to
/// `EXHAUSTION_CLIENTS` clients connect one at a time until one waits unaccepted, and hold
/// `EXHAUSTION_HOLD`, then close; a new
/// client must then echo within `EXHAUSTION_RECOVER_WITHIN`, trying again every
/// `EXHAUSTION_RETRY_EVERY` while the proxy turns it away. Above `EXHAUSTION_CPU_LIMIT` of a
/// core during the hold, more than over `EXHAUSTION_IDLE` before the crowd, is a warning.
pub const EXHAUSTION_NOFILE: u64 = 64;
pub const EXHAUSTION_CLIENTS: usize = 80;
pub const EXHAUSTION_HOLD: Duration = secs(2);
pub const EXHAUSTION_RECOVER_WITHIN: Duration = secs(5);
pub const EXHAUSTION_RETRY_EVERY: Duration = millis(50);
pub const EXHAUSTION_CPU_LIMIT: f64 = 0.5;
pub const EXHAUSTION_IDLE: Duration = millis(500);
/// A crowd client waiting this long in the listen queue of a proxy with descriptors to spare
/// ends the phase as skipped: the proxy takes no more pairs (a slow accept loop keeps clients
/// queued for milliseconds). Where sock_diag cannot tell whether a client waits in the queue,
/// one neither echoed nor closed this long is taken to. The reference's skips once blamed on a
/// loaded host had another cause (docs/reliability.md); the margin stays wide, since a skip where
/// the phase passes costs a grader a rerun and the wait costs only pair-limited proxies.
pub const EXHAUSTION_QUEUE_FULL_AFTER: Duration = secs(5);
/// After the hold, the proxy gets one more descriptor; the client waiting in its queue is given
/// this long to be turned away.
pub const EXHAUSTION_ONE_FREE: Duration = secs(2);
/// How often a crowd client not yet settled is looked at again.
pub const EXHAUSTION_POLL: Duration = millis(20);

/// Many connections: open at once, each then echoing.
pub const MANY_CONNECTIONS: usize = 1_500;
pub const MANY_DEADLINE: Duration = secs(60);

/// Connection burst: `BURST_CONNECTS` connects started in `BURST_WAVES` waves
/// `BURST_WAVE_EVERY` apart (within about 100 ms). One whose SYN the kernel sent again (after
/// 1 s) was held up by the proxy's full accept queue; more than `BURST_SLOW_SHARE` of them is a
/// warning. A connect still pending `BURST_WAIT` after the last wave counts as held up. Not
/// scaled: the kernel's retransmission timer, not the host's speed, holds a connect up.
pub const BURST_CONNECTS: usize = 500;
pub const BURST_WAVES: usize = 10;
pub const BURST_WAVE_EVERY: Duration = millis(10);
pub const BURST_SLOW_SHARE: f64 = 0.05;
pub const BURST_WAIT: Duration = secs(2);

/// Bounded memory: growth of the group's resident memory allowed while a lazy client pushes.
pub const MEMORY_GROWTH_LIMIT: u64 = 64 * MIB as u64;
pub const MEMORY_SAMPLE_EVERY: Duration = millis(100);

/// CPU while idle: this many idle pairs, watched this long; above the share is a warning.
pub const IDLE_CPU_PAIRS: usize = 10;
pub const IDLE_CPU_WINDOW: Duration = secs(3);
pub const IDLE_CPU_LIMIT: f64 = 0.10;

/// IPv6 destination: one message of this many bytes echoed through [::1].
pub const IPV6_ECHO: usize = 64;

/// Small-write latency: rounds of a request in two pieces of `SMALL_WRITE_PIECE` bytes, the
/// second sent once the first is at the destination, answered with one byte. The second piece
/// taking longer than the first by a median above `SMALL_WRITE_WARN_MEDIAN` is Nagle's wait for
/// a delayed ACK (40 ms and more on Linux); without it the two take alike. Not scaled: it
/// measures the kernel's timer, and load or a slow network lengthen either piece alike.
pub const SMALL_WRITE_ROUNDS: usize = 30;
pub const SMALL_WRITE_PIECE: usize = 16;
pub const SMALL_WRITE_WARN_MEDIAN: Duration = millis(20);

/// The proxy has this long to start listening: generous, since start-up is not graded (a
/// JVM took 7-9 s as one of 17 starting at once) and no phase's clock runs until it listens.
pub const READY_WITHIN: Duration = secs(30);
