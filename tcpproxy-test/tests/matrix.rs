//! The verdict matrix: every fixture fails exactly the phases listed for it and passes the rest,
//! the hostile ones get the right verdict with nothing left running, and the control passes all.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{ALL_PHASES, HeavySlot, Run, assert_nothing_left, fixtures_bin, run_harness};

/// The stall timeout every fixture is given (and the harness told): short, to keep the matrix
/// quick, but long enough that a loaded machine does not stall a correct proxy's live pair.
const STALL: &str = "3";

/// What one fixture must get.
struct Row {
    fixture: &'static str,
    /// Phases that must fail.
    fails: &'static [&'static str],
    /// Phases whose verdict depends on how loaded the machine is; either verdict is accepted.
    /// Each entry says why below.
    may_fail: &'static [&'static str],
    /// Phases that must end with `warning`.
    warns: &'static [&'static str],
}

const ONE_WAY: &str = "One-way shutdown";
const FLUSH: &str = "Flush before shutdown";
const LEAKS: &str = "Descriptor leaks";
const LAZY_FWD: &str = "Timeout of lazy forward client";
const LAZY_REV: &str = "Timeout of lazy reverse client";
const BULK: &str = "Bulk data, 20 connections";
const MIX: &str = "Mix of blocked and normal";
const MANY: &str = "Many connections";

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    // Its short connections half-close too, so the descriptor phase sees lost echoes.
    Row { fixture: "close-on-first-eof", fails: &[ONE_WAY, LEAKS], may_fail: &[], warns: &[] },
    Row { fixture: "no-half-close", fails: &[ONE_WAY, FLUSH, LEAKS], may_fail: &[], warns: &[] },
    Row { fixture: "unbounded-buffer", fails: &[LAZY_FWD, LAZY_REV, "Bounded memory"], may_fail: &[], warns: &[] },
    // Flush and descriptor phases pass: their pairs end one after another, so serial service
    // is merely slow there.
    Row { fixture: "one-at-a-time", fails: &["Two echo connections", "20 echo connections", BULK, MIX, MANY, "CPU while idle"], may_fail: &[], warns: &[] },
    // With slow readers everywhere, one write blocking the only thread usually deadlocks the
    // chain until its stall timer resets it; how often depends on scheduling.
    Row { fixture: "blocking-writes", fails: &[MIX], may_fail: &[BULK], warns: &[] },
    // Opening 1500 pairs one by one takes about a stall timeout; the first may sit idle that long.
    Row { fixture: "idle-timeout", fails: &["Non-timeout of idle client"], may_fail: &[MANY], warns: &[] },
    Row { fixture: "stall-one-direction", fails: &[LAZY_REV], may_fail: &[], warns: &[] },
    // At a fifth of the stall timeout, a loaded machine's slow chain readers can trip it too.
    Row { fixture: "short-stall", fails: &[LAZY_FWD, LAZY_REV], may_fail: &[BULK, MIX, FLUSH], warns: &[] },
    // Caught by the held tail: the harness reads the proxy's queues in /proc/net/tcp and sends
    // the EOF while the proxy holds bytes it cannot write on (src/hold.rs).
    Row { fixture: "drop-buffered-on-eof", fails: &[FLUSH], may_fail: &[], warns: &[] },
    Row { fixture: "flip-byte", fails: &[BULK, MIX, FLUSH], may_fail: &[], warns: &[] },
    Row { fixture: "short-write-resend", fails: &[BULK, MIX, FLUSH], may_fail: &[], warns: &[] },
    Row { fixture: "short-write-drop", fails: &[BULK, MIX, FLUSH], may_fail: &[], warns: &[] },
    Row { fixture: "max-ten", fails: &["20 echo connections", BULK, MIX, MANY], may_fail: &[], warns: &[] },
    Row { fixture: "ignore-write-errors", fails: &["Early close"], may_fail: &[], warns: &[] },
    Row { fixture: "fd-leak", fails: &[LEAKS], may_fail: &[], warns: &[] },
    Row { fixture: "exit-on-refused", fails: &["Destination refused"], may_fail: &[], warns: &[] },
    Row { fixture: "fd-setsize", fails: &[MANY], may_fail: &[], warns: &[] },
    // It burns a core per instance: its test runs one phase at a time (see `busy_poll`).
    Row { fixture: "busy-poll", fails: &[], may_fail: &[], warns: &["CPU while idle"] },
    // Hostile programs: correct proxies underneath, or no proxy at all.
    Row { fixture: "fork-ignore-term", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "stderr-flood", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "listen-late", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "crash-segv", fails: &ALL_PHASES, may_fail: &[], warns: &[] },
    Row { fixture: "exit-at-once", fails: &ALL_PHASES, may_fail: &[], warns: &[] },
    Row { fixture: "wrong-port", fails: &ALL_PHASES, may_fail: &[], warns: &[] },
    Row { fixture: "never-listen", fails: &ALL_PHASES, may_fail: &[], warns: &[] },
    Row { fixture: "accept-and-hold", fails: &ALL_PHASES, may_fail: &[], warns: &[] },
    // Listens after 7 s: slow to start is not wrong.
    Row { fixture: "slow-start", fails: &[], may_fail: &[], warns: &[] },
    // Its child left the group and session: the harness must still kill it (nothing left).
    Row { fixture: "escape-setsid", fails: &[], may_fail: &[], warns: &[] },
    // The process it started exits 0 before serving: the harness grades that process, and
    // kills the daemon it left.
    Row { fixture: "daemonize", fails: &ALL_PHASES, may_fail: &[], warns: &[] },
    Row { fixture: "correct", fails: &[], may_fail: &[], warns: &[] },
];

/// Fixtures that never listen on the port they are given in any phase: the run says so once and
/// exits 4 instead of grading each phase.
const NEVER_STARTS: &[&str] = &["exit-at-once", "wrong-port", "never-listen", "daemonize"];

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs the harness on `fixture` and checks its verdicts against the matrix, both ways.
fn check(fixture: &str) -> Run {
    check_with(fixture, &[])
}

/// As [`check`], with more harness options.
fn check_with(fixture: &str, options: &[&str]) -> Run {
    let row = MATRIX
        .iter()
        .find(|r| r.fixture == fixture)
        .expect("in the matrix");
    let bin = fixtures_bin();
    // One suite at a time, whatever the fixture: running never-serving fixtures beside a full
    // suite made listen-late lose its port to another run (CI rehearsal, 2026-12-01).
    let _slot = HeavySlot::acquire();
    let mut args = vec!["--stall-timeout", STALL];
    args.extend_from_slice(options);
    args.extend([
        "--",
        bin.to_str().unwrap(),
        fixture,
        "--stall-timeout",
        STALL,
    ]);
    let run = run_harness(&args, Duration::from_secs(300));
    let verdicts = run.verdicts();
    assert_eq!(
        verdicts.len(),
        ALL_PHASES.len(),
        "fixture {fixture}: expected a line per phase\n{}",
        run.dump()
    );
    let with = |v: &str| -> BTreeSet<String> {
        verdicts
            .iter()
            .filter(|(_, x)| *x == v)
            .map(|(n, _)| n.clone())
            .collect()
    };
    let (failed, warned) = (with("failed"), with("warning"));
    let (must, may) = (names(row.fails), names(row.may_fail));
    let missed: Vec<_> = must.difference(&failed).collect();
    let collateral: Vec<_> = failed
        .difference(&must)
        .filter(|p| !may.contains(*p))
        .collect();
    assert!(
        missed.is_empty() && collateral.is_empty(),
        "fixture {fixture}: phases that should have failed but did not: {missed:?}; phases that failed but should not have: {collateral:?}\n{}",
        run.dump()
    );
    assert_eq!(
        warned,
        names(row.warns),
        "fixture {fixture}: warnings\n{}",
        run.dump()
    );
    let want_code = if NEVER_STARTS.contains(&fixture) {
        4
    } else if failed.is_empty() {
        0
    } else {
        1
    };
    assert_eq!(
        run.code,
        Some(want_code),
        "fixture {fixture}: exit code\n{}",
        run.dump()
    );
    assert_nothing_left(&run);
    run
}

/// Every fixture the `fixtures` binary offers has a row here, and every row a fixture.
#[test]
fn every_fixture_has_a_row() {
    let out = std::process::Command::new(fixtures_bin())
        .arg("--list")
        .output()
        .unwrap();
    let listed: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let rows: BTreeSet<String> = MATRIX.iter().map(|r| r.fixture.to_string()).collect();
    assert_eq!(listed, rows);
    assert!(
        MATRIX
            .iter()
            .filter(|r| !r.fails.is_empty() && r.fails.len() < ALL_PHASES.len())
            .count()
            >= 17,
        "every classic bug but busy-poll (a warning) must fail something"
    );
}

/// One test per fixture, named for it, so `cargo test matrix::flip_byte` reruns just that one.
macro_rules! matrix_tests {
    ($($name:ident => $fixture:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check($fixture);
            }
        )*
    };
}

matrix_tests! {
    close_on_first_eof => "close-on-first-eof",
    no_half_close => "no-half-close",
    unbounded_buffer => "unbounded-buffer",
    one_at_a_time => "one-at-a-time",
    blocking_writes => "blocking-writes",
    idle_timeout => "idle-timeout",
    stall_one_direction => "stall-one-direction",
    short_stall => "short-stall",
    drop_buffered_on_eof => "drop-buffered-on-eof",
    flip_byte => "flip-byte",
    short_write_resend => "short-write-resend",
    short_write_drop => "short-write-drop",
    max_ten => "max-ten",
    ignore_write_errors => "ignore-write-errors",
    fd_leak => "fd-leak",
    exit_on_refused => "exit-on-refused",
    fd_setsize => "fd-setsize",
    fork_ignore_term => "fork-ignore-term",
    listen_late => "listen-late",
    exit_at_once => "exit-at-once",
    never_listen => "never-listen",
    accept_and_hold => "accept-and-hold",
    slow_start => "slow-start",
    escape_setsid => "escape-setsid",
    daemonize => "daemonize",
    correct => "correct",
}

/// A fixture that burns a core per instance, one instance per phase: with every phase at once
/// on 2 cores they starved the transfers (a correct stall timer aborted one) and each other's
/// CPU share, so its phases run one at a time. Exact that way in 2 of 2 runs idle and 2 of 2
/// under two CPU hogs, 41-47 s (2026-11-30).
#[test]
fn busy_poll() {
    check_with("busy-poll", &["--jobs", "1"]);
}

#[test]
fn crash_segv_names_the_signal() {
    let run = check("crash-segv");
    assert!(
        run.stdout.contains("killed by signal SIGSEGV"),
        "{}",
        run.dump()
    );
}

/// Issue 17: it was told "exited first ... Address already in use" in most phases, and a phase
/// whose port another instance had taken by mistake graded that instance.
#[test]
fn wrong_port_is_told_the_port_it_listens_on() {
    let run = check("wrong-port");
    assert!(
        run.stdout
            .contains("instead (LISTEN_PORT is the last of its three arguments)"),
        "{}",
        run.dump()
    );
    let said: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter(|l| {
            l.contains("it listens on 127.0.0.1:")
                || l.contains("exited first")
                || l.contains("but it never did; it listens on 127.0.0.1:")
        })
        .collect();
    assert_eq!(said.len(), ALL_PHASES.len(), "{}", run.dump());
}

#[test]
fn stderr_flood_is_judged_with_bounded_output() {
    let run = check("stderr-flood");
    assert!(
        run.stdout.len() < 64 * 1024,
        "{} bytes of report",
        run.stdout.len()
    );
}
