//! A proxied pair: the client's connection, the one made to the destination for it, and the two
//! [`Relay`]s between them, driven from one task so one place decides how the pair ends.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::{Instant, Sleep};

use crate::hooks::{Dir, Hooks, OnEof};
use crate::pool::Pool;
use crate::relay::{Abort, Relay};

/// What a pair needs from the proxy's configuration, shared by every pair.
pub struct Settings<H: ?Sized + 'static> {
    pub dest_host: String,
    pub dest_port: u16,
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    pub pool: Pool,
    pub hooks: &'static H,
}

/// How a pair ended.
#[derive(Debug)]
pub enum End {
    /// Both directions read EOF (or failed to read with an error other than a reset, which the
    /// contract treats as EOF; a reset aborts the pair) and flushed everything.
    BothEof,
    /// Resolving or connecting to the destination failed or timed out.
    ConnectFailed(io::Error),
    /// One direction aborted; `upstream` is true for client->server.
    Aborted { upstream: bool, why: Abort },
    /// Still open when the drain after SIGTERM/SIGINT ran out (or a second signal came).
    DrainCut,
    /// Hooks closed the pair (FIN both ways) before the contract would: a fixture's idle timer,
    /// its FIN timer, or its close at the first EOF. The reference never ends a pair so.
    Closed,
}

impl End {
    /// Ends that reset both connections: a peer must see a truncation, never mistake an abort for
    /// a clean end.
    fn resets(&self) -> bool {
        matches!(self, End::Aborted { .. } | End::DrainCut)
    }
}

/// The termination reason a close line gives: one word per way a pair can end, the set the
/// proxy's `--help` lists (from [`Reason::ALL`]) and its log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Eof,
    ReadError,
    Stall,
    WriteError,
    ConnectFail,
    DrainCut,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Eof,
        Reason::ReadError,
        Reason::Stall,
        Reason::WriteError,
        Reason::ConnectFail,
        Reason::DrainCut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Eof => "eof",
            Reason::ReadError => "read-error",
            Reason::Stall => "stall",
            Reason::WriteError => "write-error",
            Reason::ConnectFail => "connect-fail",
            Reason::DrainCut => "drain-cut",
        }
    }

    /// What the word means, for `--help`.
    pub fn meaning(self) -> &'static str {
        match self {
            Reason::Eof => "both directions ended with EOF and everything was written",
            Reason::ReadError => {
                "a read failed: a reset is passed on as a reset (RST), any other error is taken as EOF; see read_error"
            }
            Reason::Stall => {
                "direction `dir` held data and could write none of it for --stall-timeout (RST)"
            }
            Reason::WriteError => "writing in direction `dir` failed (RST); see error",
            Reason::ConnectFail => {
                "resolving or connecting to the destination failed (logged even without -v)"
            }
            Reason::DrainCut => {
                "still open when the drain ran out after SIGTERM/SIGINT, or a second signal came (RST)"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pair's close line, after HAProxy's tcplog: `key=value` fields in a fixed order, those that
/// apply to every pair first, then `dir`, `error` and `read_error` only when they apply.
/// Values that may hold spaces (the errors) are quoted, so the line splits on spaces.
#[derive(Debug)]
pub struct CloseLine<'a> {
    /// The proxy's address the client connected to.
    pub frontend: Option<SocketAddr>,
    pub client: SocketAddr,
    /// The destination's address, or DEST_HOST:DEST_PORT when no connection was made.
    pub dest: String,
    pub end: &'a End,
    /// From accept to the destination's connection (HAProxy's Tc); `None` when never connected.
    pub connect: Option<Duration>,
    /// From accept to close (HAProxy's Tt).
    pub total: Duration,
    /// Bytes written to the destination and to the client.
    pub up: u64,
    pub down: u64,
    /// Pairs open as this one closed, itself included (HAProxy's actconn).
    pub active: usize,
    /// Why reading from the client and from the destination ended early, if they did.
    pub client_read_error: Option<&'a io::Error>,
    pub server_read_error: Option<&'a io::Error>,
}

impl CloseLine<'_> {
    pub fn reason(&self) -> Reason {
        match self.end {
            End::BothEof if self.read_error().is_some() => Reason::ReadError,
            End::BothEof => Reason::Eof,
            End::ConnectFailed(_) => Reason::ConnectFail,
            End::Aborted {
                why: Abort::Stalled { .. },
                ..
            } => Reason::Stall,
            End::Aborted {
                why: Abort::WriteError(_),
                ..
            } => Reason::WriteError,
            End::Aborted {
                why: Abort::PeerReset,
                ..
            } => Reason::ReadError,
            End::DrainCut => Reason::DrainCut,
            // The reasons are the reference's; a hook's close is a FIN, as a clean end is.
            End::Closed => Reason::Eof,
        }
    }

    fn read_error(&self) -> Option<String> {
        match (self.client_read_error, self.server_read_error) {
            (None, None) => None,
            (Some(c), None) => Some(format!("client: {c}")),
            (None, Some(s)) => Some(format!("server: {s}")),
            (Some(c), Some(s)) => Some(format!("client: {c}; server: {s}")),
        }
    }
}

impl fmt::Display for CloseLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match self.frontend {
            Some(a) => write!(f, "frontend={a}")?,
            None => f.write_str("frontend=?")?,
        }
        write!(
            f,
            " client={} dest={} reason={}",
            self.client,
            self.dest,
            self.reason()
        )?;
        match self.connect {
            Some(d) => write!(f, " connect_ms={:.1}", ms(d))?,
            // HAProxy's way of saying the connection was never made.
            None => f.write_str(" connect_ms=-1")?,
        }
        write!(
            f,
            " total_ms={:.1} up={} down={} active={}",
            ms(self.total),
            self.up,
            self.down,
            self.active
        )?;
        match self.end {
            End::Aborted { upstream, why } => {
                let dir = if *upstream { "up" } else { "down" };
                let error = match why {
                    Abort::Stalled { buffered, waited } => Some(format!(
                        "{buffered} bytes buffered, none written for {:.1}s",
                        waited.as_secs_f64()
                    )),
                    Abort::WriteError(e) => Some(e.to_string()),
                    // The reset is the read error, which `read_error` names with its side.
                    Abort::PeerReset => None,
                };
                if let Some(error) = error {
                    write!(f, " dir={dir} error={error:?}")?;
                }
            }
            End::ConnectFailed(e) => write!(f, " error={:?}", e.to_string())?,
            End::BothEof | End::DrainCut | End::Closed => {}
        }
        if let Some(e) = self.read_error() {
            write!(f, " read_error={e:?}")?;
        }
        Ok(())
    }
}

/// Every pair from accept to close, counted, and the word that resets those still open when a
/// drain runs out.
#[derive(Debug)]
pub struct Census {
    open: AtomicUsize,
    reset: AtomicUsize,
    /// One permit per pair the connection limit allows; a pair holds one from accept to close.
    slots: Semaphore,
    limit: u32,
    /// Set by [`Census::cut_all`], for pairs that start waiting after its notification went out.
    cut: AtomicBool,
    cut_notify: Notify,
}

impl Census {
    /// A census of at most `limit` pairs at once.
    pub fn new(limit: usize) -> Arc<Census> {
        // A semaphore holds at most MAX_PERMITS, and the drain takes them all back in one
        // acquire_many of a u32: a larger limit is the same as no limit.
        let limit = limit.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Arc::new(Census {
            open: AtomicUsize::new(0),
            reset: AtomicUsize::new(0),
            slots: Semaphore::new(limit),
            limit: u32::try_from(limit).expect("capped to u32 above"),
            cut: AtomicBool::new(false),
            cut_notify: Notify::new(),
        })
    }

    /// Waits until the connection limit allows one more pair.
    pub async fn slot(&self) -> Slot<'_> {
        Slot(
            self.slots
                .acquire()
                .await
                .expect("the semaphore is never closed"),
        )
    }

    /// Waits until every pair has closed: every slot is back.
    pub async fn all_closed(&self) {
        let all = self.slots.acquire_many(self.limit).await;
        drop(all.expect("the semaphore is never closed"));
    }

    /// Counts a pair in from its accept, in the slot it waited for; it is counted out, and the
    /// slot freed, when the returned [`Counted`] drops.
    pub fn admit(self: &Arc<Census>, slot: Slot<'_>) -> Counted {
        // The pair's Counted gives the permit back: a pair holds one pointer, not a permit too.
        slot.0.forget();
        self.open.fetch_add(1, Ordering::Relaxed);
        Counted {
            census: self.clone(),
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Resets every pair still open, and any admitted after.
    pub fn cut_all(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.cut_notify.notify_waiters();
    }

    /// How many pairs [`Census::cut_all`] has reset so far.
    pub fn reset(&self) -> usize {
        self.reset.load(Ordering::Relaxed)
    }
}

/// Room for one more pair under the connection limit, until [`Census::admit`] takes it.
#[derive(Debug)]
pub struct Slot<'a>(SemaphorePermit<'a>);

/// One pair's place in the [`Census`], and its slot under the connection limit: the pair task
/// owns it to its last line, so a drain that has every slot back knows every pair has logged.
#[derive(Debug)]
pub struct Counted {
    census: Arc<Census>,
}

impl Counted {
    /// Resolves once the census cuts every pair.
    ///
    /// A `Notify` rather than a watch channel: every idle pair holds this wait, and a
    /// `Notified` is half the size of a watch receiver's wait (docs/benchmarks.md, idle memory).
    async fn cut(&self) {
        // Made before the flag is read: a `Notified` counts the notifications sent after it was
        // made, so a cut between the two is not missed.
        let notified = self.census.cut_notify.notified();
        if self.census.cut.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.census.open.fetch_sub(1, Ordering::Relaxed);
        self.census.slots.add_permits(1);
    }
}

/// Connects to the destination for one client and relays until the pair ends or the census
/// cuts it.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice (see the body)"
)]
pub fn serve<H: Hooks + ?Sized>(
    client: TcpStream,
    client_addr: SocketAddr,
    settings: Arc<Settings<H>>,
    counted: Counted,
) -> impl Future<Output = ()> + Send {
    // An async block, not an async fn: an async fn keeps its arguments twice over (as they came
    // and as moved into its body), and every idle pair's task would carry the copy.
    async move {
        let started = Instant::now();
        if settings.hooks.connect_on_first_byte() {
            let mut byte = [0];
            // Boxed here and below: each stage's futures count toward every pair's task, for
            // its whole life, though only the relay's outlive the first round trip.
            let first = tokio::select! {
                p = Box::pin(client.peek(&mut byte)) => matches!(p, Ok(n) if n > 0),
                () = counted.cut() => false,
            };
            // A client that closes or fails before sending anything is simply dropped.
            if !first {
                return;
            }
        }
        // Matched in place: a `connected` local would keep its 40 bytes through the relay.
        let server = match tokio::select! {
            c = Box::pin(connect(&settings)) => c.map_err(End::ConnectFailed),
            () = counted.cut() => Err(End::DrainCut),
        } {
            Ok(s) => s,
            Err(end) => {
                if let End::ConnectFailed(e) = &end {
                    settings.hooks.on_refused(e);
                }
                // Dropping the client closes it at once: it learns now, not at its next write.
                finish(&end, &client, None, &counted);
                log_close(&end, || CloseLine {
                    frontend: frontend(&client),
                    client: client_addr,
                    dest: format!("{}:{}", settings.dest_host, settings.dest_port),
                    end: &end,
                    connect: None,
                    total: started.elapsed(),
                    up: 0,
                    down: 0,
                    active: counted.census.open(),
                    client_read_error: None,
                    server_read_error: None,
                });
                return;
            }
        };
        let connect_time = started.elapsed();
        // Only the closing log line uses it: without -v, spare every pair the getpeername(2). Taken
        // now, while the connection stands, so that an aborted pair still names its destination.
        // Boxed, so that a pair logged by nobody keeps a pointer rather than a whole address.
        let dest_addr = tracing::enabled!(tracing::Level::INFO)
            .then(|| server.peer_addr().ok().map(Box::new))
            .flatten();
        // A proxy should not add Nagle's delay to small writes the client already sent promptly.
        if settings.hooks.nodelay() {
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
        }

        let mut relaying = Relaying::new(&*settings);
        // Polled in the relay's own poll rather than beside it in a select!, whose futures and
        // bookkeeping every idle pair would carry.
        let mut cut = pin!(counted.cut());
        let end = poll_fn(|cx| {
            if cut.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::DrainCut);
            }
            relaying.poll(cx, &settings, &client, &server)
        })
        .await;
        let Relaying { up, down, .. } = &mut relaying;
        up.close(&settings.pool);
        down.close(&settings.pool);

        finish(&end, &client, Some(&server), &counted);
        log_close(&end, || CloseLine {
            frontend: frontend(&client),
            client: client_addr,
            dest: dest_addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
            end: &end,
            connect: Some(connect_time),
            total: started.elapsed(),
            up: up.written(),
            down: down.written(),
            active: counted.census.open(),
            client_read_error: up.read_error(),
            server_read_error: down.read_error(),
        });
        if let End::BothEof = end {
            settings.hooks.on_finished(client, server);
        }
    }
}

/// A connected pair's two directions, and the timers only hooks ask for.
struct Relaying {
    up: Relay,
    down: Relay,
    /// Boxed: a pair the hooks give no idle timer (every reference pair) holds one pointer.
    idle: Option<Box<Idle>>,
    /// Armed at the first EOF forwarded; None for every reference pair, which has no FIN timer.
    fin: Option<Pin<Box<Sleep>>>,
}

impl Relaying {
    fn new<H: Hooks + ?Sized>(settings: &Settings<H>) -> Relaying {
        Relaying {
            up: Relay::new(Dir::Up),
            down: Relay::new(Dir::Down),
            idle: settings
                .hooks
                .idle_timeout(settings.stall_timeout)
                .map(|t| Box::new(Idle::new(t))),
            fin: None,
        }
    }

    /// Moves bytes both ways until the pair ends.
    fn poll<H: Hooks + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        settings: &Settings<H>,
        client: &TcpStream,
        server: &TcpStream,
    ) -> Poll<End> {
        let (hooks, pool, stall) = (settings.hooks, &settings.pool, settings.stall_timeout);
        // Poll both every time: each registers its own wake-ups, and a finished relay stays ready.
        let a = self.up.poll_relay(cx, hooks, pool, stall, client, server);
        if let Poll::Ready(Err(why)) = a {
            return Poll::Ready(End::Aborted {
                upstream: true,
                why,
            });
        }
        let b = self.down.poll_relay(cx, hooks, pool, stall, server, client);
        if let Poll::Ready(Err(why)) = b {
            return Poll::Ready(End::Aborted {
                upstream: false,
                why,
            });
        }
        if a.is_ready() && b.is_ready() {
            return Poll::Ready(End::BothEof);
        }
        if hooks.on_eof() == OnEof::ClosePair && (a.is_ready() || b.is_ready()) {
            return Poll::Ready(End::Closed);
        }
        if let Some(t) = hooks.fin_timeout()
            && (a.is_ready() || b.is_ready())
        {
            let timer = self
                .fin
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Closed);
            }
        }
        if let Some(idle) = &mut self.idle {
            if idle.poll_expired(cx, self.up.moved() + self.down.moved()) {
                return Poll::Ready(End::Closed);
            }
        }
        if hooks.busy_poll() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// An idle timer, which only hooks ask for: the contract closes no pair for being quiet.
/// Restarts whenever a byte moves either way.
struct Idle {
    timeout: Duration,
    /// The pair's bytes moved when last polled.
    seen: u64,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    fn new(timeout: Duration) -> Idle {
        Idle {
            timeout,
            seen: 0,
            timer: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>, moved: u64) -> bool {
        if moved != self.seen {
            self.seen = moved;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
        self.timer.as_mut().poll(cx).is_ready()
    }
}

/// Arms the RST of an end that resets (the sockets close when the caller drops them) and counts
/// a pair the census cut.
fn finish(end: &End, client: &TcpStream, server: Option<&TcpStream>, counted: &Counted) {
    if end.resets() {
        for s in std::iter::once(client).chain(server) {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
    if matches!(end, End::DrainCut) {
        counted.census.reset.fetch_add(1, Ordering::Relaxed);
    }
}

/// The proxy's address the client reached; a dual-stack listener reports IPv4 as ::ffff:a.b.c.d.
fn frontend(client: &TcpStream) -> Option<SocketAddr> {
    let a = client.local_addr().ok()?;
    Some(SocketAddr::new(a.ip().to_canonical(), a.port()))
}

/// Logs the close line, built only if its level is on. A failed connect is an error an operator
/// should see without -v; every other end is routine at -v.
fn log_close<'a>(end: &End, line: impl FnOnce() -> CloseLine<'a>) {
    match end {
        End::ConnectFailed(_) => tracing::error!("pair closed {}", line()),
        _ => tracing::info!("pair closed {}", line()),
    }
}

/// Resolves the destination again (its addresses may have changed since start) and tries each
/// address in order, IPv6 as well as IPv4, all within the connect timeout.
async fn connect<H: Hooks + ?Sized>(settings: &Settings<H>) -> io::Result<TcpStream> {
    let attempt = async {
        let addrs =
            tokio::net::lookup_host((settings.dest_host.as_str(), settings.dest_port)).await?;
        let v4_only = settings.hooks.ipv4_only();
        let mut last = None;
        for addr in addrs.filter(|a| a.is_ipv4() || !v4_only) {
            let connected = if settings.hooks.blocking_connect() {
                connect_blocking(addr)
            } else {
                TcpStream::connect(addr).await
            };
            match connected {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(io::Error::new(e.kind(), format!("{addr}: {e}"))),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
        }))
    };
    match tokio::time::timeout(settings.connect_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no connection within {:.1}s",
                settings.connect_timeout.as_secs_f64()
            ),
        )),
    }
}

/// A hook's connect: connect(2) in blocking mode on the calling thread, which the runtime cannot
/// use for anything else until it returns, and which no connect timeout can cut short.
fn connect_blocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_nonblocking(true)?;
    TcpStream::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(end: &'a End, server_read_error: Option<&'a io::Error>) -> CloseLine<'a> {
        CloseLine {
            frontend: Some("127.0.0.1:3000".parse().unwrap()),
            client: "127.0.0.1:5000".parse().unwrap(),
            dest: "[::1]:80".to_string(),
            end,
            connect: Some(Duration::from_micros(250)),
            total: Duration::from_millis(1500),
            up: 10,
            down: 20,
            active: 2,
            client_read_error: None,
            server_read_error,
        }
    }

    #[test]
    fn reason_words_are_distinct_single_words_with_a_meaning() {
        let words: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for (i, w) in words.iter().enumerate() {
            assert!(
                w.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{w:?}"
            );
            assert!(!words[..i].contains(w), "{w} twice");
            assert_eq!(Reason::ALL[i].to_string(), *w);
            assert!(!Reason::ALL[i].meaning().is_empty());
        }
        assert_eq!(
            words,
            [
                "eof",
                "read-error",
                "stall",
                "write-error",
                "connect-fail",
                "drain-cut"
            ]
        );
    }

    #[test]
    fn a_clean_end_has_the_fixed_fields_only() {
        assert_eq!(
            line(&End::BothEof, None).to_string(),
            "frontend=127.0.0.1:3000 client=127.0.0.1:5000 dest=[::1]:80 reason=eof \
             connect_ms=0.2 total_ms=1500.0 up=10 down=20 active=2"
        );
    }

    #[test]
    fn a_read_error_makes_the_reason_and_is_quoted_with_its_side() {
        let e = io::Error::new(io::ErrorKind::ConnectionReset, "reset \"by\" peer");
        let text = line(&End::BothEof, Some(&e)).to_string();
        assert!(text.contains(" reason=read-error "), "{text}");
        assert!(
            text.ends_with(r#" active=2 read_error="server: reset \"by\" peer""#),
            "{text}"
        );
    }

    #[test]
    fn an_abort_names_its_direction_and_what_failed() {
        let stalled = End::Aborted {
            upstream: false,
            why: Abort::Stalled {
                buffered: 65536,
                waited: Duration::from_secs(10),
            },
        };
        let text = line(&stalled, None).to_string();
        assert!(
            text.ends_with(
                r#" reason=stall connect_ms=0.2 total_ms=1500.0 up=10 down=20 active=2 dir=down error="65536 bytes buffered, none written for 10.0s""#
            ),
            "{text}"
        );
        let write = End::Aborted {
            upstream: true,
            why: Abort::WriteError(io::ErrorKind::BrokenPipe.into()),
        };
        let text = line(&write, None).to_string();
        assert!(text.contains(" reason=write-error "), "{text}");
        assert!(text.ends_with(r#" dir=up error="broken pipe""#), "{text}");
    }

    #[test]
    fn a_failed_connect_has_no_connect_time_and_says_why() {
        let end = End::ConnectFailed(io::ErrorKind::ConnectionRefused.into());
        let mut l = line(&end, None);
        l.connect = None;
        let text = l.to_string();
        assert!(
            text.contains(" reason=connect-fail connect_ms=-1 "),
            "{text}"
        );
        assert!(text.ends_with(r#" error="connection refused""#), "{text}");
    }

    #[test]
    fn a_cut_pair_says_so_and_nothing_more() {
        let text = line(&End::DrainCut, None).to_string();
        assert!(text.contains(" reason=drain-cut "), "{text}");
        assert!(text.ends_with(" active=2"), "{text}");
    }
}
