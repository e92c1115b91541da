//! A test's own ends of a connection through a proxy: listeners and clients on loopback with
//! the socket options a scenario needs, and readers paced to make a proxy's writes come back
//! short.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A receive buffer small enough that a peer which stops reading stalls its sender for real:
/// Linux loopback buffers otherwise autotune to megabytes.
pub const SMALL_RCVBUF: u32 = 4 * 1024;

/// A receive buffer that still stalls a sender whose reader stops, yet lets a paced reader
/// ([`Pacing::STEADY`]) take megabytes within a test's deadline, which [`SMALL_RCVBUF`]
/// slows sixteenfold: for tests that both stall a sender and stream bulk through slow readers.
pub const STEADY_RCVBUF: u32 = 64 * 1024;

/// The segment size a slow receiver advertises. The proxy's kernel send buffer is sized from
/// the peer's MSS: at loopback's 64 KiB MSS it starts at megabytes and swallows whole transfers,
/// so the proxy's writes never come back short and nothing stays in its own buffer. At 1000
/// bytes it is tens of KiB, and short writes and user-space tails happen for real.
pub const SMALL_MSS: u32 = 1000;

/// Makes `socket` a slow receiver when `rcvbuf` is given: a small receive buffer and a small
/// advertised MSS, both set before the handshake (a later setsockopt changes neither).
fn shrink(socket: &TcpSocket, rcvbuf: Option<u32>) -> io::Result<()> {
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
        socket2::SockRef::from(socket).set_tcp_mss(SMALL_MSS)?;
    }
    Ok(())
}

/// How a reader consumes: at most `chunk` bytes per read, then `pause`.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    pub chunk: usize,
    pub pause: Duration,
}

impl Pacing {
    /// As fast as the socket delivers.
    pub const EAGER: Pacing = Pacing {
        chunk: 64 * 1024,
        pause: Duration::ZERO,
    };

    /// A slow but steady reader: it keeps up with bulk only through a buffer as large as
    /// [`STEADY_RCVBUF`].
    pub const STEADY: Pacing = Pacing {
        chunk: 16 * 1024,
        pause: Duration::from_millis(1),
    };

    async fn rest(&self) {
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago. Racy by nature (another process may take it
/// before the proxy binds), so whoever starts a proxy on it retries on "address in use".
pub fn free_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let port = l.local_addr()?.port();
    // A child another thread has forked and not yet exec'd holds a copy of the descriptor, and
    // would keep a merely closed listener answering on a "free" port.
    crate::fork_fence::close_listener(l)?;
    Ok(port)
}

/// One try at starting something on a port from [`free_port`].
#[derive(Debug)]
pub enum PortTry<T, E> {
    Started(T),
    /// The port was taken by the time it was bound: another port may do.
    Taken(E),
    Failed(E),
}

/// Starts something on a port that was free a moment ago, and again on a new one while the port
/// turns out taken, `tries` times at most (then the last [`PortTry::Taken`] is the error).
/// `no_port` makes the error for a port that cannot be found at all.
pub async fn on_free_port<T, E, F>(
    tries: usize,
    no_port: impl FnOnce(io::Error) -> E,
    mut start: impl FnMut(u16) -> F,
) -> Result<T, E>
where
    F: Future<Output = PortTry<T, E>>,
{
    let mut last = None;
    for _ in 0..tries {
        let port = match free_port() {
            Ok(port) => port,
            Err(e) => return Err(no_port(e)),
        };
        match start(port).await {
            PortTry::Started(started) => return Ok(started),
            PortTry::Taken(e) => last = Some(e),
            PortTry::Failed(e) => return Err(e),
        }
    }
    Err(last.expect("on_free_port needs at least one try"))
}

/// Whether a process's stderr says its listen port was taken (EADDRINUSE, in whatever words).
pub fn says_port_taken(stderr: &str) -> bool {
    let stderr = stderr.to_lowercase();
    stderr.contains("in use") || stderr.contains("eaddrinuse")
}

/// A listener on 127.0.0.1, port chosen by the kernel. A slow-receiver `rcvbuf` is set before
/// `listen` so every accepted socket inherits it (a later setsockopt does not shrink an established window).
pub fn listen(rcvbuf: Option<u32>) -> io::Result<TcpListener> {
    listen_on(0, rcvbuf)
}

/// A listener on 127.0.0.1:`port` (0 for any), with SO_REUSEADDR so a port just closed can be
/// listened on again.
pub fn listen_on(port: u16, rcvbuf: Option<u32>) -> io::Result<TcpListener> {
    listen_at(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), rcvbuf)
}

/// A listener on `addr` (127.0.0.1 or ::1, say), as [`listen_on`] makes one.
pub fn listen_at(addr: SocketAddr, rcvbuf: Option<u32>) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    shrink(&socket, rcvbuf)?;
    socket.bind(addr)?;
    // The many-connections phase opens well over a thousand pairs at once.
    socket.listen(4096)
}

/// A destination port held while it refuses: bound, not listening. Linux answers a SYN to it
/// with RST, as for a closed port, yet the port stays bound, so no connect() elsewhere can take
/// it as its ephemeral local port (it skips explicitly bound ports) and no plain bind() can have
/// it. Merely closing the listener lost it that way about one run in five, and the reopen then
/// failed on a port clash of the harness's own making.
pub struct Reserved {
    socket: TcpSocket,
}

/// Stops `listener` listening but keeps its port as a [`Reserved`], with `rcvbuf` set for the
/// listener it becomes again. The reservation binds beside the listener before the listener is
/// closed, so the port is never free for an instant: both carry SO_REUSEPORT (set on the live
/// listener now; Linux checks it at each bind), and SO_REUSEADDR lets the reservation share the
/// port with connections the listener accepted or that are in TIME_WAIT.
pub fn reserve(listener: TcpListener, rcvbuf: Option<u32>) -> io::Result<Reserved> {
    let port = listener.local_addr()?.port();
    socket2::SockRef::from(&listener).set_reuse_port(true)?;
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    shrink(&socket, rcvbuf)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    // A child another thread has forked but not yet exec'd holds a copy of the descriptor and
    // would keep a merely closed listener listening.
    crate::fork_fence::close_listener(listener)?;
    Ok(Reserved { socket })
}

impl Reserved {
    /// Listens on the reserved port again.
    pub fn listen(self) -> io::Result<TcpListener> {
        self.socket.listen(4096)
    }
}

/// Connects to 127.0.0.1:`port`, with `rcvbuf` set before the handshake when given.
pub async fn connect(port: u16, rcvbuf: Option<u32>) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    shrink(&socket, rcvbuf)?;
    let stream = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Echoes everything read back to its sender, paced, and half-closes after the peer's EOF.
/// Returns the bytes echoed; an error ends the echo quietly (the phase's check reports it).
/// Any stream will do (the harness's sockets that note their events, as well as bare ones).
pub async fn echo(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    pacing: Pacing,
) -> io::Result<u64> {
    let mut buf = vec![0; pacing.chunk];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            stream.shutdown().await?;
            return Ok(total);
        }
        stream.write_all(&buf[..n]).await?;
        total += n as u64;
        pacing.rest().await;
    }
}

/// Reads until EOF, cycling through `schedule`'s pacings (one read each), keeping at most
/// `limit` bytes (the rest is counted, not kept). Returns what was read and how the stream
/// ended.
pub async fn read_to_end(
    rd: &mut (impl AsyncRead + Unpin),
    schedule: &[Pacing],
    limit: usize,
) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let most = schedule.iter().map(|p| p.chunk).max().unwrap_or(1);
    let mut buf = vec![0; most.max(1)];
    for pacing in schedule.iter().cycle() {
        match rd.read(&mut buf[..pacing.chunk.max(1)]).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => {
                let keep = n.min(limit.saturating_sub(got.len()));
                got.extend_from_slice(&buf[..keep]);
            }
            Err(e) => return (got, Err(e)),
        }
        pacing.rest().await;
    }
    panic!("read_to_end needs a pacing to read with")
}

/// Reads exactly `want` bytes, paced, appending to `got` as they come so a caller that gives up
/// still sees how far it got.
pub async fn read_exact_into(
    rd: &mut (impl AsyncRead + Unpin),
    want: usize,
    pacing: Pacing,
    got: &mut Vec<u8>,
) -> io::Result<()> {
    let mut buf = vec![0; pacing.chunk];
    while got.len() < want {
        let room = (want - got.len()).min(buf.len());
        let n = rd.read(&mut buf[..room]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF"));
        }
        got.extend_from_slice(&buf[..n]);
        pacing.rest().await;
    }
    Ok(())
}

/// Writes all of `data`, in pieces of at most `piece` bytes.
pub async fn write_in_pieces(
    wr: &mut (impl AsyncWrite + Unpin),
    data: &[u8],
    piece: usize,
) -> io::Result<()> {
    for part in data.chunks(piece.max(1)) {
        wr.write_all(part).await?;
    }
    Ok(())
}

/// Closes `conn` with RST instead of FIN: SO_LINGER with a zero timeout, then close. Panics if
/// the option cannot be set, which only a socket that is no TCP socket would refuse.
pub fn reset(conn: TcpStream) {
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// True for the errors a reset or an aborted connection gives: what "the proxy closed the
/// connection" looks like from a peer that is still writing or reading.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_tried_again_on_another_and_other_failures_end_at_once() {
        let tried = std::cell::RefCell::new(Vec::new());
        let tried = &tried;
        let started = on_free_port(
            3,
            |e| e.to_string(),
            move |port| async move {
                tried.borrow_mut().push(port);
                match tried.borrow().len() {
                    1 => PortTry::Taken(format!("{port}: Address already in use")),
                    _ => PortTry::Started(port),
                }
            },
        )
        .await;
        assert_eq!(started, Ok(tried.borrow()[1]));
        let taken: Result<(), _> = on_free_port(
            2,
            |e| e.to_string(),
            |port| async move { PortTry::Taken(format!("{port} taken")) },
        )
        .await;
        assert!(taken.unwrap_err().ends_with("taken"));
        let calls = std::cell::Cell::new(0);
        let failed: Result<(), _> = on_free_port(
            5,
            |e| e.to_string(),
            |_| async {
                calls.set(calls.get() + 1);
                PortTry::Failed("exit status 1".to_string())
            },
        )
        .await;
        assert_eq!((failed, calls.get()), (Err("exit status 1".to_string()), 1));
        assert!(says_port_taken(
            "Error: Address already in use (os error 98)"
        ));
        assert!(says_port_taken("bind: EADDRINUSE"));
        assert!(!says_port_taken("connection refused"));
    }

    fn bind_plain(ip: Ipv4Addr, port: u16) -> io::Result<()> {
        TcpSocket::new_v4()?.bind(SocketAddr::from((ip, port)))
    }

    #[tokio::test]
    async fn a_reserved_port_refuses_connections_and_cannot_be_taken_until_it_listens_again() {
        let listener = listen(Some(SMALL_RCVBUF)).unwrap();
        let port = listener.local_addr().unwrap().port();
        // An accepted connection, closed: the port then has sockets besides the listener.
        let client = connect(port, None).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        drop((client, accepted));

        let reserved = reserve(listener, Some(SMALL_RCVBUF)).unwrap();
        assert_eq!(reserved.socket.local_addr().unwrap().port(), port);
        let refused = connect(port, None).await.unwrap_err();
        assert_eq!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused,
            "{refused}"
        );
        for ip in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
            let taken = bind_plain(ip, port).unwrap_err();
            assert_eq!(
                taken.kind(),
                io::ErrorKind::AddrInUse,
                "bind {ip}:{port}: {taken}"
            );
        }

        let again = reserved.listen().unwrap();
        assert_eq!(again.local_addr().unwrap().port(), port);
        let mut client = connect(port, None).await.unwrap();
        let (mut accepted, _) = again.accept().await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut byte = [0u8; 1];
        accepted.read_exact(&mut byte).await.unwrap();
        assert_eq!(&byte, b"x");
        let rcvbuf = socket2::SockRef::from(&accepted)
            .recv_buffer_size()
            .unwrap();
        assert!(
            rcvbuf < 64 * 1024,
            "the listener again makes slow receivers: SO_RCVBUF {rcvbuf}"
        );
    }

    /// A listener closed while another thread's child sits between fork and exec lives on in
    /// that child: with a plain close, 78 to 90 of these 3000 reserved ports answered a connect;
    /// fenced, 1 run in 37 still had one; shut down first, none in 25 (docs/reliability.md).
    #[tokio::test(flavor = "current_thread")]
    async fn a_reserved_port_refuses_while_other_threads_spawn_children() {
        use std::os::unix::process::CommandExt as _;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        const RESERVES: usize = 3000;
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let spawners: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut spawned = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        // A uid, even our own, takes std's fork path, as the harness's spawns do.
                        let child = crate::fork_fence::forking(|| {
                            std::process::Command::new("true").uid(uid).spawn()
                        });
                        child.unwrap().wait().unwrap();
                        spawned += 1;
                    }
                    spawned
                })
            })
            .collect();
        let mut answered = Vec::new();
        for _ in 0..RESERVES {
            let listener = listen(None).unwrap();
            let port = listener.local_addr().unwrap().port();
            let reserved = reserve(listener, None).unwrap();
            match std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                Ok(_) => answered.push(port),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}"),
            }
            drop(reserved);
        }
        stop.store(true, Ordering::Relaxed);
        let spawned: u32 = spawners.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(spawned > 0, "the test spawned no child while it reserved");
        assert!(
            answered.is_empty(),
            "{} of {RESERVES} reserved ports answered a connect while {spawned} children were spawned beside them (ports {:?})",
            answered.len(),
            &answered[..answered.len().min(5)]
        );
    }
}
