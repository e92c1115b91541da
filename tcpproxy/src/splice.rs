//! Zero-copy forwarding on Linux: `splice(2)` moves bytes from the source socket into a pipe and
//! from the pipe into the destination socket, so they never pass through user space. A direction
//! borrows a pipe while it streams (see [`Pool::take`](crate::pool::Pool::take)).
//!
//! The pipe is the direction's buffer. The relay bounds it by counting the bytes in it, so the
//! pipe itself never blocks: a read asks for at most the room the count leaves, and a write for at
//! most what the count says is there. The sockets' readiness comes from tokio (`try_io` clears it
//! on `EAGAIN`, as `try_read` does on the copying path).
//!
//! Writing to a socket whose peer has gone raises SIGPIPE here (splice has no `MSG_NOSIGNAL`).
//! Rust programs ignore SIGPIPE from the start, so the write fails with `EPIPE` and the pair is
//! aborted like any other write error; an embedding program must ignore SIGPIPE too.

use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::fill::Fill;

/// `SPLICE_F_NONBLOCK` keeps the pipe end of every call from blocking (the sockets are
/// non-blocking already); `SPLICE_F_MOVE` asks the kernel to move pages rather than copy them.
const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

/// A pipe used as one direction's buffer.
#[derive(Debug)]
pub struct Pipe {
    /// The read end (bytes leave toward the destination) and the write end (bytes arrive from the
    /// source).
    rx: OwnedFd,
    tx: OwnedFd,
    /// The most bytes this pipe may hold: the configured buffer size, or less when the kernel
    /// would not make the pipe that large.
    budget: usize,
    /// Bytes in the pipe: spliced in and not yet spliced out. `len <= budget`.
    len: usize,
    /// The pipe refused bytes while `len < budget`. Its slots fill with partial pages (one per
    /// socket fragment) before its bytes reach its capacity, and an `EAGAIN` then cannot tell a
    /// full pipe from an empty socket; so reading waits until the pipe is empty, when an `EAGAIN`
    /// can only mean the socket. Cleared once `len` is 0.
    full: bool,
}

impl Pipe {
    /// A non-blocking pipe that holds at least `size` bytes when the kernel allows it.
    ///
    /// A new pipe holds 64 KiB. Larger ones are asked for; an unprivileged process cannot go past
    /// `/proc/sys/fs/pipe-max-size`, and a user past `pipe-user-pages-soft` gets small pipes, so
    /// the pipe takes the largest size the kernel grants and the budget shrinks to match.
    pub fn new(size: usize) -> io::Result<Pipe> {
        let (rx, tx) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let mut capacity = usize::try_from(fcntl(&rx, FcntlArg::F_GETPIPE_SZ)?).unwrap_or(0);
        let mut want = size;
        while want > capacity {
            let ask = i32::try_from(want).unwrap_or(i32::MAX);
            match fcntl(&tx, FcntlArg::F_SETPIPE_SZ(ask)) {
                Ok(granted) => {
                    capacity = usize::try_from(granted).unwrap_or(capacity);
                    break;
                }
                Err(_) => want /= 2,
            }
        }
        Ok(Pipe {
            rx,
            tx,
            budget: size.min(capacity),
            len: 0,
            full: false,
        })
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn buffered(&self) -> usize {
        self.len
    }

    pub fn room(&self) -> usize {
        if self.full { 0 } else { self.budget - self.len }
    }

    /// Splices at most [`room`](Pipe::room) bytes from `src` into the pipe.
    pub fn fill_from(&mut self, src: &TcpStream) -> io::Result<Fill> {
        let room = self.room();
        debug_assert!(room > 0, "the relay reads only into room");
        src.try_io(Interest::READABLE, || {
            match splice(src, None, &self.tx, None, room, FLAGS) {
                Ok(0) => Ok(Fill::Eof),
                Ok(n) => {
                    self.len += n;
                    debug_assert!(self.len <= self.budget);
                    Ok(Fill::Data)
                }
                // Not WouldBlock: that would clear the socket's readiness, and if the socket
                // does hold bytes no new edge would come to wake us for them.
                Err(Errno::EAGAIN) if self.len > 0 => {
                    self.full = true;
                    Ok(Fill::Full)
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Splices what the pipe holds into `dst`, as much as `dst` takes.
    pub fn drain_to(&mut self, dst: &TcpStream) -> io::Result<usize> {
        debug_assert!(self.len > 0, "the relay writes only what is buffered");
        // The pipe holds `len` bytes, so an EAGAIN here can only be the socket's.
        let n = dst.try_io(Interest::WRITABLE, || {
            splice(&self.rx, None, dst, None, self.len, FLAGS).map_err(io::Error::from)
        })?;
        self.len -= n;
        if self.len == 0 {
            self.full = false;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pipe_holds_64_kib() {
        let pipe = Pipe::new(64 * 1024).expect("a pipe");
        assert_eq!(pipe.budget(), 64 * 1024);
        assert_eq!((pipe.buffered(), pipe.room()), (0, 64 * 1024));
    }

    #[test]
    fn a_small_buffer_bounds_a_larger_pipe() {
        let pipe = Pipe::new(1021).expect("a pipe");
        assert_eq!(pipe.budget(), 1021);
    }

    #[test]
    fn a_large_buffer_grows_the_pipe_as_far_as_the_kernel_allows() {
        let pipe = Pipe::new(8 << 20).expect("a pipe");
        // Root may pass pipe-max-size; others get at most it. Either way, more than the default.
        assert!(pipe.budget() > 64 * 1024, "budget {}", pipe.budget());
        assert!(pipe.budget() <= 8 << 20);
    }
}
