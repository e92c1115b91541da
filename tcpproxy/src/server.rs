//! The listener: bind, accept within the connection limit, survive descriptor exhaustion, and
//! drain on SIGTERM/SIGINT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

use crate::cli::Config;
use crate::pair::{self, Census, Settings};
use crate::pool::Pool;

/// How long to pause accepting when the process or system is out of descriptors: long enough
/// not to spin, short enough that clients barely notice once descriptors free up.
const EMFILE_BACKOFF: Duration = Duration::from_millis(100);
const BACKLOG: i32 = 1024;

/// Binds the listener. Without `--bind`, one dual-stack `[::]` socket serves IPv4 and IPv6; a
/// host without IPv6 gets `0.0.0.0`.
pub fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let port = config.listen_port;
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

fn listen_on(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // A restarted proxy must not wait for the last run's TIME_WAIT pairs to expire.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
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
pub async fn serve(
    config: Config,
    listener: TcpListener,
    mut signals: Signals,
) -> anyhow::Result<Stopped> {
    let settings = Arc::new(Settings {
        dest_host: config.dest_host.clone(),
        dest_port: config.dest_port,
        stall_timeout: config.stall_timeout,
        connect_timeout: config.connect_timeout,
        pool: Pool::new(config.buffer_size, config.splice),
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
        "forwarding"
    );
    let limit = config.max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    let census = Census::new();
    let mut out_of_fds = false;

    loop {
        // Beyond the limit, stop accepting: the kernel's backlog holds the rest until a pair ends.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = signals.recv() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = signals.recv() => break,
        };
        match accepted {
            Ok((client, addr)) => {
                // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; log them as a.b.c.d.
                let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
                out_of_fds = false;
                let settings = settings.clone();
                let counted = census.admit();
                tokio::spawn(async move {
                    pair::serve(client, addr, settings, counted).await;
                    drop(permit);
                });
            }
            Err(e) if is_out_of_descriptors(&e) => {
                if !out_of_fds {
                    tracing::error!("accept: {e}; pausing accepts until descriptors free up");
                    out_of_fds = true;
                }
                tokio::time::sleep(EMFILE_BACKOFF).await;
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
    // Every permit back means every pair task has logged its close line and ended.
    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    let by = tokio::select! {
        _ = slots.acquire_many(all) => {
            tracing::info!("all pairs closed");
            return Ok(Stopped::Drained);
        }
        _ = tokio::time::sleep(config.drain_timeout) => Cut::Timeout(config.drain_timeout),
        _ = signals.recv() => Cut::SecondSignal,
    };
    census.cut_all();
    if tokio::time::timeout(CUT_GRACE, slots.acquire_many(all))
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

/// SIGTERM and SIGINT, merged.
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
