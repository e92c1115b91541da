//! A test's connections through a proxy, for tests that panic on failure: destinations that
//! echo or hand each connection to the test that opened it, the pairs opened through the proxy,
//! and checks on them. Every wait has a deadline from [`scaled`].

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::check::assert_bytes;
use crate::deadline::{scaled, with_deadline};
use crate::pattern::pattern;
use crate::peer::{self, Pacing, read_to_end};

/// Tags are unique in this process; a connection that sends no tag (a readiness probe's pair)
/// is never handed out.
fn next_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x7463_7078_0000_0001);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A destination on 127.0.0.1:0 that hands each accepted connection to the test that asks for
/// its tag: the 8 bytes [`Pair::open`] sends first. Clones share the listener.
#[derive(Clone)]
pub struct Dest {
    port: u16,
    routes: Arc<Mutex<HashMap<u64, Route>>>,
    _acceptor: Arc<AbortOnDrop>,
}

enum Route {
    /// The connection came before the test asked for it.
    Arrived(TcpStream),
    /// The test asked first.
    Awaited(oneshot::Sender<TcpStream>),
}

impl Dest {
    pub async fn bind() -> Dest {
        Dest::bind_inner(None)
    }

    /// Accepted connections are slow receivers (see [`peer::listen`]).
    pub async fn bind_with_rcvbuf(bytes: u32) -> Dest {
        Dest::bind_inner(Some(bytes))
    }

    fn bind_inner(rcvbuf: Option<u32>) -> Dest {
        let listener = peer::listen(rcvbuf).expect("bind a destination on 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let table = routes.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let table = table.clone();
                tokio::spawn(async move {
                    let mut tag = [0; 8];
                    let read = tokio::time::timeout(scaled(30.0), conn.read_exact(&mut tag));
                    if let Ok(Ok(_)) = read.await {
                        route(&table, u64::from_le_bytes(tag), conn);
                    }
                });
            }
        });
        Dest {
            port,
            routes,
            _acceptor: Arc::new(AbortOnDrop(acceptor)),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server end of the pair whose client sent `tag`.
    pub async fn take(&self, tag: u64) -> TcpStream {
        let waiting = {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            match routes.remove(&tag) {
                Some(Route::Arrived(conn)) => return conn,
                Some(Route::Awaited(_)) => panic!("tag {tag:#x} taken twice"),
                None => {
                    let (tx, rx) = oneshot::channel();
                    routes.insert(tag, Route::Awaited(tx));
                    rx
                }
            }
        };
        let what = format!(
            "the proxy to connect to the destination on port {} for tag {tag:#x}",
            self.port
        );
        with_deadline(scaled(10.0), what, waiting)
            .await
            .expect("the destination's acceptor is alive while the Dest is")
    }
}

fn route(table: &Mutex<HashMap<u64, Route>>, tag: u64, conn: TcpStream) {
    let mut routes = table.lock().unwrap_or_else(|e| e.into_inner());
    match routes.remove(&tag) {
        Some(Route::Awaited(tx)) => {
            let _ = tx.send(conn);
        }
        Some(Route::Arrived(_)) | None => {
            routes.insert(tag, Route::Arrived(conn));
        }
    }
}

/// A spawned task that ends when its owner is dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Echoes every connection until EOF, then shuts down its write half.
pub struct EchoServer {
    port: u16,
    _acceptor: AbortOnDrop,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        EchoServer::start_on(0).expect("bind an echo server on 127.0.0.1:0")
    }

    /// On a given port, which may be taken by now.
    pub fn start_on(port: u16) -> io::Result<EchoServer> {
        let listener = peer::listen_on(port, None)?;
        let port = listener.local_addr()?.port();
        let acceptor = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(peer::echo(conn, Pacing::EAGER));
            }
        });
        Ok(EchoServer {
            port,
            _acceptor: AbortOnDrop(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A client connection to 127.0.0.1:`port`.
pub async fn connect(port: u16) -> TcpStream {
    connect_inner(port, None).await
}

/// A client connection to 127.0.0.1:`port` that the proxy may reset as soon as it accepts it:
/// None when the connect itself saw that reset. Linux reports a reset that lands between the
/// handshake and the connect's completion as the connect's error (ECONNRESET), which is the
/// proxy ending the pair, not refusing the client.
pub async fn connect_unless_reset(port: u16) -> Option<TcpStream> {
    let what = format!("connect to 127.0.0.1:{port}");
    match with_deadline(scaled(5.0), &what, peer::connect(port, None)).await {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// With `rcvbuf`, a slow receiver (see [`peer::connect`]).
async fn connect_inner(port: u16, rcvbuf: Option<u32>) -> TcpStream {
    let what = format!("connect to 127.0.0.1:{port}");
    with_deadline(scaled(5.0), &what, peer::connect(port, rcvbuf))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Both ends of one proxied connection: the client's, and the destination's for it.
pub struct Pair {
    pub client: TcpStream,
    pub server: TcpStream,
}

impl Pair {
    /// Connects to the proxy on `proxy_port` and takes the matching connection from `dest`.
    pub async fn open(proxy_port: u16, dest: &Dest) -> Pair {
        Pair::open_inner(proxy_port, dest, None).await
    }

    pub async fn open_with_client_rcvbuf(proxy_port: u16, dest: &Dest, bytes: u32) -> Pair {
        Pair::open_inner(proxy_port, dest, Some(bytes)).await
    }

    async fn open_inner(proxy_port: u16, dest: &Dest, rcvbuf: Option<u32>) -> Pair {
        let tag = next_tag();
        let mut client = connect_inner(proxy_port, rcvbuf).await;
        client
            .write_all(&tag.to_le_bytes())
            .await
            .unwrap_or_else(|e| panic!("send tag {tag:#x} to the proxy on {proxy_port}: {e}"));
        let server = dest.take(tag).await;
        Pair { client, server }
    }
}

/// Writes `len` bytes of [`pattern`] `seed` and reads them back (the far end echoes), checking
/// every byte.
pub async fn round_trip(conn: &mut TcpStream, seed: u64, len: usize) {
    let sent = pattern(seed, 0, len);
    let mut got = vec![0; len];
    let (mut r, mut w) = conn.split();
    let what = format!("a {len}-byte echo (seed {seed})");
    let (wrote, read) = with_deadline(scaled(10.0), &what, async {
        tokio::join!(w.write_all(&sent), r.read_exact(&mut got))
    })
    .await;
    wrote.unwrap_or_else(|e| panic!("{what}: write failed: {e}"));
    read.unwrap_or_else(|e| panic!("{what}: read failed: {e}"));
    assert_bytes(&what, &sent, &got);
}

/// Reads to the end and asserts it was a clean EOF with nothing before it.
pub async fn assert_eof(conn: &mut TcpStream, what: &str) {
    let (got, end) = with_deadline(
        scaled(5.0),
        what,
        read_to_end(conn, &[Pacing::EAGER], usize::MAX),
    )
    .await;
    assert!(
        got.is_empty() && end.is_ok(),
        "{what}: expected EOF, got {} bytes then {end:?}",
        got.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a proxy: the client connects to the destination itself, so the tag it sends
    /// arrives as a proxy would forward it.
    #[tokio::test]
    async fn each_pair_gets_the_server_end_that_its_tag_names() {
        let dest = Dest::bind().await;
        let first = Pair::open(dest.port(), &dest).await;
        let Pair {
            mut client,
            mut server,
        } = Pair::open(dest.port(), &dest).await;
        client.write_all(b"second").await.unwrap();
        let mut got = [0; 6];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"second");
        drop(first.client);
        let mut server = first.server;
        assert_eof(&mut server, "the first pair's server end").await;
    }

    #[tokio::test]
    async fn an_echo_server_echoes() {
        let echo = EchoServer::start().await;
        let mut conn = connect(echo.port()).await;
        round_trip(&mut conn, 7, 100_000).await;
    }
}
