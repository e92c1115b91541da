//! What a proxy holds on to: descriptors after many short connections, memory while a peer
//! never reads, CPU while nothing happens. Read from /proc for the proxy's whole process group.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::deadline::{self, within};
use crate::peer::{self, Pacing};
use crate::procfs;
use crate::traced::Traced;
use crate::{backlog, check, sockdiag};

fn need_proc() -> PhaseResult {
    if procfs::available() {
        Ok(())
    } else {
        Err(Failure::skipped(
            "needs Linux /proc to read the proxy's descriptors, memory and CPU time",
        ))
    }
}

/// How a short connection went wrong.
enum Lost {
    /// Refused, reset or not connected in time before a byte of the echo came back: what a
    /// connection the kernel turned away from a full listen queue looks like (the proxy never
    /// saw it), and also what a proxy that resets its clients does.
    Unserved(Failure),
    /// The proxy served it and got it wrong.
    Failed(Failure),
}

/// One short connection that needs no half-close: 1 KiB out, the echo read back by its length,
/// then a full close. With a half-close here every proxy that cannot half-close failed this
/// phase too, repeating One-way shutdown's verdict under a name that says "leak".
///
/// The echo deadline counts from when the proxy had the request, not from the write: behind a
/// full listen queue a SYN cookie makes the client think it is connected while the kernel drops
/// its request, and TCP's retransmissions back off for seconds before one gets in. So a
/// deadline that finds the request unacknowledged gives the connection up as unserved, and one
/// that finds it newly taken (acknowledged, or then accepted by the proxy) grants another
/// window, up to `LEAK_ECHO_WINDOWS`; only a whole window with the request accepted and no
/// echo is the proxy's failure.
async fn short_connection(ctx: &Ctx, n: usize) -> Result<(), Lost> {
    let mut client = ctx.connect(None).await.map_err(Lost::Unserved)?;
    let data = ctx.payload(n as u64, LEAK_ECHO);
    if let Err(e) = client.write_all(&data).await {
        let f = Failure::new(format!(
            "connection {n}: expected to send {LEAK_ECHO} bytes, but: {e}"
        ));
        return Err(if peer::is_reset(&e) {
            Lost::Unserved(f)
        } else {
            Lost::Failed(f)
        });
    }
    let mut got = Vec::with_capacity(LEAK_ECHO);
    let limit = ctx.scaled(ECHO_DEADLINE);
    let mut was = Request::Unknown;
    let mut window = 1;
    let read = loop {
        let read = within(
            limit,
            format!("connection {n}'s {LEAK_ECHO}-byte echo"),
            peer::read_exact_into(&mut client, LEAK_ECHO, Pacing::EAGER, &mut got),
        )
        .await;
        let e = match read {
            Ok(r) => break r,
            Err(e) => e,
        };
        if !got.is_empty() {
            return Err(Lost::Failed(e.into()));
        }
        let now = Request::of(&client).await;
        match after_window(was, now, window) {
            Next::Again => {
                was = now;
                window += 1;
            }
            Next::Failed => {
                let f = Failure::from(e);
                return Err(Lost::Failed(if now == Request::Accepted {
                    f.detail(format!(
                        "the proxy had accepted it and its kernel had acknowledged the request {:.1}s before",
                        limit.as_secs_f64()
                    ))
                } else {
                    f
                }));
            }
            Next::Unserved => {
                let why = match now {
                    Request::Unacknowledged => "its request was still unacknowledged by the proxy's kernel (the kernel's listen queue dropped it)".to_string(),
                    _ => format!(
                        "its kernel had acknowledged the request, but the proxy accepted it only after {:.1}s, if at all",
                        limit.as_secs_f64() * (LEAK_ECHO_WINDOWS - 1) as f64
                    ),
                };
                return Err(Lost::Unserved(Failure::from(e).detail(why)));
            }
        }
    };
    if let Err(e) = read {
        let how = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the connection was closed (EOF)".to_string()
        } else {
            format!("the read failed: {e}")
        };
        let f = Failure::new(format!(
            "connection {n}: expected the {LEAK_ECHO}-byte echo, but after {} bytes {how}",
            got.len()
        ));
        return Err(if got.is_empty() && peer::is_reset(&e) {
            Lost::Unserved(f)
        } else {
            Lost::Failed(f)
        });
    }
    if let Some(m) = check::compare(&data, &got) {
        return Err(Lost::Failed(
            Failure::new(format!("connection {n}: echo differs: {}", m.summary()))
                .details(m.details()),
        ));
    }
    // Dropping the client closes it fully; the destination end has closed after its echo.
    Ok(())
}

/// What an echo deadline that passed with nothing read means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The request was taken in during the window: the proxy gets another.
    Again,
    /// The kernel or the proxy's accept queue never let the request through: try anew.
    Unserved,
    /// The proxy had the request for a whole window and did not echo it.
    Failed,
}

/// The decision after window number `window` (from 1), given where the request was when the
/// window began (`was`: `Unknown` for the first, which began at the write) and is now.
fn after_window(was: Request, now: Request, window: usize) -> Next {
    match now {
        Request::Unacknowledged => Next::Unserved,
        Request::Accepted if was == Request::Accepted => Next::Failed,
        // Without the sockets nothing says the kernel is to blame: judged as before windows.
        Request::Unknown => Next::Failed,
        Request::Queued | Request::Accepted if window < LEAK_ECHO_WINDOWS => Next::Again,
        Request::Queued | Request::Accepted => Next::Unserved,
    }
}

/// Where a short connection's request is, seen from its two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    /// Still in the client's send queue: the kernel's listen queue dropped the handshake's
    /// last ACK and the data behind it, and the client is retransmitting.
    Unacknowledged,
    /// Acknowledged, in a connection still waiting in the listener's accept queue (no
    /// descriptor holds the proxy's end yet).
    Queued,
    /// Acknowledged, and the proxy has accepted the connection.
    Accepted,
    /// The sockets could not be read.
    Unknown,
}

impl Request {
    /// Looked up through sock_diag (one request per socket), or /proc/net/tcp where that is
    /// not to be had. Many connections reach their deadline together: a scan of the host's
    /// whole table for each, on the runtime's threads, held up every other connection's reads
    /// and timers for seconds, so the scan runs on a blocking thread.
    async fn of(client: &Traced) -> Request {
        let (Ok(local), Ok(peer)) = (client.local_addr(), client.peer_addr()) else {
            return Request::Unknown;
        };
        let near = procfs::Ends {
            local: local.port(),
            remote: peer.port(),
        };
        let far = procfs::Ends {
            local: peer.port(),
            remote: local.port(),
        };
        let by_diag = || -> std::io::Result<Request> {
            let mut diag = sockdiag::Diag::open()?;
            Ok(Request::from_sockets(
                diag.queues(near)?,
                diag.socket(far)?.map(|(_, inode)| inode),
            ))
        };
        if let Ok(r) = by_diag() {
            return r;
        }
        tokio::task::spawn_blocking(move || {
            let unacknowledged = procfs::tcp_queues(&[near])[0];
            let tables = procfs::tcp_tables();
            let inode = tables.iter().find_map(|t| {
                procfs::tcp_rows(t)
                    .find(|r| r.ends == far && r.state != procfs::TIME_WAIT)
                    .map(|r| r.inode)
            });
            Request::from_sockets(unacknowledged, inode)
        })
        .await
        .unwrap_or(Request::Unknown)
    }

    /// From the client socket's queues and the inode of the proxy's end (None: no such socket,
    /// as while the connection is only a SYN cookie or a request socket).
    fn from_sockets(client: Option<procfs::Queues>, proxy_inode: Option<u64>) -> Request {
        match (client, proxy_inode) {
            (None, _) => Request::Unknown,
            (Some(q), _) if q.send > 0 => Request::Unacknowledged,
            (Some(_), Some(inode)) if inode != 0 => Request::Accepted,
            (Some(_), _) => Request::Queued,
        }
    }
}

/// The destination end of a short connection: the request read by its length, echoed, then a
/// full close, so no step waits for an EOF the proxy would have to forward.
async fn short_echo(ctx: &Ctx, mut server: Traced) {
    let mut got = Vec::with_capacity(LEAK_ECHO);
    let echo = async {
        peer::read_exact_into(&mut server, LEAK_ECHO, Pacing::EAGER, &mut got).await?;
        server.write_all(&got).await
    };
    // A request that never comes is the client's failure to report, with its own deadline.
    let _ = within(
        ctx.scaled(ECHO_DEADLINE),
        "a short connection's request",
        echo,
    )
    .await;
}

/// `LEAK_CONNECTIONS` short connections, closed fully by both ends, at most `LEAK_CONCURRENCY`
/// at a time; then the group's descriptors must be back near where they started, with no
/// socket left in CLOSE_WAIT. Descriptors are counted, not just socket states: a leaked socket
/// whose FIN exchange finished shows in no TCP state scan.
///
/// The burst of 200 connects overflows a small listen(2) backlog, and the kernel then drops,
/// delays or resets connections the proxy never saw. That loses no descriptor, so such a
/// connection (refused or reset before any echo, or its request never taken in) is tried
/// again, up to `LEAK_ATTEMPTS` times in all, and the leak check runs on all 2,000: the verdict
/// is about leaks. Retried connections pass when the kernel's listen-queue counters rose
/// meanwhile (its drops explain them; a warning would flip with the machine's load, since how
/// many a burst loses does), and fail when they did not: then the proxy turned them away. So do
/// connections turned away on every try: up to `LEAK_UNSERVED_LIMIT` while the counters rose
/// are the backlog's doing (a threaded server accepting slowly behind listen(5) loses hundreds
/// on a loaded machine); more leave too few served to judge leaks by, and fail with the backlog
/// hint.
pub async fn descriptor_leaks(ctx: Arc<Ctx>) -> PhaseResult {
    need_proc()?;
    let pgid = ctx.proxy_pgid();
    let before = procfs::open_fds(pgid);
    let watch = backlog::Watch::start();

    // Destination ends until every client is done: a retried connection may have reached the
    // destination once already, so their number is not known beforehand.
    let mut servers = JoinSet::new();
    let server_ctx = ctx.clone();
    servers.spawn(async move {
        let mut echoes = JoinSet::new();
        // A quiet spell is no reason to stop: while stragglers wait out TCP's backoff behind a
        // full listen queue, no connection may come for longer than one accept's deadline, and
        // ending here would leave every later one unechoed. The loop ends when it is aborted,
        // once every client is done, or after this many accepts or timed-out waits.
        for _ in 0..LEAK_CONNECTIONS * LEAK_ATTEMPTS * 2 {
            let Ok(s) = server_ctx.accept().await else {
                continue;
            };
            let ctx = server_ctx.clone();
            echoes.spawn(async move { short_echo(&ctx, s).await });
            // Reap finished echoes as we go, so the harness does not pile up tasks.
            while echoes.try_join_next().is_some() {}
        }
        echoes.join_all().await;
    });

    let slots = Arc::new(Semaphore::new(LEAK_CONCURRENCY));
    let done = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let mut work = JoinSet::new();
    let finished = |f: Failure, done: &AtomicUsize| {
        f.detail(format!(
            "{} of {LEAK_CONNECTIONS} connections had finished",
            done.load(Ordering::Relaxed)
        ))
    };
    // Connections turned away on every try, and the first one's failure.
    let mut unserved: (usize, Option<Failure>) = (0, None);
    let mut note = |r: Result<Result<(), Lost>, tokio::task::JoinError>| match r {
        Ok(Err(Lost::Failed(f))) => Err(backlog_detail(f, &watch)),
        Ok(Err(Lost::Unserved(f))) => {
            unserved.0 += 1;
            unserved.1.get_or_insert(f);
            Ok(())
        }
        _ => Ok(()),
    };
    for n in 1..=LEAK_CONNECTIONS {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (ctx, finish, retried) = (ctx.clone(), done.clone(), retried.clone());
        work.spawn(async move {
            let mut attempt = 1;
            let r = loop {
                match short_connection(&ctx, n).await {
                    Err(Lost::Unserved(_)) if attempt < LEAK_ATTEMPTS => {
                        attempt += 1;
                        retried.fetch_add(1, Ordering::Relaxed);
                    }
                    r => break r,
                }
            };
            finish.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            r
        });
        while let Some(r) = work.try_join_next() {
            note(r).map_err(|f| finished(f, &done))?;
        }
    }
    while let Some(r) = work.join_next().await {
        note(r).map_err(|f| finished(f, &done))?;
    }
    let (unserved, first_unserved) = unserved;

    // The proxy closes a pair once it has seen both EOFs; give it a moment to get there. Both
    // readings settle: the last pairs' sockets sit in CLOSE_WAIT until the proxy gets round to
    // them, which on a loaded host can come after its descriptor count is back within the slack
    // (docs/reliability.md, "Descriptor leaks under load").
    let (after, close_wait) = deadline::poll(
        ctx.scaled(LEAK_SETTLE),
        "the proxy to close the finished connections' descriptors",
        std::time::Duration::from_millis(50),
        || async { (procfs::open_fds(pgid), procfs::close_wait_sockets(pgid)) },
        |(after, close_wait)| *after <= before + LEAK_FD_SLACK && *close_wait == 0,
    )
    .await;
    // Only now: until the proxy has settled, a connection a client gave up on while it waited in
    // the proxy's listen queue can still be accepted, and its pair sends the request on and waits
    // for the reply. With nobody accepting at the destination (its listener stays open for the
    // phase) that pair would wait for ever, its client socket in CLOSE_WAIT, and a correct proxy
    // behind a small backlog would be failed for a leak (docs/reliability.md, "A destination
    // that stopped answering").
    servers.abort_all();
    let retried = retried.load(Ordering::Relaxed);
    let retries = format!(
        "{retried} connections were refused, reset or not taken in before any echo and tried again; {unserved} of them on every one of {LEAK_ATTEMPTS} tries"
    );
    if after > before + LEAK_FD_SLACK {
        let f = Failure::new(format!(
            "expected the proxy's open descriptors back within {LEAK_FD_SLACK} of {before} after {LEAK_CONNECTIONS} finished connections, but it holds {after} (+{})",
            after - before
        ))
        .detail(format!("{close_wait} of its sockets are in CLOSE_WAIT"))
        .hint("the proxy never closes the sockets of finished pairs (a descriptor leak)");
        let f = if retried > 0 { f.detail(retries) } else { f };
        return Err(backlog_detail(f, &watch));
    }
    if close_wait > 0 {
        return Err(backlog_detail(
            Failure::new(format!(
                "expected no socket of the proxy left in CLOSE_WAIT after {LEAK_CONNECTIONS} finished connections, but {close_wait} are"
            ))
            .hint("the proxy never closes sockets whose peers have finished"),
            &watch,
        ));
    }
    let dropped = watch.dropped();
    if let Some(f) = first_unserved {
        let overflowed = dropped.is_some_and(|d| d > 0);
        if !overflowed || unserved > LEAK_UNSERVED_LIMIT {
            let f = f.detail(format!(
                "it was refused, reset or not taken in before any echo on each of {LEAK_ATTEMPTS} tries, and so were {} more connections (at most {LEAK_UNSERVED_LIMIT} pass, and only while the kernel's listen queues overflow)",
                unserved - 1
            ));
            return Err(match dropped {
                Some(d) if d > 0 => f.hint(backlog::hint(d)),
                _ => f,
            });
        }
    }
    if retried > 0 && dropped == Some(0) {
        return Err(Failure::new(format!(
            "expected {LEAK_CONNECTIONS} graceful connections, but {retried} were refused, reset or left unaccepted before any echo (then tried again) while the kernel's listen queues turned none away"
        ))
        .hint("the proxy resets or ignores some clients of a burst it has accepted"));
    }
    Ok(())
}

/// `f` with a detail naming the listen backlog when the kernel's listen queues turned
/// connections away during the phase: beside a failure that is not the backlog's doing, it
/// tells the reader the run was also crowded at the door.
fn backlog_detail(f: Failure, watch: &backlog::Watch) -> Failure {
    match watch.dropped() {
        Some(d) if d > 0 => f.detail(format!(
            "meanwhile the proxy's listen backlog overflowed: the kernel dropped or reset {d} connections"
        )),
        _ => f,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const ACKED: procfs::Queues = procfs::Queues { send: 0, recv: 0 };
    const UNACKED: procfs::Queues = procfs::Queues {
        send: 1024,
        recv: 0,
    };

    #[test]
    fn the_request_is_placed_by_the_client_queue_and_the_proxy_ends_inode() {
        use Request::*;
        assert_eq!(Request::from_sockets(Some(UNACKED), None), Unacknowledged);
        // A SYN-cookie client whose request got through to a connection still queued.
        assert_eq!(Request::from_sockets(Some(ACKED), Some(0)), Queued);
        assert_eq!(Request::from_sockets(Some(ACKED), None), Queued);
        assert_eq!(Request::from_sockets(Some(ACKED), Some(4711)), Accepted);
        // The bytes still unacknowledged outweigh an accepted socket (a retransmission).
        assert_eq!(
            Request::from_sockets(Some(UNACKED), Some(4711)),
            Unacknowledged
        );
        assert_eq!(Request::from_sockets(None, Some(4711)), Unknown);
    }

    #[test]
    fn a_request_still_unacknowledged_is_unserved_at_any_window() {
        for window in 1..=LEAK_ECHO_WINDOWS {
            for was in [Request::Unknown, Request::Queued, Request::Accepted] {
                assert_eq!(
                    after_window(was, Request::Unacknowledged, window),
                    Next::Unserved
                );
            }
        }
    }

    /// Each row: what the request was at the previous deadline, what it is now, the window
    /// that just ended, and what comes next.
    #[track_caller]
    fn windows(rows: &[(Request, Request, usize, Next)]) {
        for &(was, now, window, next) in rows {
            assert_eq!(
                after_window(was, now, window),
                next,
                "{was:?} -> {now:?} in window {window}"
            );
        }
    }

    #[test]
    fn only_a_whole_window_with_the_request_accepted_fails() {
        use Request::*;
        windows(&[
            // Accepted by the first deadline: when is unknown, so one more window.
            (Unknown, Accepted, 1, Next::Again),
            (Accepted, Accepted, 2, Next::Failed),
            // Taken in late (the request acknowledged, then the connection accepted).
            (Unknown, Queued, 1, Next::Again),
            (Queued, Accepted, 2, Next::Again),
            (Accepted, Accepted, 3, Next::Failed),
        ]);
    }

    #[test]
    fn a_connection_the_proxy_never_accepts_is_unserved_after_the_last_window() {
        use Request::*;
        windows(&[
            (Queued, Queued, 2, Next::Again),
            (Queued, Queued, LEAK_ECHO_WINDOWS, Next::Unserved),
            (Queued, Accepted, LEAK_ECHO_WINDOWS, Next::Unserved),
        ]);
    }

    #[test]
    fn without_the_sockets_a_missing_echo_is_the_proxys() {
        windows(&[(Request::Unknown, Request::Unknown, 1, Next::Failed)]);
    }
}
