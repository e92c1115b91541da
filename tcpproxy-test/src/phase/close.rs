//! How a proxy ends connections: a half-close must travel on while the other direction keeps
//! working, and a write to a peer that is gone must end the pair.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::params::*;
use super::{Ctx, Failure, PhaseResult};
use crate::deadline::within;
use crate::peer::{self, Pacing, SMALL_RCVBUF};
use crate::{check, hold, procfs};

/// The client sends a request and half-closes; the server reads to EOF, waits, replies with one
/// byte and closes. The client must get that byte, then EOF.
pub async fn one_way_shutdown(ctx: Arc<Ctx>) -> PhaseResult {
    let (client, server) = ctx.pair(None).await?;
    let request = ctx.payload(0, ONE_WAY_REQUEST);
    let reply = ctx.payload(1, 1);
    let limit = ctx.scaled(ECHO_DEADLINE);

    let (mut c_rd, mut c_wr) = client.into_split();
    c_wr.write_all(&request).await.map_err(|e| {
        Failure::new(format!(
            "expected to send {ONE_WAY_REQUEST} bytes, but the write failed: {e}"
        ))
    })?;
    c_wr.shutdown()
        .await
        .map_err(|e| Failure::new(format!("shutdown(SHUT_WR) of the client failed: {e}")))?;

    let server_side = {
        let reply = reply.clone();
        async move {
            let (mut s_rd, mut s_wr) = server.into_split();
            let (got, end) = within(limit, "EOF at the server after the client's shutdown(SHUT_WR)", peer::read_to_end(&mut s_rd, Pacing::EAGER, 1 << 20))
                .await
                .map_err(|e| Failure::from(e).hint("the server never saw EOF: the proxy does not forward a half-close (no shutdown(SHUT_WR) after the client's EOF)"))?;
            if let Err(e) = end {
                return Err(Failure::new(format!(
                    "expected the request then EOF at the server, but the read failed: {e}"
                )));
            }
            if let Some(m) = check::compare(&request, &got) {
                return Err(
                    Failure::new(format!("request at the server: {}", m.summary()))
                        .details(m.details()),
                );
            }
            // The pause matters: proxies that tear down a pair shortly after the first EOF
            // (socat's 0.5 s) pass only if the reply comes at once.
            tokio::time::sleep(ONE_WAY_PAUSE).await;
            s_wr.write_all(&reply)
                .await
                .map_err(|e| Failure::new(format!("expected to send the reply {:.1}s after EOF, but the server's write failed: {e}", ONE_WAY_PAUSE.as_secs_f64())).hint("the proxy closed both sides on the first EOF"))?;
            s_wr.shutdown()
                .await
                .map_err(|e| Failure::new(format!("shutdown of the server failed: {e}")))?;
            Ok::<_, Failure>(s_rd)
        }
    };
    let started = Instant::now();
    let client_side = async {
        within(
            limit + ONE_WAY_PAUSE,
            "the server's one-byte reply and then EOF at the client",
            peer::read_to_end(&mut c_rd, Pacing::EAGER, 1 << 20),
        )
        .await
    };
    let (server_result, client_result) = tokio::join!(server_side, client_side);
    let _server_read_half = server_result?;
    let (got, end) = client_result.map_err(|e| {
        Failure::from(e).hint(
            "the client never saw EOF after the reply: the proxy does not forward the server's EOF",
        )
    })?;
    let at = started.elapsed().as_secs_f64();
    match end {
        Err(e) if got.is_empty() => Err(Failure::new(format!("expected a 1-byte reply, but the client's connection failed after {at:.1}s with nothing read: {e}")).hint("the proxy closed both sides on the first EOF")),
        Err(e) => Err(Failure::new(format!("expected EOF after the reply, but the client's read failed: {e}"))),
        Ok(()) if got.is_empty() => Err(Failure::new(format!("expected a 1-byte reply before EOF, but the client saw EOF after {at:.1}s with nothing read")).hint("the proxy closed both sides on the first EOF")),
        Ok(()) => match check::compare(&reply, &got) {
            None => Ok(()),
            Some(m) => Err(Failure::new(format!("reply at the client: {}", m.summary())).details(m.details())),
        },
    }
}

/// The server closes right after accept; the client keeps writing a byte every second. The
/// proxy's forwarded EOF alone is a half-close; what must follow is a full close, seen as a
/// write or read error at the client, once the proxy's write to the closed server fails.
pub async fn early_close(ctx: Arc<Ctx>) -> PhaseResult {
    let (mut client, server) = ctx.pair(None).await?;
    drop(server);
    let started = Instant::now();
    let limit = ctx.scaled(EARLY_CLOSE_LIMIT);
    let mut sent = 0;
    let mut saw_eof = false;
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match client.write_all(b"x").await {
            Ok(()) => sent += 1,
            Err(e) if peer::is_reset(&e) => return Ok(()),
            Err(e) => {
                return Err(Failure::new(format!(
                    "expected ECONNRESET or EPIPE once the proxy closed, but the client's write failed with: {e}"
                )));
            }
        }
        // Read what is there until the next write is due: EOF (a forwarded half-close) is
        // expected and fine; a reset means the proxy closed the connection.
        let next = started + EARLY_CLOSE_EVERY * (sent as u32);
        loop {
            match tokio::time::timeout_at(next, client.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) => {
                    saw_eof = true;
                    tokio::time::sleep_until(next).await;
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) if peer::is_reset(&e) => return Ok(()),
                Ok(Err(e)) => {
                    return Err(Failure::new(format!(
                        "expected ECONNRESET once the proxy closed, but the client's read failed with: {e}"
                    )));
                }
            }
        }
    }
    let eof = if saw_eof {
        "it forwarded the server's EOF, but "
    } else {
        ""
    };
    Err(Failure::new(format!(
        "expected the proxy to close the client's connection within {:.0}s of the server closing; {eof}the client wrote {sent} bytes, one a second, and every write succeeded",
        limit.as_secs_f64()
    ))
    .hint("the proxy ignores the failed write to the closed server and keeps the client's side open"))
}

/// Several senders write their data and shut down at once, into receivers that read slowly:
/// every byte must arrive before the EOF. Client to server first, then server to client.
pub async fn flush_before_shutdown(ctx: Arc<Ctx>) -> PhaseResult {
    // The transfers first: they catch the short-write bugs with hints that name them, where
    // the held tail, reading only what went missing at the end, would blame the EOF.
    for from_client in [true, false] {
        flush_one_way(&ctx, from_client).await?;
        held_tail(&ctx, from_client).await?;
    }
    Ok(())
}

/// The receiver holds off reading while the sender writes until the proxy holds bytes it cannot
/// write on, and then shuts down (see `crate::hold`): the EOF reaches the proxy with those bytes
/// held, and they must all arrive before it. Without /proc the moment cannot be seen; the
/// transfers before it still run.
async fn held_tail(ctx: &Ctx, from_client: bool) -> PhaseResult {
    if !procfs::available() {
        return Ok(());
    }
    let (sender_name, receiver_name) = if from_client {
        ("client", "server")
    } else {
        ("server", "client")
    };
    let mut settings = hold::Settings {
        piece: HOLD_PIECE,
        settle: ctx.scaled(HOLD_SETTLE).min(ctx.timing.stall / 4),
        confirm: HOLD_CONFIRM,
    };
    let limit = ctx.scaled(BULK_DEADLINE);
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
        let fill = within(limit, what, hold::fill(&mut s_wr, &data, 0, 0, &path, &settings, |_| {}))
            .await?
            .map_err(|e| {
                Failure::new(format!(
                    "expected the {sender_name}'s writes to succeed while the {receiver_name} was not reading, but: {e}"
                ))
            })?;
        if let Err(e) = s_wr.shutdown().await {
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
        let (got, end) = within(
            limit,
            what,
            peer::read_to_end(&mut r_rd, Pacing::EAGER, sent.len() + 1),
        )
        .await?;
        let conn = format!(
            "held tail, {sender_name} to {receiver_name} ({} bytes; the {receiver_name} read nothing until the {sender_name} shut down)",
            sent.len()
        );
        if let Err(e) = end {
            return Err(Failure::new(format!(
                "{conn}: expected every byte then EOF at the {receiver_name}, but after {} bytes the read failed: {e}",
                got.len()
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
            hold::Held::Overshot(0) => break,
            hold::Held::Overshot(n) => settings.piece = (n as usize / 2).max(HOLD_MIN_PIECE),
            hold::Held::Holding(_) | hold::Held::NeverHeld | hold::Held::Unseen => break,
        }
    }
    Ok(())
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
                let rest = peer::read_to_end(&mut r_rd, FLUSH_READER, 1 << 20);
                match tokio::time::timeout(eof_within, rest).await {
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
