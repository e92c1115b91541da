//! Relay buffers (memory, or pipes for a stream when splicing), lent only while a direction has
//! data in flight.
//!
//! An idle pair holds no buffer and no pipe, so ten thousand idle pairs cost their sockets and
//! little else. Keeping a few returned buffers spares a busy pair a 64 KiB malloc/free (or a
//! `pipe2` and a `close`) on every read. The pool keeps no more than are out on loan at the moment
//! (and at least [`KEEP_IDLE`]), so once traffic stops it shrinks back: a proxy that has gone
//! quiet holds no pile of spare buffers, nor of pipe descriptors, from its busiest second.

use std::sync::Mutex;

use crate::buffer::{Buffer, Memory};
#[cfg(target_os = "linux")]
use crate::splice::Pipe;

/// Kept even when nothing is on loan: one is enough for a ping-pong, whose two directions take
/// turns.
const KEEP_IDLE: usize = 1;
/// Never kept beyond this many of each kind, however many are on loan.
const KEEP_MAX: usize = 64;

#[derive(Debug)]
pub struct Pool {
    /// Each memory buffer's size.
    size: usize,
    /// The size each pipe is asked for.
    pipe_size: usize,
    /// Lend pipes for `splice(2)` to streaming directions (Linux only); otherwise memory only.
    splice: bool,
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    /// Empty memory buffers, each `size` bytes long.
    memory: Vec<Memory>,
    /// Empty pipes.
    #[cfg(target_os = "linux")]
    pipes: Vec<Pipe>,
    /// Buffers and pipes lent and not yet given back or discarded.
    lent: usize,
    /// The last attempt to make a pipe failed (out of descriptors, say): logged once, not at
    /// every read until it recovers.
    #[cfg(target_os = "linux")]
    pipes_failing: bool,
}

impl Pool {
    /// `splice` is honoured on Linux only; elsewhere the pool always lends memory.
    pub fn new(size: usize, pipe_size: usize, splice: bool) -> Pool {
        Pool {
            size,
            pipe_size,
            splice: splice && cfg!(target_os = "linux"),
            free: Mutex::new(Free::default()),
        }
    }

    /// Each memory buffer's size: a read that brings this much makes a direction a stream.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Whether this pool lends pipes (when it can make them).
    pub fn splices(&self) -> bool {
        self.splice
    }

    /// An empty buffer: a pipe for a `streaming` direction when splicing, memory otherwise.
    ///
    /// Splicing pays for bulk, where it saves copying every byte twice; for a small message it
    /// costs as many system calls as copying, a little more kernel work per call, and a pipe to
    /// find. So only a direction whose last loan filled its buffer (bytes arrive faster than one
    /// read takes them) gets a pipe; see [`Relay`](crate::relay::Relay). When no pipe can be made
    /// (out of descriptors) the loan is memory, so the pair keeps moving; the next loan tries a
    /// pipe again.
    // Without splice(2) every loan is memory, whatever `streaming` says.
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    pub fn take(&self, streaming: bool) -> Buffer {
        let mut free = self.lock();
        free.lent += 1;
        #[cfg(target_os = "linux")]
        if self.splice && streaming {
            if let Some(pipe) = free.pipes.pop() {
                return Buffer::Pipe(pipe);
            }
            drop(free);
            // A pipe smaller than a memory buffer would splice in smaller pieces than copying
            // reads: what a user past pipe-user-pages-soft gets (two pages) is not worth it.
            let made = Pipe::new(self.pipe_size).and_then(|pipe| {
                if pipe.budget() >= self.size.min(self.pipe_size) {
                    Ok(pipe)
                } else {
                    Err(std::io::Error::other(format!(
                        "the kernel granted a pipe of {} bytes only (pipe-user-pages-soft)",
                        pipe.budget()
                    )))
                }
            });
            let mut free = self.lock();
            match made {
                Ok(pipe) => {
                    free.pipes_failing = false;
                    return Buffer::Pipe(pipe);
                }
                Err(e) => {
                    if !free.pipes_failing {
                        tracing::warn!(
                            "cannot make a pipe ({e}); copying through memory until pipes can be made again"
                        );
                        free.pipes_failing = true;
                    }
                    return Buffer::Memory(
                        free.memory.pop().unwrap_or_else(|| Memory::new(self.size)),
                    );
                }
            }
        }
        Buffer::Memory(free.memory.pop().unwrap_or_else(|| Memory::new(self.size)))
    }

    /// Takes back an empty buffer, keeping it if the pool is short of spares, and lets go of
    /// spares beyond what is now on loan.
    pub fn give(&self, buf: Buffer) {
        debug_assert_eq!(buf.buffered(), 0, "only empty buffers go back");
        let mut guard = self.lock();
        let free = &mut *guard;
        free.lent -= 1;
        let keep = free.lent.clamp(KEEP_IDLE, KEEP_MAX);
        let spare = match buf {
            Buffer::Memory(mut m) if free.memory.len() < keep => {
                debug_assert_eq!(m.size(), self.size);
                m.rewind();
                free.memory.push(m);
                None
            }
            #[cfg(target_os = "linux")]
            Buffer::Pipe(p) if free.pipes.len() < keep => {
                free.pipes.push(p);
                None
            }
            spare => Some(spare),
        };
        let memory = free.memory.split_off(keep.min(free.memory.len()));
        #[cfg(target_os = "linux")]
        let pipes = free.pipes.split_off(keep.min(free.pipes.len()));
        // Dropped once the lock is released: closing a pipe is a syscall.
        drop(guard);
        drop((spare, memory));
        #[cfg(target_os = "linux")]
        drop(pipes);
    }

    /// Ends a loan whose buffer still holds bytes that will never be written (an aborted pair):
    /// a pipe cannot be emptied without reading it, so it is closed, never reused.
    pub fn discard(&self, buf: Buffer) {
        self.lock().lent -= 1;
        drop(buf);
    }

    /// Spare (memory, pipes) now held, for tests.
    #[cfg(test)]
    pub(crate) fn spares(&self) -> (usize, usize) {
        let free = self.lock();
        #[cfg(target_os = "linux")]
        let pipes = free.pipes.len();
        #[cfg(not(target_os = "linux"))]
        let pipes = 0;
        (free.memory.len(), pipes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic elsewhere while holding the lock leaves the lists valid: carry on.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares(pool: &Pool) -> usize {
        let (memory, pipes) = pool.spares();
        memory + pipes
    }

    fn burst(pool: &Pool, n: usize) {
        let bufs: Vec<_> = (0..n).map(|_| pool.take(true)).collect();
        for b in bufs {
            pool.give(b);
        }
    }

    #[test]
    fn copying_pool_lends_memory_of_its_size() {
        let pool = Pool::new(16, 16, false);
        match pool.take(true) {
            Buffer::Memory(m) => assert_eq!(m.size(), 16),
            #[cfg(target_os = "linux")]
            other => panic!("expected memory, got {other:?}"),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn splicing_pool_lends_pipes_to_streams_only() {
        let pool = Pool::new(4096, 4096, true);
        assert!(matches!(pool.take(true), Buffer::Pipe(_)));
        assert!(matches!(pool.take(false), Buffer::Memory(_)));
    }

    #[test]
    fn spares_shrink_to_one_once_nothing_is_lent() {
        for splice in [false, true] {
            let pool = Pool::new(4096, 4096, splice);
            burst(&pool, 10);
            assert_eq!(spares(&pool), KEEP_IDLE, "splice {splice}");
            assert_eq!(pool.lock().lent, 0);
        }
    }

    #[test]
    fn spares_track_the_loans_of_a_busy_moment() {
        let pool = Pool::new(16, 16, false);
        let held: Vec<_> = (0..20).map(|_| pool.take(true)).collect();
        // With 20 out, returning 10 keeps every one of them for the next reads.
        burst(&pool, 10);
        assert_eq!(spares(&pool), 10);
        for b in held {
            pool.give(b);
        }
        assert_eq!(spares(&pool), KEEP_IDLE);
    }

    #[test]
    fn never_more_than_the_cap() {
        let pool = Pool::new(16, 16, false);
        burst(&pool, KEEP_MAX * 3);
        assert!(spares(&pool) <= KEEP_MAX);
    }
}
