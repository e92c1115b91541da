//! One connection, echoed message by message: the simplest thing a proxy must do, and the same
//! kept up past the stall timeout to catch timers that progress does not reset. The phases are
//! flows ([`super::flows`]); the scripts that echo along the way share `round_trip`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

use super::context::Ctx;
use super::flows::{self, Flows};
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::check;
use crate::deadline::within;
use crate::peer::{self, Pacing};
use crate::traced::Traced;

/// Sends `msg` and waits for its echo; a mismatch or a close says which message and when.
pub(super) async fn round_trip(
    ctx: &Ctx,
    client: &mut Traced,
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

/// Ten messages of four bytes on one connection, each echoed before the next is sent.
pub const SINGLE: Flows = Flows {
    cases: |_| flows::echo(ECHO_MESSAGE_LEN, &[Duration::ZERO; ECHO_MESSAGES]),
    hints: &[],
};

/// A small echo every `ACTIVE_EVERY` for the stall timeout plus `ACTIVE_EXTRA`. The client reads
/// each echo at once, so a correct proxy never holds data it cannot write; a pair closed here
/// was closed by a timer that traffic does not reset.
pub const ACTIVE: Flows = Flows {
    cases: |t| {
        let span = t.stall + ACTIVE_EXTRA;
        let rounds = (span.as_secs_f64() / ACTIVE_EVERY.as_secs_f64()).ceil() as usize;
        let mut pauses = vec![ACTIVE_EVERY; rounds + 1];
        pauses[0] = Duration::ZERO;
        flows::echo(ACTIVE_MESSAGE_LEN, &pauses)
    },
    hints: &flows::ended_early(
        "the connection was closed although it was never idle for more than 2s: the proxy's timer is not reset by progress (a connection lifetime or idle timer instead of a stall timer)",
    ),
};

/// One echo, silence for the stall timeout plus `IDLE_EXTRA`, then another echo: an idle pair
/// has nothing buffered, so a stall timer must not fire; an idle timer would.
pub const IDLE: Flows = Flows {
    cases: |t| flows::echo(ECHO_MESSAGE_LEN, &[Duration::ZERO, t.stall + IDLE_EXTRA]),
    hints: &flows::ended_early(
        "the proxy closed a pair that had nothing buffered: an idle timeout instead of a stall timeout",
    ),
};
