//! One connection, echoed message by message: the simplest thing a proxy must do, and the same
//! kept up past the stall timeout to catch timers that progress does not reset.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::params::*;
use super::{Ctx, Failure, PhaseResult};
use crate::check;
use crate::deadline::within;
use crate::peer::{self, Pacing};

/// Sends `msg` and waits for its echo; a mismatch or a close says which message and when.
pub(super) async fn round_trip(
    ctx: &Ctx,
    client: &mut TcpStream,
    msg: &[u8],
    label: &str,
) -> PhaseResult {
    client.write_all(msg).await.map_err(|e| {
        Failure::new(format!(
            "expected to send {label}, but the write failed: {e}"
        ))
    })?;
    let mut got = vec![0; msg.len()];
    let limit = ctx.scaled(ECHO_DEADLINE);
    let read = within(
        limit,
        format!("the echo of {label} ({} bytes)", msg.len()),
        client.read_exact(&mut got),
    )
    .await?;
    if let Err(e) = read {
        let how = if e.kind() == std::io::ErrorKind::UnexpectedEof {
            "the connection was closed (EOF)".to_string()
        } else {
            format!("the read failed: {e}")
        };
        return Err(Failure::new(format!(
            "expected the echo of {label}, but {how}"
        )));
    }
    if let Some(m) = check::compare(msg, &got) {
        return Err(
            Failure::new(format!("echo of {label} differs: {}", m.summary())).details(m.details()),
        );
    }
    Ok(())
}

/// Serves the destination side: every connection the proxy makes is echoed.
pub(super) async fn echo_server(ctx: Arc<Ctx>, servers: &mut JoinSet<()>) -> PhaseResult {
    let server = ctx.accept().await?;
    servers.spawn(async move {
        let _ = peer::echo(server, Pacing::EAGER).await;
    });
    Ok(())
}

pub async fn single(ctx: Arc<Ctx>) -> PhaseResult {
    let mut servers = JoinSet::new();
    let mut client = ctx.connect(None).await?;
    echo_server(ctx.clone(), &mut servers).await?;
    let payload = ctx.payload(0, ECHO_MESSAGES * ECHO_MESSAGE_LEN);
    for (i, msg) in payload.chunks(ECHO_MESSAGE_LEN).enumerate() {
        round_trip(
            &ctx,
            &mut client,
            msg,
            &format!("message {} of {ECHO_MESSAGES}", i + 1),
        )
        .await?;
    }
    Ok(())
}

/// A small echo every `ACTIVE_EVERY` for the stall timeout plus `ACTIVE_EXTRA`. The client reads
/// each echo at once, so a correct proxy never holds data it cannot write; a pair closed here
/// was closed by a timer that traffic does not reset.
pub async fn active(ctx: Arc<Ctx>) -> PhaseResult {
    let mut servers = JoinSet::new();
    let mut client = ctx.connect(None).await?;
    echo_server(ctx.clone(), &mut servers).await?;
    let started = Instant::now();
    let span = ctx.timing.stall + ACTIVE_EXTRA;
    let rounds = (span.as_secs_f64() / ACTIVE_EVERY.as_secs_f64()).ceil() as u64;
    for round in 0..=rounds {
        let due = started + ACTIVE_EVERY * round as u32;
        // The contract here is about time: idle gaps between bursts are the scenario itself.
        tokio::time::sleep_until(due).await;
        let msg = ctx.payload(round, ACTIVE_MESSAGE_LEN);
        let label = format!(
            "burst {} at {:.1}s",
            round + 1,
            started.elapsed().as_secs_f64()
        );
        round_trip(&ctx, &mut client, &msg, &label).await.map_err(|f| {
            let mut f = f;
            if started.elapsed() >= ctx.timing.stall.mul_f64(0.8) {
                f = f.hint(format!(
                    "the connection was closed about {:.1}s in although it was never idle for more than {:.0}s: the proxy's timer is not reset by progress (a connection lifetime or idle timer instead of a stall timer)",
                    started.elapsed().as_secs_f64(),
                    ACTIVE_EVERY.as_secs_f64()
                ));
            }
            f
        })?;
    }
    Ok(())
}

/// One echo, silence for the stall timeout plus `IDLE_EXTRA`, then another echo: an idle pair
/// has nothing buffered, so a stall timer must not fire; an idle timer would.
pub async fn idle(ctx: Arc<Ctx>) -> PhaseResult {
    let mut servers = JoinSet::new();
    let mut client = ctx.connect(None).await?;
    echo_server(ctx.clone(), &mut servers).await?;
    round_trip(
        &ctx,
        &mut client,
        &ctx.payload(0, ECHO_MESSAGE_LEN),
        "the first message",
    )
    .await?;
    let quiet = ctx.timing.stall + IDLE_EXTRA;
    // The contract is about time here: the silence is the scenario.
    tokio::time::sleep(quiet).await;
    let label = format!("a message after {:.1}s idle", quiet.as_secs_f64());
    round_trip(&ctx, &mut client, &ctx.payload(1, ECHO_MESSAGE_LEN), &label)
        .await
        .map_err(|f| f.hint("the proxy closed a pair that had nothing buffered: an idle timeout instead of a stall timeout"))
}
