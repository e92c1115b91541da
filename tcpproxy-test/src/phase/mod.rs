//! Phases: each a small scenario (what the harness's client and server ends do through the proxy)
//! plus the check of what they saw. The table below is the suite, in the order it is printed.
//!
//! A phase that is plain flows is a row: a schedule of the fuzzer's model (`crate::fuzz`), its
//! expectation, and the hints that name its bug ([`flows`]); the fuzzer's driver runs it and
//! its oracle judges it, and a failure prints the command that replays it. The others (chains,
//! many connections, /proc readings, the slow reader, the refused destination) are scripts with
//! their own checks.

mod chain;
mod close;
mod echo;
mod flows;
mod lazy;
mod load;
pub mod pairing;
mod resources;
mod slow;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::deadline::{self, Closest, Expired, Timing, within};
use crate::harness::{Proxy, ProxyCommand, StartFailure};
use crate::peer;
use testkit::process::describe_status;

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
    /// A flow phase's whole schedule ends within this, plus twice the stall timeout, whatever
    /// moves: a bound on the harness, far beyond what any of them takes.
    pub const FLOWS_BACKSTOP: Duration = secs(60);

    /// Bulk: seeded random bytes through the long chain, every reader slow on purpose so the
    /// proxy's writes come back short.
    pub const BULK_BYTES: usize = 2 * MIB;
    pub const BULK_WRITE_PIECE: usize = 64 * KIB;
    pub const SLOW_READER: Pacing = Pacing {
        chunk: 4 * KIB,
        pause: millis(1),
    };
    pub const BULK_DEADLINE: Duration = secs(30);

    /// The blocked connection of "Mix of blocked and normal" stops writing after this much, and
    /// is replaced at most this many times as the proxy aborts it.
    pub const BLOCKED_WRITE_LIMIT: usize = 256 * MIB;
    pub const BLOCKED_ROUNDS: usize = 100;

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

    /// Slow reader: the reader takes at most `SLOW_READ_CHUNK` every `SLOW_READ_EVERY` for twice
    /// the stall timeout plus `SLOW_EXTRA` while its peer writes as fast as the proxy takes bytes
    /// (at most `SLOW_WRITE_LIMIT`), in blocks of `SLOW_BLOCK`. Not scaled: the phase is about
    /// the proxy's timer, and a loaded host only makes the reader slower, never stop.
    pub const SLOW_READ_CHUNK: usize = 32 * KIB;
    pub const SLOW_READ_EVERY: Duration = millis(250);
    pub const SLOW_EXTRA: Duration = secs(4);
    pub const SLOW_WRITE_LIMIT: usize = 64 * MIB;
    pub const SLOW_BLOCK: usize = 64 * KIB;

    /// Idle client: silent for the stall timeout plus this, then an echo.
    pub const IDLE_EXTRA: Duration = secs(2);

    /// Flush before shutdown: this many connections at once, of `FLUSH_BASE + k * FLUSH_STEP`
    /// bytes, so their tails reach the proxy at different points of its drain cycle, read by
    /// slow receivers (the bulk phase's 4 KiB a millisecond).
    pub const FLUSH_CONNECTIONS: usize = 8;
    pub const FLUSH_BASE: usize = 5_000_000;
    pub const FLUSH_STEP: usize = 16_000;
    /// The base size is above what a proxy's kernel send buffer can queue (tcp_wmem's 4 MiB
    /// at most; 1.8 MiB seen even toward a 1000-byte-MSS receiver), so the proxy's own buffer
    /// is full, and its writes short, when the EOF arrives.
    pub const FLUSH_READ_KIB_PER_S: usize =
        SLOW_READER.chunk / KIB * 1000 / SLOW_READER.pause.as_millis() as usize;

    /// A flow phase's case is run at most this many times in all while a run cannot be judged
    /// (`crate::fuzz::oracle::Again`: the flush's held tail, when the harness was late).
    pub const FLOWS_ATTEMPTS: usize = 3;

    /// Destination refused: the client must be closed within this.
    pub const REFUSED_CLOSE_WITHIN: Duration = secs(5);

    /// Descriptor leaks: short connections in all, at most this many at a time, each echoing
    /// this much; afterwards the group may hold a few more descriptors than at the start.
    pub const LEAK_CONNECTIONS: usize = 2_000;
    pub const LEAK_CONCURRENCY: usize = 200;
    pub const LEAK_ECHO: usize = 1024;
    pub const LEAK_FD_SLACK: usize = 5;
    /// A connection refused or reset before any echo (the kernel turns a burst away from a
    /// full listen queue before the proxy sees it) is tried at most this many times in all.
    pub const LEAK_ATTEMPTS: usize = 3;
    /// Echo deadlines one try may take, each granted only while the request is newly taken in.
    pub const LEAK_ECHO_WINDOWS: usize = 3;
    /// Connections turned away on every try that still leave the phase judged on leaks alone,
    /// while the kernel's listen queues overflow: half of them. A listen(5) server accepting
    /// slowly lost 217 in a CI run (2 cores, the whole suite beside it), past a 5% limit.
    pub const LEAK_UNSERVED_LIMIT: usize = LEAK_CONNECTIONS / 2;
    /// How long the proxy has to close what it should after the last connection ends.
    pub const LEAK_SETTLE: Duration = secs(5);

    /// Many connections: open at once, each then echoing.
    pub const MANY_CONNECTIONS: usize = 1_500;
    pub const MANY_DEADLINE: Duration = secs(60);

    /// Bounded memory: growth of the group's resident memory allowed while a lazy client pushes.
    pub const MEMORY_GROWTH_LIMIT: u64 = 64 * MIB as u64;
    pub const MEMORY_SAMPLE_EVERY: Duration = millis(100);

    /// CPU while idle: this many idle pairs, watched this long; above the share is a warning.
    pub const IDLE_CPU_PAIRS: usize = 10;
    pub const IDLE_CPU_WINDOW: Duration = secs(3);
    pub const IDLE_CPU_LIMIT: f64 = 0.10;

    /// The proxy has this long to start listening: generous, since start-up is not graded (a
    /// JVM took 7-9 s as one of 17 starting at once) and no phase's clock runs until it listens.
    pub const READY_WITHIN: Duration = secs(30);
}

/// A phase's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    /// Not a contract violation, but worth knowing (a proxy that burns CPU while idle).
    Warning,
    /// The phase cannot run here (no /proc, say); the line says why.
    Skipped,
    /// The proxy failed it, and so did the reference proxy run beside it each time it was run
    /// again (`--self-check`): the host, not the proxy, may be at fault, so no grade is given.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Warning => "warning",
            Verdict::Skipped => "skipped",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// Why a phase did not simply pass: one line (what was expected, what happened), detail lines,
/// and a hint naming the likely bug when the evidence fits a known pattern. Most are failures;
/// [`Failure::warning`] and [`Failure::skipped`] make the milder verdicts.
#[derive(Debug, Clone)]
pub struct Failure {
    pub verdict: Verdict,
    pub summary: String,
    pub details: Vec<String>,
    pub hint: Option<String>,
    /// The harness itself could not go on (a port it held was lost): no verdict on the proxy.
    /// [`run`] makes it the run's harness error.
    pub harness: bool,
}

impl Failure {
    pub fn new(summary: impl Into<String>) -> Failure {
        Failure {
            verdict: Verdict::Failed,
            summary: summary.into(),
            details: vec![],
            hint: None,
            harness: false,
        }
    }

    /// The harness's own fault: the run ends with a harness error, never a failed phase.
    pub fn harness(summary: impl Into<String>) -> Failure {
        Failure {
            harness: true,
            ..Failure::new(summary)
        }
    }

    /// Reported, but only `--strict` makes it fail the run.
    pub fn warning(summary: impl Into<String>) -> Failure {
        Failure {
            verdict: Verdict::Warning,
            ..Failure::new(summary)
        }
    }

    /// The phase could not run here; `why` says what is missing.
    pub fn skipped(why: impl Into<String>) -> Failure {
        Failure {
            verdict: Verdict::Skipped,
            ..Failure::new(why)
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
        Failure::new(format!(
            "expected {} within {:.1}s, but it did not happen",
            e.what,
            e.waited.as_secs_f64()
        ))
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
    /// How the proxy died, if it did during the phase (`killed by signal SIGSEGV`).
    pub proxy_exit: Option<String>,
    /// The tail of the proxy's stderr, kept when the phase did not pass.
    pub stderr_tail: Option<String>,
    /// The phase's wait that came closest to its deadline.
    pub closest: Option<Closest>,
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
    scenario: Scenario,
}

/// What a phase does, and how it is judged.
#[derive(Clone, Copy)]
enum Scenario {
    /// One schedule of the fuzzer's model, judged by its expectation ([`flows`]).
    Flows(flows::Flows),
    /// A script with its own check.
    Script(fn(Arc<Ctx>) -> PhaseFuture),
}

/// The suite, in order: the 2002 tester's ten phases, then the ones that catch what they miss.
#[rustfmt::skip]
pub fn all() -> Vec<Phase> {
    use peer::SMALL_RCVBUF as SMALL;
    use Scenario::{Flows, Script};
    let p = |id, name, server_rcvbuf, scenario| Phase { id, name, server_rcvbuf, scenario };
    vec![
        p("echo/single", "Single echo connection", None, Flows(echo::SINGLE)),
        p("echo/chain2", "Two echo connections", None, Script(|c| Box::pin(chain::echo(c, params::CHAIN_SHORT)))),
        p("echo/chain20", "20 echo connections", None, Script(|c| Box::pin(chain::echo(c, params::CHAIN_LONG)))),
        p("bulk/chain20", "Bulk data, 20 connections", Some(SMALL), Script(|c| Box::pin(chain::bulk(c, false)))),
        p("bulk/mixed-blocked", "Mix of blocked and normal", Some(SMALL), Script(|c| Box::pin(chain::bulk(c, true)))),
        p("shutdown/one-way", "One-way shutdown", None, Flows(close::ONE_WAY)),
        p("shutdown/early-close", "Early close", None, Flows(close::EARLY_CLOSE)),
        p("timeout/active", "Non-timeout of active client", None, Flows(echo::ACTIVE)),
        p("timeout/lazy-forward", "Timeout of lazy forward client", Some(SMALL), Flows(lazy::FORWARD)),
        p("timeout/lazy-reverse", "Timeout of lazy reverse client", None, Flows(lazy::REVERSE)),
        p("timeout/idle", "Non-timeout of idle client", None, Flows(echo::IDLE)),
        p("shutdown/flush", "Flush before shutdown", Some(SMALL), Flows(close::FLUSH)),
        p("dest/refused", "Destination refused", None, Script(|c| Box::pin(close::destination_refused(c)))),
        p("resources/fd-leak", "Descriptor leaks", None, Script(|c| Box::pin(resources::descriptor_leaks(c)))),
        p("load/many", "Many connections", None, Script(|c| Box::pin(load::many_connections(c)))),
        p("resources/memory", "Bounded memory", Some(SMALL), Script(|c| Box::pin(resources::bounded_memory(c)))),
        p("resources/idle-cpu", "CPU while idle", None, Script(|c| Box::pin(resources::idle_cpu(c)))),
        p("timeout/slow-reader", "Non-timeout of slow reader", None, Script(|c| Box::pin(slow::slow_reader(c)))),
    ]
}

/// What a phase's scenario works with: its own destination server, its own proxy, deadlines.
pub struct Ctx {
    pub timing: Timing,
    /// The destination server's listener, on `dest_port`; `None` while a scenario has closed it.
    dest: Mutex<Option<TcpListener>>,
    /// Sorts the destination's connections to their clients by the tag each client sends first.
    router: pairing::Router,
    /// The destination's port while it is closed: held, so it is there to listen on again.
    reserved: Mutex<Option<peer::Reserved>>,
    dest_port: u16,
    server_rcvbuf: Option<u32>,
    proxy_port: u16,
    /// The proxy's process group, for the /proc readings.
    proxy_pgid: i32,
    seed: u64,
    /// Held so the scenario can ask whether the proxy is still alive.
    proxy: Mutex<Proxy>,
    /// How the proxy was started, for a failure's replay command.
    cmd: ProxyCommand,
}

impl Ctx {
    /// A harness deadline, scaled.
    pub fn scaled(&self, base: Duration) -> Duration {
        self.timing.scaled(base)
    }

    pub fn proxy_pgid(&self) -> i32 {
        self.proxy_pgid
    }

    /// A client connection through the proxy, which has sent its tag (see [`pairing`]).
    pub async fn connect(&self, rcvbuf: Option<u32>) -> Result<TcpStream, Failure> {
        Ok(self.connect_tagged(rcvbuf).await?.0)
    }

    /// As [`Ctx::connect`], with the tag its destination connection will carry.
    async fn connect_tagged(
        &self,
        rcvbuf: Option<u32>,
    ) -> Result<(TcpStream, pairing::Tag), Failure> {
        let limit = self.scaled(params::ECHO_DEADLINE);
        let what = format!("a connection to the proxy on 127.0.0.1:{}", self.proxy_port);
        let mut s = within(limit, what.clone(), peer::connect(self.proxy_port, rcvbuf))
            .await?
            .map_err(|e| Failure::new(format!("expected {what}, but connect failed: {e}")))?;
        let tag = self.router.next_tag();
        // Twelve bytes go into an empty send buffer at once; a write that fails means the proxy
        // already closed the client, which the scenario's own reads and writes will report.
        let _ = s.write_all(&tag.bytes()).await;
        Ok((s, tag))
    }

    /// A destination connection the proxy made for a client of this phase, whichever client: for
    /// servers that treat every connection alike.
    pub async fn accept(&self) -> Result<TcpStream, Failure> {
        let limit = self.scaled(params::ECHO_DEADLINE);
        self.awaited(limit, self.router.accept_any(&self.dest))
            .await
    }

    async fn awaited(
        &self,
        limit: Duration,
        accepting: impl Future<Output = Result<TcpStream, String>>,
    ) -> Result<TcpStream, Failure> {
        match within(
            limit,
            "the proxy to connect to the destination server",
            accepting,
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Failure::new(e)),
            Err(expired) => Err(Failure::from(expired).details(self.router.strays())),
        }
    }

    /// Stops the destination server listening, so the proxy's next connect is refused, while
    /// keeping its port reserved for [`Ctx::reopen_destination`]. Failing that is the harness's
    /// fault, not the proxy's.
    pub async fn close_destination(&self) -> Result<(), Failure> {
        let Some(listener) = self.dest.lock().await.take() else {
            return Err(Failure::harness(
                "the harness's scenario closed its destination twice",
            ));
        };
        let reserved = peer::reserve(listener, self.server_rcvbuf).map_err(|e| {
            Failure::harness(format!(
                "the harness could not keep 127.0.0.1:{} reserved while its destination refused: {e}",
                self.dest_port
            ))
        })?;
        *self.reserved.lock().await = Some(reserved);
        Ok(())
    }

    /// Listens again on the destination's reserved port (the proxy still points there). Failing
    /// is the harness's fault, not the proxy's.
    pub async fn reopen_destination(&self) -> Result<(), Failure> {
        let Some(reserved) = self.reserved.lock().await.take() else {
            return Err(Failure::harness(
                "the harness's scenario reopened a destination it had not closed",
            ));
        };
        let l = reserved.listen().map_err(|e| {
            Failure::harness(format!(
                "the harness could not listen again on 127.0.0.1:{}: {e}",
                self.dest_port
            ))
        })?;
        *self.dest.lock().await = Some(l);
        Ok(())
    }

    /// A client connection and the destination-side connection the proxy made for it.
    pub async fn pair(
        &self,
        client_rcvbuf: Option<u32>,
    ) -> Result<(TcpStream, TcpStream), Failure> {
        let (client, tag) = self.connect_tagged(client_rcvbuf).await?;
        let limit = self.scaled(params::ECHO_DEADLINE);
        let server = self
            .awaited(limit, self.router.accept_for(&self.dest, tag))
            .await?;
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

/// How a run treats milder verdicts.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub timing: Timing,
    pub seed: u64,
    /// Warnings count as failures.
    pub strict: bool,
}

/// Runs one phase end to end: destination server, proxy, scenario, teardown.
pub async fn run(phase: &Phase, cmd: &ProxyCommand, rules: Rules) -> Result<Outcome, String> {
    let Rules {
        timing,
        seed,
        strict,
    } = rules;
    let started = Instant::now();
    let dest = peer::listen(phase.server_rcvbuf)
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let dest_port = dest.local_addr().map_err(|e| e.to_string())?.port();
    let outcome = |failure: Option<Failure>, proxy_exit: Option<String>, stderr: String| Outcome {
        id: phase.id,
        name: phase.name,
        verdict: failure.as_ref().map_or(Verdict::Passed, |f| f.verdict),
        stderr_tail: (failure.is_some() && !stderr.is_empty()).then_some(stderr),
        failure,
        elapsed: started.elapsed(),
        proxy_exit,
        closest: None,
    };
    let proxy = match Proxy::start(cmd, dest_port, timing.scaled(params::READY_WITHIN)).await {
        Ok(p) => p,
        Err(StartFailure::Harness(msg)) => return Err(msg),
        Err(StartFailure::Proxy {
            summary,
            details,
            exit,
            stderr_tail,
        }) => {
            let f = Failure::new(summary)
                .details(details)
                .detail(format!("proxy: {cmd}"));
            return Ok(outcome(Some(f), exit, stderr_tail));
        }
    };
    let proxy_port = proxy.listen_port;
    let ctx = Arc::new(Ctx {
        timing,
        dest: Mutex::new(Some(dest)),
        router: pairing::Router::new(),
        reserved: Mutex::new(None),
        dest_port,
        server_rcvbuf: phase.server_rcvbuf,
        proxy_port,
        proxy_pgid: proxy.pid(),
        seed,
        proxy: Mutex::new(proxy),
        cmd: cmd.clone(),
    });
    let scenario: PhaseFuture = match phase.scenario {
        Scenario::Flows(f) => Box::pin(flows::run(ctx.clone(), phase.id, f)),
        Scenario::Script(run) => run(ctx.clone()),
    };
    // The scenario runs as its own task so a panic in it is a failed phase, not a dead harness.
    let result = tokio::spawn(deadline::tracking(scenario)).await;
    let closest = result.as_ref().ok().and_then(|(_, c)| c.clone());
    let result = result.map(|(r, _)| r);
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
    if let Some(f) = failure.as_ref().filter(|f| f.harness) {
        let msg = format!("{} ({}): {}", phase.name, phase.id, f.summary);
        proxy.stop().await;
        return Err(msg);
    }
    if let Some(status) = died {
        // A proxy that dies mid-phase fails it, even if what the peers saw happened to check out.
        let mut f = failure.unwrap_or_else(|| {
            Failure::new("expected the proxy to keep running, but it died during the phase")
        });
        f.verdict = Verdict::Failed;
        failure = Some(f.detail(format!("the proxy died: {}", describe_status(status))));
    }
    if let Some(f) = failure.as_mut() {
        if strict && f.verdict == Verdict::Warning {
            f.verdict = Verdict::Failed;
        }
        if f.verdict != Verdict::Skipped {
            f.details.push(format!(
                "proxy: {cmd} (pid {}, listening on 127.0.0.1:{proxy_port}, destination 127.0.0.1:{dest_port})",
                proxy.pid()
            ));
            f.details.extend(proxy.stderr_details());
            f.details.push(format!("seed: {seed}"));
        }
    }
    let stderr = proxy.stderr_tail();
    proxy.stop().await;
    Ok(Outcome {
        closest,
        ..outcome(failure, died.map(describe_status), stderr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixtures binary, beside this test executable as the integration tests find it.
    fn fixtures_correct() -> ProxyCommand {
        let exe = std::env::current_exe().expect("the test executable has a path");
        let bin = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>/deps")
            .join("fixtures");
        assert!(
            bin.is_file(),
            "expected the fixtures binary at {}; build it with `cargo build -p fixtures`",
            bin.display()
        );
        ProxyCommand {
            program: bin,
            args: vec!["correct".into()],
        }
    }

    fn phase(run: fn(Arc<Ctx>) -> PhaseFuture) -> Phase {
        Phase {
            id: "test/scenario",
            name: "Test scenario",
            server_rcvbuf: None,
            scenario: Scenario::Script(run),
        }
    }

    /// Every flow phase's schedule parses (`flows::case` panics otherwise) and prints back as
    /// it reads, at the default and at a short stall timeout, scaled or not.
    #[test]
    fn every_flow_phase_s_schedule_is_one_the_fuzzer_replays() {
        for (stall, scale) in [(10, 1.0), (3, 1.0), (2, 2.5)] {
            let timing = Timing {
                stall: secs(stall),
                scale,
            };
            for p in all() {
                if let Scenario::Flows(f) = p.scenario {
                    let cases = (f.cases)(&timing);
                    let text: String = cases.iter().map(|c| c.to_string()).collect();
                    let again = crate::fuzz::schedule::parse_cases(&text).unwrap();
                    assert_eq!(again, cases, "{}: {text}", p.id);
                }
            }
        }
    }

    /// Issue 17: "Destination refused: failed: the harness could not listen again" counted a
    /// port the harness lost against the proxy. A harness fault ends the run as a harness
    /// error; the same words as an ordinary failure stay a failed phase.
    #[tokio::test]
    async fn a_harness_fault_is_the_runs_error_not_a_failed_phase() {
        let rules = Rules {
            timing: Timing {
                stall: secs(10),
                scale: 1.0,
            },
            seed: 1,
            strict: false,
        };
        let cmd = fixtures_correct();
        let lost =
            phase(|_| Box::pin(async { Err(Failure::harness("the harness lost its port")) }));
        let err = run(&lost, &cmd, rules).await.unwrap_err();
        assert_eq!(
            err,
            "Test scenario (test/scenario): the harness lost its port"
        );
        let failed = phase(|_| Box::pin(async { Err(Failure::new("the proxy lost a byte")) }));
        let outcome = run(&failed, &cmd, rules).await.unwrap();
        assert_eq!(outcome.verdict, Verdict::Failed);
    }
}
