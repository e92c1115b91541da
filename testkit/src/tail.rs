//! The last bytes of a process's output stream: bounded, so a chatty proxy costs no memory, and
//! enough to explain a failure; and the drain that keeps them while the process writes.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// The last `keep` bytes pushed, and how many came in all.
#[derive(Debug)]
pub struct Tail {
    keep: usize,
    bytes: VecDeque<u8>,
    total: u64,
}

impl Tail {
    pub fn new(keep: usize) -> Tail {
        Tail {
            keep,
            bytes: VecDeque::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(self.keep)..];
        let over = (self.bytes.len() + chunk.len()).saturating_sub(self.keep);
        self.bytes.drain(..over);
        self.bytes.extend(chunk);
    }

    /// How many bytes came in all, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept text, lossily decoded, with a note when earlier output was dropped.
    pub fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        let s = String::from_utf8_lossy(&v).into_owned();
        if self.total > self.bytes.len() as u64 {
            format!(
                "[{} earlier bytes dropped] {}",
                self.total - self.bytes.len() as u64,
                s
            )
        } else {
            s
        }
    }
}

/// A stream drained on a thread of its own into a [`Tail`], so the writer never blocks on a full
/// pipe, and waits for a text or for the end of the stream need no polling. Clones share it.
#[derive(Debug, Clone)]
pub struct Capture {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes a blocking wait for the end of the stream.
    ended: Condvar,
    /// Bumped on every chunk and once at the end: what an async wait awaits.
    grew: watch::Sender<u64>,
}

#[derive(Debug)]
struct State {
    tail: Tail,
    /// The stream is at EOF (or failed): the tail holds all that will ever come.
    closed: bool,
}

impl Capture {
    /// Starts draining `from` into a tail of the last `keep` bytes.
    pub fn drain(mut from: impl Read + Send + 'static, keep: usize) -> Capture {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tail: Tail::new(keep),
                closed: false,
            }),
            ended: Condvar::new(),
            grew: watch::Sender::new(0),
        });
        let writer = shared.clone();
        std::thread::spawn(move || {
            let mut chunk = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = from.read(&mut chunk) {
                writer.state().tail.push(&chunk[..n]);
                writer.grew.send_modify(|seen| *seen += 1);
            }
            writer.state().closed = true;
            writer.ended.notify_all();
            writer.grew.send_modify(|seen| *seen += 1);
        });
        Capture { shared }
    }

    /// The kept text so far (see [`Tail::text`]).
    pub fn text(&self) -> String {
        self.shared.state().tail.text()
    }

    /// How many bytes the stream has carried so far, kept or not.
    pub fn total(&self) -> u64 {
        self.shared.state().tail.total()
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.state().closed
    }

    /// Waits until the kept text contains `needle` (true) or the stream ends without it (false).
    /// Only the tail is searched: text buried under `keep` bytes of later output is missed.
    pub async fn contains(&self, needle: &str) -> bool {
        let mut grew = self.shared.grew.subscribe();
        loop {
            // Marked seen before the look, so output that lands after it wakes the wait.
            grew.borrow_and_update();
            {
                let state = self.shared.state();
                if state.tail.text().contains(needle) {
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            // The sender lives as long as `self`: this never fails.
            let _ = grew.changed().await;
        }
    }

    /// Waits up to `limit` for the stream to end (a process that left a child holding the pipe
    /// may keep it open); true if it did.
    pub async fn closed(&self, limit: Duration) -> bool {
        let mut grew = self.shared.grew.subscribe();
        let ended = async {
            loop {
                grew.borrow_and_update();
                if self.is_closed() {
                    return;
                }
                let _ = grew.changed().await;
            }
        };
        tokio::time::timeout(limit, ended).await.is_ok()
    }

    /// [`Capture::closed`] for code that cannot await (a `Drop`).
    pub fn closed_blocking(&self, limit: Duration) -> bool {
        let state = self.shared.state();
        let (state, _) = self
            .shared
            .ended
            .wait_timeout_while(state, limit, |s| !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        state.closed
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: usize = 8 * 1024;

    #[test]
    fn tail_keeps_the_last_bytes_and_counts_the_rest() {
        let mut t = Tail::new(KEEP);
        t.push(&vec![b'a'; KEEP]);
        t.push(b"end");
        assert_eq!(t.total, KEEP as u64 + 3);
        let text = t.text();
        assert!(
            text.starts_with("[3 earlier bytes dropped]"),
            "{}",
            &text[..40]
        );
        assert!(text.ends_with("aend"));
        t.push(&vec![b'z'; 3 * KEEP]);
        assert_eq!(t.bytes.len(), KEEP);
    }

    #[tokio::test]
    async fn a_capture_sees_each_text_and_the_end() {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let mut wr = std::fs::File::from(wr);
        let capture = Capture::drain(std::fs::File::from(rd), KEEP);
        let wait = tokio::spawn({
            let capture = capture.clone();
            async move { capture.contains("ready").await }
        });
        std::io::Write::write_all(&mut wr, b"getting ready\n").unwrap();
        assert!(wait.await.unwrap());
        assert!(!capture.is_closed());
        drop(wr);
        assert!(capture.closed(Duration::from_secs(5)).await);
        assert!(capture.closed_blocking(Duration::ZERO));
        assert!(!capture.contains("never written").await);
        assert_eq!(capture.text(), "getting ready\n");
    }
}
