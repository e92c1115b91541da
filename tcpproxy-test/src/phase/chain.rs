//! Chains of connections through one proxy: the server end echoes, and the harness copies what
//! it reads from connection i into connection i+1, so data crosses the proxy twice per hop.
//! Every hop's bytes are kept, so a failure names the first hop where they went wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::check;
use crate::deadline::within;
use crate::peer::{self, Pacing, SMALL_RCVBUF};
use crate::traced::{TracedReadHalf, TracedWriteHalf};

/// What one hop has read so far, and how its reading ended if it did.
#[derive(Debug, Clone, Default)]
struct Hop {
    bytes: Vec<u8>,
    ended: Option<String>,
}

/// What every hop has read so far; hop i is client connection i.
struct Hops {
    seen: Vec<Arc<Mutex<Hop>>>,
    /// How many bytes reached the end of the chain.
    end: watch::Receiver<usize>,
    tasks: JoinSet<()>,
}

impl Hops {
    fn snapshot(&self) -> Vec<Hop> {
        self.seen
            .iter()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }
}

/// Opens `n` connections through the proxy, each served by an echo at the destination, and
/// starts the copiers; returns the chain's entrance and the per-hop records.
async fn open(
    ctx: &Ctx,
    n: usize,
    total: usize,
    client_rcvbuf: Option<u32>,
    pacing: Pacing,
) -> Result<(TracedWriteHalf, Hops), Failure> {
    let mut tasks = JoinSet::new();
    let mut reads = Vec::with_capacity(n);
    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        let (client, server) = ctx.pair(client_rcvbuf).await.map_err(|f| {
            let summary = format!("connection {} of {n}: {}", i + 1, f.summary);
            Failure { summary, ..f }
        })?;
        tasks.spawn(async move {
            let _ = peer::echo(server, pacing).await;
        });
        let (r, w) = client.into_split();
        reads.push(r);
        writes.push(w);
    }
    let entrance = writes.remove(0);
    let seen: Vec<_> = (0..n)
        .map(|_| {
            Arc::new(Mutex::new(Hop {
                bytes: Vec::with_capacity(total),
                ended: None,
            }))
        })
        .collect();
    let (end_tx, end) = watch::channel(0);
    let mut nexts = writes
        .into_iter()
        .map(Some)
        .chain(std::iter::once(None))
        .collect::<Vec<_>>()
        .into_iter();
    for (rd, record) in reads.into_iter().zip(&seen) {
        let next = nexts.next().expect("one next per hop");
        let record = record.clone();
        let end_tx = (next.is_none()).then(|| end_tx.clone());
        tasks.spawn(copy_hop(rd, next, record, total, pacing, end_tx));
    }
    Ok((entrance, Hops { seen, end, tasks }))
}

/// Reads up to `total` bytes from one hop, recording them and passing them on to the next hop
/// (or reporting progress at the end of the chain).
async fn copy_hop(
    mut rd: TracedReadHalf,
    mut next: Option<TracedWriteHalf>,
    record: Arc<Mutex<Hop>>,
    total: usize,
    pacing: Pacing,
    end: Option<watch::Sender<usize>>,
) {
    let mut buf = vec![0; pacing.chunk];
    let mut count = 0;
    while count < total {
        let ended =
            |why: String| record.lock().unwrap_or_else(|e| e.into_inner()).ended = Some(why);
        let n = match rd.read(&mut buf[..pacing.chunk.min(total - count)]).await {
            Ok(0) => return ended("EOF".into()),
            Err(e) => return ended(format!("read error: {e}")),
            Ok(n) => n,
        };
        count += n;
        record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes
            .extend_from_slice(&buf[..n]);
        if let Some(w) = next.as_mut() {
            if let Err(e) = w.write_all(&buf[..n]).await {
                return ended(format!(
                    "passing bytes on to the next connection failed: {e}"
                ));
            }
        }
        if let Some(e) = &end {
            let _ = e.send(count);
        }
        if !pacing.pause.is_zero() {
            tokio::time::sleep(pacing.pause).await;
        }
    }
    // Hold the next hop's write half until the phase ends: dropping it would send an EOF, and
    // the echo phases must not depend on how a proxy handles one.
    std::future::pending::<()>().await;
    drop(next);
}

/// The verdict on a chain that should have carried `expected` through every hop. `waited` is
/// set when the chain did not finish in time; `stalled` says for how long nothing moved.
fn verdict(expected: &[u8], hops: &[Hop], waited: Option<Duration>) -> PhaseResult {
    let n = hops.len();
    for (i, hop) in hops.iter().enumerate() {
        let got = &hop.bytes;
        let whole = got.len() == expected.len();
        let prefix_ok = got.len() <= expected.len() && got[..] == expected[..got.len()];
        if whole && prefix_ok {
            continue;
        }
        let name = format!("connection {} of the {n}-connection chain", i + 1);
        let counts = hop_counts(hops, expected.len());
        if prefix_ok {
            let waited = waited.map_or(String::new(), |w| {
                format!(" within {:.1}s", w.as_secs_f64())
            });
            let how = match &hop.ended {
                Some(why) => format!("then the connection ended ({why})"),
                None => "no byte was wrong, the rest never came".to_string(),
            };
            let f = Failure::new(format!(
                "expected {} bytes back through {name}{waited}, but only {} arrived: {how}",
                expected.len(),
                got.len()
            ))
            .detail(counts);
            let reset = hop.ended.as_deref().is_some_and(|w| w.contains("reset"));
            return Err(if reset {
                f.hint("the proxy reset a pair whose peers were both reading: its stall timer fired although data could move (a stall timeout far too short, or a single loop blocked in one write while the chain waited on another)")
            } else {
                f
            });
        }
        let m = check::compare(expected, got).expect("differs");
        let mut f = Failure::new(format!(
            "{name} (client -> proxy -> echo server -> proxy -> client): {}",
            m.summary()
        ))
        .details(m.details())
        .detail(counts);
        if let Some(h) = check::explain(expected, got, m.offset) {
            f = f.hint(h);
        }
        return Err(f);
    }
    Ok(())
}

fn hop_counts(hops: &[Hop], total: usize) -> String {
    let counts: Vec<String> = hops.iter().map(|h| h.bytes.len().to_string()).collect();
    format!("bytes read at each hop (of {total}): {}", counts.join(" "))
}

/// Waits until `total` bytes reached the end of the chain. Gives up early when nothing arrives
/// for `quiet` (a chain that lost bytes, or a frozen proxy, will not finish by waiting longer).
async fn await_end(
    end: &mut watch::Receiver<usize>,
    total: usize,
    quiet: Duration,
) -> Result<(), Duration> {
    loop {
        if *end.borrow_and_update() >= total {
            return Ok(());
        }
        match within(quiet, "more bytes at the end of the chain", end.changed()).await {
            Ok(Ok(())) => {}
            // Every copier ended: nothing more will arrive.
            Ok(Err(_)) => return Err(Duration::ZERO),
            Err(_) => return Err(quiet),
        }
    }
}

/// Keeps one connection through the proxy blocked for as long as the phase runs: its destination
/// never reads (small receive buffer, so the stall is real) and its client writes all it can.
/// When the proxy aborts it, as its stall timer should, another takes its place, so a proxy
/// that freezes while one peer is stalled stays frozen rather than for one stall timeout.
async fn keep_one_blocked(ctx: Arc<Ctx>, rounds: Arc<std::sync::atomic::AtomicUsize>) {
    let chunk = vec![0x42; BULK_WRITE_PIECE];
    for _ in 0..BLOCKED_ROUNDS {
        let Ok((mut client, server)) = ctx.pair(None).await else {
            return;
        };
        rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut sent = 0;
        while sent < BLOCKED_WRITE_LIMIT {
            match client.write(&chunk).await {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
        if sent >= BLOCKED_WRITE_LIMIT {
            // A proxy that takes this much without aborting buffers without limit; the lazy
            // phases judge that. Hold the connection until the phase ends.
            std::future::pending::<()>().await;
        }
        drop(server);
    }
}

/// `n` connections, `ECHO_MESSAGES` small messages, each through the whole chain before the next.
pub async fn echo(ctx: Arc<Ctx>, n: usize) -> PhaseResult {
    let payload = ctx.payload(0, ECHO_MESSAGES * ECHO_MESSAGE_LEN);
    let (mut entrance, mut hops) = open(&ctx, n, payload.len(), None, Pacing::EAGER).await?;
    for (k, msg) in payload.chunks(ECHO_MESSAGE_LEN).enumerate() {
        entrance.write_all(msg).await.map_err(|e| {
            Failure::new(format!(
                "expected to send message {} into the chain, but the write failed: {e}",
                k + 1
            ))
        })?;
        let want = (k + 1) * ECHO_MESSAGE_LEN;
        let limit = ctx.scaled(ECHO_DEADLINE);
        let arrived = within(
            limit,
            format!(
                "message {} of {ECHO_MESSAGES} through all {n} connections",
                k + 1
            ),
            async { hops.end.wait_for(|&c| c >= want).await.map(|_| ()) },
        )
        .await;
        if arrived.is_err() {
            let seen = hops.snapshot();
            verdict(&payload[..want], &seen, Some(limit))?;
        }
    }
    verdict(&payload, &hops.snapshot(), None)?;
    hops.tasks.abort_all();
    Ok(())
}

/// `BULK_BYTES` of seeded data through the long chain with slow readers everywhere. With
/// `blocked`, one more connection through the same proxy has a destination that never reads and
/// a client that writes all it can; the bulk data must still arrive within its deadline.
pub async fn bulk(ctx: Arc<Ctx>, blocked: bool) -> PhaseResult {
    let payload = ctx.payload(1, BULK_BYTES);
    let (mut entrance, mut hops) = open(
        &ctx,
        CHAIN_LONG,
        payload.len(),
        Some(SMALL_RCVBUF),
        SLOW_READER,
    )
    .await?;
    // Opened after the chain, so the two never race for the destination's accepts.
    let mut others = JoinSet::new();
    let blocked_rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if blocked {
        others.spawn(keep_one_blocked(ctx.clone(), blocked_rounds.clone()));
    }
    let limit = ctx.scaled(BULK_DEADLINE);
    let quiet = ctx.scaled(ECHO_DEADLINE);
    let what = format!("{BULK_BYTES} bytes through all {CHAIN_LONG} connections");
    // Borrowed, not moved: dropping a write half shuts it down, and these phases must not
    // send an EOF (that is for the shutdown phases to test).
    let source = peer::write_in_pieces(&mut entrance, &payload, BULK_WRITE_PIECE);
    let arrived = within(limit, what, async {
        let ((), arrived) = tokio::join!(
            async {
                // A failed write shows as missing bytes downstream; the hops say more than the
                // write error would.
                let _ = source.await;
            },
            await_end(&mut hops.end, BULK_BYTES, quiet)
        );
        arrived
    })
    .await;
    let seen = hops.snapshot();
    hops.tasks.abort_all();
    others.abort_all();
    let stuck = match arrived {
        Ok(Ok(())) => return verdict(&payload, &seen, None),
        Ok(Err(quiet)) if quiet.is_zero() => {
            "every connection of the chain stopped reading (EOF or error)".to_string()
        }
        Ok(Err(quiet)) => format!(
            "nothing reached the end of the chain for {:.1}s",
            quiet.as_secs_f64()
        ),
        Err(expired) => format!(
            "the chain had not finished after {:.1}s",
            expired.waited.as_secs_f64()
        ),
    };
    let f = verdict(&payload, &seen, None)
        .err()
        .unwrap_or_else(|| {
            Failure::new(format!(
                "expected {BULK_BYTES} bytes through the chain, but {stuck}"
            ))
        })
        .detail(stuck);
    if !blocked {
        return Err(f);
    }
    let rounds = blocked_rounds.load(std::sync::atomic::Ordering::Relaxed);
    let f = f.detail(format!("{rounds} blocked connection(s) were opened beside the chain (each replaced when the proxy aborted the last)"));
    // Damaged bytes explain a stall better than the blocked peer does.
    Err(if f.hint.is_none() {
        f.hint("bulk data stopped while one connection's destination did not read: one stalled peer freezes the proxy (blocking writes, or a single loop waiting on one socket)")
    } else {
        f
    })
}
