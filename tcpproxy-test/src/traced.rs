//! A connection leg that notes what happens to it on the phase's timeline: the bytes it wrote
//! and read, its half-close, the EOF and resets it saw, and its close. Scenarios read and write
//! it as they would the socket, so their steps leave a record without bookkeeping of their own.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::timeline::{Kind, Lane, Recorder};

/// A socket of the harness's, or one half of it, noted on `leg`'s lane.
#[derive(Debug)]
pub struct Traced<S = TcpStream> {
    io: S,
    leg: Arc<Leg>,
    reading: Reading,
    /// After `leg`: a write half's record, dropped last, counts the leg's other references.
    writing: Writing,
}

/// The read half of a [`Traced`] leg.
pub type TracedReadHalf = Traced<OwnedReadHalf>;

/// The write half of a [`Traced`] leg.
pub type TracedWriteHalf = Traced<OwnedWriteHalf>;

/// The lane a leg's events go to. Shared by a split leg's halves; the last of them to go closes
/// the socket, so the close is noted when this goes.
#[derive(Debug)]
struct Leg {
    recorder: Recorder,
    lane: Lane,
    /// A reset was noted: both sides see it, and it is one event.
    reset: AtomicBool,
}

impl Leg {
    fn note(&self, kind: Kind) {
        self.recorder.note(self.lane, kind);
    }

    /// A failed read or write, by its error: a reset or broken pipe, or whatever else ended it.
    fn failed(&self, e: &io::Error) {
        if !self.reset.swap(true, Ordering::Relaxed) {
            self.note(Kind::Reset {
                error: e.to_string(),
            });
        }
    }
}

impl Drop for Leg {
    fn drop(&mut self) {
        self.note(Kind::Close);
    }
}

/// The read side's record. A stream read again after its EOF or a reset reports an end again;
/// only the first is an event.
#[derive(Debug, Default)]
struct Reading {
    /// Bytes read so far.
    total: u64,
    ended: bool,
}

impl Reading {
    /// Notes the outcome of a read into `buf`, which had `room` bytes free and held `before`.
    fn poll_noted(
        &mut self,
        leg: &Leg,
        room: usize,
        before: usize,
        buf: &ReadBuf<'_>,
        polled: Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        match &polled {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    self.total += n as u64;
                    leg.note(Kind::Read { total: self.total });
                } else if room > 0 {
                    self.end(leg, Kind::Eof);
                }
            }
            Poll::Ready(Err(e)) => self.failed(leg, e),
            Poll::Pending => {}
        }
        polled
    }

    fn end(&mut self, leg: &Leg, kind: Kind) {
        if !std::mem::replace(&mut self.ended, true) {
            leg.note(kind);
        }
    }

    fn failed(&mut self, leg: &Leg, e: &io::Error) {
        if !std::mem::replace(&mut self.ended, true) {
            leg.failed(e);
        }
    }
}

/// The write side's record.
#[derive(Debug, Default)]
struct Writing {
    /// Bytes written so far.
    total: u64,
    /// A shutdown or a failed write was noted: nothing the side does later is news.
    ended: bool,
    /// A write half's leg: dropping the half sends FIN, as tokio's does (see the Drop).
    fin_on_drop: Option<Arc<Leg>>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        // While the read half lives on, the FIN a dropped write half sends is the leg's
        // half-close; with both gone it is part of the close. A Traced's fields drop in order,
        // its own `leg` before its `writing`: so here a second reference is the read half's.
        if let Some(leg) = &self.fin_on_drop
            && Arc::strong_count(leg) > 1
            && !self.ended
        {
            leg.note(Kind::HalfClose);
        }
    }
}

impl Writing {
    fn wrote(&mut self, leg: &Leg, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &polled {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.total += *n as u64;
                leg.note(Kind::Wrote { total: self.total });
            }
            Poll::Ready(Err(e)) => self.failed(leg, e),
            _ => {}
        }
        polled
    }

    fn shut(&mut self, leg: &Leg, polled: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
        match &polled {
            Poll::Ready(Ok(())) if !std::mem::replace(&mut self.ended, true) => {
                leg.note(Kind::HalfClose)
            }
            Poll::Ready(Err(e)) => self.failed(leg, e),
            _ => {}
        }
        polled
    }

    fn failed(&mut self, leg: &Leg, e: &io::Error) {
        if !std::mem::replace(&mut self.ended, true) {
            leg.failed(e);
        }
    }
}

impl Traced {
    /// `stream`, its events noted on `lane` of `recorder` from now on.
    pub fn new(stream: TcpStream, recorder: Recorder, lane: Lane) -> Traced {
        Traced {
            io: stream,
            leg: Arc::new(Leg {
                recorder,
                lane,
                reset: AtomicBool::new(false),
            }),
            reading: Reading::default(),
            writing: Writing::default(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.set_nodelay(nodelay)
    }

    /// As [`TcpStream::peek`]: nothing is consumed, so no bytes are counted, but an EOF or a
    /// reset it sees is the stream's end all the same.
    pub async fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let peeked = self.io.peek(buf).await;
        match &peeked {
            Ok(0) if !buf.is_empty() => self.reading.end(&self.leg, Kind::Eof),
            Err(e) => self.reading.failed(&self.leg, e),
            _ => {}
        }
        peeked
    }

    /// As [`TcpStream::into_split`], each half still noted on this leg; dropping the write half
    /// sends FIN as tokio's does, and the close is noted once both halves are gone.
    pub fn into_split(self) -> (TracedReadHalf, TracedWriteHalf) {
        let (rd, wr) = self.io.into_split();
        let writing = Writing {
            fin_on_drop: Some(self.leg.clone()),
            ..self.writing
        };
        (
            Traced {
                io: rd,
                leg: self.leg.clone(),
                reading: self.reading,
                writing: Writing::default(),
            },
            Traced {
                io: wr,
                leg: self.leg,
                reading: Reading::default(),
                writing,
            },
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Traced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (room, before) = (buf.remaining(), buf.filled().len());
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.reading
            .poll_noted(&this.leg, room, before, buf, polled)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Traced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.writing.wrote(&this.leg, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.writing.wrote(&this.leg, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.writing.shut(&this.leg, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Event;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio::time::Instant;

    /// A connected loopback pair: (the connecting side, the accepted side).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, a) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), a.unwrap().0)
    }

    fn kinds(r: &Recorder, lane: Lane) -> Vec<Kind> {
        r.timeline()
            .events
            .into_iter()
            .filter(|e: &Event| e.lane == lane)
            .map(|e| e.kind)
            .collect()
    }

    /// Byte counts are sampled, so a leg's record is its counts' last values before each end.
    fn ends(kinds: Vec<Kind>) -> Vec<Kind> {
        let mut kept: Vec<Kind> = Vec::new();
        for k in kinds {
            let same = |a: &Kind| {
                matches!(
                    (a, &k),
                    (Kind::Wrote { .. }, Kind::Wrote { .. })
                        | (Kind::Read { .. }, Kind::Read { .. })
                )
            };
            match kept.last_mut() {
                Some(last) if same(last) => *last = k,
                _ => kept.push(k),
            }
        }
        kept
    }

    #[tokio::test]
    async fn a_half_closed_exchange_reads_as_it_happened() {
        let r = Recorder::new(Instant::now());
        let (c, s) = pair().await;
        let (client, server) = (Lane::Client(1), Lane::Server(1));
        let mut c = Traced::new(c, r.clone(), client);
        let mut s = Traced::new(s, r.clone(), server);
        let data = vec![7u8; 300_000];
        let writing = async {
            c.write_all(&data).await.unwrap();
            c.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let reading = s.read_to_end(&mut got);
        let ((), read) = tokio::join!(writing, reading);
        assert_eq!(read.unwrap(), data.len());
        s.write_all(b"bye").await.unwrap();
        drop(s);
        let mut reply = Vec::new();
        c.read_to_end(&mut reply).await.unwrap();
        drop(c);
        let n = data.len() as u64;
        assert_eq!(
            ends(kinds(&r, client)),
            vec![
                Kind::Wrote { total: n },
                Kind::HalfClose,
                Kind::Read { total: 3 },
                Kind::Eof,
                Kind::Close
            ]
        );
        assert_eq!(
            ends(kinds(&r, server)),
            vec![
                Kind::Read { total: n },
                Kind::Eof,
                Kind::Wrote { total: 3 },
                Kind::Close
            ]
        );
    }

    #[tokio::test]
    async fn a_reset_peer_is_noted_once_with_its_error() {
        let r = Recorder::new(Instant::now());
        let (c, s) = pair().await;
        let lane = Lane::Client(2);
        let mut c = Traced::new(c, r.clone(), lane);
        testkit::peer::reset(s);
        let mut buf = [0; 16];
        let e = c.read(&mut buf).await.unwrap_err();
        assert!(testkit::peer::is_reset(&e), "{e}");
        let _ = c.read(&mut buf).await;
        let seen = kinds(&r, lane);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            matches!(&seen[0], Kind::Reset { error } if *error == e.to_string()),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_write_half_dropped_after_the_read_half_is_part_of_the_close() {
        let r = Recorder::new(Instant::now());
        let (c, _s) = pair().await;
        let lane = Lane::Client(4);
        let (rd, mut wr) = Traced::new(c, r.clone(), lane).into_split();
        wr.write_all(b"abc").await.unwrap();
        drop(rd);
        drop(wr);
        assert_eq!(
            ends(kinds(&r, lane)),
            vec![Kind::Wrote { total: 3 }, Kind::Close]
        );
    }

    #[tokio::test]
    async fn split_halves_note_on_one_lane_and_close_once_both_are_gone() {
        let r = Recorder::new(Instant::now());
        let (c, s) = pair().await;
        let lane = Lane::Server(3);
        let (mut rd, mut wr) = Traced::new(c, r.clone(), lane).into_split();
        let mut peer = s;
        wr.write_all(b"abc").await.unwrap();
        drop(wr);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc", "dropping the write half sent FIN");
        peer.write_all(b"xy").await.unwrap();
        drop(peer);
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await.unwrap();
        drop(rd);
        assert_eq!(
            ends(kinds(&r, lane)),
            vec![
                Kind::Wrote { total: 3 },
                Kind::HalfClose,
                Kind::Read { total: 2 },
                Kind::Eof,
                Kind::Close
            ]
        );
    }

    #[tokio::test]
    async fn a_peek_at_eof_notes_the_eof_and_counts_no_bytes() {
        let r = Recorder::new(Instant::now());
        let (c, s) = pair().await;
        let lane = Lane::Client(4);
        let mut c = Traced::new(c, r.clone(), lane);
        drop(s);
        let mut probe = [0; 1];
        assert_eq!(c.peek(&mut probe).await.unwrap(), 0);
        assert_eq!(kinds(&r, lane), vec![Kind::Eof]);
    }
}
