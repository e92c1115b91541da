//! `tcpproxy-test`: a conformance harness for TCP proxies, a Rust port and superset of MIT
//! 6.824's 2002 tester. Each phase runs against its own instance of the proxy under test, with
//! the harness's own client and destination server on loopback.

// Every syscall the harness needs has a safe wrapper in nix, socket2 or tokio, but the one
// ioctl that brings a new network namespace's loopback up (`sandbox`, allowed there alone).
#![deny(unsafe_code)]

mod backlog;
mod class_diff;
mod class_page;
mod class_table;
use testkit::check;
pub mod cli;
mod confine;
mod console;
mod contract;
mod deadline;
mod exit_code;
pub mod fuzz;
mod grade;
mod harness;
mod hold;
mod network;
use testkit::peer;
pub mod phase;
use testkit::procfs;
mod progress;
mod proxy_program;
mod reference;
mod report;
// README's examples are held to what the harness prints (tests/docs.rs).
pub use report::{summary, write_outcome};
mod runtime;
mod sandbox;
mod shard;
mod sockdiag;
mod suite;
mod tcp_info;
mod timeline;
mod traced;
mod vouch;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::cli::{Config, Parsed};
use crate::console::Console;
use crate::deadline::Timing;
use crate::exit_code::{EXIT_FAILED, EXIT_HARNESS, EXIT_NEVER_STARTED, EXIT_PASSED, EXIT_USAGE};
use crate::phase::Verdict;
use crate::report::{Format, RunReport};

/// Starts slower than this get a note on stderr.
const SLOW_START_NOTE: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole program behind `main`.
pub fn main_with_args(args: Vec<OsString>) -> ExitCode {
    // The bundled reference proxy runs from this same executable, so `cargo run -p
    // tcpproxy-test` needs nothing else built.
    if let Some(proxy_args) = reference::proxy_args(&args) {
        return tcpproxy::main_with_args(proxy_args);
    }
    let console = Console::stdio();
    let config = match cli::parse(args) {
        Parsed::Run(c) => {
            for w in &c.warnings {
                console.err_line(format_args!("tcpproxy-test: {w}"));
            }
            c
        }
        Parsed::Info(text) => {
            console.out(&text);
            return ExitCode::SUCCESS;
        }
        Parsed::List(filter) => {
            for p in filter.select() {
                console.out_line(format_args!("{:<22} {}", p.id, p.name));
            }
            return ExitCode::SUCCESS;
        }
        Parsed::Fuzz(config) => return fuzz::main(*config, console),
        Parsed::Grade(grade) => return grade::main(*grade, console),
        Parsed::Usage(line) => {
            console.err_line(format_args!("{line}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(error) = &config.build_failed {
        return ExitCode::from(report_not_built(&config, error, &console));
    }
    confine::announce("tcpproxy-test", &config.confine, &console);
    runtime::run("tcpproxy-test", config.sandbox, run(*config, console))
}

/// `--build-failed`: the report of a submission that did not build, written where a run's would
/// go, so an autograder's one recipe yields a grade (0) and the build log in either case.
fn report_not_built(n: &Config, error: &str, console: &Console) -> u8 {
    // Every selected phase is there, failed: a reader summing phases (Autolab, jq) gets 0 of
    // the full score, never an empty pass, and Gradescope shows each test's point.
    let outcomes: Vec<phase::Outcome> = n
        .filter
        .select()
        .iter()
        .map(|p| phase::Outcome {
            id: p.id,
            name: p.name,
            verdict: Verdict::Failed,
            failure: Some(phase::Failure::new(NOT_BUILT_PHASE)),
            elapsed: std::time::Duration::ZERO,
            proxy_exit: None,
            stderr_tail: None,
            closest: None,
            timeline: Default::default(),
            notes: vec![],
        })
        .collect();
    let run = RunReport {
        proxy: n.proxy.to_string(),
        reference: false,
        seed: n.seed.unwrap_or_else(rand::random),
        stall_timeout: n.stall_timeout,
        timeout_scale: n.timeout_scale,
        sandbox: sandbox::entered(),
        confinement: confine::installed(),
        outcomes: &outcomes,
    };
    // As in a run: the human text on stdout unless stdout carries the chosen format instead.
    let human_too = n.format == Format::Human || n.output.is_some();
    if human_too {
        console.out(&report::render_error(&run, error, Format::Human));
    }
    // TAP is read line by line: the log's lines go in as comments, not as stray TAP.
    let message = match n.format {
        Format::Tap => error.replace('\n', "\n# "),
        _ => error.to_string(),
    };
    let text = report::render_error(&run, &message, n.format);
    match deliver(&text, n.output.as_deref(), !human_too, console) {
        Ok(()) => EXIT_FAILED,
        Err(code) => code,
    }
}

/// Writes a report to `output`, or to stdout when `to_stdout` (stdout then carries it instead of
/// the human lines); Err with the exit status when the file cannot be written.
fn deliver(
    text: &str,
    output: Option<&std::path::Path>,
    to_stdout: bool,
    console: &Console,
) -> Result<(), u8> {
    match output {
        Some(path) => std::fs::write(path, text).map_err(|e| {
            console.err_line(format_args!(
                "tcpproxy-test: cannot write the report to {}: {e}",
                path.display()
            ));
            EXIT_HARNESS
        }),
        None => {
            if to_stdout {
                console.out(text);
            }
            Ok(())
        }
    }
}

/// Each phase's message in a `--build-failed` report.
const NOT_BUILT_PHASE: &str = "not run: the submission did not build";

/// Runs the suite, printing each phase's line in order as soon as it and all before it are done,
/// then the report in the chosen format.
async fn run(config: Config, console: Console) -> u8 {
    harness::become_subreaper();
    harness::raise_descriptor_limit();
    let timing = Timing {
        stall: config.stall_timeout,
        scale: config.timeout_scale,
    };
    let seed = config.seed.unwrap_or_else(rand::random);
    let rules = phase::Rules {
        timing,
        seed,
        strict: config.strict,
    };
    // Human lines stream to stdout unless stdout carries a machine format instead.
    let stream_human = config.format == Format::Human || config.output.is_some();
    let proxy = config.proxy.to_string();
    let phases = config.filter.select();
    let progress =
        progress::Progress::start(phases.len(), stream_human && console.out_is_terminal());
    let color = progress.is_shown() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let starts = std::sync::Arc::new(harness::Starts::default());
    let result = suite::run_watched(
        phases,
        config.proxy.clone(),
        rules,
        config.jobs,
        progress.running(),
        starts.clone(),
        |o| {
            if stream_human {
                progress.above(|| {
                    let _ =
                        console.with_out(|mut w| report::write_outcome_styled(&mut w, o, color));
                });
                progress.landed();
            }
        },
    )
    .await;
    progress.finish();
    let mut outcomes = match result {
        Ok(o) => o,
        Err(msg) => {
            console.err_line(format_args!(
                "tcpproxy-test: the harness could not run: {msg}"
            ));
            return EXIT_HARNESS;
        }
    };
    let failed = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Failed)
        .count();
    // A proxy that never started fails for itself; the host has nothing to vouch for.
    if let Some(reference) = config
        .self_check
        .as_ref()
        .filter(|_| failed > 0 && !starts.none_started())
    {
        console.err_line(format_args!(
            "tcpproxy-test: self-check: running the {failed} failed phase(s) again beside the reference proxy (up to {} rounds)",
            vouch::ROUNDS
        ));
        match vouch::confirm_failures(&mut outcomes, &config.proxy, reference, rules).await {
            Ok(c) => {
                for note in &c.notes {
                    console.err_line(format_args!("tcpproxy-test: self-check: {note}"));
                }
                if stream_human {
                    console.with_out(|mut w| {
                        let _ = writeln!(w, "After the self-check:");
                        for o in outcomes.iter().filter(|o| o.verdict != Verdict::Passed) {
                            let _ = report::write_outcome_styled(&mut w, o, color);
                        }
                    });
                }
            }
            Err(msg) => {
                console.err_line(format_args!(
                    "tcpproxy-test: the harness could not run the self-check: {msg}"
                ));
                return EXIT_HARNESS;
            }
        }
    }
    if stream_human {
        console.out_line(report::summary(&outcomes));
    }
    let run = RunReport {
        proxy,
        reference: config.reference,
        seed,
        stall_timeout: config.stall_timeout,
        timeout_scale: config.timeout_scale,
        sandbox: sandbox::entered(),
        confinement: confine::installed(),
        outcomes: &outcomes,
    };
    let text = report::render(&run, config.format);
    if let Err(code) = deliver(&text, config.output.as_deref(), !stream_human, &console) {
        return code;
    }
    let (slowest, throttled) = starts.slowest();
    if slowest > SLOW_START_NOTE {
        let how = match throttled {
            Some(n) => format!("; after the first, the proxies were started {n} at a time"),
            None => String::new(),
        };
        console.err_line(format_args!(
            "tcpproxy-test: note: the proxy took up to {:.1}s to start listening{how} (start-up is not graded; each phase's deadlines start once it listens)",
            slowest.as_secs_f64()
        ));
    }
    if starts.none_started() {
        let (_, never) = starts.counts();
        console.err_line(format_args!(
            "tcpproxy-test: the proxy never started: in none of the {never} phases did it listen on the port it was given (the first failure above says why)"
        ));
        EXIT_NEVER_STARTED
    } else if outcomes.iter().any(|o| o.verdict == Verdict::Failed) {
        EXIT_FAILED
    } else if outcomes.iter().any(|o| o.verdict == Verdict::Inconclusive) {
        console.err_line(
            "tcpproxy-test: inconclusive: the reference proxy failed the same phases on this host; run again on a quieter host (or with a larger --timeout-scale)"
        );
        EXIT_HARNESS
    } else {
        EXIT_PASSED
    }
}
