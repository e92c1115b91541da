//! A slow reader is not a stalled one: the destination (or the client) takes a little every
//! 250 ms while its peer writes as fast as it can. Bytes move the whole time, so the proxy must
//! keep the pair open past the stall timeout and deliver every byte.
//!
//! This is the case a stall timer restarted only when its buffer empties gets wrong, and also
//! one restarted only by the proxy's own writes: Linux reports a socket writable only once a
//! third of its (autotuned, megabytes) send buffer is free, which a reader this slow takes
//! about 21 s to drain. The reader keeps default buffers so that autotuning happens.
//!
//! Both timers fire about a stall timeout after the proxy's queue toward the reader first fills,
//! which the writer does within a second: the first counts from its buffer's first stuck byte,
//! the second from its last write before that long wait. So the window is the stall timeout plus
//! `SLOW_EXTRA`, and the pace is what makes the wait longer than the timeout.

use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::check;
use crate::traced::Traced;

/// The payload of one direction: a seeded stream consumed in whole blocks by the writer and the
/// reader alike (ChaCha drops the rest of a word when asked for a length not a multiple of 4).
struct Stream {
    rng: ChaCha20Rng,
    block: Vec<u8>,
    /// Stream offset of `block[0]`.
    start: u64,
}

impl Stream {
    fn new(seed: u64, stream: u64) -> Stream {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Stream {
            rng,
            block: Vec::new(),
            start: 0,
        }
    }

    /// The next block of the stream.
    fn next_block(&mut self) -> &[u8] {
        self.start += self.block.len() as u64;
        self.block.resize(SLOW_BLOCK, 0);
        self.rng.fill_bytes(&mut self.block);
        &self.block
    }
}

/// Checks bytes as they arrive against the stream, so nothing but a block is kept.
struct Verifier {
    stream: Stream,
    /// Bytes of the current block already matched.
    pos: usize,
    received: u64,
    /// The first difference: its offset, with the expected and received windows.
    mismatch: Option<(u64, Vec<String>)>,
}

impl Verifier {
    fn new(stream: Stream) -> Verifier {
        Verifier {
            stream,
            pos: SLOW_BLOCK,
            received: 0,
            mismatch: None,
        }
    }

    fn feed(&mut self, mut got: &[u8]) {
        self.received += got.len() as u64;
        while !got.is_empty() && self.mismatch.is_none() {
            if self.pos == SLOW_BLOCK {
                self.stream.next_block();
                self.pos = 0;
            }
            let want = &self.stream.block[self.pos..];
            let n = want.len().min(got.len());
            if let Some(m) = check::compare(&want[..n], &got[..n]) {
                let at = self.stream.start + (self.pos + m.offset) as u64;
                let mut lines = m.details();
                for l in &mut lines {
                    *l = l.replace(&format!("offset {}:", m.offset), &format!("offset {at}:"));
                }
                self.mismatch = Some((at, lines));
            }
            self.pos += n;
            got = &got[n..];
        }
    }
}

/// What the writing end did.
struct Written {
    bytes: u64,
    /// A write failed during the window: when, and how.
    error: Option<(Duration, String)>,
}

/// Writes the stream as fast as the proxy takes it until `until` (or the byte limit), then
/// half-closes.
async fn write_until(
    wr: &mut (impl AsyncWrite + Unpin),
    mut stream: Stream,
    started: Instant,
    until: Instant,
) -> Written {
    let mut out = Written {
        bytes: 0,
        error: None,
    };
    while out.bytes < SLOW_WRITE_LIMIT as u64 && Instant::now() < until {
        let mut block = stream.next_block();
        while !block.is_empty() {
            match tokio::time::timeout_at(until, wr.write(block)).await {
                Ok(Ok(0)) => {
                    out.error = Some((started.elapsed(), "write returned 0".into()));
                    return out;
                }
                Ok(Ok(n)) => {
                    out.bytes += n as u64;
                    block = &block[n..];
                }
                Ok(Err(e)) => {
                    out.error = Some((started.elapsed(), format!("write error: {e}")));
                    return out;
                }
                // The window is over; a block cut short is fine, the reader checks what went.
                Err(_) => return out,
            }
        }
    }
    out
}

/// What the reading end saw.
struct Read {
    verifier: Verifier,
    /// The stream ended (EOF, reset) before the window was over: when, and how.
    early_end: Option<(Duration, String)>,
    /// The drain after the window did not reach EOF in time: nothing came for the quiet limit,
    /// or the whole drain took too long.
    drain_timed_out: Option<Drained>,
    /// The most the reader woke after its planned time: a starved harness, not the proxy.
    late: Duration,
    drain_error: Option<String>,
}

/// How a drain that found no EOF ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// Neither a byte nor EOF came for the quiet limit.
    Quiet,
    /// Bytes kept coming, but EOF did not within the drain's whole limit.
    TooLong,
}

/// The drain's limits: an EOF or a byte is owed within `quiet` of the last (the flow phases'
/// rule), and the whole drain ends within `within`.
#[derive(Debug, Clone, Copy)]
struct DrainLimits {
    quiet: Duration,
    within: Duration,
}

/// Reads at most `chunk` every `SLOW_READ_EVERY` until `until`, then everything until EOF.
async fn read_slowly(
    rd: &mut (impl AsyncRead + Unpin),
    chunk: usize,
    verifier: Verifier,
    started: Instant,
    until: Instant,
    limits: DrainLimits,
) -> Read {
    let mut out = Read {
        verifier,
        early_end: None,
        drain_timed_out: None,
        drain_error: None,
        late: Duration::ZERO,
    };
    let mut buf = vec![0; chunk];
    let mut next = Instant::now();
    while next < until {
        tokio::time::sleep_until(next).await;
        out.late = out.late.max(next.elapsed());
        next += SLOW_READ_EVERY;
        match rd.read(&mut buf).await {
            Ok(0) => {
                out.early_end = Some((started.elapsed(), "EOF".into()));
                return out;
            }
            Ok(n) => out.verifier.feed(&buf[..n]),
            Err(e) => {
                out.early_end = Some((started.elapsed(), format!("read error: {e}")));
                return out;
            }
        }
    }
    let mut big = vec![0; 64 * 1024];
    // A proxy that never passes the writer's EOF on would otherwise hold the phase for the
    // whole drain limit after the last byte.
    let drain = async {
        loop {
            let read = crate::deadline::within(
                limits.quiet,
                "the next bytes of the stream, or its EOF",
                rd.read(&mut big),
            );
            match read.await {
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => out.verifier.feed(&big[..n]),
                Ok(Err(e)) => return Ok(Some(e.to_string())),
                Err(_) => return Err(Drained::Quiet),
            }
        }
    };
    match crate::deadline::within(limits.within, "the rest of the stream, then EOF", drain).await {
        Ok(Ok(e)) => out.drain_error = e,
        Ok(Err(how)) => out.drain_timed_out = Some(how),
        Err(_) => out.drain_timed_out = Some(Drained::TooLong),
    }
    out
}

const STALL_HINT: &str = "the proxy aborted a pair whose reader was taking bytes all along: its stall timer restarts only when the buffer empties, or only on its own writes (Linux reports a socket writable only once a third of its send buffer is free, which a slow reader can take longer than the stall timeout to drain); any byte the destination takes is progress";

/// How one try of a direction went.
enum Attempt {
    Judged(PhaseResult),
    /// The pair ended early while the harness's reader was this late by its own schedule: the
    /// proxy may have seen a reader that stopped, so the try cannot be judged.
    Late(String),
}

/// One direction, tried again on a fresh pair while a try cannot be judged (at most
/// `SLOW_ATTEMPTS`); inconclusive if none could.
async fn direction_judged(ctx: &Ctx, pair: (Traced, Traced), forward: bool) -> PhaseResult {
    let mut pair = Some(pair);
    let mut late = Vec::new();
    for attempt in 1..=SLOW_ATTEMPTS {
        let this = match pair.take() {
            Some(p) => p,
            None => ctx.pair(None).await?,
        };
        match direction(ctx, this, forward).await {
            // A pass shows its tries again as notes; a failure, which the reports show with its
            // details instead, as details.
            Attempt::Judged(Ok(())) => {
                for w in late {
                    ctx.note(format!("tried again after {w}"));
                }
                return Ok(());
            }
            Attempt::Judged(Err(f)) => {
                return Err(f.details(late.into_iter().map(|w| format!("tried again after {w}"))));
            }
            Attempt::Late(why) => late.push(format!("attempt {attempt}: {why}")),
        }
    }
    Err(Failure::inconclusive(format!(
        "the harness's slow reader fell behind its own schedule in each of {SLOW_ATTEMPTS} tries, so a proxy that aborted the pair may have seen a reader that stopped: this host is too busy to judge the phase (run again on a quieter host, or with a larger --timeout-scale)"
    ))
    .details(late))
}

/// One direction: `writer` is the client (forward) or the destination server (reverse).
async fn direction(ctx: &Ctx, (client, server): (Traced, Traced), forward: bool) -> Attempt {
    let (writer_name, reader_name, stream_id) = if forward {
        ("client", "destination server", 0)
    } else {
        ("destination server", "client", 1)
    };
    let (writer, reader) = if forward {
        (client, server)
    } else {
        (server, client)
    };
    let (mut _wr_rd, mut wr) = writer.into_split();
    let (mut rd, _rd_wr) = reader.into_split();
    let started = Instant::now();
    let window = ctx.timing.stall + SLOW_EXTRA;
    let chunk = slow_read_chunk(ctx.timing.stall);
    let until = started + window;
    let verifier = Verifier::new(Stream::new(ctx.seed, 0x510_0000 + stream_id));
    let limits = DrainLimits {
        quiet: ctx.scaled(ECHO_DEADLINE),
        within: ctx.scaled(BULK_DEADLINE),
    };
    let writing = async {
        let w = write_until(
            &mut wr,
            Stream::new(ctx.seed, 0x510_0000 + stream_id),
            started,
            until,
        )
        .await;
        if w.error.is_none() {
            let _ = wr.shutdown().await;
        }
        w
    };
    let (w, r) = tokio::join!(
        writing,
        read_slowly(&mut rd, chunk, verifier, started, until, limits)
    );
    let secs = |d: Duration| d.as_secs_f64();
    let facts = format!(
        "{dir}: the {reader_name} read {} bytes in pieces of at most {} every {} ms (at worst {:.2}s late); the {writer_name} wrote {} bytes",
        r.verifier.received,
        chunk,
        SLOW_READ_EVERY.as_millis(),
        r.late.as_secs_f64(),
        w.bytes,
        dir = if forward {
            "client to server"
        } else {
            "server to client"
        },
    );
    if let Some((at, how)) = r.early_end.as_ref().or(w.error.as_ref())
        && r.late >= ctx.timing.stall.mul_f64(SLOW_LATE_SHARE)
    {
        return Attempt::Late(format!(
            "the {who} saw {how} after {:.1}s, and the {reader_name} had woken {:.1}s after its planned time",
            secs(*at),
            secs(r.late),
            who = if r.early_end.is_some() {
                reader_name
            } else {
                writer_name
            },
        ));
    }
    Attempt::Judged(judge(
        ctx,
        &w,
        r,
        &facts,
        (reader_name, writer_name),
        (window, limits),
    ))
}

/// The verdict on one direction's try.
fn judge(
    ctx: &Ctx,
    w: &Written,
    r: Read,
    facts: &str,
    (reader_name, writer_name): (&str, &str),
    (window, limits): (Duration, DrainLimits),
) -> PhaseResult {
    let secs = |d: Duration| d.as_secs_f64();
    if let Some((at, how)) = r.early_end.as_ref().or(w.error.as_ref()) {
        let who = if r.early_end.is_some() {
            reader_name
        } else {
            writer_name
        };
        let reset = how.contains("reset") || how.contains("Broken pipe");
        return Err(Failure::new(format!(
            "expected the pair to stay open for {:.1}s (the stall timeout of {:.1}s, + {:.1}s) while the {reader_name} kept reading, but the {who} saw {how} after {:.1}s",
            secs(window),
            secs(ctx.timing.stall),
            secs(SLOW_EXTRA),
            secs(*at)
        ))
        .detail(facts)
        .hint(if reset || *at >= ctx.timing.stall.mul_f64(0.5) {
            STALL_HINT
        } else {
            "the proxy closed the pair early although both peers were still active"
        }));
    }
    if let Some((at, lines)) = &r.verifier.mismatch {
        return Err(Failure::new(format!(
            "expected the {reader_name} to receive exactly what the {writer_name} wrote, but the bytes differ at offset {at}"
        ))
        .detail(facts)
        .details(lines.clone()));
    }
    match r.drain_timed_out {
        Some(Drained::Quiet) => {
            let f = Failure::new(format!(
                "expected the {reader_name}, reading at full speed, to get the rest and then EOF, but after {} of {} bytes nothing more came for {:.1}s, not even EOF",
                r.verifier.received,
                w.bytes,
                secs(limits.quiet)
            ))
            .detail(facts);
            return Err(if r.verifier.received == w.bytes {
                f.hint("every byte arrived but the EOF did not: the proxy does not pass the writer's shutdown(SHUT_WR) on once it has written what it buffered")
            } else {
                f
            });
        }
        Some(Drained::TooLong) => {
            return Err(Failure::new(format!(
                "expected the {reader_name} to read the rest and EOF within {:.1}s of reading at full speed, but it got {} of {} bytes and no EOF",
                secs(limits.within),
                r.verifier.received,
                w.bytes
            ))
            .detail(facts));
        }
        None => {}
    }
    if r.verifier.received != w.bytes {
        let how = r.drain_error.map_or("EOF".to_string(), |e| e);
        return Err(Failure::new(format!(
            "expected {} bytes before EOF, but the {reader_name} got {} and then {how}",
            w.bytes, r.verifier.received
        ))
        .detail(facts));
    }
    if let Some(e) = r.drain_error {
        // Every byte came, but the end was an abort, not the half-close rule 3 asks for.
        return Err(Failure::new(format!(
            "expected EOF after the last byte, but the {reader_name}'s read failed: {e}"
        ))
        .detail(facts));
    }
    Ok(())
}

/// Both directions at once, each on its own pair (made one after the other, so each client is
/// paired with the destination connection made for it).
pub async fn slow_reader(ctx: Arc<Ctx>) -> PhaseResult {
    let up = ctx.pair(None).await?;
    let down = ctx.pair(None).await?;
    let (a, b) = tokio::join!(
        direction_judged(&ctx, up, true),
        direction_judged(&ctx, down, false)
    );
    a.and(b)
}
