//! One direction of a proxied pair: read from one socket into a bounded buffer and write it to
//! the other, forward EOF as a half-close and a reset as a reset, and give up when the writer
//! stalls.
//!
//! The shape follows tokio's `copy_bidirectional`, whose `CopyBuffer` lives inside its `Running`
//! state, with two differences the proxy contract needs: the buffer is lent from a [`Pool`] only
//! while bytes are in flight, and a stall timer runs only while bytes are buffered and none can
//! be written. Both live in the `Loan` that only the stages with bytes in flight carry, so an
//! idle direction cannot hold a buffer or a timer. The buffer is memory or a pipe for `splice(2)`
//! ([`Buffer`]); the rules here hold for both. A direction borrows a pipe only while it streams:
//! when its last loan filled up, as bulk transfers do and small exchanges do not.
//!
//! Each point where a classic bug would change a direction asks its [`Hooks`]; with
//! [`Reference`](crate::hooks::Reference) every answer is the contract's, known at compile time.

use std::fmt;
use std::io;
use std::mem;
use std::net::Shutdown;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::buffer::{Buffer, Fill};
use crate::hooks::{Dir, Hooks, OnEof, OnReadError, OnWriteError, StallReset};
use crate::pool::Pool;
use crate::stall::Stall;

/// Where one direction is in the proxy contract: the phase its trace lines name. Finer than this,
/// a `Stage` also says what the direction holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading from the source and writing to the destination.
    Open,
    /// The source sent EOF (or failed to read); what is buffered is still being written.
    Flushing,
    /// Everything was written and the destination's write half is shut down.
    Shut,
    /// A read failed and the hooks stopped the direction there: nothing more is written and
    /// the destination is never shut down. Never the contract's.
    Stopped,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Open => "OPEN",
            State::Flushing => "FLUSHING",
            State::Shut => "SHUT",
            State::Stopped => "STOPPED",
        })
    }
}

/// One direction's stage, holding what that stage needs and nothing more.
///
/// A loan is boxed: it is taken per burst and held briefly, while every idle pair keeps its
/// stage for as long as it lives, so the stage is two words rather than the loan's sixteen.
#[derive(Debug)]
enum Stage {
    /// Reading, with nothing in flight: no buffer lent, no timer.
    Idle,
    /// Reading, with bytes in flight (or, within one round, a loan just taken for a read).
    Holding(Box<Loan>),
    /// The source ended; the loan's bytes are still being written.
    Flushing(Box<Loan>),
    /// The source ended and every byte was written; the half-close is next.
    Closing,
    /// The destination's write half is shut down.
    Shut,
    /// A read failed and the hooks stopped the direction ([`OnReadError::Stop`]).
    Stopped,
}

impl Stage {
    fn state(&self) -> State {
        match self {
            Stage::Idle | Stage::Holding(_) => State::Open,
            Stage::Flushing(_) | Stage::Closing => State::Flushing,
            Stage::Shut => State::Shut,
            Stage::Stopped => State::Stopped,
        }
    }
}

/// A buffer lent from the pool, what it has carried, and the stall timer of the bytes it holds:
/// the three go back (or are dropped) together.
#[derive(Debug)]
struct Loan {
    buf: Buffer,
    used: Used,
    /// Runs only while bytes are held and none move; any write of a byte resets it. None when
    /// the hooks never time a stall out.
    stall: Option<Stall>,
}

/// How much of its buffer a loan has used; ordered, so the most it reached is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Used {
    /// Nothing read yet (a read that found nothing, or only the EOF).
    Unused,
    /// Bytes read, the buffer never full.
    Partial,
    /// A read left no room: the source had more than the buffer holds.
    Filled,
}

/// Why a direction gave up; either one aborts the whole pair.
#[derive(Debug)]
pub enum Abort {
    /// `buffered` bytes waited longer than the stall timeout without one of them being written.
    Stalled { buffered: usize, waited: Duration },
    /// Writing to (or shutting down) the destination failed.
    WriteError(io::Error),
    /// The source reset its connection (a read failed with ECONNRESET): the reset is passed on,
    /// and what this direction held is not written. The error is the direction's read error.
    PeerReset,
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Abort::Stalled { buffered, waited } => write!(
                f,
                "stall timeout: {buffered} bytes buffered, none written for {:.1}s",
                waited.as_secs_f64()
            ),
            Abort::WriteError(e) => write!(f, "write error: {e}"),
            Abort::PeerReset => f.write_str("the peer reset its connection"),
        }
    }
}

pub struct Relay {
    stage: Stage,
    /// The last loan was filled: bytes come faster than one read takes them, so the next loan is
    /// a pipe when the pool splices. A loan that carried bytes without filling (the burst was
    /// small) turns it off again; one that carried none leaves it as it was.
    streaming: bool,
    /// Bytes written to the destination so far.
    written: u64,
    /// The error that ended reading, kept for the pair's log line.
    read_error: Option<io::Error>,
    dir: Dir,
    /// Bytes read so far on the copy path that hooks watch (`needs_copy`): the stream offset
    /// [`Hooks::mangle`] is given. Nothing else counts reads, so the reference does not.
    copied: u64,
}

impl Relay {
    pub fn new(dir: Dir) -> Relay {
        Relay {
            stage: Stage::Idle,
            streaming: false,
            written: 0,
            read_error: None,
            dir,
            copied: 0,
        }
    }

    pub fn state(&self) -> State {
        self.stage.state()
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn buffered(&self) -> usize {
        match &self.stage {
            Stage::Holding(loan) | Stage::Flushing(loan) => loan.buf.buffered(),
            Stage::Idle | Stage::Closing | Stage::Shut | Stage::Stopped => 0,
        }
    }

    pub fn read_error(&self) -> Option<&io::Error> {
        self.read_error.as_ref()
    }

    /// Bytes read plus bytes written: any change is traffic, for an idle timer. Every byte read
    /// has been written or is still buffered (unless hooks dropped it).
    pub fn moved(&self) -> u64 {
        2 * self.written + self.buffered() as u64
    }

    /// Moves bytes from `src` to `dst` until both would block, then registers for wake-ups.
    ///
    /// Ready(Ok) once EOF has been forwarded (and stays ready), Ready(Err) when the pair must be
    /// aborted. Bytes still buffered at an abort are lost; that is the point of an abort.
    ///
    /// `stall_timeout` is the configured one, which hooks may change for this direction. It is
    /// passed in rather than kept: every idle pair would hold two copies of it.
    pub fn poll_relay<H: Hooks + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        hooks: &H,
        pool: &Pool,
        stall_timeout: Duration,
        src: &TcpStream,
        dst: &TcpStream,
    ) -> Poll<Result<u64, Abort>> {
        let mut round = Round {
            relay: self,
            hooks,
            pool,
            stall_timeout,
            src,
            dst,
        };
        loop {
            // A round reads once and writes once, so that a loan taken for a read is written
            // from before the source is asked again.
            let read = match round.read(cx) {
                Ok(read) => read,
                Err(abort) => return Poll::Ready(Err(abort)),
            };
            let wrote = match round.write(cx) {
                Ok(wrote) => wrote,
                Err(abort) => return Poll::Ready(Err(abort)),
            };
            if let Err(abort) = round.settle() {
                return Poll::Ready(Err(abort));
            }
            match &mut round.relay.stage {
                Stage::Shut => return Poll::Ready(Ok(round.relay.written)),
                _ if read || wrote => {}
                // Bytes wait for a writer with no room: only now does the timer run.
                Stage::Holding(loan) | Stage::Flushing(loan) => {
                    let Some(stall) = &mut loan.stall else {
                        return Poll::Pending;
                    };
                    return stall.poll_stalled(cx, dst).map(|waited| {
                        Err(Abort::Stalled {
                            buffered: loan.buf.buffered(),
                            waited,
                        })
                    });
                }
                // Nothing held can time out, however long the pair sits idle. (`settle` leaves
                // no direction closing: it shuts down or aborts.) A stopped direction waits for
                // nothing at all: only the other direction or the peer's close ends the pair.
                Stage::Idle | Stage::Closing | Stage::Stopped => return Poll::Pending,
            }
        }
    }

    /// Moves to `next` from a stage in phase `was`, which the caller names because it may have
    /// moved the stage's data out already.
    fn enter(&mut self, was: State, next: Stage) {
        tracing::trace!(dir = self.dir.label(), "{} => {}", was, next.state());
        self.stage = next;
    }

    /// Hands an empty loan's buffer back (its timer goes with it), and learns from what it
    /// carried whether the next one should be a pipe.
    fn give_back(&mut self, pool: &Pool, loan: Loan) {
        pool.give(loan.buf);
        let streaming = match loan.used {
            Used::Unused => self.streaming,
            Used::Partial => false,
            Used::Filled => true,
        };
        if streaming != self.streaming {
            tracing::trace!(
                dir = self.dir.label(),
                "streaming {} => {}",
                self.streaming,
                streaming
            );
            self.streaming = streaming;
        }
    }

    /// Ends the direction's loan when its pair ends: an empty buffer goes back to the pool, one
    /// still holding bytes (an abort loses them) is discarded. The phase stays as it was, for
    /// whoever asks after.
    pub fn close(&mut self, pool: &Pool) {
        let (loan, left) = match mem::replace(&mut self.stage, Stage::Idle) {
            Stage::Holding(loan) => (loan, Stage::Idle),
            Stage::Flushing(loan) => (loan, Stage::Closing),
            other => {
                self.stage = other;
                return;
            }
        };
        self.stage = left;
        if loan.buf.buffered() == 0 {
            pool.give(loan.buf);
        } else {
            pool.discard(loan.buf);
        }
    }
}

/// One poll of a direction: the relay and what every step of the poll works with, so that the
/// steps need not pass them along.
struct Round<'a, H: ?Sized> {
    relay: &'a mut Relay,
    hooks: &'a H,
    pool: &'a Pool,
    stall_timeout: Duration,
    src: &'a TcpStream,
    dst: &'a TcpStream,
}

impl<H: Hooks + ?Sized> Round<'_, H> {
    /// Reads once, if the source has not ended and the buffer has room, taking a loan when
    /// idle. Ok(true) when it tried: an attempt that would block cleared the readiness, and the
    /// next round's poll registers the waker. Err when the source reset and the pair must abort.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<bool, Abort> {
        let held = match mem::replace(&mut self.relay.stage, Stage::Idle) {
            // An idle direction has all the room of the loan it will be lent.
            Stage::Idle => None,
            Stage::Holding(loan) if loan.buf.room() > 0 => Some(loan),
            // Full (reading waits until the writes empty it), or past the source's end.
            other => {
                self.relay.stage = other;
                return Ok(false);
            }
        };
        let mut loan = match self.src.poll_read_ready(cx) {
            Poll::Pending => {
                self.relay.stage = held.map_or(Stage::Idle, Stage::Holding);
                return Ok(false);
            }
            Poll::Ready(Err(e)) => return self.read_failed(held, e).map(|()| true),
            Poll::Ready(Ok(())) => held.unwrap_or_else(|| {
                Box::new(Loan {
                    buf: self.pool.take(self.relay.streaming),
                    used: Used::Unused,
                    stall: self
                        .hooks
                        .stall_timeout(self.relay.dir, self.stall_timeout)
                        .map(|t| Stall::new(t, self.hooks.stall_reset())),
                })
            }),
        };
        let before = loan.buf.buffered();
        let filled = if self.hooks.needs_copy() {
            self.fill_watched(&mut loan.buf)
        } else {
            loan.buf.fill_from(self.src)
        };
        match filled {
            Ok(Fill::Eof) => {
                self.end_reading(Some(loan), None);
                return Ok(true);
            }
            Ok(Fill::Data) => {
                // A pipe may be larger than a memory buffer: a stream is a read that brought a
                // memory buffer's worth, whatever it was read into.
                let got = loan.buf.buffered().saturating_sub(before);
                let now = if loan.buf.room() == 0 || got >= self.pool.buffer_size() {
                    Used::Filled
                } else {
                    Used::Partial
                };
                loan.used = loan.used.max(now);
            }
            Ok(Fill::Full) => loan.used = Used::Filled,
            // The readiness was cleared; the next poll registers the waker.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return self.read_failed(Some(loan), e).map(|()| true),
        }
        self.relay.stage = Stage::Holding(loan);
        Ok(true)
    }

    /// Reading from the source failed. A reset is passed on as a reset: the pair aborts (RST to
    /// both peers) and `held`'s bytes are not written, since a peer that reset wants the
    /// connection gone and a FIN would tell the other peer all went well (Envoy #2703, ztunnel
    /// #1483). Any other error is taken as EOF, as the lab's contract says: flush, then
    /// half-close.
    fn read_failed(&mut self, held: Option<Box<Loan>>, error: io::Error) -> Result<(), Abort> {
        match self.hooks.on_read_error() {
            OnReadError::Forward if error.kind() == io::ErrorKind::ConnectionReset => {
                if let Some(loan) = held {
                    self.pool.discard(loan.buf);
                }
                self.relay.read_error = Some(error);
                Err(Abort::PeerReset)
            }
            OnReadError::Forward => {
                self.end_reading(held, Some(error));
                Ok(())
            }
            OnReadError::Stop => {
                if let Some(loan) = held {
                    self.pool.discard(loan.buf);
                }
                self.relay.read_error = Some(error);
                self.relay.enter(State::Open, Stage::Stopped);
                Ok(())
            }
        }
    }

    /// A read on the copy path, with [`Hooks::mangle`] shown the bytes it brought.
    fn fill_watched(&mut self, buf: &mut Buffer) -> io::Result<Fill> {
        // `needs_copy` keeps the pool from lending pipes.
        let Some(memory) = buf.memory() else {
            return buf.fill_from(self.src);
        };
        let before = memory.pending().len();
        let fill = memory.fill_from(self.src)?;
        let fresh = &mut memory.pending_mut()[before..];
        self.hooks.mangle(self.relay.dir, self.relay.copied, fresh);
        self.relay.copied += fresh.len() as u64;
        Ok(fill)
    }

    /// The source ended: what `held` holds is flushed (unless the hooks drop it), then the
    /// half-close goes on.
    fn end_reading(&mut self, held: Option<Box<Loan>>, error: Option<io::Error>) {
        self.relay.read_error = error;
        let held = match held {
            Some(loan) if self.hooks.on_eof() == OnEof::DropBuffered => {
                self.pool.discard(loan.buf);
                None
            }
            held => held,
        };
        self.relay
            .enter(State::Open, held.map_or(Stage::Closing, Stage::Flushing));
    }

    /// Writes once, if bytes are held. Ok(true) when it tried; Err when the pair must abort.
    fn write(&mut self, cx: &mut Context<'_>) -> Result<bool, Abort> {
        let loan = match &mut self.relay.stage {
            Stage::Holding(loan) | Stage::Flushing(loan) if loan.buf.buffered() > 0 => loan,
            _ => return Ok(false),
        };
        let failed = match self.dst.poll_write_ready(cx) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(e)) => e,
            Poll::Ready(Ok(())) => {
                let drained = if self.hooks.needs_copy() {
                    let stall_timeout =
                        self.hooks.stall_timeout(self.relay.dir, self.stall_timeout);
                    drain_watched(self.hooks, &mut loan.buf, self.dst, stall_timeout)
                } else {
                    loan.buf.drain_to(self.dst)
                };
                match drained {
                    Ok(0) => io::ErrorKind::WriteZero.into(),
                    Ok(n) => {
                        self.relay.written += n as u64;
                        // Any progress restarts the stall timer.
                        if self.hooks.stall_reset() == StallReset::OnProgress {
                            if let Some(stall) = &mut loan.stall {
                                stall.reset();
                            }
                        }
                        return Ok(true);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
                    Err(e) => e,
                }
            }
        };
        self.write_failed(failed).map(|()| true)
    }

    /// Writing to the destination (or shutting it down) failed: the pair aborts, unless the hooks
    /// go on regardless, dropping what this direction holds.
    fn write_failed(&mut self, error: io::Error) -> Result<(), Abort> {
        match self.hooks.on_write_error() {
            OnWriteError::Abort => Err(Abort::WriteError(error)),
            OnWriteError::Ignore => {
                self.relay.stage = match mem::replace(&mut self.relay.stage, Stage::Idle) {
                    Stage::Holding(loan) => {
                        self.pool.discard(loan.buf);
                        Stage::Idle
                    }
                    Stage::Flushing(loan) => {
                        self.pool.discard(loan.buf);
                        Stage::Closing
                    }
                    Stage::Closing | Stage::Shut => Stage::Shut,
                    Stage::Idle => Stage::Idle,
                    Stage::Stopped => Stage::Stopped,
                };
                Ok(())
            }
        }
    }

    /// Ends a loan with nothing left to write, so idle directions hold none, and half-closes a
    /// direction that has flushed everything.
    fn settle(&mut self) -> Result<(), Abort> {
        self.relay.stage = match mem::replace(&mut self.relay.stage, Stage::Idle) {
            Stage::Holding(loan) if loan.buf.buffered() == 0 => {
                self.relay.give_back(self.pool, *loan);
                Stage::Idle
            }
            Stage::Flushing(loan) if loan.buf.buffered() == 0 => {
                self.relay.give_back(self.pool, *loan);
                Stage::Closing
            }
            other => other,
        };
        if let Stage::Closing = self.relay.stage {
            // Contract rule 3: the EOF goes on only after every buffered byte.
            if self.hooks.on_eof() != OnEof::Withhold {
                // ENOTCONN: the peer already reset; the pair cannot end cleanly.
                if let Err(e) = socket2::SockRef::from(self.dst).shutdown(Shutdown::Write) {
                    return self.write_failed(e);
                }
            }
            self.relay.enter(State::Flushing, Stage::Shut);
        }
        Ok(())
    }
}

/// A write on the copy path, through [`Hooks::write`], with [`Hooks::consumed`] saying how much of
/// what it was offered is done with.
fn drain_watched<H: Hooks + ?Sized>(
    hooks: &H,
    buf: &mut Buffer,
    dst: &TcpStream,
    stall_timeout: Option<Duration>,
) -> io::Result<usize> {
    // `needs_copy` keeps the pool from lending pipes.
    let Some(memory) = buf.memory() else {
        return buf.drain_to(dst);
    };
    let pending = memory.pending();
    let attempted = pending.len();
    // try_io clears the readiness on WouldBlock, as try_write does on the reference's path.
    let n = dst.try_io(Interest::WRITABLE, || {
        hooks.write(dst, pending, stall_timeout)
    })?;
    memory.consume(hooks.consumed(n, attempted).min(attempted));
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;
    use crate::hooks::Reference;

    /// Two connected sockets on 127.0.0.1.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.expect("connect"), b.expect("accept").0)
    }

    /// Runs `relay` until `reader` has `n` bytes, and returns them.
    async fn pump(
        relay: &mut Relay,
        pool: &Pool,
        (src, dst): (&TcpStream, &TcpStream),
        reader: &mut TcpStream,
        n: usize,
    ) -> Vec<u8> {
        let mut got = vec![0; n];
        tokio::select! {
            end = poll_fn(|cx| relay.poll_relay(cx, &Reference, pool, Duration::from_secs(10), src, dst)) => {
                panic!("the relay ended early: {:?}", end.map_err(|e| e.to_string()))
            }
            read = reader.read_exact(&mut got) => {
                read.expect("read what the relay wrote");
            }
        }
        got
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_direction_borrows_a_pipe_only_while_it_streams() {
        // A 4 KiB buffer: 64 KiB already waiting fills every read.
        let pool = Pool::new(4096, 4096, true);
        let (mut writer, src) = socket_pair().await;
        let (dst, mut reader) = socket_pair().await;
        let ends = (&src, &dst);
        let mut relay = Relay::new(Dir::Up);

        writer.write_all(b"x").await.expect("write");
        assert_eq!(pump(&mut relay, &pool, ends, &mut reader, 1).await, b"x");
        assert!(!relay.streaming, "one byte does not make a stream");
        assert_eq!(pool.spares(), (1, 0), "the byte went through memory");

        let bulk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        writer.write_all(&bulk).await.expect("write");
        assert!(pump(&mut relay, &pool, ends, &mut reader, bulk.len()).await == bulk);
        assert!(relay.streaming, "reads that fill the buffer make a stream");
        assert_eq!(pool.spares().1, 1, "the stream went through a pipe");

        writer.write_all(b"y").await.expect("write");
        assert_eq!(pump(&mut relay, &pool, ends, &mut reader, 1).await, b"y");
        assert!(!relay.streaming, "a small message after the stream ends it");
        assert_eq!(relay.buffered(), 0);
    }

    #[tokio::test]
    async fn a_copying_pool_never_lends_a_pipe() {
        let pool = Pool::new(4096, 4096, false);
        let (mut writer, src) = socket_pair().await;
        let (dst, mut reader) = socket_pair().await;
        let mut relay = Relay::new(Dir::Up);
        let bulk = vec![3; 64 * 1024];
        writer.write_all(&bulk).await.expect("write");
        let got = pump(&mut relay, &pool, (&src, &dst), &mut reader, bulk.len()).await;
        assert!(got == bulk);
        assert_eq!(pool.spares(), (1, 0));
        assert!(matches!(relay.stage, Stage::Idle), "{:?}", relay.stage);
    }
}
