//! How a proxy ends connections: a half-close must travel on while the other direction keeps
//! working, and a write to a peer that is gone must end the pair.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::flows::{self, Flows};
use super::params::*;
use super::{Ctx, Failure, PhaseResult};
use crate::fuzz::oracle::Kind;

use crate::deadline::{self, within};
use crate::peer::{self, Pacing, SMALL_RCVBUF};
use crate::{check, hold, procfs};

/// The client sends a request and half-closes; the server reads to EOF, waits, replies with one
/// byte and closes. The client must get that byte, then EOF. The pause matters: proxies that
/// tear down a pair shortly after the first EOF (socat's 0.5 s) pass only if the reply comes at
/// once.
pub const ONE_WAY: Flows = Flows {
    case: |_| {
        flows::case(&format!(
            "connection
               client->server: write {ONE_WAY_REQUEST}; shutdown after-last-byte; reader eager
               server->client: await-peer-eof, pause {}ms, write 1; shutdown after-last-byte; reader eager",
            flows::ms(ONE_WAY_PAUSE)
        ))
    },
    hints: &[
        (Kind::EarlyEof, CLOSED_BOTH),
        (Kind::Reset, CLOSED_BOTH),
        (Kind::LostTail, CLOSED_BOTH),
    ],
};
const CLOSED_BOTH: &str = "the proxy closed both sides on the first EOF";

/// The server closes right after accept; the client keeps writing a byte every second. The
/// proxy's forwarded EOF alone is a half-close; what must follow is a full close, seen as a
/// write or read error at the client, once the proxy's write to the closed server fails.
pub const EARLY_CLOSE: Flows = Flows {
    case: |t| {
        let limit = t.scaled(EARLY_CLOSE_LIMIT);
        let writes = (limit.as_secs_f64() / EARLY_CLOSE_EVERY.as_secs_f64()).ceil() as usize;
        let every = format!("write 1, pause {}ms", flows::ms(EARLY_CLOSE_EVERY));
        flows::case(&format!(
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

/// Several senders write their data and shut down at once, into receivers that read slowly:
/// every byte must arrive before the EOF. Client to server first, then server to client.
pub async fn flush_before_shutdown(ctx: Arc<Ctx>) -> PhaseResult {
    // The transfers first: they catch the short-write bugs with hints that name them, where
    // the held tail, reading only what went missing at the end, would blame the EOF.
    for from_client in [true, false] {
        flush_one_way(&ctx, from_client).await?;
        if let Tail::Unconfirmed(why) = held_tail(&ctx, from_client).await? {
            tracing::warn!(phase = "shutdown/flush", "held tail skipped: {why}");
        }
    }
    Ok(())
}

/// How a held tail ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
enum Tail {
    /// An EOF reached the proxy while it held bytes, or the proxy was seen never to hold any.
    Tested,
    /// No attempt could be judged: the harness was too late every time. Not the proxy's fault.
    Unconfirmed(String),
}

/// Whose fault a reset in a held tail is, from how long the proxy may have been stalled (from
/// the last moment it held nothing) when the receiver began reading. A correct proxy aborts a
/// stalled pair only at its stall timeout, so a reset well before it is the proxy's; one after
/// the harness left it stalled for most of it is the harness's lateness.
fn reset_is_harness_late(stalled_for: Duration, stall: Duration) -> bool {
    stalled_for.as_secs_f64() >= stall.as_secs_f64() * HOLD_LATE
}

/// How long the held tail may keep the proxy stalled: a share of its stall timeout, so a
/// correct proxy's timer has the rest as margin for a harness that is late to read.
fn hold_budget(stall: Duration) -> Duration {
    stall.mul_f64(HOLD_BUDGET)
}

/// The receiver holds off reading while the sender writes until the proxy holds bytes it cannot
/// write on, and then shuts down (see `crate::hold`): the EOF reaches the proxy with those bytes
/// held, and they must all arrive before it. Without /proc the moment cannot be seen; the
/// transfers before it still run.
///
/// The proxy is stalled from when it first holds bytes until the receiver reads, and its stall
/// timer runs meanwhile: the fill gives up [`hold_budget`] after the proxy was last seen holding
/// nothing, and the receiver then reads at once whatever happened. An attempt the harness was
/// too late to judge (no hold confirmed in the budget, or a reset after the harness had left the
/// proxy stalled for most of its stall timeout) is retried on a fresh connection.
async fn held_tail(ctx: &Ctx, from_client: bool) -> Result<Tail, Failure> {
    if !procfs::available() {
        return Ok(Tail::Tested);
    }
    let (sender_name, receiver_name) = if from_client {
        ("client", "server")
    } else {
        ("server", "client")
    };
    let stall = ctx.timing.stall;
    let mut settings = hold::Settings {
        piece: HOLD_PIECE,
        settle: ctx.scaled(HOLD_SETTLE).min(stall / 4),
        confirm: HOLD_CONFIRM,
        budget: Some(hold_budget(stall)),
    };
    let limit = ctx.scaled(BULK_DEADLINE);
    let mut late = Vec::new();
    let mut overshot = false;
    for attempt in 0..HOLD_ATTEMPTS {
        let (client, server) = ctx.pair((!from_client).then_some(SMALL_RCVBUF)).await?;
        let (sender, receiver) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        let path = hold::Path::between(&sender, &receiver)
            .map_err(|e| Failure::new(format!("the harness could not name its sockets: {e}")))?;
        let data = ctx.payload(
            0x1_0000 | ((from_client as u64) << 8) | attempt as u64,
            HOLD_MAX,
        );
        let (_s_rd, mut s_wr) = sender.into_split();
        let (mut r_rd, _r_wr) = receiver.into_split();
        let what = format!(
            "the proxy to take the {sender_name}'s bytes while the {receiver_name} was not reading"
        );
        let filling = Instant::now();
        // A write that fails after the harness kept the proxy waiting this long may be the
        // proxy's stall timer, which the harness set off: no stall can predate the fill.
        let sender_late = |e: &std::io::Error| {
            peer::is_reset(e) && reset_is_harness_late(filling.elapsed(), stall)
        };
        let fill = match within(
            limit,
            what,
            hold::fill(&mut s_wr, &data, 0, 0, &path, &settings, |_| {}),
        )
        .await?
        {
            Ok(fill) => fill,
            Err(e) if sender_late(&e) => {
                late.push(format!("attempt {}: the {sender_name}'s write was reset {:.2}s into the fill (stall timeout {:.2}s): {e}", attempt + 1, filling.elapsed().as_secs_f64(), stall.as_secs_f64()));
                continue;
            }
            Err(e) => {
                return Err(Failure::new(format!(
                    "expected the {sender_name}'s writes to succeed while the {receiver_name} was not reading, but: {e}"
                )));
            }
        };
        if let Err(e) = s_wr.shutdown().await {
            if sender_late(&e) {
                late.push(format!(
                    "attempt {}: the {sender_name}'s shutdown was reset {:.2}s into the fill: {e}",
                    attempt + 1,
                    filling.elapsed().as_secs_f64()
                ));
                continue;
            }
            return Err(Failure::new(format!(
                "expected the {sender_name} to shut down after {} bytes, but: {e}",
                fill.written
            )));
        }
        let sent = &data[..fill.written];
        let what = format!(
            "the {receiver_name} to read {} bytes and then EOF",
            sent.len()
        );
        let reading = Instant::now();
        let stalled_for = reading.saturating_duration_since(fill.clear);
        deadline::observe(
            "the proxy to be read from again, holding the held tail's bytes (its stall timeout)",
            stalled_for,
            stall,
        );
        let (got, end) = within(
            limit,
            what,
            peer::read_to_end(&mut r_rd, &[Pacing::EAGER], sent.len() + 1),
        )
        .await?;
        let conn = format!(
            "held tail, {sender_name} to {receiver_name} ({} bytes; the {receiver_name} read nothing until the {sender_name} shut down)",
            sent.len()
        );
        if let Err(e) = end {
            let clean_prefix = sent.starts_with(&got);
            if peer::is_reset(&e) && clean_prefix && reset_is_harness_late(stalled_for, stall) {
                late.push(format!(
                    "attempt {}: the {receiver_name} began reading {:.2}s after the proxy was last seen holding nothing (stall timeout {:.2}s), and after {} bytes the read failed: {e}",
                    attempt + 1,
                    stalled_for.as_secs_f64(),
                    stall.as_secs_f64(),
                    got.len()
                ));
                continue;
            }
            return Err(Failure::new(format!(
                "{conn}: expected every byte then EOF at the {receiver_name}, but after {} bytes the read failed: {e}",
                got.len()
            ))
            .detail(format!(
                "the {receiver_name} began reading {:.2}s after the proxy was last seen holding nothing, {:.0}% of its stall timeout of {:.2}s",
                stalled_for.as_secs_f64(),
                100.0 * stalled_for.as_secs_f64() / stall.as_secs_f64().max(1e-9),
                stall.as_secs_f64()
            )));
        }
        if let Some(m) = check::compare(sent, &got) {
            let mut f =
                Failure::new(format!("{conn}: {} before EOF", m.summary())).details(m.details());
            if let hold::Held::Holding(n) = fill.held {
                f = f.detail(format!(
                    "when the EOF reached the proxy it held at least {n} bytes it could not yet write (from the kernel's socket queues)"
                ));
            }
            if let Some(h) = ended_early(sent, &got, m.offset) {
                f = f.hint(h);
            }
            return Err(f);
        }
        match fill.held {
            // Holding nothing it could not write: it reads only when it can write.
            hold::Held::Overshot(0) => return Ok(Tail::Tested),
            hold::Held::Overshot(n) => {
                overshot = true;
                settings.piece = (n as usize / 2).max(HOLD_MIN_PIECE);
            }
            hold::Held::Holding(_) | hold::Held::PassedThrough | hold::Held::Unseen => {
                return Ok(Tail::Tested);
            }
            hold::Held::OutOfTime => late.push(format!(
                "attempt {}: no hold confirmed within {:.2}s of the proxy last holding nothing",
                attempt + 1,
                hold_budget(stall).as_secs_f64()
            )),
        }
    }
    if overshot || late.is_empty() {
        // An attempt overshot: its EOF still reached the proxy holding bytes.
        return Ok(Tail::Tested);
    }
    Ok(Tail::Unconfirmed(late.join("; ")))
}

async fn flush_one_way(ctx: &Ctx, from_client: bool) -> PhaseResult {
    let (sender_name, receiver_name) = if from_client {
        ("client", "server")
    } else {
        ("server", "client")
    };
    let mut transfers = JoinSet::new();
    let eof_within = ctx.scaled(ECHO_DEADLINE);
    for k in 0..FLUSH_CONNECTIONS {
        let len = FLUSH_BASE + k * FLUSH_STEP;
        // A slow receiver: the server's sockets are small by the phase table; the client's here.
        let (client, server) = ctx.pair((!from_client).then_some(SMALL_RCVBUF)).await?;
        let (sender, receiver) = if from_client {
            (client, server)
        } else {
            (server, client)
        };
        let data = ctx.payload(((from_client as u64) << 8) | k as u64, len);
        transfers.spawn(async move {
            let (_s_rd, mut s_wr) = sender.into_split();
            let (mut r_rd, _r_wr) = receiver.into_split();
            let send = async {
                peer::write_in_pieces(&mut s_wr, &data, 64 * 1024).await?;
                s_wr.shutdown().await
            };
            let recv = async {
                let mut got = Vec::with_capacity(len);
                if let Err(e) = peer::read_exact_into(&mut r_rd, len, FLUSH_READER, &mut got).await
                {
                    return (got, Err(e));
                }
                // Every byte is in: the EOF must follow promptly, not at the phase deadline.
                let rest = peer::read_to_end(&mut r_rd, &[FLUSH_READER], 1 << 20);
                match within(eof_within, "EOF once every byte is in", rest).await {
                    Ok((extra, end)) => {
                        got.extend_from_slice(&extra);
                        (got, end)
                    }
                    Err(_) => (got, Err(std::io::ErrorKind::TimedOut.into())),
                }
            };
            let (sent, (got, end)) = tokio::join!(send, recv);
            (k, data, sent, got, end)
        });
    }
    let limit = ctx.scaled(BULK_DEADLINE);
    let what = format!("all {FLUSH_CONNECTIONS} {receiver_name}s to read their data and then EOF");
    let results = within(limit, what, transfers.join_all())
        .await
        .map_err(|e| {
            Failure::from(e).hint(format!(
                "a {receiver_name} never saw EOF: the proxy does not forward EOF after flushing"
            ))
        })?;
    for (k, data, sent, got, end) in results {
        let conn = format!(
            "connection {} of {FLUSH_CONNECTIONS} ({} bytes, {sender_name} to {receiver_name})",
            k + 1,
            data.len()
        );
        if let Err(e) = sent {
            return Err(Failure::new(format!(
                "{conn}: expected the {sender_name} to write everything and shut down, but: {e}"
            )));
        }
        match end {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Failure::new(format!(
                    "{conn}: all {} bytes arrived, but no EOF followed within {:.1}s",
                    got.len(),
                    eof_within.as_secs_f64()
                ))
                .hint("the proxy does not forward EOF (no shutdown(SHUT_WR) after flushing)"));
            }
            // An early EOF: the comparison below says how much was lost.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "{conn}: expected every byte then EOF at the {receiver_name}, but after {} bytes the read failed: {e}",
                    got.len()
                )));
            }
        }
        if let Some(m) = check::compare(&data, &got) {
            let mut f =
                Failure::new(format!("{conn}: {} before EOF", m.summary())).details(m.details());
            if let Some(h) = ended_early(&data, &got, m.offset) {
                f = f.hint(h);
            }
            return Err(f);
        }
    }
    Ok(())
}

/// The hint for bytes that differ from `sent` before an EOF: a clean prefix means the proxy
/// dropped what it held at the EOF; anything else, what the comparison can tell.
fn ended_early(sent: &[u8], got: &[u8], offset: usize) -> Option<String> {
    if got.len() < sent.len() && sent.starts_with(got) {
        return Some(format!(
            "the last {} bytes never arrived, and EOF did: the proxy discards what it still holds when EOF arrives instead of writing it out first",
            sent.len() - got.len()
        ));
    }
    check::explain(sent, got, offset)
}

/// The destination stops listening: a client must be closed promptly and the proxy must keep
/// serving; once the destination listens again on the same port, a new client echoes.
pub async fn destination_refused(ctx: Arc<Ctx>) -> PhaseResult {
    ctx.close_destination().await?;
    let mut client = ctx.connect(None).await?;
    let limit = ctx.scaled(REFUSED_CLOSE_WITHIN);
    let mut buf = [0u8; 64];
    let read = within(limit, "the proxy to close a client whose destination refused", client.read(&mut buf))
        .await
        .map_err(|e| Failure::from(e).hint("the proxy keeps the client's connection open after its connect to the destination failed"))?;
    match read {
        Ok(0) => {}
        Err(e) if peer::is_reset(&e) => {}
        Ok(n) => {
            return Err(Failure::new(format!(
                "expected the client to be closed, but it received {n} bytes from a destination that refused"
            )));
        }
        Err(e) => {
            return Err(Failure::new(format!(
                "expected EOF or a reset at the client, but the read failed with: {e}"
            )));
        }
    }
    drop(client);
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(1500);

    #[test]
    fn the_held_tail_keeps_a_proxy_stalled_for_well_under_its_stall_timeout() {
        assert_eq!(hold_budget(T), Duration::from_millis(600));
        // The settle wait fits inside the budget, so a proxy that stops reading is seen to
        // before the fill gives up.
        assert!(T / 4 < hold_budget(T));
        // And the budget leaves the harness's own lateness room before a reset is blamed on it.
        assert!(!reset_is_harness_late(hold_budget(T), T));
    }

    #[test]
    fn a_reset_long_after_the_budget_is_the_harness_and_one_within_it_the_proxy() {
        assert!(!reset_is_harness_late(Duration::ZERO, T));
        assert!(!reset_is_harness_late(Duration::from_millis(1000), T));
        assert!(reset_is_harness_late(Duration::from_millis(1125), T));
        assert!(reset_is_harness_late(Duration::from_secs(2), T));
        // Scales with the stall timeout it is judged against.
        assert!(!reset_is_harness_late(
            Duration::from_secs(2),
            Duration::from_secs(10)
        ));
    }
}
