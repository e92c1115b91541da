//! A writer that floods a connection as fast as it takes bytes, so a test can watch its writes
//! block behind a peer that stopped reading, and later check every byte that went out.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::deadline::{scaled, with_deadline};
use crate::pattern::pattern;

/// A flood with no progress for this long is taken as stuck.
const STUCK_QUIET: f64 = 0.5;
/// More than this written toward a peer that never reads means the buffering is not bounded:
/// loopback's autotuned socket buffers hold tens of MB, a proxy's own buffer far less.
const UNBOUNDED: u64 = 256 << 20;

/// How far a [`Flood`] has got.
#[derive(Debug, Clone, Copy)]
pub struct FloodProgress {
    pub written: u64,
    /// When the last write that moved a byte returned (or when the flood began).
    pub at: Instant,
}

/// Writes [`pattern`] `seed` into a connection as fast as it takes it, until stopped or a write
/// fails.
pub struct Flood {
    progress: watch::Receiver<FloodProgress>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<FloodEnd>,
}

/// How a flood ended.
pub struct FloodEnd {
    /// The connection, back for the test to shut down or read.
    pub conn: TcpStream,
    pub written: u64,
    /// `None` when stopped.
    pub error: Option<io::Error>,
    /// When the last successful write returned.
    pub last_progress: Instant,
    /// When the flood ended.
    pub at: Instant,
}

impl Flood {
    pub fn start(mut conn: TcpStream, seed: u64) -> Flood {
        const CHUNK: usize = 64 * 1024;
        let (tx, progress) = watch::channel(FloodProgress {
            written: 0,
            at: Instant::now(),
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut now = *tx.borrow();
            loop {
                let chunk = pattern(seed, now.written, CHUNK);
                // A TcpStream write is cancel-safe: a stop loses no byte that went out.
                let error = tokio::select! {
                    biased;
                    _ = &mut stopped => None,
                    w = conn.write(&chunk) => match w {
                        Ok(0) => Some(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            now = FloodProgress {
                                written: now.written + n as u64,
                                at: Instant::now(),
                            };
                            let _ = tx.send(now);
                            continue;
                        }
                        Err(e) => Some(e),
                    },
                };
                return FloodEnd {
                    conn,
                    written: now.written,
                    error,
                    last_progress: now.at,
                    at: Instant::now(),
                };
            }
        });
        Flood {
            progress,
            stop,
            task,
        }
    }

    /// Waits until no write has moved a byte for [`STUCK_QUIET`] and returns the progress then.
    /// Panics if the flood ends first, or if it writes so much that nothing can be bounding it.
    pub async fn wait_stuck(&mut self, what: &str) -> FloodProgress {
        let quiet = scaled(STUCK_QUIET);
        let limit = scaled(30.0);
        with_deadline(limit, format!("{what} to block"), async {
            loop {
                let now = *self.progress.borrow_and_update();
                assert!(
                    now.written <= UNBOUNDED,
                    "{what}: wrote {} MiB toward a peer that never reads; buffering is unbounded",
                    now.written >> 20
                );
                let left = quiet.saturating_sub(now.at.elapsed());
                if left.is_zero() {
                    return now;
                }
                if let Ok(Err(_)) = tokio::time::timeout(left, self.progress.changed()).await {
                    panic!("{what}: the flood ended after {} bytes", now.written);
                }
            }
        })
        .await
    }

    /// Stops writing and returns the connection.
    pub async fn stop(self) -> FloodEnd {
        let _ = self.stop.send(());
        with_deadline(scaled(5.0), "a flood to stop", self.task)
            .await
            .expect("the flood task does not panic")
    }

    /// Waits for a write to fail.
    pub async fn wait_failure(self, limit: Duration, what: &str) -> FloodEnd {
        let end = with_deadline(limit, what, self.task)
            .await
            .expect("the flood task does not panic");
        drop(self.stop);
        end
    }
}

/// A write that failed because the far end is gone (RST, or EPIPE after one).
#[track_caller]
pub fn assert_aborted(what: &str, error: Option<io::Error>) {
    let error = error.unwrap_or_else(|| panic!("{what}: the flood ended without an error"));
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{what}: expected ECONNRESET or EPIPE, got {error}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::assert_bytes;
    use crate::peer::{self, Pacing, read_to_end};

    #[tokio::test]
    async fn a_flood_blocks_behind_a_reader_that_stopped_and_every_byte_it_wrote_arrives() {
        let listener = peer::listen(Some(peer::SMALL_RCVBUF)).unwrap();
        let conn = peer::connect(listener.local_addr().unwrap().port(), None)
            .await
            .unwrap();
        let (mut reader, _) = listener.accept().await.unwrap();
        let mut flood = Flood::start(conn, 11);
        let stuck = flood
            .wait_stuck("a flood toward a reader that never reads")
            .await;
        assert!(stuck.written > 0);
        let end = flood.stop().await;
        assert!(end.error.is_none());
        let mut conn = end.conn;
        conn.shutdown().await.unwrap();
        let (got, eof) = read_to_end(&mut reader, &[Pacing::EAGER], usize::MAX).await;
        eof.unwrap();
        assert_bytes("the flood", &pattern(11, 0, end.written as usize), &got);
    }
}
