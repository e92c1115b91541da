//! One direction of a proxied pair: read from one socket into a bounded buffer and write it to
//! the other, forward EOF as a half-close, and give up when the writer stalls.
//!
//! The shape follows tokio's `CopyBuffer`, with two differences the proxy contract needs: the
//! buffer is lent from a [`Pool`] only while bytes are in flight, and a stall timer runs only
//! while bytes are buffered and none can be written. The buffer is memory or a pipe for
//! `splice(2)` ([`Buffer`]); the rules here hold for both. A direction borrows a pipe only while
//! it streams: when its last loan filled up, as bulk transfers do and small exchanges do not.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::buffer::{Buffer, Fill};
use crate::pool::Pool;
use crate::stall::{Progress, Stall};

/// Where one direction is in its life. Every change goes through [`Relay::set_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading from the source and writing to the destination.
    Open,
    /// The source sent EOF (or failed to read); what is buffered is still being written.
    Flushing,
    /// Everything was written and the destination's write half is shut down.
    Shut,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Open => "OPEN",
            State::Flushing => "FLUSHING",
            State::Shut => "SHUT",
        })
    }
}

/// How much of its buffer a loan has used; ordered, so the most it reached is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Loan {
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
        }
    }
}

pub struct Relay {
    state: State,
    /// Lent from the pool while it holds bytes, or while a read is about to fill it; `None` when
    /// idle, so an idle direction holds neither memory nor a pipe.
    buf: Option<Buffer>,
    /// What the current loan has carried so far.
    loan: Loan,
    /// The last loan was filled: bytes come faster than one read takes them, so the next loan is
    /// a pipe when the pool splices. A loan that carried bytes without filling (the burst was
    /// small) turns it off again; one that carried none leaves it as it was.
    streaming: bool,
    /// Bytes written to the destination so far.
    written: u64,
    /// Runs only while bytes are buffered and none move; any write of a byte resets it.
    stall: Stall,
    /// The error that ended reading, kept for the pair's log line.
    read_error: Option<io::Error>,
    label: &'static str,
}

impl Relay {
    /// `label` names the direction in logs (`"client->server"`).
    pub fn new(label: &'static str, stall_timeout: Duration) -> Relay {
        Relay {
            state: State::Open,
            buf: None,
            loan: Loan::Unused,
            streaming: false,
            written: 0,
            stall: Stall::new(stall_timeout, Progress::Acknowledged),
            read_error: None,
            label,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn buffered(&self) -> usize {
        self.buf.as_ref().map_or(0, Buffer::buffered)
    }

    pub fn read_error(&self) -> Option<&io::Error> {
        self.read_error.as_ref()
    }

    /// Reading is allowed only before EOF and while the buffer has room (an idle direction has no
    /// buffer yet, and all the room of the one it will be lent).
    fn can_read(&self) -> bool {
        self.state == State::Open && self.buf.as_ref().is_none_or(|b| b.room() > 0)
    }

    fn set_state(&mut self, next: State) {
        tracing::trace!(dir = self.label, "{} => {}", self.state, next);
        self.state = next;
    }

    /// Moves bytes from `src` to `dst` until both would block, then registers for wake-ups.
    ///
    /// Ready(Ok) once EOF has been forwarded (and stays ready), Ready(Err) when the pair must be
    /// aborted. Bytes still buffered at an abort are lost; that is the point of an abort.
    pub fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
        pool: &Pool,
        src: &TcpStream,
        dst: &TcpStream,
    ) -> Poll<Result<u64, Abort>> {
        loop {
            let mut progressed = false;

            if self.can_read() {
                match src.poll_read_ready(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Err(e)) => {
                        self.end_reading(Some(e));
                        progressed = true;
                    }
                    Poll::Ready(Ok(())) => {
                        let streaming = self.streaming;
                        let buf = self.buf.get_or_insert_with(|| pool.take(streaming));
                        match buf.fill_from(src) {
                            Ok(Fill::Eof) => self.end_reading(None),
                            Ok(Fill::Data) => {
                                let now = if buf.room() == 0 {
                                    Loan::Filled
                                } else {
                                    Loan::Partial
                                };
                                self.loan = self.loan.max(now);
                            }
                            // Reading waits (can_read is false) until the writes empty it.
                            Ok(Fill::Full) => self.loan = Loan::Filled,
                            // The readiness was cleared; the next poll registers the waker.
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            // The lab treats a read error like EOF: flush, then half-close.
                            Err(e) => self.end_reading(Some(e)),
                        }
                        progressed = true;
                    }
                }
            }

            if let Some(buf) = self.buf.as_mut().filter(|b| b.buffered() > 0) {
                match dst.poll_write_ready(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Abort::WriteError(e))),
                    Poll::Ready(Ok(())) => {
                        match buf.drain_to(dst) {
                            Ok(0) => {
                                return Poll::Ready(Err(Abort::WriteError(
                                    io::ErrorKind::WriteZero.into(),
                                )));
                            }
                            Ok(n) => {
                                self.written += n as u64;
                                // Any progress restarts the stall timer.
                                self.stall.reset();
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Poll::Ready(Err(Abort::WriteError(e))),
                        }
                        progressed = true;
                    }
                }
            }

            if self.buffered() == 0 {
                self.release(pool);
            }

            if self.state == State::Flushing && self.buffered() == 0 {
                // Contract rule 3: the EOF goes on only after every buffered byte.
                if let Err(e) = socket2::SockRef::from(dst).shutdown(Shutdown::Write) {
                    // ENOTCONN: the peer already reset; the pair cannot end cleanly.
                    return Poll::Ready(Err(Abort::WriteError(e)));
                }
                self.set_state(State::Shut);
            }
            if self.state == State::Shut {
                return Poll::Ready(Ok(self.written));
            }

            if !progressed {
                return self.poll_stall(cx, dst);
            }
        }
    }

    fn end_reading(&mut self, error: Option<io::Error>) {
        self.read_error = error;
        self.set_state(State::Flushing);
    }

    /// Hands the buffer back once it is empty, so idle directions hold none.
    fn release(&mut self, pool: &Pool) {
        if let Some(buf) = self.buf.take() {
            pool.give(buf);
            let streaming = match std::mem::replace(&mut self.loan, Loan::Unused) {
                Loan::Unused => self.streaming,
                Loan::Partial => false,
                Loan::Filled => true,
            };
            if streaming != self.streaming {
                tracing::trace!(
                    dir = self.label,
                    "streaming {} => {}",
                    self.streaming,
                    streaming
                );
                self.streaming = streaming;
            }
        }
    }

    /// Ends the direction's loan when its pair ends: an empty buffer goes back to the pool, one
    /// still holding bytes (an abort loses them) is discarded.
    pub fn close(&mut self, pool: &Pool) {
        if let Some(buf) = self.buf.take() {
            if buf.buffered() == 0 {
                pool.give(buf);
            } else {
                pool.discard(buf);
            }
        }
    }

    /// Nothing moved this round. If bytes are waiting for a writer with no room, run the stall
    /// timer; an empty buffer never times out, however long the pair sits idle.
    fn poll_stall(&mut self, cx: &mut Context<'_>, dst: &TcpStream) -> Poll<Result<u64, Abort>> {
        if self.buffered() == 0 {
            self.stall.reset();
            return Poll::Pending;
        }
        self.stall.poll_stalled(cx, dst).map(|waited| {
            Err(Abort::Stalled {
                buffered: self.buffered(),
                waited,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

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
            end = poll_fn(|cx| relay.poll_relay(cx, pool, src, dst)) => {
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
        let pool = Pool::new(4096, true);
        let (mut writer, src) = socket_pair().await;
        let (dst, mut reader) = socket_pair().await;
        let ends = (&src, &dst);
        let mut relay = Relay::new("test", Duration::from_secs(10));

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
        let pool = Pool::new(4096, false);
        let (mut writer, src) = socket_pair().await;
        let (dst, mut reader) = socket_pair().await;
        let mut relay = Relay::new("test", Duration::from_secs(10));
        let bulk = vec![3; 64 * 1024];
        writer.write_all(&bulk).await.expect("write");
        let got = pump(&mut relay, &pool, (&src, &dst), &mut reader, bulk.len()).await;
        assert!(got == bulk);
        assert_eq!(pool.spares(), (1, 0));
    }
}
