//! `tcpproxy-test fuzz`: random read/write/shutdown schedules through the proxy under test and
//! the reference proxy side by side, judged by the contract, the first failure shrunk to a
//! minimal schedule with a command that replays it.
//!
//! A case ([`schedule::Case`]) is a few connections opened together, each with a schedule for
//! both peers; several cases run at once through one long-lived instance of each proxy, so
//! connections interfere. Cases come from a proptest strategy ([`strategy`]), case I of seed S
//! being the same everywhere; the committed regression schedules run first.

pub(crate) mod cli;
mod fuzzer;
// The suite's flow phases (`crate::phase::flows`) are schedules of this model, run by this
// driver and judged by this oracle.
pub(crate) mod oracle;
pub(crate) mod output;
pub(crate) mod peers;
pub(crate) mod replay;
pub(crate) mod schedule;
mod shrink;
mod sockets;
mod strategy;
pub(crate) mod target;
pub(crate) mod timeline;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use self::cli::{FuzzConfig, Mode};
pub use self::fuzzer::REGRESSIONS;
use self::fuzzer::{Fuzzer, Job, Origin, Outcome, REGRESSIONS_PATH, Totals, run_job};
use self::peers::Limits;
use self::target::{Target, TargetError};
use crate::console::Console;
use crate::exit_code::{EXIT_FAILED, EXIT_HARNESS, EXIT_NEVER_STARTED, EXIT_PASSED};
use crate::harness;

/// Unscaled deadlines. Each is long beside what loopback needs (milliseconds): they decide
/// only that something never happens, never that it was slow.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);
const QUIET_LIMIT: Duration = Duration::from_secs(5);
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
const CASE_BACKSTOP: Duration = Duration::from_secs(60);

/// `tcpproxy-test fuzz`, its flags parsed and checked.
pub(crate) fn main(config: FuzzConfig, console: Console) -> ExitCode {
    crate::confine::announce("tcpproxy-test fuzz", &config.confine, &console);
    crate::runtime::run("tcpproxy-test fuzz", config.sandbox, run(config, console))
}

/// Why a run stopped before every case passed.
enum Stop {
    Found(Box<Outcome>),
    /// The reference proxy failed a case twice, or died: the fuzzer cannot judge.
    Harness(String),
}

async fn run(config: FuzzConfig, console: Console) -> u8 {
    harness::become_subreaper();
    harness::raise_descriptor_limit();
    let started = Instant::now();
    let scale = |d: Duration| d.mul_f64(config.timeout_scale * config.sandbox.stretch());
    let limits = Limits {
        connect: scale(CONNECT_WITHIN),
        quiet: scale(QUIET_LIMIT),
        close: Some(scale(CLOSE_WITHIN)),
        // A reader that outlasts the stall timeout makes its case that much longer.
        backstop: scale(CASE_BACKSTOP) + config.stall_timeout.unwrap_or_default(),
    };
    let jobs = match jobs(&config) {
        Ok(j) => j,
        Err(msg) => {
            console.err_line(format_args!("tcpproxy-test fuzz: {msg}"));
            return EXIT_HARNESS;
        }
    };
    // The suite's limit: start-up is not graded, and a JVM beside the reference can take seconds.
    let ready = scale(crate::phase::params::READY_WITHIN);
    let (proxy, reference) = tokio::join!(
        Target::start("PROXY", config.proxy.clone(), ready),
        Target::start("the reference proxy", config.reference.clone(), ready)
    );
    let (proxy, reference) = match (proxy, reference) {
        (Ok(p), Ok(r)) => (Arc::new(p), Arc::new(r)),
        (p, r) => {
            let code = match (&p, &r) {
                (_, Err(TargetError::Harness(m) | TargetError::Proxy(m))) => {
                    console.err_line(format_args!(
                        "tcpproxy-test fuzz: cannot start the reference proxy: {m}"
                    ));
                    EXIT_HARNESS
                }
                (Err(TargetError::Harness(m)), _) => {
                    console.err_line(format_args!(
                        "tcpproxy-test fuzz: the harness could not run: {m}"
                    ));
                    EXIT_HARNESS
                }
                (Err(TargetError::Proxy(m)), _) => {
                    output::did_not_start(&console, m);
                    EXIT_NEVER_STARTED
                }
                (Ok(_), Ok(_)) => unreachable!("handled above"),
            };
            for t in [p, r].into_iter().flatten() {
                t.stop().await;
            }
            return code;
        }
    };
    let fuzzer = Fuzzer {
        config,
        proxy,
        reference,
        limits,
        started,
        console,
    };
    output::header(&fuzzer.console, &fuzzer.config, &jobs);
    let code = match fuzzer.run_all(jobs).await {
        Ok(totals) => {
            output::passed(&fuzzer, &totals);
            EXIT_PASSED
        }
        Err(Stop::Found(outcome)) => {
            fuzzer.report(*outcome).await;
            EXIT_FAILED
        }
        Err(Stop::Harness(msg)) => {
            fuzzer
                .console
                .err_line(format_args!("tcpproxy-test fuzz: {msg}"));
            EXIT_HARNESS
        }
    };
    tokio::join!(fuzzer.proxy.stop(), fuzzer.reference.stop());
    code
}

/// The cases of a run, in order: the committed regressions first (random runs only).
fn jobs(config: &FuzzConfig) -> Result<Vec<Job>, String> {
    let mut jobs = Vec::new();
    match &config.mode {
        Mode::Random { seed, cases } => {
            if config.regressions {
                let committed = schedule::parse_cases(REGRESSIONS)
                    .map_err(|e| format!("{REGRESSIONS_PATH} does not parse: {e}"))?;
                jobs.extend(committed.into_iter().enumerate().map(|(k, case)| Job {
                    origin: Origin::Regression(k + 1),
                    case,
                }));
            }
            jobs.extend((0..u64::from(*cases)).map(|index| Job {
                origin: Origin::Random { seed: *seed, index },
                case: strategy::case_tree(*seed, index, config.stall_timeout).current(),
            }));
        }
        Mode::One { seed, index } => jobs.push(Job {
            origin: Origin::Random {
                seed: *seed,
                index: *index,
            },
            case: strategy::case_tree(*seed, *index, config.stall_timeout).current(),
        }),
        Mode::Replay { cases, .. } => {
            jobs.extend(cases.iter().enumerate().map(|(k, case)| Job {
                origin: Origin::Replay(k + 1),
                case: case.clone(),
            }));
        }
    }
    // Copies of a case follow it, so they run at once.
    Ok(jobs
        .into_iter()
        .flat_map(|j| std::iter::repeat_n(j, config.repeat as usize))
        .collect())
}

impl Fuzzer {
    /// Runs the jobs, `--jobs` at a time, until one fails, all pass, or time is up.
    async fn run_all(&self, jobs: Vec<Job>) -> Result<Totals, Stop> {
        let mut totals = Totals::default();
        let mut queue = jobs.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < self.config.jobs {
                if self.started.elapsed() >= self.config.time_limit {
                    totals.skipped = queue.len();
                    break;
                }
                let Some(job) = queue.next() else { break };
                let (proxy, reference) = (self.proxy.clone(), self.reference.clone());
                running.spawn(run_job(proxy, reference, job, self.limits));
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let mut outcome = match joined {
                Ok(o) => o,
                Err(e) => return Err(Stop::Harness(format!("a case crashed the fuzzer: {e}"))),
            };
            if let (Err(v), true) = (
                &outcome.reference_verdict,
                outcome.case.expect.binds_reference(),
            ) {
                // The reference keeps the contract; a failure is load or a harness bug. Once
                // more alone, and only then believe it.
                if let Err(TargetError::Harness(m) | TargetError::Proxy(m)) =
                    self.reference.ensure_running().await
                {
                    return Err(Stop::Harness(format!(
                        "the reference proxy died and cannot be restarted: {m}"
                    )));
                }
                let again = self.run_alone(&self.reference, &outcome.case).await;
                if let Err(v2) = oracle::judge(&outcome.case, &again) {
                    running.abort_all();
                    return Err(Stop::Harness(format!(
                        "the reference proxy failed {} twice, so the fuzzer cannot judge it (a harness bug, or a host too loaded: try --timeout-scale 3): {}; then: {}\n{}",
                        outcome.origin, v.summary, v2.summary, outcome.case
                    )));
                }
                outcome.reference = again;
                outcome.reference_verdict = Ok(());
            }
            if outcome.verdict.is_err() {
                running.abort_all();
                while running.join_next().await.is_some() {}
                return Err(Stop::Found(Box::new(outcome)));
            }
            output::case_passed(&self.console, &self.config, &outcome);
            match outcome.origin {
                Origin::Regression(_) => totals.regressions += 1,
                _ => totals.cases += 1,
            }
            totals.connections += outcome.case.connections.len();
            totals.bytes += outcome.case.total_bytes();
            totals.info.extend(
                oracle::differences(&outcome.case, &outcome.proxy, &outcome.reference)
                    .into_iter()
                    .map(|d| (outcome.origin, d)),
            );
        }
        Ok(totals)
    }

    /// Shrinks a failure if it can, checks the minimal schedule against the reference, saves it
    /// and prints the report.
    async fn report(&self, found: Outcome) {
        let violation = found
            .verdict
            .clone()
            .expect_err("only failures are reported");
        output::found(&self.console, &found.origin, &violation);
        let shrunk = match found.origin {
            Origin::Random { seed, index } => {
                shrink::shrink(self, seed, index, &found.case, violation, |p| {
                    output::shrink_progress(&self.console, &self.config, p)
                })
                .await
            }
            Origin::Regression(_) | Origin::Replay(_) => shrink::Shrunk::as_is(
                found.case.clone(),
                violation,
                "a saved schedule: not shrunk further",
            ),
        };
        let mut reference_run = None;
        let reference_note = if !shrunk.case.expect.binds_reference() {
            format!(
                "the reference proxy is not judged on this schedule: its stall timeout is {}s, longer than the case",
                cli::REFERENCE_STALL_TIMEOUT.as_secs()
            )
        } else if self.reference.ensure_running().await.is_err() {
            "the reference proxy could not be restarted to check this schedule".to_string()
        } else {
            let r = self.run_alone(&self.reference, &shrunk.case).await;
            let note = match oracle::judge(&shrunk.case, &r) {
                Ok(()) => "the reference proxy passes this schedule".to_string(),
                Err(v) => format!(
                    "the reference proxy fails this schedule too, so suspect the harness or the host: {}",
                    v.summary
                ),
            };
            reference_run = Some(r);
            note
        };
        let describe = self.proxy.describe().await;
        // The timelines: the minimal schedule once more through the proxy under test (a
        // failure may not come back on a single run: the page says what this run got), beside
        // the reference's run of it above.
        let mut runs = Vec::new();
        if self.proxy.ensure_running().await.is_ok() {
            let p = self.run_alone(&self.proxy, &shrunk.case).await;
            runs.push(output::TimelineRun::new(
                "the proxy under test",
                &shrunk.case,
                &p,
            ));
        }
        if let Some(r) = &reference_run {
            runs.push(output::TimelineRun::new(
                "the reference proxy",
                &shrunk.case,
                r,
            ));
        }
        output::failure(
            self,
            &found.origin,
            &shrunk,
            &reference_note,
            &describe,
            &runs,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::schedule::Connection;
    use super::*;

    #[test]
    fn the_committed_regressions_parse() {
        let cases = schedule::parse_cases(REGRESSIONS).unwrap();
        for c in &cases {
            let mut n = c.clone();
            n.connections.iter_mut().for_each(Connection::normalize);
            assert_eq!(&n, c, "a committed schedule is already normal");
        }
    }
}
