//! Relay buffers, lent only while a direction has data in flight.
//!
//! An idle pair holds no buffer, so ten thousand idle pairs cost their sockets and little else.
//! Keeping a few drained buffers spares the allocator a 64 KiB malloc/free on every read of a
//! busy pair.

use std::sync::Mutex;

/// Buffers kept for reuse; beyond this, drained buffers go back to the allocator.
const KEEP: usize = 64;

#[derive(Debug)]
pub struct Pool {
    size: usize,
    free: Mutex<Vec<Box<[u8]>>>,
}

impl Pool {
    pub fn new(size: usize) -> Pool {
        Pool {
            size,
            free: Mutex::new(Vec::new()),
        }
    }

    /// The size of every buffer this pool lends.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    pub fn take(&self) -> Box<[u8]> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    pub fn give(&self, buf: Box<[u8]>) {
        debug_assert_eq!(buf.len(), self.size);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_buffers_are_reused_up_to_the_cap() {
        let pool = Pool::new(16);
        let bufs: Vec<_> = (0..KEEP + 5).map(|_| pool.take()).collect();
        for b in bufs {
            pool.give(b);
        }
        assert_eq!(pool.free.lock().unwrap().len(), KEEP);
        assert_eq!(pool.take().len(), 16);
    }
}
