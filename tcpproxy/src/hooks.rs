//! The points where a proxy can depart from the contract: the listener, the pair and the relay ask
//! a [`Hooks`] at each, and every default is the contract's answer.
//!
//! The reference proxy is [`Reference`], which overrides nothing. The `fixtures` crate's broken
//! proxies are this same proxy with one hook overridden each (a classic bug), so the harness's
//! control fixture runs the very code it vouches for. The server, the pair and the relay are
//! generic over the hooks: for [`Reference`] every call is a constant the compiler folds away,
//! and the hooks that need bytes in user space ([`Hooks::mangle`], [`Hooks::write`],
//! [`Hooks::consumed`]) are asked only by hooks whose [`Hooks::needs_copy`] says so, so splicing
//! pays nothing for them.

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

    // ---- A pair -----------------------------------------------------------------------------

    /// Connect to the destination only once the client's first bytes have arrived.
    fn connect_on_first_byte(&self) -> bool {
        false
    }

    /// Connecting to the destination failed: the client is closed after this returns.
    fn on_refused(&self, _error: &io::Error) {}

    /// Close a pair (with FIN) after this long with no byte read or written either way
    /// (`stall_timeout` is the configured one); None: never.
    fn idle_timeout(&self, _stall_timeout: Duration) -> Option<Duration> {
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
