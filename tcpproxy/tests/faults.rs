//! Faults the proxy must survive: a destination that resets as soon as it accepts, either peer
//! resetting mid-transfer, running out of descriptors, and SIGTERM with transfers in flight.
//! Each forwarding test runs splicing and copying (`NAME::splice`, `NAME::copy`).

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::both_modes;
use crate::support::Proxy;
use testkit::check::{assert_bytes, check_bytes};
use testkit::deadline::{join_all, scaled, with_deadline};
use testkit::flood::{Flood, assert_aborted};
use testkit::pair::{
    AbortOnDrop, Dest, EchoServer, Pair, connect, connect_unless_reset, round_trip,
};
use testkit::pattern::pattern;
use testkit::peer::{Pacing, STEADY_RCVBUF, echo, read_to_end, reset};
use testkit::process::describe_status;

/// Reads what is left on `conn` and asserts it continues pattern `seed` from `offset`, ending in
/// EOF or a reset: a fault may cut a stream short but never corrupt it. Returns the bytes read.
async fn assert_prefix_then_end(conn: &mut TcpStream, seed: u64, offset: u64, what: &str) -> usize {
    let (got, end) = with_deadline(
        scaled(10.0),
        what,
        read_to_end(conn, &[Pacing::EAGER], usize::MAX),
    )
    .await;
    check_bytes(what, &pattern(seed, offset, got.len()), &got).unwrap_or_else(|m| panic!("{m}"));
    if let Err(e) = end {
        assert_eq!(
            e.kind(),
            io::ErrorKind::ConnectionReset,
            "{what}: {e} after {} bytes",
            got.len()
        );
    }
    got.len()
}

/// Descriptors the proxy may hold beyond its count at start once every pair has closed: the
/// pool keeps one spare pipe (two descriptors) after traffic, and the readiness probe's pair may
/// still have been open when the count was taken.
const FD_SLACK: usize = 4;

/// Waits until the proxy holds at most `most` descriptors.
async fn wait_fds_at_most(proxy: &Proxy, most: usize, what: &str) {
    let limit = scaled(10.0);
    let mut last = proxy.usage().fds;
    let waited = tokio::time::timeout(limit, async {
        loop {
            last = proxy.usage().fds;
            if last <= most {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{what}: the proxy still holds {last} descriptors after {:.1}s, expected at most {most}",
        limit.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// A destination that resets

/// A destination on 127.0.0.1:0 that, while `resetting` is set, resets every connection the
/// moment it accepts it, and otherwise echoes.
struct ResettingDest {
    port: u16,
    resetting: Arc<AtomicBool>,
    _acceptor: AbortOnDrop,
}

impl ResettingDest {
    async fn start() -> ResettingDest {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a destination on 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let resetting = Arc::new(AtomicBool::new(false));
        let flag = resetting.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    reset(conn);
                } else {
                    tokio::spawn(echo(conn, Pacing::EAGER));
                }
            }
        });
        ResettingDest {
            port,
            resetting,
            _acceptor: AbortOnDrop(acceptor),
        }
    }

    fn set_resetting(&self, on: bool) {
        self.resetting.store(on, Ordering::SeqCst);
    }
}

both_modes! {
    /// The client learns at once (nothing, then EOF or RST), its pair is torn down rather than
    /// left half-open, and the proxy goes on serving.
    async fn destination_resetting_at_accept_ends_the_pair_and_the_proxy_keeps_serving(mode: Mode) {
        const CLIENTS: u64 = 8;
        let dest = ResettingDest::start().await;
        let mut proxy = Proxy::start_in(mode, dest.port, &[]).await;
        let fds_at_start = proxy.usage().fds;

        dest.set_resetting(true);
        let mut clients = JoinSet::new();
        for seed in 0..CLIENTS {
            let port = proxy.port();
            clients.spawn(async move {
                // A reset that beats the connect's completion ends the pair as well as a later one.
                let Some(mut client) = connect_unless_reset(port).await else {
                    return;
                };
                let hello = pattern(seed, 0, 1000);
                // The proxy may already have reset the client: a failed write is an answer too.
                if client.write_all(&hello).await.is_ok() {
                    let what = format!("client {seed} of a destination that resets");
                    let (got, end) =
                        with_deadline(scaled(10.0), &what, read_to_end(&mut client, &[Pacing::EAGER], usize::MAX)).await;
                    assert!(got.is_empty(), "{what}: got {} bytes", got.len());
                    if let Err(e) = end {
                        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{what}: {e}");
                    }
                }
                // Half-open would mean the pair lingers: writing on must fail.
                let what = format!("client {seed}'s writes to fail after its destination reset");
                let end = Flood::start(client, seed).wait_failure(scaled(10.0), &what).await;
                assert_aborted(&what, end.error);
            });
        }
        join_all(clients, scaled(20.0), "clients of a destination that resets").await;
        proxy.assert_running();

        dest.set_resetting(false);
        let mut client = connect(proxy.port()).await;
        round_trip(&mut client, 100, 64 * 1024).await;
        drop(client);
        wait_fds_at_most(&proxy, fds_at_start + FD_SLACK, "after 8 reset pairs").await;
    }
}

// ---------------------------------------------------------------------------------------------
// A peer resetting mid-transfer

/// Which end of the pair resets.
#[derive(Debug, Clone, Copy)]
enum Resetter {
    Client,
    Server,
}

/// Which way the bytes were flowing when the reset came.
#[derive(Debug, Clone, Copy)]
enum Flow {
    /// The resetter was reading what the other end wrote.
    ToResetter,
    /// The resetter was writing and the other end reading.
    FromResetter,
}

/// Bytes that must have crossed the proxy before the reset, so it comes mid-transfer.
const BEFORE_RESET: usize = 256 * 1024;

/// Reads from `conn` the [`BEFORE_RESET`] bytes of `seed`'s pattern that must cross before the
/// reset in `name`, checked, within 10 s.
async fn read_before_reset(conn: &mut TcpStream, seed: u64, name: &str) {
    let mut got = vec![0; BEFORE_RESET];
    let what = format!("{name}: the first {BEFORE_RESET} bytes");
    with_deadline(scaled(10.0), &what, conn.read_exact(&mut got))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_bytes(&what, &pattern(seed, 0, BEFORE_RESET), &got);
}

/// One pair, one reset. The other end must be aborted: whatever it reads is a prefix of what was
/// sent, ending in EOF or RST (the lab counts a read error as EOF, so the proxy may forward the
/// resetter's end as a half-close), and its writes fail soon after, never leaving it half-open.
async fn reset_mid_transfer(proxy_port: u16, dest: &Dest, resetter: Resetter, flow: Flow) {
    let seed = 40 + resetter as u64 * 2 + flow as u64;
    let name = format!("{resetter:?} resetting with bytes flowing {flow:?}");
    let Pair { client, server } = Pair::open(proxy_port, dest).await;
    let (gone, mut other) = match resetter {
        Resetter::Client => (client, server),
        Resetter::Server => (server, client),
    };
    match flow {
        Flow::ToResetter => {
            let mut gone = gone;
            let flood = Flood::start(other, seed);
            read_before_reset(&mut gone, seed, &name).await;
            reset(gone);
            let what = format!("{name}: the writer's next writes to fail");
            let end = flood.wait_failure(scaled(10.0), &what).await;
            assert_aborted(&what, end.error);
            other = end.conn;
            let what = format!("{name}: what the writer reads after the abort");
            let n = assert_prefix_then_end(&mut other, seed + 100, 0, &what).await;
            assert_eq!(n, 0, "{what}: nothing was ever sent its way");
        }
        Flow::FromResetter => {
            let mut flood = Flood::start(gone, seed);
            read_before_reset(&mut other, seed, &name).await;
            flood
                .wait_stuck(&format!("{name}: the resetter's flood"))
                .await;
            let end = flood.stop().await;
            reset(end.conn);
            let what = format!("{name}: the reader after the reset");
            let rest = assert_prefix_then_end(&mut other, seed, BEFORE_RESET as u64, &what).await;
            let n = BEFORE_RESET + rest;
            assert!(
                n as u64 <= end.written,
                "{what}: read {n} bytes, only {} were written",
                end.written
            );
            let what = format!("{name}: the reader's writes to fail after the reset");
            let end = Flood::start(other, seed + 100)
                .wait_failure(scaled(10.0), &what)
                .await;
            assert_aborted(&what, end.error);
        }
    }
}

both_modes! {
    /// Every combination of who resets and which way the bytes flow, while another pair moves
    /// 4 MiB both ways through the same proxy: it must arrive intact, and a new pair be served.
    async fn peer_resetting_mid_transfer_aborts_the_other_side_and_spares_other_pairs(mode: Mode) {
        let dest = Dest::bind_with_rcvbuf(STEADY_RCVBUF).await;
        let mut proxy = Proxy::start_in(mode, dest.port(), &["--stall-timeout", "60"]).await;
        let fds_at_start = proxy.usage().fds;

        let bystander = {
            let Pair { mut client, server } = Pair::open(proxy.port(), &dest).await;
            tokio::spawn(echo(server, Pacing::EAGER));
            tokio::spawn(async move {
                round_trip(&mut client, 30, 4 << 20).await;
                client.shutdown().await.expect("shutdown the bystander");
            })
        };
        let mut faults = JoinSet::new();
        for resetter in [Resetter::Client, Resetter::Server] {
            for flow in [Flow::ToResetter, Flow::FromResetter] {
                let (port, dest) = (proxy.port(), dest.clone());
                faults.spawn(async move { reset_mid_transfer(port, &dest, resetter, flow).await });
            }
        }
        join_all(faults, scaled(30.0), "four resets mid-transfer").await;
        with_deadline(scaled(20.0), "the bystander's 4 MiB echo", bystander)
            .await
            .expect("the bystander's echo");
        proxy.assert_running();

        let Pair { mut client, server } = Pair::open(proxy.port(), &dest).await;
        tokio::spawn(echo(server, Pacing::EAGER));
        round_trip(&mut client, 31, 1000).await;
        drop(client);
        wait_fds_at_most(&proxy, fds_at_start + FD_SLACK, "after four resets").await;
    }
}

// ---------------------------------------------------------------------------------------------
// Out of descriptors

/// What became of one of the crowd of clients.
#[derive(Debug)]
enum Fate {
    /// Its pair echoed: the proxy had descriptors for it.
    Served,
    /// Closed without an echo: accepted, but no descriptor left to reach the destination.
    Turned(String),
}

both_modes! {
    /// With `ulimit -n 64` and 200 clients at once, the proxy serves what it can, turns the rest
    /// away or leaves them in the backlog, keeps its open pairs working, burns no CPU doing so,
    /// does not exit, and serves again once the crowd leaves.
    async fn out_of_descriptors_neither_spins_nor_exits_and_recovers(mode: Mode) {
        const NOFILE: u32 = 64;
        const CROWD: usize = 200;
        /// Spinning is about time: the proxy is watched this long while out of descriptors.
        const WATCH: Duration = Duration::from_secs(2);
        const MSG: usize = 16;

        let echo_server = EchoServer::start().await;
        let mut proxy = Proxy::start_with_nofile(mode, echo_server.port(), NOFILE, &[]).await;
        let started = (Instant::now(), proxy.usage().cpu);

        let (fates, mut fate) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let mut crowd = JoinSet::new();
        for i in 0..CROWD {
            let (port, fates, mut released) = (proxy.port(), fates.clone(), released.clone());
            crowd.spawn(async move {
                let mut client = connect(port).await;
                let seed = 1000 + i as u64;
                let sent = pattern(seed, 0, MSG);
                let mut got = [0; MSG];
                let answer = async {
                    client.write_all(&sent).await?;
                    client.read_exact(&mut got).await.map(|_| ())
                };
                let served = tokio::select! {
                    a = answer => a,
                    // Still in the backlog when the crowd is sent home.
                    _ = released.wait_for(|r| *r) => return,
                };
                match served {
                    Ok(()) => {
                        assert_bytes(&format!("the echo to client {i}"), &sent, &got);
                        let _ = fates.send(Fate::Served);
                        let _ = released.wait_for(|r| *r).await;
                        // A pair opened before the proxy ran out still works after.
                        round_trip(&mut client, seed + 5000, 4096).await;
                    }
                    Err(e) => {
                        let _ = fates.send(Fate::Turned(e.to_string()));
                    }
                }
            });
        }
        drop(fates);

        // The event: the proxy has hit its limit (at accept, or connecting to the destination).
        proxy
            .wait_stderr("Too many open files", scaled(20.0))
            .await;
        let out_at = Instant::now();
        tokio::time::sleep(WATCH).await;
        proxy.assert_running();
        let (wall, cpu) = (started.0.elapsed(), proxy.usage().cpu - started.1);
        let fds = proxy.usage().fds;
        let (mut served, mut turned) = (0, Vec::new());
        while let Ok(f) = fate.try_recv() {
            match f {
                Fate::Served => served += 1,
                Fate::Turned(why) => turned.push(why),
            }
        }
        eprintln!(
            "out of descriptors: {served} served, {} turned away, {} waiting; proxy CPU {:.2}s \
             in {:.2}s, {fds} descriptors; watched {:.1}s after the first EMFILE",
            turned.len(),
            CROWD - served - turned.len(),
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            out_at.elapsed().as_secs_f64(),
        );
        assert!(
            cpu.as_secs_f64() < 0.5 * wall.as_secs_f64(),
            "the proxy used {:.2}s of CPU in {:.2}s while out of descriptors: it spins",
            cpu.as_secs_f64(),
            wall.as_secs_f64()
        );
        assert!(served > 0, "no client was served; turned away: {turned:?}");
        assert!(
            fds <= NOFILE as usize,
            "the proxy holds {fds} descriptors with a limit of {NOFILE}: was the limit applied?"
        );

        // Send the crowd home; the served pairs echo once more first.
        release.send_replace(true);
        join_all(crowd, scaled(30.0), "the crowd to finish").await;

        // Serves again once descriptors free up. Clients still in the backlog are accepted (and
        // find their peers gone) first, so the first tries may be turned away.
        let port = proxy.port();
        let what = "the proxy to serve a new client after the crowd left";
        with_deadline(scaled(20.0), what, async {
            for attempt in 0u64.. {
                let mut client = connect(port).await;
                let sent = pattern(7000 + attempt, 0, MSG);
                let mut got = [0; MSG];
                let tried = async {
                    client.write_all(&sent).await?;
                    client.read_exact(&mut got).await.map(|_| ())
                };
                if let Ok(Ok(())) = tokio::time::timeout(scaled(2.0), tried).await {
                    assert_bytes("the echo after the crowd", &sent, &got);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        proxy.assert_running();
    }
}

// ---------------------------------------------------------------------------------------------
// SIGTERM

both_modes! {
    /// Pairs provably mid-transfer when SIGTERM lands (their readers have paused) finish every
    /// byte both ways, and the proxy exits 0 when the last closes, well before its drain timeout.
    async fn sigterm_lets_transfers_in_flight_finish_then_exits_0(mode: Mode) {
        const PAIRS: usize = 6;
        const UP: usize = 3 << 20;
        const DOWN: usize = 1 << 20;
        const DRAIN_SECS: f64 = 30.0;
        let dest = Dest::bind_with_rcvbuf(STEADY_RCVBUF).await;
        let drain = DRAIN_SECS.to_string();
        let mut proxy = Proxy::start_in(mode, dest.port(), &["--drain-timeout", &drain]).await;

        let (go, may_go) = watch::channel(false);
        let mut midway = Vec::new();
        let mut pairs = JoinSet::new();
        for i in 0..PAIRS {
            let Pair { mut client, mut server } = Pair::open(proxy.port(), &dest).await;
            let (reached, reached_rx) = oneshot::channel();
            midway.push(reached_rx);
            let mut may_go = may_go.clone();
            pairs.spawn(async move {
                let seed = 200 + i as u64 * 2;
                let (up, down) = (pattern(seed, 0, UP), pattern(seed + 1, 0, DOWN));
                let client_side = async {
                    let (mut r, mut w) = client.split();
                    let send = async {
                        w.write_all(&up).await?;
                        w.shutdown().await
                    };
                    let (sent, (got, end)) = tokio::join!(send, read_to_end(&mut r, &[Pacing::STEADY], usize::MAX));
                    (sent, got, end)
                };
                let server_side = async {
                    // The first bytes, then a pause until the proxy has taken the signal.
                    let mut head = vec![0; BEFORE_RESET];
                    server.read_exact(&mut head).await?;
                    let _ = reached.send(());
                    let _ = may_go.wait_for(|g| *g).await;
                    let (mut r, mut w) = server.split();
                    let reply = async {
                        w.write_all(&down).await?;
                        w.shutdown().await
                    };
                    let (replied, (rest, end)) = tokio::join!(reply, read_to_end(&mut r, &[Pacing::STEADY], usize::MAX));
                    head.extend_from_slice(&rest);
                    replied.and(end).map(|()| head)
                };
                let ((sent, got_down, down_end), got_up) = tokio::join!(client_side, server_side);
                let what = format!("pair {i} through SIGTERM");
                assert!(sent.is_ok(), "{what}: the client's upload: {sent:?}");
                let got_up = got_up.unwrap_or_else(|e| panic!("{what}: the server's side: {e}"));
                assert!(down_end.is_ok(), "{what}: the client's download: {down_end:?}");
                assert_bytes(&format!("{what}, client->server"), &up, &got_up);
                assert_bytes(&format!("{what}, server->client"), &down, &got_down);
            });
        }
        for (i, reached) in midway.into_iter().enumerate() {
            with_deadline(scaled(10.0), format!("pair {i} to get under way"), reached)
                .await
                .expect("the pair's task is running");
        }

        let signalled = Instant::now();
        proxy.signal("TERM");
        // The listener closes when the proxy handles the signal: only then are readers let go.
        let port = proxy.port();
        with_deadline(scaled(5.0), "the listener to close after SIGTERM", async {
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        go.send_replace(true);
        join_all(pairs, scaled(20.0), "transfers in flight at SIGTERM").await;

        let status = proxy.wait_exit(scaled(10.0)).await;
        let took = signalled.elapsed();
        assert!(status.success(), "after SIGTERM: {}", describe_status(status));
        assert!(
            took < Duration::from_secs_f64(DRAIN_SECS),
            "exited {took:?} after SIGTERM: it waited for the {DRAIN_SECS}s drain timeout"
        );
    }
}
