//! Phases: each a small scenario (what the harness's client and server ends do through the proxy)
//! plus the check of what they saw. The table below is the suite, in the order it is printed.

mod chain;
mod close;
mod echo;
mod lazy;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::deadline::{Expired, Timing, within};
use crate::harness::{Proxy, ProxyCommand, StartFailure, describe_status};
use crate::peer;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Every parameter of every phase, in one place.
pub mod params {
    use super::*;
    use crate::peer::Pacing;

    /// Echo phases: messages of this size, each echoed before the next is sent.
    pub const ECHO_MESSAGES: usize = 10;
    pub const ECHO_MESSAGE_LEN: usize = 4;
    pub const CHAIN_SHORT: usize = 2;
    pub const CHAIN_LONG: usize = 20;
    /// Any echo through the proxy (one message, a whole chain of hops) arrives within this.
    pub const ECHO_DEADLINE: Duration = secs(10);

    /// Bulk: seeded random bytes through the long chain, every reader slow on purpose so the
    /// proxy's writes come back short.
    pub const BULK_BYTES: usize = 2 * MIB;
    pub const BULK_WRITE_PIECE: usize = 64 * KIB;
    pub const SLOW_READER: Pacing = Pacing {
        chunk: 4 * KIB,
        pause: millis(1),
    };
    pub const BULK_DEADLINE: Duration = secs(60);

    /// The blocked connection of "Mix of blocked and normal" stops writing after this much.
    pub const BLOCKED_WRITE_LIMIT: usize = 256 * MIB;

    /// One-way shutdown: what the client sends, and how long the server waits after EOF.
    pub const ONE_WAY_REQUEST: usize = 16;
    pub const ONE_WAY_PAUSE: Duration = secs(1);

    /// Early close: the client writes a byte this often, and the proxy must have closed its
    /// connection within the limit.
    pub const EARLY_CLOSE_EVERY: Duration = secs(1);
    pub const EARLY_CLOSE_LIMIT: Duration = secs(15);

    /// Active client: a small echo this often, for the stall timeout plus `ACTIVE_EXTRA`.
    pub const ACTIVE_EVERY: Duration = secs(2);
    pub const ACTIVE_EXTRA: Duration = secs(4);
    pub const ACTIVE_MESSAGE_LEN: usize = 16;

    /// Lazy peers: a close before this fraction of the stall timeout is too early; one later than
    /// the stall timeout plus `LAZY_SLACK` after the writer's last progress is too late.
    pub const LAZY_EARLIEST: f64 = 0.8;
    pub const LAZY_SLACK: Duration = secs(5);
    /// A proxy that buffers without limit would take everything; stop feeding it after this.
    pub const LAZY_WRITE_LIMIT: usize = 256 * MIB;
    pub const LAZY_WRITE_PIECE: usize = 64 * KIB;

    /// The proxy has this long to start listening.
    pub const READY_WITHIN: Duration = secs(5);
}

/// A phase's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
        })
    }
}

/// Why a phase failed: one line (what was expected, what happened), detail lines, and a hint
/// naming the likely bug when the evidence fits a known pattern.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    pub summary: String,
    pub details: Vec<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(summary: impl Into<String>) -> Failure {
        Failure {
            summary: summary.into(),
            ..Failure::default()
        }
    }

    pub fn detail(mut self, line: impl Into<String>) -> Failure {
        self.details.push(line.into());
        self
    }

    pub fn details(mut self, lines: impl IntoIterator<Item = String>) -> Failure {
        self.details.extend(lines);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl From<Expired> for Failure {
    fn from(e: Expired) -> Failure {
        Failure::new(format!("expected {}, but {}", e.what, e))
    }
}

/// The result of one phase.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: &'static str,
    pub name: &'static str,
    pub verdict: Verdict,
    pub failure: Option<Failure>,
    pub elapsed: Duration,
}

pub type PhaseResult = Result<(), Failure>;
type PhaseFuture = Pin<Box<dyn Future<Output = PhaseResult> + Send>>;

/// One row of the suite.
pub struct Phase {
    /// Stable hierarchical id for filters and reports.
    pub id: &'static str,
    /// The name printed, as the 2002 tester printed it.
    pub name: &'static str,
    /// SO_RCVBUF of the destination server's sockets (set on the listener before `listen`).
    server_rcvbuf: Option<u32>,
    run: fn(Arc<Ctx>) -> PhaseFuture,
}

/// The suite, in order.
pub fn all() -> Vec<Phase> {
    use peer::SMALL_RCVBUF as SMALL;
    vec![
        Phase {
            id: "echo/single",
            name: "Single echo connection",
            server_rcvbuf: None,
            run: |c| Box::pin(echo::single(c)),
        },
        Phase {
            id: "echo/chain2",
            name: "Two echo connections",
            server_rcvbuf: None,
            run: |c| Box::pin(chain::echo(c, params::CHAIN_SHORT)),
        },
        Phase {
            id: "echo/chain20",
            name: "20 echo connections",
            server_rcvbuf: None,
            run: |c| Box::pin(chain::echo(c, params::CHAIN_LONG)),
        },
        Phase {
            id: "bulk/chain20",
            name: "Bulk data, 20 connections",
            server_rcvbuf: Some(SMALL),
            run: |c| Box::pin(chain::bulk(c, false)),
        },
        Phase {
            id: "bulk/mixed-blocked",
            name: "Mix of blocked and normal",
            server_rcvbuf: Some(SMALL),
            run: |c| Box::pin(chain::bulk(c, true)),
        },
        Phase {
            id: "shutdown/one-way",
            name: "One-way shutdown",
            server_rcvbuf: None,
            run: |c| Box::pin(close::one_way_shutdown(c)),
        },
        Phase {
            id: "shutdown/early-close",
            name: "Early close",
            server_rcvbuf: None,
            run: |c| Box::pin(close::early_close(c)),
        },
        Phase {
            id: "timeout/active",
            name: "Non-timeout of active client",
            server_rcvbuf: None,
            run: |c| Box::pin(echo::active(c)),
        },
        Phase {
            id: "timeout/lazy-forward",
            name: "Timeout of lazy forward client",
            server_rcvbuf: Some(SMALL),
            run: |c| Box::pin(lazy::forward(c)),
        },
        Phase {
            id: "timeout/lazy-reverse",
            name: "Timeout of lazy reverse client",
            server_rcvbuf: None,
            run: |c| Box::pin(lazy::reverse(c)),
        },
    ]
}

/// What a phase's scenario works with: its own destination server, its own proxy, deadlines.
pub struct Ctx {
    pub timing: Timing,
    /// The destination server's listener; the proxy was told to forward here.
    dest: TcpListener,
    proxy_port: u16,
    seed: u64,
    /// Held so the scenario can ask whether the proxy is still alive.
    proxy: Mutex<Proxy>,
}

impl Ctx {
    /// A harness deadline, scaled.
    pub fn scaled(&self, base: Duration) -> Duration {
        self.timing.scaled(base)
    }

    /// A client connection through the proxy.
    pub async fn connect(&self, rcvbuf: Option<u32>) -> Result<TcpStream, Failure> {
        let limit = self.scaled(params::ECHO_DEADLINE);
        let what = format!("a connection to the proxy on 127.0.0.1:{}", self.proxy_port);
        within(limit, what.clone(), peer::connect(self.proxy_port, rcvbuf))
            .await?
            .map_err(|e| Failure::new(format!("expected {what}, but connect failed: {e}")))
    }

    /// The next connection the proxy makes to the destination server.
    pub async fn accept(&self) -> Result<TcpStream, Failure> {
        let limit = self.scaled(params::ECHO_DEADLINE);
        let (s, _) = within(
            limit,
            "the proxy to connect to the destination server",
            self.dest.accept(),
        )
        .await?
        .map_err(|e| Failure::new(format!("accept on the destination server failed: {e}")))?;
        Ok(s)
    }

    /// A client connection and the destination-side connection the proxy made for it.
    pub async fn pair(
        &self,
        client_rcvbuf: Option<u32>,
    ) -> Result<(TcpStream, TcpStream), Failure> {
        let client = self.connect(client_rcvbuf).await?;
        let server = self.accept().await?;
        Ok((client, server))
    }

    /// `len` bytes of the seeded payload stream numbered `stream`.
    pub fn payload(&self, stream: u64, len: usize) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        let mut v = vec![0; len];
        rng.fill_bytes(&mut v);
        v
    }

    /// The proxy's exit status, if it has died.
    pub async fn proxy_exit(&self) -> Option<std::process::ExitStatus> {
        self.proxy.lock().await.exit_status()
    }
}

/// Runs one phase end to end: destination server, proxy, scenario, teardown.
pub async fn run(
    phase: &Phase,
    cmd: &ProxyCommand,
    timing: Timing,
    seed: u64,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let dest = peer::listen(phase.server_rcvbuf)
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let dest_port = dest.local_addr().map_err(|e| e.to_string())?.port();
    let outcome = |verdict, failure| Outcome {
        id: phase.id,
        name: phase.name,
        verdict,
        failure,
        elapsed: started.elapsed(),
    };
    let proxy = match Proxy::start(cmd, dest_port, timing.scaled(params::READY_WITHIN)).await {
        Ok(p) => p,
        Err(StartFailure::Harness(msg)) => return Err(msg),
        Err(StartFailure::Proxy { summary, details }) => {
            return Ok(outcome(
                Verdict::Failed,
                Some(Failure::new(summary).details(details)),
            ));
        }
    };
    let proxy_port = proxy.listen_port;
    let ctx = Arc::new(Ctx {
        timing,
        dest,
        proxy_port,
        seed,
        proxy: Mutex::new(proxy),
    });
    // The scenario runs as its own task so a panic in it is a failed phase, not a dead harness.
    let result = tokio::spawn((phase.run)(ctx.clone())).await;
    let mut proxy = ctx.proxy.lock().await;
    let died = proxy.exit_status();
    if died.is_some() {
        proxy.await_output().await;
    }
    let mut failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(f)) => Some(f),
        Err(e) => Some(Failure::new(format!("the harness's scenario crashed: {e}"))),
    };
    if let Some(status) = died {
        // A proxy that dies mid-phase fails it, even if what the peers saw happened to check out.
        let f = failure.unwrap_or_else(|| {
            Failure::new("expected the proxy to keep running, but it died during the phase")
        });
        failure = Some(f.detail(format!("the proxy died: {}", describe_status(status))));
    }
    if let Some(f) = failure.as_mut() {
        f.details.push(format!("proxy: {cmd} (pid {}, listening on 127.0.0.1:{proxy_port}, destination 127.0.0.1:{dest_port})", proxy.pid()));
        f.details.extend(proxy.stderr_details());
        f.details.push(format!("seed: {seed}"));
    }
    proxy.stop().await;
    let verdict = if failure.is_some() {
        Verdict::Failed
    } else {
        Verdict::Passed
    };
    Ok(outcome(verdict, failure))
}
