//! The proxy contract over loopback: many pairs at once, peers that stop reading, half-close with
//! data in flight, the stall timer, and RST on abort. Each forwarding test runs twice, splicing
//! and copying (`NAME::splice`, `NAME::copy`).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::both_modes;
use crate::support::{Mode, Proxy};
use testkit::check::{assert_bytes, check_bytes};
use testkit::deadline::{join_all, scaled, with_deadline};
use testkit::flood::{Flood, assert_aborted};
use testkit::pair::{Dest, EchoServer, Pair, assert_eof, connect, round_trip};
use testkit::pattern::pattern;
use testkit::peer::{Pacing, STEADY_RCVBUF, echo, free_port, read_to_end};

/// Which end of a pair stops reading, or writes first; every directional test runs both ways.
#[derive(Debug, Clone, Copy)]
enum End {
    Client,
    Server,
}

impl End {
    /// The direction whose data this end receives.
    fn inbound(self) -> &'static str {
        match self {
            End::Client => "server->client",
            End::Server => "client->server",
        }
    }

    /// A pair whose `self` end has a small SO_RCVBUF, so that not reading stalls for real.
    async fn open_pair_slow_here(self, proxy_port: u16, dest: &Dest) -> Pair {
        match self {
            End::Client => Pair::open_with_client_rcvbuf(proxy_port, dest, STEADY_RCVBUF).await,
            // The destination's listener sets it for every server end.
            End::Server => Pair::open(proxy_port, dest).await,
        }
    }

    /// (this end, the other end).
    fn split(self, pair: Pair) -> (TcpStream, TcpStream) {
        match self {
            End::Client => (pair.client, pair.server),
            End::Server => (pair.server, pair.client),
        }
    }
}

/// Opens a pair whose server end echoes, echoes `len` bytes, half-closes, and expects EOF back.
async fn echo_through(proxy_port: u16, dest: &Dest, seed: u64, len: usize) {
    let Pair { mut client, server } = Pair::open(proxy_port, dest).await;
    tokio::spawn(echo(server, Pacing::EAGER));
    round_trip(&mut client, seed, len).await;
    client
        .shutdown()
        .await
        .expect("shutdown the client's write half");
    assert_eof(&mut client, &format!("EOF after the echo of seed {seed}")).await;
}

both_modes! {
    async fn many_concurrent_pairs_each_echo_their_own_bytes(mode: Mode) {
        const PAIRS: usize = 100;
        let echo = EchoServer::start().await;
        let proxy = Proxy::start_in(mode, echo.port(), &[]).await;

        let mut tasks = JoinSet::new();
        for i in 0..PAIRS {
            let port = proxy.port();
            tasks.spawn(async move {
                let mut client = connect(port).await;
                round_trip(&mut client, i as u64, 16 * 1024 + i * 1031).await;
                client
            });
        }
        // Every pair has echoed and is still open: all of them were served at once.
        let clients = join_all(tasks, scaled(30.0), "100 echoes").await;
        let mut tasks = JoinSet::new();
        for (i, mut client) in clients.into_iter().enumerate() {
            tasks.spawn(async move {
                round_trip(&mut client, 1000 + i as u64, 1000).await;
                client.shutdown().await.expect("shutdown");
                assert_eof(&mut client, &format!("EOF on pair {i}")).await;
            });
        }
        join_all(tasks, scaled(30.0), "100 EOFs").await;
    }
}

both_modes! {
    async fn blocked_reader_does_not_stall_other_pairs(mode: Mode) {
        const OTHERS: u64 = 20;
        let dest = Dest::bind_with_rcvbuf(STEADY_RCVBUF).await;
        // Long enough that the stall timer leaves the blocked pairs alone for the whole test.
        let mut proxy = Proxy::start_in(mode, dest.port(), &["--stall-timeout", "60"]).await;

        // In one pair the server never reads, in another the client never reads.
        let mut blocked = Vec::new();
        for (seed, reader) in [(1, End::Server), (2, End::Client)] {
            let pair = reader.open_pair_slow_here(proxy.port(), &dest).await;
            let (never_reads, writer) = reader.split(pair);
            let mut flood = Flood::start(writer, seed);
            flood
                .wait_stuck(&format!("the {} flood", reader.inbound()))
                .await;
            blocked.push((seed, reader, never_reads, flood));
        }

        let mut others = JoinSet::new();
        for seed in 100..100 + OTHERS {
            let (port, dest) = (proxy.port(), dest.clone());
            others.spawn(async move { echo_through(port, &dest, seed, 256 * 1024).await });
        }
        join_all(
            others,
            scaled(20.0),
            "20 echoes while two pairs are blocked",
        )
        .await;

        // The blocked pairs were kept, not aborted: once read, every byte written arrives in order.
        for (seed, reader, mut never_reads, mut flood) in blocked {
            let dir = reader.inbound();
            flood.wait_stuck(&format!("the {dir} flood, still")).await;
            let mut end = flood.stop().await;
            end.conn
                .shutdown()
                .await
                .expect("shutdown the flooding end");
            let what = format!("the {dir} bytes of the blocked pair");
            let (got, how) =
                with_deadline(scaled(30.0), &what, read_to_end(&mut never_reads, &[Pacing::EAGER], usize::MAX)).await;
            assert!(
                how.is_ok(),
                "{what}: reading ended with {how:?} after {} bytes",
                got.len()
            );
            let written = usize::try_from(end.written).expect("fits in memory");
            assert_bytes(&what, &pattern(seed, 0, written), &got);
        }
        proxy.assert_running();
    }
}

/// Sizes staggered so that, in some pair, the tail is still in the proxy's buffer when it reads
/// the EOF: a proxy that drops it shows here, one connection alone often does not.
/// The largest exceeds what loopback's kernel buffers hold between the proxy and a stopped reader
/// (tcp_wmem's 4 MiB maximum plus the reader's SO_RCVBUF).
const HALF_CLOSE_SIZES: [usize; 4] = [1 << 20, (3 << 20) + 333, (5 << 20) + 7777, (7 << 20) - 5];

/// A proxy buffer larger than any of [`HALF_CLOSE_SIZES`]: the proxy takes the whole bulk at once,
/// and what the kernel cannot take yet waits in the proxy's own buffer.
const ROOMY_BUFFER: &str = "8388608";

/// When the slow reader starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Reading alongside the writer, slower than it.
    Alongside,
    /// Only once the writer has half-closed. With [`ROOMY_BUFFER`] the proxy then reads the EOF
    /// with all that the kernel could not take still in its own buffer.
    AfterHalfClose,
}

/// One direction of an exchange: its writer and its reader both ended cleanly, and the reader got
/// every byte sent.
#[track_caller]
fn assert_delivered(
    what: &str,
    (wrote, sent): (&io::Result<()>, &[u8]),
    (read, got): (&io::Result<()>, &[u8]),
) {
    assert!(
        wrote.is_ok() && read.is_ok(),
        "{what}: writer {wrote:?}, reader {read:?} after {} bytes",
        got.len()
    );
    assert_bytes(what, sent, got);
}

/// `writer` sends a few MB and half-closes while the other end reads slowly; the reader must get
/// every byte, then EOF, and its reply must still travel back over the half-closed pair.
async fn half_close_with_slow_reader(mode: Mode, writer: End) {
    let dest = Dest::bind_with_rcvbuf(STEADY_RCVBUF).await;
    let (default, roomy) = tokio::join!(
        Proxy::start_in(mode, dest.port(), &[]),
        Proxy::start_in(mode, dest.port(), &["--buffer-size", ROOMY_BUFFER]),
    );
    let reader_end = match writer {
        End::Client => End::Server,
        End::Server => End::Client,
    };
    let dir = reader_end.inbound();
    let mut pairs = JoinSet::new();
    for (proxy, start) in [
        (&default, Start::Alongside),
        (&roomy, Start::AfterHalfClose),
    ] {
        for (i, size) in HALF_CLOSE_SIZES.into_iter().enumerate() {
            let pair = reader_end.open_pair_slow_here(proxy.port(), &dest).await;
            let name = format!("{dir} pair {i} (reading {start:?})");
            pairs.spawn(async move {
                let (mut reader, mut writer) = reader_end.split(pair);
                let seed = i as u64;
                let sent = pattern(seed, 0, size);
                let reply = pattern(seed + 100, 0, 64 * 1024 + i);
                let (half_closed, may_read) = oneshot::channel();
                let send = async {
                    let wrote = async {
                        writer.write_all(&sent).await?;
                        writer.shutdown().await
                    };
                    let wrote = wrote.await;
                    let _ = half_closed.send(());
                    (
                        wrote,
                        read_to_end(&mut writer, &[Pacing::EAGER], usize::MAX).await,
                    )
                };
                let receive = async {
                    if let Start::AfterHalfClose = start {
                        let _ = may_read.await;
                    }
                    let got = read_to_end(&mut reader, &[Pacing::STEADY], usize::MAX).await;
                    let replied = async {
                        reader.write_all(&reply).await?;
                        reader.shutdown().await
                    };
                    (got, replied.await)
                };
                let ((wrote, (back, back_end)), ((got, got_end), replied)) =
                    tokio::join!(send, receive);
                let what = format!("bulk of {name}");
                assert_delivered(&what, (&wrote, &sent), (&got_end, &got));
                let what = format!("reply after the half-close of {name}");
                assert_delivered(&what, (&replied, &reply), (&back_end, &back));
            });
        }
    }
    join_all(
        pairs,
        scaled(30.0),
        &format!("{dir} half-closes with slow readers"),
    )
    .await;
}

both_modes! {
    async fn client_eof_reaches_server_after_every_buffered_byte(mode: Mode) {
        half_close_with_slow_reader(mode, End::Client).await;
    }
}

both_modes! {
    async fn server_eof_reaches_client_after_every_buffered_byte(mode: Mode) {
        half_close_with_slow_reader(mode, End::Server).await;
    }
}

both_modes! {
    async fn stalled_direction_aborts_pair_with_reset_both_ways(mode: Mode) {
        const STALL: Duration = Duration::from_secs(1);
        let dest = Dest::bind_with_rcvbuf(STEADY_RCVBUF).await;
        let mut proxy = Proxy::start_in(mode, dest.port(), &["--stall-timeout", "1"]).await;

        let stall = |reader: End| {
            let (port, dest) = (proxy.port(), dest.clone());
            async move {
                let dir = reader.inbound();
                let pair = reader.open_pair_slow_here(port, &dest).await;
                let (mut never_reads, writer) = reader.split(pair);
                let seed = 7;
                let began = tokio::time::Instant::now();
                let flood = Flood::start(writer, seed);
                let what = format!("the {dir} writer to fail once the stall timeout aborts the pair");
                let end = flood.wait_failure(STALL + scaled(30.0), &what).await;

                assert_aborted(&what, end.error);
                // Not before the stall timeout: the proxy held nothing before the flood began.
                // The writer's own last write is no lower bound: a starved writer still fills
                // the kernel's buffers after the proxy's timer started (146 ms before the abort
                // once, docs/reliability.md).
                let lived = end.at - began;
                let stalled = end.at - end.last_progress;
                assert!(
                    lived >= STALL && stalled <= STALL + scaled(5.0),
                    "{dir}: aborted {lived:?} after the flood began and {stalled:?} after its last write went through; stall timeout {STALL:?}"
                );

                // The end that never read gets what was delivered, then a reset: never a clean EOF.
                let what = format!("the {dir} reader of an aborted pair");
                let (got, how) =
                    with_deadline(scaled(5.0), &what, read_to_end(&mut never_reads, &[Pacing::EAGER], usize::MAX)).await;
                check_bytes(&what, &pattern(seed, 0, got.len()), &got)
                    .unwrap_or_else(|m| panic!("{m}"));
                match how {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                    Ok(()) => panic!(
                        "{what}: clean EOF after {} bytes, expected ECONNRESET",
                        got.len()
                    ),
                    Err(e) => panic!("{what}: {e} after {} bytes, expected ECONNRESET", got.len()),
                }
            }
        };
        tokio::join!(stall(End::Server), stall(End::Client));
        proxy.assert_running();
        echo_through(proxy.port(), &dest, 8, 1000).await;
    }
}

both_modes! {
    async fn stall_timer_restarts_on_every_write(mode: Mode) {
        // The proxy takes the whole bulk into its buffer at once and hands it to a reader that keeps
        // reading, slowly: at most 16 MB/s, so the buffer holds data for well over the stall timeout
        // while each of the proxy's writes comes within a fraction of it.
        const BULK: usize = 24 << 20;
        let dest = Dest::bind_with_rcvbuf(STEADY_RCVBUF).await;
        let args = ["--stall-timeout", "1", "--buffer-size", "33554432"];
        let mut proxy = Proxy::start_in(mode, dest.port(), &args).await;

        let steady = |reader: End| {
            let (port, dest) = (proxy.port(), dest.clone());
            async move {
                let dir = reader.inbound();
                let pair = reader.open_pair_slow_here(port, &dest).await;
                let (mut reader, mut writer) = reader.split(pair);
                let sent = pattern(15, 0, BULK);
                let send = async {
                    writer.write_all(&sent).await?;
                    writer.shutdown().await
                };
                let (wrote, (got, end)) = tokio::join!(send, read_to_end(&mut reader, &[Pacing::STEADY], usize::MAX));
                let what = format!("{dir} bulk to a slow but steady reader");
                assert!(
                    wrote.is_ok() && end.is_ok(),
                    "{what}: writer {wrote:?}, reader {end:?}"
                );
                assert_bytes(&what, &sent, &got);
            }
        };
        with_deadline(scaled(30.0), "two slow but steady readers", async {
            tokio::join!(steady(End::Server), steady(End::Client))
        })
        .await;
        proxy.assert_running();
    }
}

both_modes! {
    async fn write_error_aborts_pair_with_reset(mode: Mode) {
        let dest = Dest::bind().await;
        let mut proxy = Proxy::start_in(mode, dest.port(), &[]).await;
        let Pair { client, server } = Pair::open(proxy.port(), &dest).await;
        // The server leaves; writing to it fails, so the client must learn by a reset, not an EOF.
        drop(server);
        let what = "the client's writes to fail after the server closed";
        let end = Flood::start(client, 9)
            .wait_failure(scaled(10.0), what)
            .await;
        assert_aborted(what, end.error);
        proxy.assert_running();
        echo_through(proxy.port(), &dest, 10, 1000).await;
    }
}

both_modes! {
    async fn idle_pair_outlives_several_stall_timeouts(mode: Mode) {
        let dest = Dest::bind().await;
        let proxy = Proxy::start_in(mode, dest.port(), &["--stall-timeout", "0.5"]).await;

        let Pair { mut client, server } = Pair::open(proxy.port(), &dest).await;
        tokio::spawn(echo(server, Pacing::EAGER));
        round_trip(&mut client, 11, 4096).await;

        // Idle after a half-close too: the server's direction stays open.
        let Pair {
            client: mut half,
            server: mut late,
        } = Pair::open(proxy.port(), &dest).await;
        half.shutdown().await.expect("half-close");
        let mut byte = [0; 1];
        let n = with_deadline(
            scaled(5.0),
            "the client's EOF at the server",
            late.read(&mut byte),
        )
        .await;
        assert_eq!(n.expect("read the EOF"), 0, "expected EOF at the server");

        // Five stall timeouts with nothing buffered. The contract is about time, so sleep is the test.
        tokio::time::sleep(Duration::from_millis(2500)).await;

        round_trip(&mut client, 12, 4096).await;
        let reply = pattern(13, 0, 4096);
        late.write_all(&reply)
            .await
            .expect("write after the idle spell");
        late.shutdown().await.expect("shutdown");
        let (got, end) = with_deadline(
            scaled(5.0),
            "the late reply",
            read_to_end(&mut half, &[Pacing::EAGER], usize::MAX),
        )
        .await;
        assert!(end.is_ok(), "the late reply: {end:?}");
        assert_bytes("the late reply on a half-closed pair", &reply, &got);
    }
}

/// Reads exactly `n` bytes, 16 KiB a millisecond at most, so that the writer outruns it and the
/// proxy's buffer fills.
async fn read_slowly<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    n: usize,
) -> (Vec<u8>, io::Result<()>) {
    let mut got = vec![0; n];
    let mut at = 0;
    while at < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let end = (at + 16 * 1024).min(n);
        match r.read(&mut got[at..end]).await {
            Ok(0) => return (got, Err(io::ErrorKind::UnexpectedEof.into())),
            Ok(k) => at += k,
            Err(e) => return (got, Err(e)),
        }
    }
    (got, Ok(()))
}

both_modes! {
    /// Issue 7: buffers and pipes are lent only while bytes are in flight. After bulk both ways,
    /// into slow readers so that buffers fill and splicing directions take pipes, idle pairs
    /// hold their two sockets and nothing more: at most the pool's one spare pipe.
    async fn idle_pairs_hold_no_pipe_after_moving_bulk(mode: Mode) {
        const PAIRS: usize = 20;
        const BULK: usize = 1 << 20;
        let dest = Dest::bind_with_rcvbuf(STEADY_RCVBUF).await;
        let proxy = Proxy::start_in(mode, dest.port(), &[]).await;
        let mut pairs = Vec::new();
        for _ in 0..PAIRS {
            pairs.push(Pair::open_with_client_rcvbuf(proxy.port(), &dest, STEADY_RCVBUF).await);
        }
        let with_pairs = proxy.usage().fds;

        let mut tasks = JoinSet::new();
        for (i, Pair { client, server }) in pairs.into_iter().enumerate() {
            tasks.spawn(async move {
                let (mut client, mut server) = (client, server);
                let seed = i as u64;
                let (up, down) = (pattern(seed, 0, BULK), pattern(!seed, 0, BULK));
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let ok = |what: &'static str, r: io::Result<()>| {
                    r.unwrap_or_else(|e| panic!("pair {i}: {what}: {e}"));
                };
                let (w1, w2, (at_server, r1), (at_client, r2)) = tokio::join!(
                    cw.write_all(&up),
                    sw.write_all(&down),
                    read_slowly(&mut sr, BULK),
                    read_slowly(&mut cr, BULK),
                );
                ok("client write", w1);
                ok("server write", w2);
                ok("server read", r1);
                ok("client read", r2);
                assert_bytes(&format!("pair {i} client->server"), &up, &at_server);
                assert_bytes(&format!("pair {i} server->client"), &down, &at_client);
                (client, server)
            });
        }
        // Every byte delivered, no EOF sent: the pairs stay open, and idle, from here on.
        let _idle = join_all(tasks, scaled(30.0), "1 MiB each way through 20 pairs").await;

        // A direction gives its buffer back right after its last write; the reader may see the
        // bytes a moment before that, so wait for the count, within a deadline.
        let limit = with_pairs + 2;
        let what = format!(
            "the proxy's descriptors to fall back to at most {limit} ({with_pairs} with {PAIRS} \
             idle pairs, plus one spare pipe)"
        );
        with_deadline(scaled(5.0), &what, async {
            while proxy.usage().fds > limit {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_destination_closes_the_client_and_the_proxy_keeps_serving() {
    for _ in 0..3 {
        // Nothing listens on the destination port yet.
        let dest_port = free_port().expect("a free port on 127.0.0.1");
        let mut proxy = Proxy::start(dest_port, &[]).await;
        let mut client = connect(proxy.port()).await;
        let (got, end) = with_deadline(
            scaled(5.0),
            "the proxy to close a client whose destination refused",
            read_to_end(&mut client, &[Pacing::EAGER], usize::MAX),
        )
        .await;
        assert!(
            got.is_empty(),
            "{} bytes from a refused destination",
            got.len()
        );
        if let Err(e) = end {
            assert_eq!(
                e.kind(),
                io::ErrorKind::ConnectionReset,
                "closing the client: {e}"
            );
        }
        proxy.assert_running();

        // Someone may have taken the port meanwhile: then try again with another.
        let Ok(echo) = EchoServer::start_on(dest_port) else {
            continue;
        };
        assert_eq!(echo.port(), dest_port);
        let mut client = connect(proxy.port()).await;
        round_trip(&mut client, 14, 4096).await;
        return;
    }
    panic!("the destination port was taken every time before the echo server could bind it");
}
