//! Long tests, ignored by default: 5,000 pairs at once, 100,000 short connections in a row, and
//! a loss check under load. `ci/stress` runs them in release mode, one at a time, and prints the
//! `figures:` line each ends with:
//!
//! ```text
//! cargo test --release -p tcpproxy --test integration -- --ignored --test-threads=1 --nocapture stress::
//! ```
//!
//! They must run alone: together they would hold more than the 20,000 descriptors one process
//! may have here. Every loop is bounded in count and in time; everything is on 127.0.0.1.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Mode, Proxy};
use testkit::deadline::{join_all, scaled, with_deadline};
use testkit::pair::{Dest, EchoServer, Pair, assert_eof, connect, round_trip};
use testkit::pattern::pattern;
use testkit::procfs::Usage;

const MIB: f64 = 1024.0 * 1024.0;

/// Waits until the proxy holds at most `most` descriptors, and returns its usage then.
async fn settle_fds(proxy: &Proxy, most: usize, limit: Duration, what: &str) -> Usage {
    let started = Instant::now();
    loop {
        let now = proxy.usage();
        if now.fds <= most {
            return now;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: the proxy still holds {} descriptors after {:.1}s, expected at most {most}",
            now.fds,
            limit.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5,000 pairs at once

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long: run with ci/stress"]
async fn five_thousand_concurrent_pairs_each_echo_their_own_bytes() {
    const PAIRS: usize = 5_000;
    /// Connections being opened at once: the proxy's backlog is 1024, and a SYN dropped from a
    /// full queue costs a second's retransmit.
    const OPENING: usize = 256;
    let started = Instant::now();
    let echo = EchoServer::start().await;
    let proxy = Proxy::start(echo.port(), &[]).await;
    let at_start = proxy.usage();

    let opening = Arc::new(Semaphore::new(OPENING));
    let mut tasks = JoinSet::new();
    for i in 0..PAIRS {
        let (port, opening) = (proxy.port(), opening.clone());
        tasks.spawn(async move {
            let _turn = opening.acquire_owned().await.expect("never closed");
            let mut client = connect(port).await;
            round_trip(&mut client, i as u64, 1024 + i % 3000).await;
            client
        });
    }
    let clients = join_all(tasks, scaled(180.0), "5,000 pairs to open and echo").await;
    let opened = started.elapsed();
    let peak = proxy.usage();
    assert!(
        peak.fds >= 2 * PAIRS,
        "with {PAIRS} pairs open the proxy holds only {} descriptors",
        peak.fds
    );

    // All of them at once, again: every pair is still open and still its own.
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            round_trip(&mut client, (PAIRS + i) as u64, 512).await;
            client.shutdown().await.expect("shutdown");
            assert_eof(&mut client, &format!("EOF on pair {i}")).await;
        });
    }
    join_all(
        tasks,
        scaled(180.0),
        "5,000 open pairs to echo again and close",
    )
    .await;
    let after = settle_fds(
        &proxy,
        at_start.fds + 4,
        scaled(30.0),
        "after 5,000 pairs closed",
    )
    .await;
    eprintln!(
        "\nfigures: concurrent pairs={PAIRS} open_secs={:.1} total_secs={:.1} peak_fds={} \
         peak_rss_mib={:.1} fds_before={} fds_after={} rss_after_mib={:.1}",
        opened.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        peak.fds,
        peak.rss_bytes as f64 / MIB,
        at_start.fds,
        after.fds,
        after.rss_bytes as f64 / MIB,
    );
}

// ---------------------------------------------------------------------------------------------
// 100,000 short connections

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long: run with ci/stress"]
async fn hundred_thousand_short_connections_leave_descriptors_and_memory_flat() {
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 10_000;
    /// Clients at work at once, each opening connections one after another.
    const WORKERS: usize = 8;
    /// RSS the proxy may gain between the first round and the last. A leak of 50 bytes per
    /// connection over the 90,000 in between would exceed it; allocator noise stays well under.
    const RSS_SLACK: u64 = 4 << 20;
    const MSG: usize = 16;

    let started = Instant::now();
    let echo = EchoServer::start().await;
    let proxy = Proxy::start(echo.port(), &[]).await;
    let at_start = proxy.usage();
    let mut after_round: Vec<Usage> = Vec::new();
    for round in 0..ROUNDS {
        let mut workers = JoinSet::new();
        for w in 0..WORKERS {
            let port = proxy.port();
            workers.spawn(async move {
                for n in (w..PER_ROUND).step_by(WORKERS) {
                    let seed = (round * PER_ROUND + n) as u64;
                    let mut client = connect(port).await;
                    let sent = pattern(seed, 0, MSG);
                    client.write_all(&sent).await.expect("write");
                    client.shutdown().await.expect("shutdown");
                    let mut got = Vec::with_capacity(MSG);
                    let what = format!("connection {seed}: echo and EOF");
                    with_deadline(scaled(10.0), &what, client.read_to_end(&mut got))
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(got, sent, "{what}");
                }
            });
        }
        join_all(
            workers,
            scaled(300.0),
            &format!("round {round} of {PER_ROUND} connections"),
        )
        .await;
        // Pairs end a moment after their clients see EOF: wait for the last to close.
        let usage = settle_fds(
            &proxy,
            at_start.fds + 4,
            scaled(30.0),
            &format!("after round {round}"),
        )
        .await;
        after_round.push(usage);
    }
    let secs = started.elapsed().as_secs_f64();
    let (first, last) = (after_round[0], after_round[ROUNDS - 1]);
    let series = after_round.iter().fold(String::new(), |mut s, u| {
        let _ = write!(s, "{}/{:.1} ", u.fds, u.rss_bytes as f64 / MIB);
        s
    });
    eprintln!(
        "\nfigures: short connections={} secs={secs:.1} rate_per_sec={:.0} fds_before={} \
         after each 10,000 (fds/rss MiB): {}",
        ROUNDS * PER_ROUND,
        (ROUNDS * PER_ROUND) as f64 / secs,
        at_start.fds,
        series.trim_end(),
    );
    // The pool may or may not hold its one spare pipe (two descriptors) at either moment.
    assert!(
        last.fds <= first.fds + 2,
        "descriptors grew from {} after the first round to {} after the last",
        first.fds,
        last.fds
    );
    assert!(
        last.rss_bytes <= first.rss_bytes + RSS_SLACK,
        "RSS grew from {} KiB after the first round to {} KiB after the last (allowed {} KiB)",
        first.rss_bytes >> 10,
        last.rss_bytes >> 10,
        RSS_SLACK >> 10
    );
}

// ---------------------------------------------------------------------------------------------
// Loss check under load

/// How a pair ends its two directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Both ends write at once and each half-closes after its last byte.
    Together,
    /// The client writes and half-closes; the server replies only after reading its EOF.
    ClientFirst,
    /// The server writes and half-closes; the client replies only after reading its EOF.
    ServerFirst,
}

/// What one end of a transfer does.
#[derive(Debug, Clone, Copy)]
struct End {
    /// Bytes it writes before it half-closes.
    writes: usize,
    /// Most bytes per write.
    chunk: usize,
    /// Most bytes per read and a pause before each read: a slow reader makes the proxy's writes
    /// come back short and holds data in it when the EOF comes.
    read: (usize, Duration),
}

/// One transfer: sizes, pacing and ending drawn from the run's seed.
#[derive(Debug, Clone)]
struct Transfer {
    id: usize,
    mode: Mode,
    ending: Ending,
    client: End,
    server: End,
    /// A small SO_RCVBUF on the client, so its slowness reaches the proxy at once.
    small_client_rcvbuf: bool,
}

impl Transfer {
    fn draw(id: usize, rng: &mut ChaCha20Rng) -> Transfer {
        let size = |rng: &mut ChaCha20Rng| -> usize {
            // One in ten is empty (a bare half-close); the rest log-uniform from 1 B to 4 MiB.
            if rng.random_bool(0.1) {
                0
            } else {
                let bits = rng.random_range(0.0..22.0f64);
                2f64.powf(bits) as usize
            }
        };
        let chunk =
            |rng: &mut ChaCha20Rng| [1, 100, 1500, 16 * 1024, 256 * 1024][rng.random_range(0..5)];
        let read = |rng: &mut ChaCha20Rng| match rng.random_range(0..4) {
            0 => (64 * 1024, Duration::ZERO),
            1 => (16 * 1024, Duration::ZERO),
            2 => (16 * 1024, Duration::from_millis(1)),
            _ => (4 * 1024, Duration::from_millis(1)),
        };
        // Drawn in this order, so a seed still names the transfers it named before.
        let mode = if rng.random_bool(0.5) {
            Mode::Splice
        } else {
            Mode::Copy
        };
        let writes = [size(rng), size(rng)];
        let ending =
            [Ending::Together, Ending::ClientFirst, Ending::ServerFirst][rng.random_range(0..3)];
        let chunks = [chunk(rng), chunk(rng)];
        let reads = [read(rng), read(rng)];
        let end = |i: usize| End {
            writes: writes[i],
            chunk: chunks[i],
            read: reads[i],
        };
        Transfer {
            id,
            mode,
            ending,
            client: end(0),
            server: end(1),
            small_client_rcvbuf: rng.random_bool(0.3),
        }
    }
}

/// What arrived on one direction, checked against the pattern as it came.
#[derive(Debug)]
struct Received {
    len: u64,
    sha256: [u8; 32],
    /// The first offset whose byte differs from what was sent.
    first_difference: Option<u64>,
    /// How reading ended; `Ok` for EOF.
    end: Result<(), String>,
}

/// Writes `len` bytes of pattern `seed` in chunks of at most `chunk`, then half-closes.
/// Returns the sha256 of what was written.
async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    len: usize,
    chunk: usize,
) -> io::Result<[u8; 32]> {
    let mut sha = Sha256::new();
    let mut at = 0;
    while at < len {
        let n = chunk.min(len - at);
        let bytes = pattern(seed, at as u64, n);
        w.write_all(&bytes).await?;
        sha.update(&bytes);
        at += n;
    }
    w.shutdown().await?;
    Ok(sha.finalize().into())
}

/// Reads to EOF, comparing every byte with pattern `seed` as it arrives and hashing it.
async fn receive<R: AsyncRead + Unpin>(
    r: &mut R,
    seed: u64,
    (most, pause): (usize, Duration),
) -> Received {
    let mut buf = vec![0; most];
    let mut sha = Sha256::new();
    let (mut len, mut first_difference) = (0u64, None);
    let end = loop {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        match r.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                let got = &buf[..n];
                if first_difference.is_none() {
                    let expected = pattern(seed, len, n);
                    if let Some(i) = expected.iter().zip(got).position(|(a, b)| a != b) {
                        first_difference = Some(len + i as u64);
                    }
                }
                sha.update(got);
                len += n as u64;
            }
            Err(e) => break Err(e.to_string()),
        }
    };
    Received {
        len,
        sha256: sha.finalize().into(),
        first_difference,
        end,
    }
}

/// Compares one direction; `None` when every byte arrived, then EOF.
fn mismatch(dir: &str, len: usize, sent: &io::Result<[u8; 32]>, got: &Received) -> Option<String> {
    let sent = match sent {
        Ok(sha) => sha,
        Err(e) => return Some(format!("{dir}: the writer failed: {e}")),
    };
    if got.len == len as u64
        && got.sha256 == *sent
        && got.first_difference.is_none()
        && got.end.is_ok()
    {
        return None;
    }
    Some(format!(
        "{dir}: got {} of {len} bytes, sha256 {}, first difference at {:?}, reading ended {:?}",
        got.len,
        if got.sha256 == *sent {
            "equal"
        } else {
            "differs"
        },
        got.first_difference,
        got.end
    ))
}

/// One end of a transfer: writes `end.writes` bytes of `write_seed`'s pattern, `end.chunk` at a
/// time, and at once reads the other end's bytes, of `read_seed`, paced by `end.read`, to EOF;
/// when `other_first`, it writes only once that EOF has come.
async fn run_end(
    conn: &mut tokio::net::TcpStream,
    end: End,
    (write_seed, read_seed): (u64, u64),
    other_first: bool,
) -> (io::Result<[u8; 32]>, Received) {
    let (eof_seen, other_eof) = oneshot::channel::<()>();
    let (mut r, mut w) = conn.split();
    let write = async {
        if other_first {
            let _ = other_eof.await;
        }
        send(&mut w, write_seed, end.writes, end.chunk).await
    };
    let read = async {
        let got = receive(&mut r, read_seed, end.read).await;
        let _ = eof_seen.send(());
        got
    };
    tokio::join!(write, read)
}

/// Runs one transfer through `proxy_port`; `Err` describes every direction that went wrong.
async fn run_transfer(t: Transfer, proxy_port: u16, dest: Dest, seed: u64) -> Result<u64, String> {
    let (up_seed, down_seed) = (
        seed ^ ((2 * t.id as u64 + 1) << 20),
        seed ^ ((2 * t.id as u64 + 2) << 20),
    );
    let pair = if t.small_client_rcvbuf {
        Pair::open_with_client_rcvbuf(proxy_port, &dest, 16 * 1024).await
    } else {
        Pair::open(proxy_port, &dest).await
    };
    let Pair {
        mut client,
        mut server,
    } = pair;
    let server_first = t.ending == Ending::ServerFirst;
    let client_first = t.ending == Ending::ClientFirst;
    let client_side = run_end(&mut client, t.client, (up_seed, down_seed), server_first);
    let server_side = run_end(&mut server, t.server, (down_seed, up_seed), client_first);
    let what = format!("transfer {} ({t:?})", t.id);
    let ((up_sent, down_got), (down_sent, up_got)) = with_deadline(scaled(120.0), &what, async {
        tokio::join!(client_side, server_side)
    })
    .await;
    let wrong: Vec<String> = [
        mismatch("client->server", t.client.writes, &up_sent, &up_got),
        mismatch("server->client", t.server.writes, &down_sent, &down_got),
    ]
    .into_iter()
    .flatten()
    .collect();
    if wrong.is_empty() {
        Ok((t.client.writes + t.server.writes) as u64)
    } else {
        Err(format!("{what}: {}", wrong.join("; ")))
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "long: run with ci/stress"]
async fn loss_check_under_load_every_byte_arrives_through_random_half_closes() {
    const TRANSFERS: usize = 1_000;
    const AT_ONCE: usize = 100;
    let seed = std::env::var("TCPPROXY_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("\nloss check: seed {seed} (rerun with TCPPROXY_STRESS_SEED={seed})");
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let started = Instant::now();

    let dest = Dest::bind().await;
    let (splice, copy) = tokio::join!(
        Proxy::start_in(Mode::Splice, dest.port(), &["--stall-timeout", "60"]),
        Proxy::start_in(Mode::Copy, dest.port(), &["--stall-timeout", "60"]),
    );
    let slots = Arc::new(Semaphore::new(AT_ONCE));
    let mut tasks = JoinSet::new();
    let mut endings = BTreeMap::new();
    for id in 0..TRANSFERS {
        let t = Transfer::draw(id, &mut rng);
        *endings.entry(format!("{:?}", t.ending)).or_insert(0) += 1;
        let port = match t.mode {
            Mode::Splice => splice.port(),
            Mode::Copy => copy.port(),
        };
        let (dest, slots) = (dest.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("never closed");
            run_transfer(t, port, dest, seed).await
        });
    }
    let results = join_all(tasks, scaled(900.0), "1,000 transfers").await;
    let secs = started.elapsed().as_secs_f64();
    let bytes: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    let wrong: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "\nfigures: loss check transfers={TRANSFERS} at_once={AT_ONCE} seed={seed} \
         bytes_verified={bytes} ({:.1} MiB) mismatches={} secs={secs:.1} endings={endings:?}",
        bytes as f64 / MIB,
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} of {TRANSFERS} transfers lost or changed bytes (seed {seed}); the first: {}",
        wrong.len(),
        wrong
            .iter()
            .take(5)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
