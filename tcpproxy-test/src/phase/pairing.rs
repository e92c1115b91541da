//! Pairing each client with the destination connection the proxy made for it.
//!
//! Taking "the next connection the destination accepts" goes wrong with real proxies: one that
//! opens a connection to the destination at start-up (a health probe) shifts every pair by one,
//! and concurrent clients can be served in any order. So every client sends a short tag before
//! anything else, and a destination connection belongs to the client whose tag arrives on it.
//! Connections that close without a tag (probes) are ignored. Since the client always speaks
//! first, a proxy that connects to the destination only once the client has sent something is
//! served too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex as SyncMutex;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinSet;

/// Bytes of a tag: a marker, the client's number, and the number again inverted, so bytes a
/// proxy altered are told apart from a tag of another client.
pub const TAG_LEN: usize = 12;
const MARKER: [u8; 4] = *b"\xf0TAG";

/// A client's number within its phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(u32);

impl Tag {
    /// The tag of a client opened alone, when pairs are opened one at a time.
    pub fn first() -> Tag {
        Tag(1)
    }

    pub fn bytes(self) -> [u8; TAG_LEN] {
        let mut b = [0; TAG_LEN];
        b[..4].copy_from_slice(&MARKER);
        b[4..8].copy_from_slice(&self.0.to_be_bytes());
        b[8..].copy_from_slice(&(!self.0).to_be_bytes());
        b
    }

    fn parse(b: &[u8; TAG_LEN]) -> Option<Tag> {
        let n = u32::from_be_bytes(b[4..8].try_into().ok()?);
        let inv = u32::from_be_bytes(b[8..].try_into().ok()?);
        (b[..4] == MARKER && inv == !n).then_some(Tag(n))
    }
}

/// What came in on the destination's listener and has not been claimed yet.
#[derive(Default)]
struct Arrived {
    by_tag: HashMap<Tag, TcpStream>,
    /// Tags in order of arrival, for [`Router::accept_any`]; may name ones already claimed.
    order: VecDeque<Tag>,
    /// Connections that closed before sending a whole tag (probes, or a proxy that connects
    /// ahead of need and gives up).
    untagged: usize,
    /// The first bytes of connections whose first bytes were not a tag.
    garbled: Vec<[u8; TAG_LEN]>,
}

/// What the router and its tag readers share.
#[derive(Default)]
struct Shared {
    arrived: SyncMutex<Arrived>,
    notify: Notify,
}

impl Shared {
    fn arrived(&self) -> std::sync::MutexGuard<'_, Arrived> {
        self.arrived.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sorts the destination's connections by tag.
pub struct Router {
    next: AtomicU32,
    shared: Arc<Shared>,
    /// Tag readers, one per accepted connection; aborted with the router at the phase's end.
    readers: SyncMutex<JoinSet<()>>,
}

impl Default for Router {
    fn default() -> Router {
        Router::new()
    }
}

impl Router {
    pub fn new() -> Router {
        Router {
            next: AtomicU32::new(1),
            shared: Arc::default(),
            readers: SyncMutex::new(JoinSet::new()),
        }
    }

    pub fn next_tag(&self) -> Tag {
        Tag(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The connection tagged `tag`, accepting from `listener` until it arrives.
    pub async fn accept_for(
        &self,
        listener: &Mutex<Option<TcpListener>>,
        tag: Tag,
    ) -> Result<TcpStream, String> {
        self.claim(listener, |a| a.by_tag.remove(&tag)).await
    }

    /// The earliest tagged connection not yet claimed, whichever client it belongs to: for a
    /// server that treats every connection alike.
    pub async fn accept_any(
        &self,
        listener: &Mutex<Option<TcpListener>>,
    ) -> Result<(TcpStream, Tag), String> {
        self.claim(listener, |a| {
            while let Some(t) = a.order.pop_front() {
                if let Some(s) = a.by_tag.remove(&t) {
                    return Some((s, t));
                }
            }
            None
        })
        .await
    }

    /// What arrived that was not a tag, for a failure's detail lines.
    pub fn strays(&self) -> Vec<String> {
        let a = self.shared.arrived();
        let mut lines = Vec::new();
        if a.untagged > 0 {
            lines.push(format!(
                "{} connection(s) to the destination closed before sending anything (ignored, as a health probe would be)",
                a.untagged
            ));
        }
        if let Some(first) = a.garbled.first() {
            lines.push(format!(
                "{} connection(s) to the destination began with bytes that are not what the client sent first (the first: {})",
                a.garbled.len(),
                first.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
            ));
        }
        lines
    }

    /// Waits until `take` finds a connection, accepting new ones meanwhile. Whoever holds the
    /// listener accepts for everyone; the others wait for a tag to arrive.
    async fn claim<T>(
        &self,
        listener: &Mutex<Option<TcpListener>>,
        mut take: impl FnMut(&mut Arrived) -> Option<T>,
    ) -> Result<T, String> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = take(&mut self.shared.arrived()) {
                return Ok(s);
            }
            tokio::select! {
                _ = &mut notified => {}
                accepted = async {
                    let guard = listener.lock().await;
                    match guard.as_ref() {
                        Some(l) => l.accept().await.map(|(s, _)| s).map_err(|e| format!("accept on the destination server failed: {e}")),
                        None => Err("the harness's scenario accepted while its destination was closed".into()),
                    }
                } => self.spawn_reader(accepted?),
            }
        }
    }

    /// Reads the tag of a connection just accepted, for as long as the phase lasts: a proxy
    /// may connect ahead of need and send the client's bytes later.
    fn spawn_reader(&self, mut s: TcpStream) {
        let shared = self.shared.clone();
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        // Reap the finished ones as we go: thousands of connections pass in some phases.
        while readers.try_join_next().is_some() {}
        readers.spawn(async move {
            let mut b = [0; TAG_LEN];
            let read = s.read_exact(&mut b).await;
            let mut a = shared.arrived();
            match (read, Tag::parse(&b)) {
                (Ok(_), Some(tag)) => {
                    a.by_tag.insert(tag, s);
                    a.order.push_back(tag);
                }
                (Ok(_), None) => a.garbled.push(b),
                (Err(_), _) => a.untagged += 1,
            }
            drop(a);
            shared.notify.notify_waiters();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_reads_back_and_an_altered_one_does_not() {
        let t = Tag(7);
        let mut b = t.bytes();
        assert_eq!(Tag::parse(&b), Some(t));
        b[6] ^= 1;
        assert_eq!(
            Tag::parse(&b),
            None,
            "a flipped bit is not another client's tag"
        );
    }
}
