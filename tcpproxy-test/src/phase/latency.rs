//! Small-write latency: a request written in two pieces, the second once the first has reached
//! the destination, must be answered as fast as the peers can go. The proxy's write of the second
//! piece follows one the destination has not acknowledged yet (its kernel delays the ACK), so a
//! proxy socket without TCP_NODELAY holds it back under Nagle's algorithm until that delayed ACK
//! comes: 40 ms and more a request instead of a fraction of a millisecond (NVIDIA/OpenShell
//! #2219). A warning: the bytes all arrive, late.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::check;
use crate::deadline::within;
use crate::traced::Traced;

/// `SMALL_WRITE_ROUNDS` rounds on one pair. Each round times both pieces from the client's write
/// to the server's read of the piece's last byte; what the second took beyond the first is the
/// wait Nagle's algorithm adds, and a median of it above `SMALL_WRITE_WARN_MEDIAN` is a warning.
/// The difference, not the round's time, is what is judged: a loaded harness (every phase runs
/// at once) stalls for up to a second at a time, and an impaired network (`--network delay`)
/// slows every segment; both lengthen the first piece as often as the second, while Nagle's
/// wait falls on the second alone. The harness's own ends set TCP_NODELAY, so only the proxy's
/// sockets can wait.
pub async fn small_writes(ctx: Arc<Ctx>) -> PhaseResult {
    let (mut client, mut server) = ctx.pair(None).await?;
    for (end, s) in [("client", &client), ("server", &server)] {
        s.set_nodelay(true).map_err(|e| {
            Failure::harness(format!(
                "the harness could not set TCP_NODELAY on its {end} end: {e}"
            ))
        })?;
    }
    let mut rounds = Vec::with_capacity(SMALL_WRITE_ROUNDS);
    for round in 0..SMALL_WRITE_ROUNDS {
        let request = ctx.payload(round as u64, 2 * SMALL_WRITE_PIECE);
        let (first, second) = request.split_at(SMALL_WRITE_PIECE);
        let t1 = send(&ctx, &mut client, &mut server, first, round, "first").await?;
        let t2 = send(&ctx, &mut client, &mut server, second, round, "second").await?;
        server.write_all(b"!").await.map_err(|e| {
            Failure::new(format!(
                "round {round}: expected to send the 1-byte answer, but the server's write failed: {e}"
            ))
        })?;
        let mut answer = [0; 1];
        let read = within(
            ctx.scaled(ECHO_DEADLINE),
            format!("round {round}'s 1-byte answer at the client"),
            client.read_exact(&mut answer),
        )
        .await?;
        if let Err(e) = read {
            return Err(Failure::new(format!(
                "round {round}: expected the 1-byte answer at the client, but: {e}"
            )));
        }
        rounds.push((ms(t1), ms(t2)));
    }
    let mut extra: Vec<f64> = rounds.iter().map(|(t1, t2)| t2 - t1).collect();
    extra.sort_by(f64::total_cmp);
    let median = extra[extra.len() / 2];
    let limit = ms(SMALL_WRITE_WARN_MEDIAN);
    if median <= limit {
        return Ok(());
    }
    let each: Vec<String> = rounds
        .iter()
        .map(|(t1, t2)| format!("{t1:.1}/{t2:.1}"))
        .collect();
    Err(Failure::warning(format!(
        "expected the second of two small writes to reach the destination about as fast as the first (a median extra wait within {limit:.1} ms over {SMALL_WRITE_ROUNDS} rounds), but it waited {median:.1} ms longer (median)"
    ))
    .detail(format!(
        "each round: the client writes {SMALL_WRITE_PIECE} bytes, the server reads them, the client writes {SMALL_WRITE_PIECE} more, the server reads them and answers 1 byte; ms from each write to the server's read, first/second: {}",
        each.join(" ")
    ))
    .hint("the proxy's sockets wait on Nagle's algorithm: a small write that follows one not yet acknowledged waits for the peer's delayed ACK (40 ms); set TCP_NODELAY on both the client's and the destination's socket"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The client writes `piece`; the server must have all of it, intact, before the round goes on.
/// Returns how long that took from the write.
async fn send(
    ctx: &Ctx,
    client: &mut Traced,
    server: &mut Traced,
    piece: &[u8],
    round: usize,
    which: &str,
) -> Result<Duration, Failure> {
    let began = Instant::now();
    client.write_all(piece).await.map_err(|e| {
        Failure::new(format!(
            "round {round}: expected to send the {which} piece, but the client's write failed: {e}"
        ))
    })?;
    let mut got = vec![0; piece.len()];
    let read = within(
        ctx.scaled(ECHO_DEADLINE),
        format!(
            "round {round}'s {which} {}-byte piece at the server",
            piece.len()
        ),
        server.read_exact(&mut got),
    )
    .await?;
    if let Err(e) = read {
        return Err(Failure::new(format!(
            "round {round}: expected the {which} piece at the server, but: {e}"
        )));
    }
    let took = began.elapsed();
    match check::compare(piece, &got) {
        None => Ok(took),
        Some(m) => Err(Failure::new(format!(
            "round {round}: the {which} piece differs at the server: {}",
            m.summary()
        ))
        .details(m.details())),
    }
}
