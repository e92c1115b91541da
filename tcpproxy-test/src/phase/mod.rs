//! Phases: each a small scenario (what the harness's client and server ends do through the proxy)
//! plus the check of what they saw. The table below is the suite, in the order it is printed.
//!
//! A phase that is plain flows is a row: a schedule of the fuzzer's model (`crate::fuzz`), its
//! expectation, and the hints that name its bug ([`flows`]); the fuzzer's driver runs it and
//! its oracle judges it, and a failure prints the command that replays it. The others (chains,
//! many connections, /proc readings, the slow reader, the refused destination) are scripts with
//! their own checks.

mod burst;
mod chain;
mod close;
mod connect;
mod context;
mod echo;
mod exhaustion;
mod flows;
mod ipv6;
mod latency;
mod lazy;
mod load;
pub mod pairing;
pub(crate) mod params;
mod resources;
mod slow;
mod verdict;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::deadline::{self, Closest, Timing};
use crate::harness::{Launch, Proxy, ProxyCommand, StartFailure};
use crate::peer;
use crate::timeline::{Kind, Lane, Recorder, Timeline};
use context::Ctx;
use testkit::process::describe_status;
use verdict::PhaseResult;
pub use verdict::{Failure, Verdict};

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
    /// What happened, in time order (`crate::timeline`).
    pub timeline: Timeline,
    /// Facts the phase reports whatever its verdict (how a reset was passed on: FIN or RST).
    pub notes: Vec<String>,
}

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
    /// How the proxy is started: the lab's form unless the row says otherwise.
    launch: Launch,
}

impl Phase {
    /// The row with its proxy started as `launch` says.
    fn launched(self, launch: Launch) -> Phase {
        Phase { launch, ..self }
    }
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
    let p = |id, name, server_rcvbuf, scenario| Phase { id, name, server_rcvbuf, scenario, launch: Launch::LAB };
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
        p("shutdown/half-open-trickle", "Half-open trickle", None, Flows(flows::HALF_OPEN_TRICKLE)),
        p("reset/by-destination", "Reset by destination", None, Flows(flows::RESET_BY_DESTINATION)),
        p("reset/by-client", "Reset by client", None, Flows(flows::RESET_BY_CLIENT)),
        p("dest/refused", "Destination refused", None, Script(|c| Box::pin(close::destination_refused(c)))),
        p("dest/slow-connect", "Slow destination connect", None, Script(|c| Box::pin(connect::slow_destination_connect(c)))),
        p("resources/fd-leak", "Descriptor leaks", None, Script(|c| Box::pin(resources::descriptor_leaks(c)))),
        p("resources/fd-exhaustion", "Descriptor exhaustion", None, Script(|c| Box::pin(exhaustion::descriptor_exhaustion(c)))).launched(exhaustion::LAUNCH),
        p("load/many", "Many connections", None, Script(|c| Box::pin(load::many_connections(c)))),
        p("load/burst", "Connection burst", None, Script(|c| Box::pin(burst::connection_burst(c)))),
        p("dest/ipv6", "IPv6 destination", None, Script(|c| Box::pin(ipv6::destination(c)))).launched(ipv6::LAUNCH),
        p("latency/small-writes", "Small-write latency", None, Script(|c| Box::pin(latency::small_writes(c)))),
        p("resources/memory", "Bounded memory", Some(SMALL), Script(|c| Box::pin(resources::bounded_memory(c)))),
        p("resources/idle-cpu", "CPU while idle", None, Script(|c| Box::pin(resources::idle_cpu(c)))),
        p("timeout/slow-reader", "Non-timeout of slow reader", None, Script(|c| Box::pin(slow::slow_reader(c)))),
    ]
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
    let recorder = Recorder::new(started);
    let dest_host = phase.launch.dest_host;
    let listening = peer::listen_at((dest_host, 0).into(), phase.server_rcvbuf);
    let outcome = |failure: Option<Failure>, proxy_exit: Option<String>, stderr: String| Outcome {
        id: phase.id,
        name: phase.name,
        verdict: failure.as_ref().map_or(Verdict::Passed, |f| f.verdict),
        stderr_tail: (failure.is_some() && !stderr.is_empty()).then_some(stderr),
        failure,
        elapsed: started.elapsed(),
        proxy_exit,
        closest: None,
        timeline: Timeline::default(),
        notes: vec![],
    };
    let dest = match listening {
        Ok(l) => l,
        Err(e) => match ipv6::unavailable(dest_host, &e) {
            Some(skip) => return Ok(outcome(Some(skip), None, String::new())),
            None => return Err(format!("cannot listen on {dest_host}: {e}")),
        },
    };
    let dest_port = dest.local_addr().map_err(|e| e.to_string())?.port();
    let ready_within = timing.scaled(params::READY_WITHIN);
    recorder.note(Lane::Proxy, Kind::Start);
    let proxy = match Proxy::start(cmd, phase.launch, dest_port, ready_within).await {
        Ok(p) => p,
        Err(StartFailure::Harness(msg)) => return Err(msg),
        Err(StartFailure::Proxy {
            summary,
            details,
            exit,
            stderr_tail,
        }) => {
            let mut f = Failure::new(summary)
                .details(details)
                .detail(format!("proxy: {cmd}"));
            if dest_host.is_ipv6() {
                f = f.hint(ipv6::START_HINT);
            }
            return Ok(outcome(Some(f), exit, stderr_tail));
        }
    };
    recorder.note(Lane::Proxy, Kind::Ready { pid: proxy.pid() });
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
        timeline: recorder.clone(),
        lanes: Default::default(),
        notes: Default::default(),
    });
    let scenario: PhaseFuture = match phase.scenario {
        Scenario::Flows(f) => Box::pin(flows::run(ctx.clone(), phase.id, f)),
        Scenario::Script(run) => run(ctx.clone()),
    };
    // The scenario runs as its own task so a panic in it is a failed phase, not a dead harness.
    let result = tokio::spawn(deadline::tracking(Some(recorder.clone()), scenario)).await;
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
            // An IPv6 host is bracketed, as in a URL: `::1:40000` would read as one address.
            let dest = std::net::SocketAddr::new(phase.launch.dest_host, dest_port);
            f.details.push(format!(
                "proxy: {cmd} (pid {}, listening on 127.0.0.1:{proxy_port}, destination {dest})",
                proxy.pid(),
            ));
            f.details.extend(proxy.stderr_details());
            f.details.push(format!("seed: {seed}"));
        }
    }
    let stderr = proxy.stderr_tail();
    if let Some(status) = died {
        recorder.note(
            Lane::Proxy,
            Kind::Exit {
                status: describe_status(status),
            },
        );
    }
    let stderr_bytes = proxy.stderr_bytes();
    if stderr_bytes > 0 {
        recorder.note(
            Lane::Proxy,
            Kind::Stderr {
                bytes: stderr_bytes,
            },
        );
    }
    let verdict = failure.as_ref().map_or(Verdict::Passed, |f| f.verdict);
    recorder.note(
        Lane::Proxy,
        Kind::Verdict {
            verdict: verdict.to_string(),
        },
    );
    proxy.stop().await;
    Ok(Outcome {
        closest,
        timeline: recorder.timeline(),
        notes: std::mem::take(&mut *ctx.notes.lock().unwrap_or_else(|e| e.into_inner())),
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
            launch: Launch::LAB,
        }
    }

    /// Every flow phase's schedule parses (`flows::case` panics otherwise) and prints back as
    /// it reads, at the default and at a short stall timeout, scaled or not.
    #[test]
    fn every_flow_phase_s_schedule_is_one_the_fuzzer_replays() {
        for (stall, scale) in [(10, 1.0), (3, 1.0), (2, 2.5)] {
            let timing = Timing {
                stall: Duration::from_secs(stall),
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
                stall: Duration::from_secs(10),
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
