//! Lazy peers: one end writes as fast as it can and the other never reads. The proxy must abort
//! the pair once its buffered data has made no progress for the stall timeout: not much later
//! (it would hold resources for a dead peer) and not much earlier (it would abort slow peers).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::params::*;
use super::{Ctx, Failure, PhaseResult};
use crate::peer::SMALL_RCVBUF;

/// What the writing end saw.
struct Run {
    connected: Instant,
    /// When a write last took at least one byte.
    last_progress: Instant,
    written: usize,
    /// When and how the connection was seen closed, if it was within the window.
    closed: Option<(Instant, String)>,
    /// When the window (the stall timeout plus slack after the last progress) ran out.
    gave_up: Instant,
    /// After the window, only to explain the failure: how long the harness kept watching, and
    /// when and how the proxy aborted the pair then, if it did.
    diagnosis: Option<(Instant, Option<(Instant, String)>)>,
}

/// Writes as fast as `stream` takes data, watching for the proxy to close it (EOF or reset on
/// read, an error on write), until closed or until the stall timeout plus slack has passed
/// since the last write that made progress. A proxy still holding the pair then has failed;
/// the harness watches a while longer only to say why (see [`diagnosis_until`]).
async fn push_until_closed(ctx: &Ctx, stream: TcpStream, connected: Instant) -> Run {
    let (mut rd, mut wr) = stream.into_split();
    let chunk = vec![0x5a; LAZY_WRITE_PIECE];
    let slack = ctx.scaled(LAZY_SLACK);
    let mut run = Run {
        connected,
        last_progress: Instant::now(),
        written: 0,
        closed: None,
        gave_up: Instant::now(),
        diagnosis: None,
    };
    let mut sink = [0u8; 4096];
    loop {
        let give_up = run.last_progress + ctx.timing.stall + slack;
        let may_write = run.written < LAZY_WRITE_LIMIT;
        tokio::select! {
            r = rd.read(&mut sink) => match r {
                Ok(0) => { run.closed = Some((Instant::now(), "EOF".into())); break; }
                // The far end never writes; any data here is the proxy misbehaving, keep going.
                Ok(_) => {}
                Err(e) => { run.closed = Some((Instant::now(), format!("read error: {e}"))); break; }
            },
            w = wr.write(&chunk), if may_write => match w {
                Ok(n) if n > 0 => { run.written += n; run.last_progress = Instant::now(); }
                Ok(_) => { run.closed = Some((Instant::now(), "write returned 0".into())); break; }
                Err(e) => { run.closed = Some((Instant::now(), format!("write error: {e}"))); break; }
            },
            _ = tokio::time::sleep_until(give_up) => { run.gave_up = give_up; break; }
        }
    }
    // A proxy that took everything buffers without limit; nothing more to learn by waiting.
    if run.closed.is_none() && run.written < LAZY_WRITE_LIMIT {
        let until = run.last_progress + diagnosis_until(ctx.timing.stall, slack);
        // Reads only: the write half stays open (dropping it would send a FIN).
        let watch = async {
            // Bounded by the deadline around it; the far end never writes, so reads are rare.
            loop {
                match rd.read(&mut sink).await {
                    Ok(0) => return "EOF".to_string(),
                    Ok(_) => {}
                    Err(e) => return format!("read error: {e}"),
                }
            }
        };
        let seen = tokio::time::timeout_at(until, watch).await.ok();
        run.diagnosis = Some((until, seen.map(|how| (Instant::now(), how))));
    }
    drop(wr);
    run
}

/// How long after the last progress the harness keeps watching a pair it has already failed,
/// to tell a proxy with no stall timer from one whose timer is set differently from what the
/// harness was told: twice the stall timeout, and at least the usual default (a proxy left at
/// its default of 10 s while the harness was told 2), plus slack.
fn diagnosis_until(stall: Duration, slack: Duration) -> Duration {
    (stall * 2).max(crate::cli::STALL_TIMEOUT) + slack
}

/// The hint for an abort at a time that fits another stall timeout than the one the harness
/// was told: the two were most likely given different values.
fn mismatch_hint(writer: &str, after_progress: Duration, told: Duration) -> String {
    let told = told.as_secs_f64();
    format!(
        "the proxy aborted {:.1}s after the {writer}'s last progress: its stall timeout looks like about {:.0}s, not the {told}s the harness was told; pass the same --stall-timeout to both (tcpproxy-test --stall-timeout {told} -- ./proxy --stall-timeout {told}), unless the proxy ignores the one it is given",
        after_progress.as_secs_f64(),
        after_progress.as_secs_f64()
    )
}

/// Judges a run against the window: no earlier than `LAZY_EARLIEST` of the stall timeout after
/// connecting, no later than the stall timeout plus slack after the writer's last progress.
/// What the harness saw after the window changes only the hint and details, never the verdict.
fn judge(ctx: &Ctx, run: &Run, writer: &str) -> PhaseResult {
    let stall = ctx.timing.stall;
    let earliest = stall.mul_f64(LAZY_EARLIEST);
    let slack = ctx.scaled(LAZY_SLACK);
    let secs = |d: Duration| d.as_secs_f64();
    // Would an abort at `at` pass against a stall timeout of `timeout`?
    let fits = |at: Instant, timeout: Duration| {
        at - run.connected >= timeout.mul_f64(LAZY_EARLIEST)
            && at.saturating_duration_since(run.last_progress) <= timeout + slack
    };
    let facts = format!(
        "the {writer} wrote {} bytes; its last write that made progress was {:.1}s after connecting",
        run.written,
        secs(run.last_progress - run.connected)
    );
    match &run.closed {
        None => {
            let mut f = Failure::new(format!(
                "expected the proxy to abort the pair within {:.1}s (stall timeout {:.1}s + {:.1}s) of the {writer}'s writes blocking, but it was still open {:.1}s after connecting",
                secs(stall + slack),
                secs(stall),
                secs(slack),
                secs(run.gave_up - run.connected),
            ))
            .detail(facts);
            f = match &run.diagnosis {
                _ if run.written >= LAZY_WRITE_LIMIT => f.hint(format!(
                    "the proxy took {} bytes that its peer never read: it buffers without limit",
                    run.written
                )),
                Some((_, Some((at, how)))) => {
                    let after_progress = *at - run.last_progress;
                    f.detail(format!(
                        "watching on only to diagnose, the harness saw the proxy abort the pair ({how}) {:.1}s after the {writer}'s last progress, {:.1}s after connecting",
                        secs(after_progress),
                        secs(*at - run.connected)
                    ))
                    .hint(mismatch_hint(writer, after_progress, stall))
                }
                Some((until, None)) => f
                    .detail(format!(
                        "watching on only to diagnose, the harness saw the pair still open {:.1}s after the {writer}'s last progress",
                        secs(*until - run.last_progress)
                    ))
                    .hint("the proxy holds data it cannot write but never times out (no stall timer in this direction, or blocking writes)"),
                None => f.hint("the proxy holds data it cannot write but never times out (no stall timer in this direction, or blocking writes)"),
            };
            Err(f)
        }
        Some((at, how)) => {
            let after_connect = *at - run.connected;
            let after_progress = at.saturating_duration_since(run.last_progress);
            if after_connect < earliest {
                let default = crate::cli::STALL_TIMEOUT;
                let hint = if stall != default && fits(*at, default) {
                    mismatch_hint(writer, after_progress, stall)
                } else {
                    "the proxy's stall timeout is far shorter than the one it was given: it would abort slow peers".into()
                };
                return Err(Failure::new(format!(
                    "expected the pair to stay open at least {:.1}s ({:.0}% of the {:.1}s stall timeout), but the {writer} saw {how} {:.1}s after connecting",
                    secs(earliest),
                    LAZY_EARLIEST * 100.0,
                    secs(stall),
                    secs(after_connect)
                ))
                .detail(facts)
                .hint(hint));
            }
            if after_progress > stall + slack {
                return Err(Failure::new(format!(
                    "expected the abort within {:.1}s of the last progress, but it came {:.1}s after ({how})",
                    secs(stall + slack),
                    secs(after_progress)
                ))
                .detail(facts));
            }
            Ok(())
        }
    }
}

/// The destination never reads (small receive buffer, so the stall is real); the client writes.
pub async fn forward(ctx: Arc<Ctx>) -> PhaseResult {
    let (client, _server) = ctx.pair(None).await?;
    let connected = Instant::now();
    let run = push_until_closed(&ctx, client, connected).await;
    judge(&ctx, &run, "client")
}

/// The mirror: the client never reads (small receive buffer); the destination server writes.
pub async fn reverse(ctx: Arc<Ctx>) -> PhaseResult {
    let (_client, server) = ctx.pair(Some(SMALL_RCVBUF)).await?;
    let connected = Instant::now();
    let run = push_until_closed(&ctx, server, connected).await;
    judge(&ctx, &run, "destination server")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diagnosis_covers_the_default_timeout_and_twice_the_one_told() {
        let slack = Duration::from_secs(5);
        // Told 2 s: long enough to see a proxy left at its default 10 s abort.
        assert_eq!(
            diagnosis_until(Duration::from_secs(2), slack),
            Duration::from_secs(15)
        );
        assert_eq!(
            diagnosis_until(Duration::from_secs(30), slack),
            Duration::from_secs(65)
        );
    }
}
