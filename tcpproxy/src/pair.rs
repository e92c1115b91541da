//! A proxied pair: the client's connection, the one made to the destination for it, and the two
//! [`Relay`]s between them, driven from one task so one place decides how the pair ends.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::pool::Pool;
use crate::relay::{Abort, Relay};

/// What a pair needs from the proxy's configuration, shared by every pair.
#[derive(Debug)]
pub struct Settings {
    pub dest_host: String,
    pub dest_port: u16,
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    pub pool: Pool,
}

/// How a pair ended, as its log line says it.
#[derive(Debug)]
pub enum End {
    /// Both directions read EOF and flushed everything.
    BothEof,
    /// Resolving or connecting to the destination failed or timed out.
    DestinationRefused(io::Error),
    /// One direction aborted; `upstream` is true for client->server.
    Aborted { upstream: bool, why: Abort },
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::BothEof => f.write_str("both EOF"),
            End::DestinationRefused(e) => write!(f, "destination refused: {e}"),
            End::Aborted { upstream, why } => {
                let dir = if *upstream {
                    "client->server"
                } else {
                    "server->client"
                };
                write!(f, "{why} ({dir})")
            }
        }
    }
}

/// Connects to the destination for one client and relays until the pair ends.
pub async fn serve(client: TcpStream, client_addr: SocketAddr, settings: Arc<Settings>) {
    let started = Instant::now();
    let server = match connect(&settings).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                client = %client_addr,
                dest = %format_args!("{}:{}", settings.dest_host, settings.dest_port),
                secs = format_args!("{:.3}", started.elapsed().as_secs_f64()),
                "pair closed: {}",
                End::DestinationRefused(e)
            );
            // Dropping the client closes it at once: it learns now, not at its next write.
            return;
        }
    };
    // Only the closing log line uses it: without -v, spare every pair the getpeername(2). Taken
    // now, while the connection stands, so that an aborted pair still names its destination.
    let dest_addr = tracing::enabled!(tracing::Level::INFO)
        .then(|| server.peer_addr().ok())
        .flatten();
    // A proxy should not add Nagle's delay to small writes the client already sent promptly.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);

    let mut up = Relay::new("client->server", settings.stall_timeout);
    let mut down = Relay::new("server->client", settings.stall_timeout);
    let pool = &settings.pool;
    let end = poll_fn(|cx| {
        // Poll both every time: each registers its own wake-ups, and a finished relay stays ready.
        let a = up.poll_relay(cx, pool, &client, &server);
        if let Poll::Ready(Err(why)) = a {
            return Poll::Ready(End::Aborted {
                upstream: true,
                why,
            });
        }
        let b = down.poll_relay(cx, pool, &server, &client);
        if let Poll::Ready(Err(why)) = b {
            return Poll::Ready(End::Aborted {
                upstream: false,
                why,
            });
        }
        if a.is_ready() && b.is_ready() {
            Poll::Ready(End::BothEof)
        } else {
            Poll::Pending
        }
    })
    .await;
    up.close(pool);
    down.close(pool);

    if matches!(end, End::Aborted { .. }) {
        // RST, not FIN: a peer must see a truncation, never mistake an abort for a clean end.
        for s in [&client, &server] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
    tracing::info!(
        client = %client_addr,
        dest = %dest_addr.map_or_else(|| "?".to_string(), |a| a.to_string()),
        up = up.written(),
        down = down.written(),
        secs = format_args!("{:.3}", started.elapsed().as_secs_f64()),
        read_error = ?up.read_error().or(down.read_error()).map(|e| e.to_string()),
        "pair closed: {end}"
    );
}

/// Resolves the destination again (its addresses may have changed since start) and tries each
/// address in order, all within the connect timeout.
async fn connect(settings: &Settings) -> io::Result<TcpStream> {
    let attempt = async {
        let addrs =
            tokio::net::lookup_host((settings.dest_host.as_str(), settings.dest_port)).await?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
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
