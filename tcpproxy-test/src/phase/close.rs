//! How a proxy ends connections: a half-close must travel on while the other direction keeps
//! working, and a write to a peer that is gone must end the pair.

use std::sync::Arc;

use tokio::io::AsyncReadExt as _;
use tokio::task::JoinSet;

use super::context::Ctx;
use super::flows::{self, Flows};
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::deadline::within;
use crate::peer;

/// The client sends a request and half-closes; the server reads to EOF, waits, replies with one
/// byte and closes. The client must get that byte, then EOF. The pause matters: proxies that
/// tear down a pair shortly after the first EOF (socat's 0.5 s) pass only if the reply comes at
/// once.
pub const ONE_WAY: Flows = Flows {
    cases: |_| {
        flows::cases(&format!(
            "connection
               client->server: write {ONE_WAY_REQUEST}; shutdown after-last-byte; reader eager
               server->client: await-peer-eof, pause {}ms, write 1; shutdown after-last-byte; reader eager",
            flows::ms(ONE_WAY_PAUSE)
        ))
    },
    hints: &flows::ended_early("the proxy closed both sides on the first EOF"),
};

/// The server closes right after accept; the client keeps writing a byte every second. The
/// proxy's forwarded EOF alone is a half-close; what must follow is a full close, seen as a
/// write or read error at the client, once the proxy's write to the closed server fails.
pub const EARLY_CLOSE: Flows = Flows {
    cases: |t| {
        let limit = t.scaled(EARLY_CLOSE_LIMIT);
        let writes = (limit.as_secs_f64() / EARLY_CLOSE_EVERY.as_secs_f64()).ceil() as usize;
        let every = format!("write 1, pause {}ms", flows::ms(EARLY_CLOSE_EVERY));
        flows::cases(&format!(
            "expect closed within {}ms
             connection
               client->server: {}; shutdown never; reader never
               server->client: no-writes; shutdown close-at-start; reader eager",
            flows::ms(limit),
            vec![every; writes].join(", ")
        ))
    },
    hints: &[],
};

/// Flush before shutdown, client to server and then server to client. First the transfers:
/// `FLUSH_CONNECTIONS` senders at once write more than a proxy's kernel send buffer can queue
/// and shut down at once, into slow receivers; every byte must arrive before the EOF. Then the
/// held tail: the receiver holds off while the sender writes until the proxy holds bytes it
/// cannot write on, and the EOF goes then (`shutdown while-held`, see `crate::hold`). The
/// transfers come first: they catch the short-write bugs with hints that name them, where the
/// held tail, seeing only what went missing at the end, would blame the EOF.
pub const FLUSH: Flows = Flows {
    cases: |t| {
        let mut text = String::new();
        for small_client in [false, true] {
            // The receiver is slow: the server's sockets by the phase table, the client's here.
            let conn = if small_client {
                "connection client-rcvbuf=small"
            } else {
                "connection"
            };
            let idle = "no-writes; shutdown never; reader never";
            let flow = |sending: String| {
                let (up, down) = if small_client {
                    (idle.to_string(), sending)
                } else {
                    (sending, idle.to_string())
                };
                format!("{conn}\n client->server: {up}\n server->client: {down}\n")
            };
            text.push_str("case\n");
            for k in 0..FLUSH_CONNECTIONS {
                text.push_str(&flow(format!(
                    "bulk {}; shutdown after-last-byte; reader bandwidth {FLUSH_READ_KIB_PER_S}KiB/s",
                    FLUSH_BASE + k * FLUSH_STEP
                )));
            }
            text.push_str("case\n");
            text.push_str(&flow(format!(
                "no-writes; shutdown while-held stall-timeout {}ms; reader eager",
                flows::ms(t.stall)
            )));
        }
        flows::cases(&text)
    },
    hints: &[],
};

/// The destination stops listening: a client must be closed promptly and the proxy must keep
/// serving; once the destination listens again on the same port, a new client echoes.
pub async fn destination_refused(ctx: Arc<Ctx>) -> PhaseResult {
    ctx.close_destination().await?;
    // A reset that beats the connect's own completion is the close this phase awaits.
    if let Some(mut client) = ctx.connect_unless_reset().await? {
        refused_client_closed(&ctx, &mut client).await?;
    }
    ctx.reopen_destination().await?;
    let mut servers = JoinSet::new();
    let mut again = ctx
        .connect(None)
        .await
        .map_err(|f| f.hint("the proxy stopped serving after one destination refused (it exits, or its accept loop ended)"))?;
    super::echo::echo_server(ctx.clone(), &mut servers).await?;
    super::echo::round_trip(
        &ctx,
        &mut again,
        &ctx.payload(0, ECHO_MESSAGE_LEN),
        "a message once the destination listens again",
    )
    .await
}

/// The client whose destination refused is closed: EOF or a reset, within the limit.
async fn refused_client_closed(ctx: &Ctx, client: &mut crate::traced::Traced) -> PhaseResult {
    let limit = ctx.scaled(REFUSED_CLOSE_WITHIN);
    let mut buf = [0u8; 64];
    let read = within(limit, "the proxy to close a client whose destination refused", client.read(&mut buf))
        .await
        .map_err(|e| Failure::from(e).hint("the proxy keeps the client's connection open after its connect to the destination failed"))?;
    match read {
        Ok(0) => Ok(()),
        Err(e) if peer::is_reset(&e) => Ok(()),
        Ok(n) => Err(Failure::new(format!(
            "expected the client to be closed, but it received {n} bytes from a destination that refused"
        ))),
        Err(e) => Err(Failure::new(format!(
            "expected EOF or a reset at the client, but the read failed with: {e}"
        ))),
    }
}
