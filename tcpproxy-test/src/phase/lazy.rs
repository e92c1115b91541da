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
    /// When and how the connection was seen closed, if it was.
    closed: Option<(Instant, String)>,
}

/// Writes as fast as `stream` takes data, watching for the proxy to close it (EOF or reset on
/// read, an error on write), until closed or until the stall timeout plus slack has passed
/// since the last write that made progress.
async fn push_until_closed(ctx: &Ctx, stream: TcpStream, connected: Instant) -> Run {
    let (mut rd, mut wr) = stream.into_split();
    let chunk = vec![0x5a; LAZY_WRITE_PIECE];
    let slack = ctx.scaled(LAZY_SLACK);
    let mut run = Run {
        connected,
        last_progress: Instant::now(),
        written: 0,
        closed: None,
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
            _ = tokio::time::sleep_until(give_up) => break,
        }
    }
    run
}

/// Judges a run against the window: no earlier than `LAZY_EARLIEST` of the stall timeout after
/// connecting, no later than the stall timeout plus slack after the writer's last progress.
fn judge(ctx: &Ctx, run: &Run, writer: &str) -> PhaseResult {
    let stall = ctx.timing.stall;
    let earliest = stall.mul_f64(LAZY_EARLIEST);
    let slack = ctx.scaled(LAZY_SLACK);
    let secs = |d: Duration| d.as_secs_f64();
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
                secs(run.last_progress.elapsed() + (run.last_progress - run.connected)),
            ))
            .detail(facts);
            f = if run.written >= LAZY_WRITE_LIMIT {
                f.hint(format!(
                    "the proxy took {} bytes that its peer never read: it buffers without limit",
                    run.written
                ))
            } else {
                f.hint("the proxy holds data it cannot write but never times out (no stall timer in this direction, or blocking writes)")
            };
            Err(f)
        }
        Some((at, how)) => {
            let after_connect = *at - run.connected;
            let after_progress = at.saturating_duration_since(run.last_progress);
            if after_connect < earliest {
                return Err(Failure::new(format!(
                    "expected the pair to stay open at least {:.1}s ({:.0}% of the {:.1}s stall timeout), but the {writer} saw {how} {:.1}s after connecting",
                    secs(earliest),
                    LAZY_EARLIEST * 100.0,
                    secs(stall),
                    secs(after_connect)
                ))
                .detail(facts)
                .hint("the proxy's stall timeout is far shorter than the one it was given: it would abort slow peers"));
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
