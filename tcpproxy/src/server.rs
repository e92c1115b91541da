//! The listener: bind, accept within the connection limit, survive descriptor exhaustion, and
//! drain on SIGTERM/SIGINT.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Config;
use crate::hooks::Hooks;
use crate::pair::{self, Census, Settings};
use crate::pool::Pool;

/// How long to pause accepting when the process or system is out of descriptors: long enough
/// not to spin, short enough that clients barely notice once descriptors free up.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);

/// Binds the listener with listen(2)'s `backlog`. Without `--bind`, one dual-stack `[::]` socket
/// serves IPv4 and IPv6; a host without IPv6 gets `0.0.0.0`.
pub fn bind(config: &Config, backlog: i32) -> anyhow::Result<TcpListener> {
    let port = config.listen_port;
    let listen_on = |addr, dual_stack| listen_on(addr, dual_stack, backlog);
    let listener = match config.bind {
        Some(ip) => listen_on(SocketAddr::new(ip, port), false),
        None => match listen_on(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            true,
        ) {
            Err(e) if e.kind() != io::ErrorKind::AddrInUse => listen_on(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                false,
            ),
            other => other,
        },
    };
    let addr = config.bind.map_or_else(
        || format!("port {port}"),
        |ip| SocketAddr::new(ip, port).to_string(),
    );
    listener.with_context(|| format!("cannot listen on {addr}"))
}

fn listen_on(addr: SocketAddr, dual_stack: bool, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // A restarted proxy must not wait for the last run's TIME_WAIT pairs to expire.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    TcpListener::from_std(socket.into())
}

/// How serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every pair open at the signal closed by itself within the drain timeout.
    Drained,
    /// The drain was cut short and pairs still open were reset.
    Cut(CutShort),
}

/// A drain cut short: by what, and how many pairs it reset.
#[derive(Debug, PartialEq, Eq)]
pub struct CutShort {
    pub by: Cut,
    pub reset: usize,
}

/// What cut a drain short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Timeout(Duration),
    SecondSignal,
}

impl std::fmt::Display for CutShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.by {
            Cut::Timeout(after) => write!(f, "drain timeout ({:.1}s)", after.as_secs_f64())?,
            Cut::SecondSignal => f.write_str("second signal")?,
        }
        let s = if self.reset == 1 { "" } else { "s" };
        write!(f, ": reset {} pair{s} still open", self.reset)
    }
}

/// How long cut pairs get to reset and log: each only has to notice the cut, so this is a
/// bound for a runtime starved of CPU, not a wait anyone should see.
const CUT_GRACE: Duration = Duration::from_secs(5);

/// Serves until SIGTERM/SIGINT, then lets open pairs finish for up to the drain timeout and
/// resets those still open after it.
///
/// `signals` is installed by the caller before it binds, so a SIGTERM that arrives as soon as
/// the port accepts is already a graceful stop rather than the default action.
pub async fn serve<H: Hooks + ?Sized>(
    config: Config,
    listener: TcpListener,
    mut signals: Signals,
    hooks: &'static H,
) -> anyhow::Result<Stopped> {
    let settings = Arc::new(Settings {
        dest_host: config.dest_host.clone(),
        dest_port: config.dest_port,
        stall_timeout: config.stall_timeout,
        connect_timeout: config.connect_timeout,
        pool: Pool::new(
            hooks.buffer_size(config.buffer_size),
            config.pipe_size,
            config.splice && !hooks.needs_copy(),
        ),
        hooks,
    });
    tracing::info!(
        "listening on {}, forwarding to {}:{}, stall timeout {}s",
        Listening(&listener),
        config.dest_host,
        config.dest_port,
        config.stall_timeout.as_secs_f64()
    );
    tracing::debug!(
        splice = settings.pool.splices(),
        buffer_size = config.buffer_size,
        pipe_size = config.pipe_size,
        "forwarding"
    );
    let census = Census::new(hooks.max_pairs(config.max_connections));
    let mut out_of_fds = false;

    loop {
        // Beyond the limit, stop accepting: the kernel's backlog holds the rest until a pair ends.
        let slot = tokio::select! {
            slot = census.slot() => slot,
            _ = signals.recv() => break,
        };
        let accepted = tokio::select! {
            a = accept(&listener, hooks.busy_poll()) => a,
            _ = signals.recv() => break,
        };
        match accepted {
            Ok((client, addr)) => {
                hooks.on_accept(&client);
                let pause = hooks.accept_pause();
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                if !hooks.admit(&client) {
                    continue;
                }
                // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; log them as a.b.c.d.
                let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                out_of_fds = false;
                let settings = settings.clone();
                let counted = census.admit(slot);
                tokio::spawn(pair::serve(client, addr, settings, counted));
            }
            Err(e) if is_out_of_descriptors(&e) => {
                // The client stays queued and the listener readable: accepting again at once
                // would fail again at once, a spin that lasts as long as the shortage.
                let pauses = hooks.pauses_on_emfile();
                if !out_of_fds {
                    let then = if pauses {
                        "pausing accepts until descriptors free up"
                    } else {
                        "accepting again at once"
                    };
                    tracing::error!("accept: {e}; {then}");
                    out_of_fds = true;
                }
                if pauses {
                    tokio::time::sleep(EMFILE_BACKOFF).await;
                }
            }
            // ECONNABORTED and friends concern one client that already left.
            Err(e) => tracing::warn!("accept: {e}"),
        }
    }

    drop(listener);
    tracing::info!(
        open = census.open(),
        "stopping: no new clients; waiting up to {:.1}s for open pairs",
        config.drain_timeout.as_secs_f64()
    );
    // Every slot back means every pair task has logged its close line and ended.
    let by = tokio::select! {
        () = census.all_closed() => {
            tracing::info!("all pairs closed");
            return Ok(Stopped::Drained);
        }
        _ = tokio::time::sleep(config.drain_timeout) => Cut::Timeout(config.drain_timeout),
        _ = signals.recv() => Cut::SecondSignal,
    };
    census.cut_all();
    if tokio::time::timeout(CUT_GRACE, census.all_closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = census.open(),
            "pairs still closing {:.1}s after the cut; exiting without them",
            CUT_GRACE.as_secs_f64()
        );
    }
    // A pair that ended by itself between the deadline and the cut was not cut.
    Ok(match census.reset() {
        0 => Stopped::Drained,
        reset => Stopped::Cut(CutShort { by, reset }),
    })
}

/// The next client. Busy-polling (a hook's) tries, and if nobody is waiting goes round again at
/// once, never sleeping.
async fn accept(listener: &TcpListener, busy_poll: bool) -> io::Result<(TcpStream, SocketAddr)> {
    if !busy_poll {
        return listener.accept().await;
    }
    loop {
        if let Poll::Ready(r) = poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await {
            return r;
        }
        tokio::task::yield_now().await;
    }
}

/// The listener's address, and which families it takes.
struct Listening<'a>(&'a TcpListener);

impl std::fmt::Display for Listening<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Ok(addr) = self.0.local_addr() else {
            return f.write_str("an unknown address");
        };
        let families = match addr.ip() {
            IpAddr::V4(_) => "IPv4",
            IpAddr::V6(ip) if ip.is_unspecified() => {
                match socket2::SockRef::from(self.0).only_v6() {
                    Ok(false) => "IPv4 and IPv6",
                    _ => "IPv6 only",
                }
            }
            IpAddr::V6(_) => "IPv6",
        };
        write!(f, "{addr} ({families})")
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE))
}

// The two errno values, spelled out to avoid a libc dependency for two constants.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// SIGTERM and SIGINT, merged; or none, when the process keeps their default action.
#[derive(Debug)]
pub struct Signals {
    /// SIGTERM's and SIGINT's; None when no handler was installed.
    handled: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            handled: Some((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            )),
        })
    }

    /// Installs nothing: the signals do what they did before (end the process, or nothing if
    /// ignored), and serving never hears of them.
    pub fn unhandled() -> Signals {
        Signals { handled: None }
    }

    async fn recv(&mut self) {
        match &mut self.handled {
            Some((term, int)) => tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            },
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The reference with hooks, in process: each hook point the fixtures' bugs live at reaches
    //! the listener, the pair or the relay, on the splice path and the copy path alike.

    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::hooks::{ChangeByte, Dir, OnEof, OnWriteError, Reference, Tweak};

    const DEADLINE: Duration = Duration::from_secs(10);
    /// Past one buffer, so that a stream is spliced when it may be.
    const LEN: usize = 300_000;
    const FLIPPED: u64 = 200_001;

    /// Starts the proxy with `hooks` in front of `dest_port`; returns the port it listens on.
    fn start<H: Hooks + ?Sized>(hooks: &'static H, dest_port: u16) -> u16 {
        let mut config = Config::new("127.0.0.1", dest_port, 0);
        config.bind = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let listener = bind(&config, hooks.listen_backlog()).expect("binding an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        tokio::spawn(serve(config, listener, Signals::unhandled(), hooks));
        port
    }

    /// Starts a destination on an ephemeral port that `serves` its listener; returns the port.
    async fn destination<F>(serves: impl FnOnce(TcpListener) -> F) -> u16
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local address").port();
        tokio::spawn(serves(listener));
        port
    }

    /// A server that reads to EOF, then echoes what it got and closes.
    async fn echo_at_eof() -> u16 {
        destination(|listener| async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await.expect("server read");
                    let _ = s.write_all(&got).await;
                });
            }
        })
        .await
    }

    fn payload() -> Vec<u8> {
        (0..LEN).map(|i| (i % 251) as u8).collect()
    }

    /// Sends the payload, shuts down its write half and reads the reply to EOF.
    async fn request(port: u16) -> io::Result<Vec<u8>> {
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        let (mut rx, mut tx) = c.split();
        let send = async {
            tx.write_all(&payload()).await?;
            tx.shutdown().await
        };
        let mut reply = Vec::new();
        let (sent, got) = tokio::join!(send, rx.read_to_end(&mut reply));
        sent?;
        got?;
        Ok(reply)
    }

    async fn request_within(port: u16) -> io::Result<Vec<u8>> {
        tokio::time::timeout(DEADLINE, request(port))
            .await
            .expect("no reply in time")
    }

    #[tokio::test]
    async fn the_reference_forwards_the_eof_and_then_the_reply() {
        let proxy = start(&Reference, echo_at_eof().await);
        assert!(request_within(proxy).await.expect("request") == payload());
    }

    #[tokio::test]
    async fn closing_the_pair_at_the_first_eof_loses_the_reply() {
        let proxy = start(
            &Tweak {
                on_eof: OnEof::ClosePair,
                ..Tweak::CONTRACT
            },
            echo_at_eof().await,
        );
        match request_within(proxy).await {
            Ok(reply) => assert!(reply.is_empty(), "{} bytes came back", reply.len()),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        }
    }

    #[tokio::test]
    async fn mangle_sees_each_byte_once_at_its_stream_offset() {
        let proxy = start(
            &ChangeByte {
                dir: Dir::Up,
                at: FLIPPED,
                change: |b| b ^ 0xff,
            },
            echo_at_eof().await,
        );
        let reply = request_within(proxy).await.expect("request");
        let sent = payload();
        let differ: Vec<usize> = (0..LEN).filter(|&i| reply[i] != sent[i]).collect();
        assert_eq!(reply.len(), LEN);
        assert_eq!(differ, [FLIPPED as usize]);
    }

    struct NothingConsumed;

    impl Hooks for NothingConsumed {
        fn needs_copy(&self) -> bool {
            true
        }

        fn consumed(&self, _written: usize, _attempted: usize) -> usize {
            0
        }
    }

    #[tokio::test]
    async fn consumed_decides_what_is_written_again() {
        // A server that sends back the first 8 bytes it gets, and then holds the connection
        // (closing it with bytes unread would reset the pair, and the reply with it).
        let dest = destination(|listener| async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut first = [0; 8];
            s.read_exact(&mut first).await.expect("server read");
            s.write_all(&first).await.expect("server write");
            std::future::pending::<()>().await;
        })
        .await;
        let proxy = start(&NothingConsumed, dest);
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy))
            .await
            .expect("connect");
        c.write_all(b"ab").await.expect("write");
        let mut back = [0; 8];
        tokio::time::timeout(DEADLINE, c.read_exact(&mut back))
            .await
            .expect("no reply in time")
            .expect("read");
        // Nothing written is ever used up, so the same bytes go out again and again.
        assert_eq!(&back, b"abababab");
    }

    #[tokio::test]
    async fn an_ignored_write_error_leaves_the_client_writing_into_the_void() {
        // A server that resets every connection once the first bytes arrive (a reset before
        // that could fail the proxy's connect instead).
        let dest = destination(|listener| async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.read(&mut [0; 16]).await;
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
        })
        .await;
        for (hooks, keeps_writing) in [
            (&Reference as &'static dyn Hooks, false),
            (
                &Tweak {
                    on_write_error: OnWriteError::Ignore,
                    ..Tweak::CONTRACT
                },
                true,
            ),
        ] {
            let proxy = start(hooks, dest);
            let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy))
                .await
                .expect("connect");
            let chunk = vec![7; 64 * 1024];
            let wrote = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    if let Err(e) = c.write_all(&chunk).await {
                        return e;
                    }
                }
            })
            .await;
            assert_eq!(wrote.is_err(), keeps_writing, "{wrote:?}");
        }
    }
}
