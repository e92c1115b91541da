//! What a proxy holds on to: descriptors after many short connections, memory while a peer
//! never reads, CPU while nothing happens. Read from /proc for the proxy's whole process group.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::params::*;
use super::{Ctx, Failure, PhaseResult};
use crate::check;
use crate::deadline::within;
use crate::peer::{self, Pacing};
use crate::procfs;

fn need_proc() -> PhaseResult {
    if procfs::available() {
        Ok(())
    } else {
        Err(Failure::skipped(
            "needs Linux /proc to read the proxy's descriptors, memory and CPU time",
        ))
    }
}

/// One short, graceful connection: 1 KiB out, shutdown(SHUT_WR), the echo back, then EOF.
async fn short_connection(ctx: &Ctx, n: usize) -> PhaseResult {
    let client = ctx.connect(None).await?;
    let data = ctx.payload(n as u64, LEAK_ECHO);
    let (mut rd, mut wr) = client.into_split();
    wr.write_all(&data).await.map_err(|e| {
        Failure::new(format!(
            "connection {n}: expected to send {LEAK_ECHO} bytes, but: {e}"
        ))
    })?;
    wr.shutdown()
        .await
        .map_err(|e| Failure::new(format!("connection {n}: shutdown failed: {e}")))?;
    let limit = ctx.scaled(ECHO_DEADLINE);
    let (got, end) = within(
        limit,
        format!("connection {n}'s echo and EOF"),
        peer::read_to_end(&mut rd, Pacing::EAGER, 2 * LEAK_ECHO),
    )
    .await?;
    if let Err(e) = end {
        return Err(Failure::new(format!(
            "connection {n}: expected the echo then EOF, but the read failed: {e}"
        )));
    }
    if let Some(m) = check::compare(&data, &got) {
        let f = Failure::new(format!(
            "connection {n}: expected the {LEAK_ECHO}-byte echo before EOF, but {}",
            m.summary()
        ))
        .details(m.details());
        return Err(if got.is_empty() {
            f.hint("the client's shutdown(SHUT_WR) ended the whole pair before the echo came back: the proxy closes both sides on the first EOF")
        } else {
            f
        });
    }
    Ok(())
}

/// `LEAK_CONNECTIONS` short connections, closed gracefully, at most `LEAK_CONCURRENCY` at a time;
/// then the group's descriptors must be back near where they started, with no socket left in
/// CLOSE_WAIT. Descriptors are counted, not just socket states: a leaked socket whose FIN
/// exchange finished shows in no TCP state scan.
pub async fn descriptor_leaks(ctx: Arc<Ctx>) -> PhaseResult {
    need_proc()?;
    let pgid = ctx.proxy_pgid();
    let before = procfs::open_fds(pgid);

    let mut work = JoinSet::new();
    let server_ctx = ctx.clone();
    work.spawn(async move {
        let mut echoes = JoinSet::new();
        for _ in 0..LEAK_CONNECTIONS {
            let s = server_ctx.accept().await?;
            echoes.spawn(async move {
                let _ = peer::echo(s, Pacing::EAGER).await;
            });
            // Reap finished echoes as we go, so the harness does not pile up tasks.
            while echoes.try_join_next().is_some() {}
        }
        echoes.join_all().await;
        Ok(())
    });
    let slots = Arc::new(Semaphore::new(LEAK_CONCURRENCY));
    let done = Arc::new(AtomicUsize::new(0));
    for n in 1..=LEAK_CONNECTIONS {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (ctx, done) = (ctx.clone(), done.clone());
        work.spawn(async move {
            let r = short_connection(&ctx, n).await;
            done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            r
        });
        if let Some(Ok(Err(f))) = work.try_join_next() {
            return Err(f);
        }
    }
    while let Some(r) = work.join_next().await {
        if let Ok(Err(f)) = r {
            return Err(f.detail(format!(
                "{} of {LEAK_CONNECTIONS} connections had finished",
                done.load(Ordering::Relaxed)
            )));
        }
    }

    // The proxy closes a pair once it has seen both EOFs; give it a moment to get there.
    let settle = Instant::now() + ctx.scaled(LEAK_SETTLE);
    let mut after = procfs::open_fds(pgid);
    while after > before + LEAK_FD_SLACK && Instant::now() < settle {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        after = procfs::open_fds(pgid);
    }
    let close_wait = procfs::close_wait_sockets(pgid);
    if after > before + LEAK_FD_SLACK {
        return Err(Failure::new(format!(
            "expected the proxy's open descriptors back within {LEAK_FD_SLACK} of {before} after {LEAK_CONNECTIONS} finished connections, but it holds {after} (+{})",
            after - before
        ))
        .detail(format!("{close_wait} of its sockets are in CLOSE_WAIT"))
        .hint("the proxy never closes the sockets of finished pairs (a descriptor leak)"));
    }
    if close_wait > 0 {
        return Err(Failure::new(format!(
            "expected no socket of the proxy left in CLOSE_WAIT after {LEAK_CONNECTIONS} finished connections, but {close_wait} are"
        ))
        .hint("the proxy never closes sockets whose peers have finished"));
    }
    Ok(())
}

/// A client pushes as fast as it can to a destination that never reads; the group's resident
/// memory must stay within `MEMORY_GROWTH_LIMIT` of where it started.
pub async fn bounded_memory(ctx: Arc<Ctx>) -> PhaseResult {
    need_proc()?;
    let pgid = ctx.proxy_pgid();
    let before = procfs::rss_bytes(pgid);
    let (client, _server) = ctx.pair(None).await?;
    let written = Arc::new(AtomicUsize::new(0));
    let mut pusher = JoinSet::new();
    {
        let written = written.clone();
        pusher.spawn(async move {
            let mut client = client;
            let chunk = vec![0x6d; LAZY_WRITE_PIECE];
            while written.load(Ordering::Relaxed) < LAZY_WRITE_LIMIT {
                match client.write(&chunk).await {
                    Ok(n) if n > 0 => written.fetch_add(n, Ordering::Relaxed),
                    _ => break,
                };
            }
        });
    }
    // Sample until the pusher ends (aborted by the proxy, or its limit reached) or the stall
    // timeout plus slack has passed: a correct proxy's memory is flat the whole time.
    let end = Instant::now() + ctx.timing.stall + ctx.scaled(LAZY_SLACK);
    let mut peak = before;
    let mut ticker = tokio::time::interval(MEMORY_SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = pusher.join_next() => break,
        }
        peak = peak.max(procfs::rss_bytes(pgid));
        if Instant::now() >= end {
            break;
        }
    }
    peak = peak.max(procfs::rss_bytes(pgid));
    let growth = peak.saturating_sub(before);
    if growth > MEMORY_GROWTH_LIMIT {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        return Err(Failure::new(format!(
            "expected the proxy's resident memory to stay within {:.0} MiB of its start ({:.1} MiB), but it reached {:.1} MiB (+{:.1} MiB)",
            mib(MEMORY_GROWTH_LIMIT),
            mib(before),
            mib(peak),
            mib(growth)
        ))
        .detail(format!("the client pushed {} bytes to a destination that never read", written.load(Ordering::Relaxed)))
        .hint("the proxy buffers without limit"));
    }
    Ok(())
}

/// Ten established, idle pairs for a few seconds: a proxy that polls instead of waiting burns
/// CPU here. A warning, not a failure, unless `--strict`.
pub async fn idle_cpu(ctx: Arc<Ctx>) -> PhaseResult {
    need_proc()?;
    let mut servers = JoinSet::new();
    let mut clients = Vec::new();
    for i in 0..IDLE_CPU_PAIRS {
        let mut client = ctx.connect(None).await?;
        super::echo::echo_server(ctx.clone(), &mut servers).await?;
        super::echo::round_trip(
            &ctx,
            &mut client,
            &ctx.payload(i as u64, ECHO_MESSAGE_LEN),
            &format!("a message on connection {}", i + 1),
        )
        .await?;
        clients.push(client);
    }
    let pgid = ctx.proxy_pgid();
    let started = Instant::now();
    let cpu_before = procfs::cpu_seconds(pgid);
    // The measurement is over a span of time: the idle wait is the scenario.
    tokio::time::sleep(IDLE_CPU_WINDOW).await;
    let used = procfs::cpu_seconds(pgid) - cpu_before;
    let share = used / started.elapsed().as_secs_f64();
    if share > IDLE_CPU_LIMIT {
        return Err(Failure::warning(format!(
            "expected an idle proxy to use at most {:.0}% of a core, but with {IDLE_CPU_PAIRS} idle connections it used {:.0}% ({used:.2}s of CPU in {:.1}s)",
            IDLE_CPU_LIMIT * 100.0,
            share * 100.0,
            started.elapsed().as_secs_f64()
        ))
        .hint("the proxy busy-polls its sockets instead of waiting for readiness"));
    }
    Ok(())
}
