//! The points where a proxy can depart from the contract: the listener, the pair and the relay ask
//! a [`Hooks`] at each, and every default is the contract's answer.
//!
//! The reference proxy is [`Reference`], which overrides nothing. The `fixtures` crate's broken
//! proxies are this same proxy with one hook overridden each (a classic bug), so the harness's
//! control fixture runs the very code it vouches for; most of them are a [`Tweak`], a value of
//! constant answers. The server, the pair and the relay are generic over the hooks: for
//! [`Reference`] every call is a constant the compiler folds away, and the hooks that need bytes
//! in user space ([`Hooks::mangle`], [`Hooks::write`], [`Hooks::consumed`]) are asked only by
//! hooks whose [`Hooks::needs_copy`] says so, so splicing pays nothing for them.

use std::fmt;
use std::io::{self, Write as _};
use std::time::Duration;

use tokio::net::TcpStream;

/// The listen(2) backlog: a burst of clients waits in the kernel's queue until accepted instead
/// of being dropped.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A direction of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    Up,
    /// Server to client.
    Down,
}

impl Dir {
    /// The name logs give it.
    pub fn label(self) -> &'static str {
        match self {
            Dir::Up => "client->server",
            Dir::Down => "server->client",
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a direction does once its source has sent EOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEof {
    /// The contract: write out what is buffered, then shutdown(SHUT_WR) the destination.
    Forward,
    /// Write out what is buffered and stop, never telling the destination.
    Withhold,
    /// Discard what is buffered and shut down the destination at once.
    DropBuffered,
    /// Forward, then close the whole pair (both sockets, with FIN) as soon as this direction is
    /// done.
    ClosePair,
}

/// What a direction does when writing to (or shutting down) its destination fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWriteError {
    /// The contract: abort the pair, RST to both peers.
    Abort,
    /// Drop this direction's bytes and go on reading from its source (dropping those too while
    /// the writes keep failing).
    Ignore,
}

/// What a direction does when reading from its source fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReadError {
    /// The contract: a reset (ECONNRESET) is passed on as a reset, the pair aborted with RST to
    /// both peers and nothing more written; any other error is taken as EOF.
    Forward,
    /// Stop the direction where it is: nothing more written, no shutdown, no close, while the
    /// other direction goes on; the peer waits for an end that never comes (tokio #3876).
    Stop,
}

/// What restarts a direction's stall timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallReset {
    /// The contract: any byte written, or acknowledged by the destination from the send queue.
    OnProgress,
    /// Only a buffer written out completely; a slow but steady reader never empties it.
    OnEmpty,
}

/// Where a proxy may depart from the contract. Every method's default is the contract's.
///
/// Object safe, so that a table of fixtures can hold `&'static dyn Hooks`; the reference runs
/// with the concrete [`Reference`], never through a vtable.
pub trait Hooks: Send + Sync + 'static {
    // ---- The process and the listener -----------------------------------------------------

    /// Serve every pair from one thread (a current-thread runtime), as a select() loop does.
    fn one_thread(&self) -> bool {
        false
    }

    /// SIGTERM/SIGINT start a drain. False: no handler is installed, so the signals keep the
    /// disposition the process started with (death, or ignored).
    fn drains_on_signal(&self) -> bool {
        true
    }

    /// Connect to the destination once at start-up, before listening, and close it again (a
    /// health probe).
    fn probe_at_start(&self) -> bool {
        false
    }

    fn listen_backlog(&self) -> i32 {
        LISTEN_BACKLOG
    }

    /// Pairs served at once (`configured` is `--max-connections`); beyond it the listener is not
    /// accepted from.
    fn max_pairs(&self, configured: usize) -> usize {
        configured
    }

    /// Called for every accepted client before anything else.
    fn on_accept(&self, _client: &TcpStream) {}

    /// How long the accept loop takes before its next accept(2): what a threaded server's loop
    /// spends starting a thread and waiting for its interpreter lock.
    fn accept_pause(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether to serve a client just accepted; one refused is closed at once, before any
    /// connection to the destination is made for it.
    fn admit(&self, _client: &TcpStream) -> bool {
        true
    }

    /// Re-poll every pair and the listener at once instead of waiting for readiness.
    fn busy_poll(&self) -> bool {
        false
    }

    /// When accept(2) fails for want of descriptors (EMFILE, ENFILE), pause accepting for a
    /// moment. False: try again at once; the client that could not be taken is still queued, so
    /// the listener stays readable and the loop spins at 100 % CPU until a descriptor frees up
    /// (libuv #690, sniproxy #89).
    fn pauses_on_emfile(&self) -> bool {
        true
    }

    // ---- A pair -----------------------------------------------------------------------------

    /// Connect to the destination only once the client's first bytes have arrived.
    fn connect_on_first_byte(&self) -> bool {
        false
    }

    /// Connect to the destination with a blocking connect(2) on the thread that serves the pair.
    /// On a one-thread event loop every other pair waits until it returns, which is seconds
    /// when the destination's accept queue is full and its SYNs are dropped.
    fn blocking_connect(&self) -> bool {
        false
    }

    /// Resolve DEST_HOST to its IPv4 addresses only, as gethostbyname(3) does: a destination
    /// given as `::1` or an IPv6-only name resolves to nothing. The contract takes every address.
    fn ipv4_only(&self) -> bool {
        false
    }

    /// Set TCP_NODELAY on both sockets of a pair. Without it a small write that follows one not
    /// yet acknowledged waits for the ACK (Nagle's algorithm), which the peer's delayed ACK holds
    /// back for 40 ms: a request sent in two pieces takes 40 ms instead of a fraction of one.
    fn nodelay(&self) -> bool {
        true
    }

    /// Connecting to the destination failed: the client is closed after this returns.
    fn on_refused(&self, _error: &io::Error) {}

    /// Close a pair (with FIN) after this long with no byte read or written either way
    /// (`stall_timeout` is the configured one); None: never.
    fn idle_timeout(&self, _stall_timeout: Duration) -> Option<Duration> {
        None
    }

    /// Close a pair (with FIN) this long after one direction has forwarded its EOF while the
    /// other is still open; None: never. The contract keeps a half-closed pair for as long as its
    /// other direction carries bytes, however long that is.
    fn fin_timeout(&self) -> Option<Duration> {
        None
    }

    /// A pair ended cleanly (EOF both ways, all flushed); dropping the sockets closes them.
    fn on_finished(&self, _client: TcpStream, _server: TcpStream) {}

    // ---- A direction ------------------------------------------------------------------------

    /// The most bytes held per direction (`configured` is `--buffer-size`).
    fn buffer_size(&self, configured: usize) -> usize {
        configured
    }

    /// How long `dir` may hold bytes without writing one before the pair is aborted; None: never.
    fn stall_timeout(&self, _dir: Dir, configured: Duration) -> Option<Duration> {
        Some(configured)
    }

    fn stall_reset(&self) -> StallReset {
        StallReset::OnProgress
    }

    fn on_eof(&self) -> OnEof {
        OnEof::Forward
    }

    fn on_write_error(&self) -> OnWriteError {
        OnWriteError::Abort
    }

    fn on_read_error(&self) -> OnReadError {
        OnReadError::Forward
    }

    // ---- The copy path: asked only when `needs_copy` -----------------------------------------

    /// Every byte must pass through a memory buffer: true for hooks that look at or change the
    /// bytes ([`Self::mangle`], [`Self::write`], [`Self::consumed`]), or hold more than a pipe
    /// can. Then the proxy never splices, and those hooks are asked on every read and write.
    fn needs_copy(&self) -> bool {
        false
    }

    /// Sees every chunk read in `dir`; `offset` is the stream offset of `bytes[0]`.
    fn mangle(&self, _dir: Dir, _offset: u64, _bytes: &mut [u8]) {}

    /// Writes once to `dst`, returning how many bytes went; `WouldBlock` when it had no room.
    /// `stall_timeout` is the direction's, for a write that waits.
    fn write(
        &self,
        dst: &TcpStream,
        bytes: &[u8],
        _stall_timeout: Option<Duration>,
    ) -> io::Result<usize> {
        // The socket itself, not tokio's try_write: the relay calls this inside try_io, which
        // clears the readiness on WouldBlock.
        (&*socket2::SockRef::from(dst)).write(bytes)
    }

    /// How many buffered bytes a write of `attempted` bytes that wrote `written` has used up.
    fn consumed(&self, written: usize, _attempted: usize) -> usize {
        written
    }
}

/// The reference proxy: the contract at every hook.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reference;

impl Hooks for Reference {}

/// What a write that took fewer bytes than it was offered uses up of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShortWrite {
    /// The contract: the bytes written, no more and no less; the rest is written next.
    Consume,
    /// The whole chunk, as if all of it went: the unwritten tail is lost.
    Drop,
    /// Nothing, so the chunk is written again from its start: what went out goes out twice.
    Resend,
}

impl OnShortWrite {
    /// [`Hooks::consumed`] under this rule.
    pub fn consumed(self, written: usize, attempted: usize) -> usize {
        match self {
            OnShortWrite::Consume => written,
            OnShortWrite::Drop => attempted,
            OnShortWrite::Resend if written < attempted => 0,
            OnShortWrite::Resend => written,
        }
    }
}

/// How long a direction may hold bytes without writing one before its pair is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallTimer {
    /// The contract: the configured stall timeout, both ways.
    Configured,
    /// The configured timeout divided by this, both ways: a unit slip, or a demo's value.
    Divided(u32),
    /// The configured timeout in this direction; the other never times out.
    Only(Dir),
    /// No stall timer either way.
    Never,
}

impl StallTimer {
    /// [`Hooks::stall_timeout`] under this rule.
    pub fn timeout(self, dir: Dir, configured: Duration) -> Option<Duration> {
        match self {
            StallTimer::Configured => Some(configured),
            StallTimer::Divided(by) => Some(configured / by),
            StallTimer::Only(timed) if timed == dir => Some(configured),
            StallTimer::Only(_) | StallTimer::Never => None,
        }
    }
}

/// Hooks as data: a constant answer for each hook that takes one, the contract's unless a field
/// says otherwise. Most classic bugs are one such answer (close the pair at the first EOF, a
/// backlog of 5), so a fixture is a value, `Tweak { on_eof: OnEof::ClosePair, ..Tweak::CONTRACT }`,
/// rather than a type. The hooks that compute an answer from their arguments or act on sockets
/// (`mangle`, `write`, `on_accept`, timers) need a type of their own.
///
/// Every answer is read from a field at run time, so only fixtures use it: the reference runs
/// with [`Reference`], whose answers are folded in at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tweak {
    pub one_thread: bool,
    pub drains_on_signal: bool,
    pub probe_at_start: bool,
    pub listen_backlog: i32,
    /// Pairs served at once, whatever `--max-connections` says; None: as configured.
    pub max_pairs: Option<usize>,
    pub accept_pause: Duration,
    pub busy_poll: bool,
    /// Pause accepting while out of descriptors; false: retry accept(2) at once (a spin).
    pub pauses_on_emfile: bool,
    pub connect_on_first_byte: bool,
    /// Connect to the destination with a blocking connect(2) on the pair's thread.
    pub blocking_connect: bool,
    /// Close a pair (with FIN) once it has been quiet for the stall timeout: an idle timer.
    pub closes_idle_pairs: bool,
    /// Close a half-closed pair (with FIN) this long after its first EOF went through, as
    /// HAProxy's `timeout client-fin` does.
    pub fin_timeout: Option<Duration>,
    /// Resolve DEST_HOST for IPv4 only, as gethostbyname(3) does.
    pub ipv4_only: bool,
    /// Set TCP_NODELAY on a pair's sockets.
    pub nodelay: bool,
    /// The most bytes held per direction, whatever `--buffer-size` says; None: as configured.
    pub buffer_size: Option<usize>,
    pub stall_timer: StallTimer,
    pub stall_reset: StallReset,
    pub on_eof: OnEof,
    pub on_write_error: OnWriteError,
    pub on_read_error: OnReadError,
    /// Anything but [`OnShortWrite::Consume`] puts the bytes on the copy path, where it is asked.
    pub on_short_write: OnShortWrite,
    pub needs_copy: bool,
}

impl Tweak {
    /// The contract's answer everywhere, as [`Reference`] gives it.
    pub const CONTRACT: Tweak = Tweak {
        one_thread: false,
        drains_on_signal: true,
        probe_at_start: false,
        listen_backlog: LISTEN_BACKLOG,
        max_pairs: None,
        accept_pause: Duration::ZERO,
        busy_poll: false,
        pauses_on_emfile: true,
        connect_on_first_byte: false,
        blocking_connect: false,
        closes_idle_pairs: false,
        fin_timeout: None,
        ipv4_only: false,
        nodelay: true,
        buffer_size: None,
        stall_timer: StallTimer::Configured,
        stall_reset: StallReset::OnProgress,
        on_eof: OnEof::Forward,
        on_write_error: OnWriteError::Abort,
        on_read_error: OnReadError::Forward,
        on_short_write: OnShortWrite::Consume,
        needs_copy: false,
    };
}

impl Default for Tweak {
    fn default() -> Tweak {
        Tweak::CONTRACT
    }
}

/// Implements each named hook, one that takes no argument, as the answer in the field of the
/// same name.
macro_rules! answer_from_fields {
    ($($hook:ident: $answer:ty),* $(,)?) => {
        $(fn $hook(&self) -> $answer {
            self.$hook
        })*
    };
}

impl Hooks for Tweak {
    answer_from_fields! {
        one_thread: bool,
        drains_on_signal: bool,
        probe_at_start: bool,
        listen_backlog: i32,
        accept_pause: Duration,
        busy_poll: bool,
        pauses_on_emfile: bool,
        connect_on_first_byte: bool,
        blocking_connect: bool,
        fin_timeout: Option<Duration>,
        ipv4_only: bool,
        nodelay: bool,
        stall_reset: StallReset,
        on_eof: OnEof,
        on_write_error: OnWriteError,
        on_read_error: OnReadError,
    }

    fn max_pairs(&self, configured: usize) -> usize {
        self.max_pairs.unwrap_or(configured)
    }

    fn idle_timeout(&self, stall_timeout: Duration) -> Option<Duration> {
        self.closes_idle_pairs.then_some(stall_timeout)
    }

    fn buffer_size(&self, configured: usize) -> usize {
        self.buffer_size.unwrap_or(configured)
    }

    fn stall_timeout(&self, dir: Dir, configured: Duration) -> Option<Duration> {
        self.stall_timer.timeout(dir, configured)
    }

    fn needs_copy(&self) -> bool {
        self.needs_copy || self.on_short_write != OnShortWrite::Consume
    }

    fn consumed(&self, written: usize, attempted: usize) -> usize {
        self.on_short_write.consumed(written, attempted)
    }
}

/// Changes the byte at stream offset `at` of direction `dir` with `change`, and no other: an
/// off-by-one or a stale index in buffer arithmetic, which shows only deep into a stream. One
/// implementation of the offset arithmetic for the `flip-byte` fixture and the copy path's tests.
#[derive(Debug, Clone, Copy)]
pub struct ChangeByte {
    pub dir: Dir,
    pub at: u64,
    pub change: fn(u8) -> u8,
}

impl Hooks for ChangeByte {
    fn needs_copy(&self) -> bool {
        // The bytes pass through memory, where `mangle` sees them.
        true
    }

    fn mangle(&self, dir: Dir, offset: u64, bytes: &mut [u8]) {
        let Some(i) = self.at.checked_sub(offset) else {
            return;
        };
        if dir == self.dir
            && let Some(b) = usize::try_from(i).ok().and_then(|i| bytes.get_mut(i))
        {
            *b = (self.change)(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hook a [`Tweak`] answers, asked with configured values that pass through.
    fn answers(h: &impl Hooks) -> String {
        let process = (
            h.one_thread(),
            h.drains_on_signal(),
            h.probe_at_start(),
            h.listen_backlog(),
            h.max_pairs(77),
            h.accept_pause(),
            h.busy_poll(),
            h.pauses_on_emfile(),
        );
        let stall = Duration::from_secs(10);
        let pair = (
            h.connect_on_first_byte(),
            h.blocking_connect(),
            h.idle_timeout(stall),
            h.fin_timeout(),
            h.buffer_size(4321),
            h.stall_timeout(Dir::Up, stall),
            h.stall_timeout(Dir::Down, stall),
            h.stall_reset(),
            h.on_eof(),
            h.on_write_error(),
            h.needs_copy(),
            h.consumed(100, 4096),
        );
        // A tuple of its own: Debug stops at twelve fields.
        let sockets = (h.ipv4_only(), h.nodelay());
        let reads = h.on_read_error();
        format!("{process:?} {pair:?} {sockets:?} {reads:?}")
    }

    #[test]
    fn the_contract_tweak_answers_as_the_reference_does() {
        assert_eq!(answers(&Tweak::CONTRACT), answers(&Reference));
        assert_eq!(Tweak::default(), Tweak::CONTRACT);
    }

    #[test]
    fn short_writes_use_up_what_their_rule_says() {
        for (rule, short, full) in [
            (OnShortWrite::Consume, 100, 4096),
            (OnShortWrite::Drop, 4096, 4096),
            (OnShortWrite::Resend, 0, 4096),
        ] {
            assert_eq!(rule.consumed(100, 4096), short, "{rule:?}");
            assert_eq!(rule.consumed(4096, 4096), full, "{rule:?}");
        }
    }

    #[test]
    fn stall_timers_time_the_directions_their_rule_names() {
        let ten = Duration::from_secs(10);
        for (rule, up, down) in [
            (StallTimer::Configured, Some(ten), Some(ten)),
            (StallTimer::Divided(5), Some(ten / 5), Some(ten / 5)),
            (StallTimer::Only(Dir::Up), Some(ten), None),
            (StallTimer::Only(Dir::Down), None, Some(ten)),
            (StallTimer::Never, None, None),
        ] {
            assert_eq!(rule.timeout(Dir::Up, ten), up, "{rule:?}");
            assert_eq!(rule.timeout(Dir::Down, ten), down, "{rule:?}");
        }
    }

    #[test]
    fn a_short_write_rule_puts_the_bytes_on_the_copy_path() {
        let drop = Tweak {
            on_short_write: OnShortWrite::Drop,
            ..Tweak::CONTRACT
        };
        assert!(drop.needs_copy() && !Tweak::CONTRACT.needs_copy());
        assert_eq!(drop.consumed(100, 4096), 4096);
    }

    const PLUS_ONE: ChangeByte = ChangeByte {
        dir: Dir::Up,
        at: 1_000_003,
        change: |b| b.wrapping_add(1),
    };

    #[test]
    fn only_the_byte_at_the_offset_changes_whatever_the_chunking() {
        let at = PLUS_ONE.at as usize;
        for chunk in [1, 7, 4096, 65536, 1 << 20] {
            let mut stream = vec![0xffu8; 1_100_000];
            for (n, part) in stream.chunks_mut(chunk).enumerate() {
                PLUS_ONE.mangle(Dir::Up, (n * chunk) as u64, part);
            }
            let changed: Vec<_> = (0..stream.len()).filter(|&i| stream[i] != 0xff).collect();
            assert_eq!(changed, [at], "chunk {chunk}");
            assert_eq!(stream[at], 0x00, "wraps, chunk {chunk}");
        }
    }

    #[test]
    fn the_other_direction_is_untouched() {
        let mut bytes = vec![0u8; 16];
        PLUS_ONE.mangle(Dir::Down, PLUS_ONE.at - 3, &mut bytes);
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
