//! The runtimes that serve pairs: one single-threaded runtime per CPU the process may use, each
//! on a thread of its own, and a pair lives its whole life on one of them.
//!
//! Why not tokio's work-stealing runtime: with one stream flowing, every readiness event woke
//! its idle second worker to look for work to steal and put it back to sleep, about twice the
//! context switches and three times the `epoll_wait` calls per MB that HAProxy makes with a
//! thread that keeps its own connections (docs/benchmarks.md, "Where a single stream's CPU
//! goes"). A pair's two sockets, its timers and its task on one thread never wake another.
//!
//! The listener stays on the runtime that accepts (the caller's, which serves pairs too), so
//! binding, the connection limit, the pause on descriptor exhaustion and the drain are what they
//! were; each accepted client goes to the runtime serving the fewest pairs.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The runtimes pairs are served on: the caller's own and `others`.
#[derive(Debug)]
pub struct Workers {
    /// Pairs open on the caller's runtime.
    local: Arc<AtomicUsize>,
    others: Vec<Worker>,
}

#[derive(Debug)]
struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<AtomicUsize>,
    /// Dropped (or sent) to stop the worker's thread; its runtime then drops what it still runs.
    _stop: oneshot::Sender<()>,
}

impl Workers {
    /// `count` runtimes in all: the caller's and `count - 1` threads started here. The threads
    /// stop when this is dropped; they are not joined, since a task stuck in a hook's blocking
    /// call could hold one forever and the process is exiting anyway.
    pub fn start(count: usize) -> io::Result<Workers> {
        let others = (1..count.max(1))
            .map(Worker::start)
            .collect::<io::Result<_>>()?;
        Ok(Workers {
            local: Arc::new(AtomicUsize::new(0)),
            others,
        })
    }

    /// One per CPU this process may run on (its affinity mask and cgroup quota), so a proxy
    /// pinned to one CPU runs one thread.
    pub fn per_cpu() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Runs `serve(client)` to its end on the runtime serving the fewest pairs. Called on the
    /// runtime that accepted `client`.
    pub fn spawn<F, Fut>(&self, client: TcpStream, serve: F) -> io::Result<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let local = self.local.load(Ordering::Relaxed);
        let least = self
            .others
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .filter(|w| w.open.load(Ordering::Relaxed) < local);
        let Some(worker) = least else {
            let open = Open::count(&self.local);
            tokio::spawn(async move {
                let _open = open;
                serve(client).await;
            });
            return Ok(());
        };
        // The socket is registered with this runtime's reactor; it moves to the worker's.
        let client = client.into_std()?;
        let open = Open::count(&worker.open);
        worker.handle.spawn(async move {
            let _open = open;
            match TcpStream::from_std(client) {
                Ok(client) => serve(client).await,
                // Only a worker whose reactor is gone refuses it: the process is stopping.
                Err(e) => tracing::warn!("cannot serve a client on a worker: {e}"),
            }
        });
        Ok(())
    }
}

impl Worker {
    fn start(index: usize) -> io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("tcpproxy-worker-{index}"))
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                runtime.shutdown_background();
            })?;
        Ok(Worker {
            handle,
            open: Arc::new(AtomicUsize::new(0)),
            _stop: stop,
        })
    }
}

/// One pair counted on its runtime until dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn count(open: &Arc<AtomicUsize>) -> Open {
        open.fetch_add(1, Ordering::Relaxed);
        Open(open.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
