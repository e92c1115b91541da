//! What one direction holds while bytes are in flight: a memory buffer the bytes are copied
//! through, or (on Linux) a pipe that `splice(2)` moves them through without a copy to user space.
//!
//! Either way the relay sees the same three numbers (bytes buffered, room left, bytes written), so
//! the stall timer and the half-close rule are written once, in [`crate::relay`], for both.

use std::io;

use tokio::net::TcpStream;

#[cfg(target_os = "linux")]
use crate::splice::Pipe;

pub use crate::fill::Fill;

/// A buffer lent by the [`Pool`](crate::pool::Pool) to a direction with bytes in flight.
#[derive(Debug)]
pub enum Buffer {
    Memory(Memory),
    #[cfg(target_os = "linux")]
    Pipe(Pipe),
}

impl Buffer {
    /// Bytes read from the source and not yet written to the destination.
    pub fn buffered(&self) -> usize {
        match self {
            Buffer::Memory(m) => m.buffered(),
            #[cfg(target_os = "linux")]
            Buffer::Pipe(p) => p.buffered(),
        }
    }

    /// How many more bytes a read may take; 0 means reading waits for a write.
    pub fn room(&self) -> usize {
        match self {
            Buffer::Memory(m) => m.room(),
            #[cfg(target_os = "linux")]
            Buffer::Pipe(p) => p.room(),
        }
    }

    /// Reads once from `src` into the room left. `WouldBlock` means `src` had nothing, and its
    /// readiness has been cleared so that the next poll registers for a wake-up.
    pub fn fill_from(&mut self, src: &TcpStream) -> io::Result<Fill> {
        match self {
            Buffer::Memory(m) => m.fill_from(src),
            #[cfg(target_os = "linux")]
            Buffer::Pipe(p) => p.fill_from(src),
        }
    }

    /// Writes once to `dst` from what is buffered; returns how many bytes went. `WouldBlock`
    /// means `dst` had no room, and its readiness has been cleared.
    pub fn drain_to(&mut self, dst: &TcpStream) -> io::Result<usize> {
        match self {
            Buffer::Memory(m) => m.drain_to(dst),
            #[cfg(target_os = "linux")]
            Buffer::Pipe(p) => p.drain_to(dst),
        }
    }

    /// The bytes themselves, when they are in user space.
    pub fn memory(&mut self) -> Option<&mut Memory> {
        match self {
            Buffer::Memory(m) => Some(m),
            #[cfg(target_os = "linux")]
            Buffer::Pipe(_) => None,
        }
    }
}

/// A heap buffer for the copying path.
#[derive(Debug)]
pub struct Memory {
    buf: Box<[u8]>,
    /// Bytes in `buf[pos..cap]` have been read but not yet written; `pos <= cap <= buf.len()`.
    pos: usize,
    cap: usize,
}

impl Memory {
    pub fn new(size: usize) -> Memory {
        Memory {
            buf: vec![0; size].into_boxed_slice(),
            pos: 0,
            cap: 0,
        }
    }

    pub fn size(&self) -> usize {
        self.buf.len()
    }

    fn buffered(&self) -> usize {
        self.cap - self.pos
    }

    /// Room after `cap` only: the buffer is lent afresh once empty, so compacting would buy
    /// little.
    fn room(&self) -> usize {
        self.buf.len() - self.cap
    }

    /// Makes an empty buffer start at its beginning again, before it goes back to the pool.
    pub fn rewind(&mut self) {
        debug_assert_eq!(self.buffered(), 0);
        self.pos = 0;
        self.cap = 0;
    }

    /// The bytes read and not yet written.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.cap]
    }

    pub fn pending_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.pos..self.cap]
    }

    /// Counts the first `n` pending bytes as written.
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        debug_assert!(self.pos <= self.cap);
    }

    pub fn fill_from(&mut self, src: &TcpStream) -> io::Result<Fill> {
        match src.try_read(&mut self.buf[self.cap..])? {
            0 => Ok(Fill::Eof),
            n => {
                self.cap += n;
                Ok(Fill::Data)
            }
        }
    }

    fn drain_to(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = dst.try_write(self.pending())?;
        self.consume(n);
        Ok(n)
    }
}
