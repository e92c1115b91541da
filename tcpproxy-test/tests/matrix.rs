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
const SLOW: &str = "Non-timeout of slow reader";
/// Every phase of the suite, whatever it holds.
const EVERY: &[&str] = &["*"];

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    Row { fixture: "close-on-first-eof", fails: &[ONE_WAY], may_fail: &[], warns: &[] },
    Row { fixture: "no-half-close", fails: &[ONE_WAY, FLUSH, SLOW], may_fail: &[], warns: &[] },
    Row { fixture: "unbounded-buffer", fails: &[LAZY_FWD, LAZY_REV, "Bounded memory"], may_fail: &[], warns: &[] },
    // Flush and descriptor phases pass: their pairs end one after another, so serial service
    // is merely slow there.
    Row { fixture: "one-at-a-time", fails: &["Two echo connections", "20 echo connections", BULK, MIX, MANY, "CPU while idle", SLOW], may_fail: &[], warns: &[] },
    // With slow readers everywhere, one write blocking the only thread usually deadlocks the
    // chain until its stall timer resets it; how often depends on scheduling.
    Row { fixture: "blocking-writes", fails: &[MIX], may_fail: &[BULK, SLOW], warns: &[] },
    // Opening 1500 pairs one by one takes about a stall timeout; the first may sit idle that long.
    // With a slow reader the proxy can neither read nor write for seconds, which its idle timer
    // takes for silence; blocking-writes' and short-stall's timers are fooled the same way.
    Row { fixture: "idle-timeout", fails: &["Non-timeout of idle client"], may_fail: &[MANY, SLOW, MIX], warns: &[] },
    Row { fixture: "stall-one-direction", fails: &[LAZY_REV], may_fail: &[], warns: &[] },
    // At a fifth of the stall timeout, a loaded machine's slow chain readers can trip it too.
    Row { fixture: "short-stall", fails: &[LAZY_FWD, LAZY_REV], may_fail: &[BULK, MIX, FLUSH, SLOW], warns: &[] },
    // Every phase with a slow reader and a sender that keeps its buffer topped up can see the
    // bug: Flush's 5 MB transfers did in 2 of 2 runs, the chains' shorter ones did not.
    Row { fixture: "stall-on-empty-only", fails: &[SLOW], may_fail: &[FLUSH, BULK, MIX], warns: &[] },
    // Caught by the held tail: the harness reads the proxy's queues in /proc/net/tcp and sends
    // the EOF while the proxy holds bytes it cannot write on (src/hold.rs).
    Row { fixture: "drop-buffered-on-eof", fails: &[FLUSH], may_fail: &[], warns: &[] },
    Row { fixture: "flip-byte", fails: &[BULK, MIX, FLUSH, SLOW], may_fail: &[], warns: &[] },
    Row { fixture: "short-write-resend", fails: &[BULK, MIX, FLUSH, SLOW], may_fail: &[], warns: &[] },
    Row { fixture: "short-write-drop", fails: &[BULK, MIX, FLUSH, SLOW], may_fail: &[], warns: &[] },
    Row { fixture: "max-ten", fails: &["20 echo connections", BULK, MIX, MANY], may_fail: &[], warns: &[] },
    Row { fixture: "ignore-write-errors", fails: &["Early close"], may_fail: &[], warns: &[] },
    Row { fixture: "fd-leak", fails: &[LEAKS], may_fail: &[], warns: &[] },
    Row { fixture: "exit-on-refused", fails: &["Destination refused"], may_fail: &[], warns: &[] },
    Row { fixture: "fd-setsize", fails: &[MANY], may_fail: &[], warns: &[] },
    // The descriptor phase's burst of 200 overflows listen(5); it tries again what the kernel
    // turned away (resets, stuck handshakes), since that loses no descriptor.
    Row { fixture: "small-backlog", fails: &[], may_fail: &[], warns: &[] },
    // The same behind a slow accept loop (a threaded Python server's): requests sit unacknowledged
    // behind SYN cookies for seconds; the echo deadline counts from when the proxy had them.
    Row { fixture: "slow-accept-backlog", fails: &[], may_fail: &[], warns: &[] },
    // It burns a core per instance: its test runs one phase at a time (see `busy_poll`).
    Row { fixture: "busy-poll", fails: &[], may_fail: &[], warns: &["CPU while idle"] },
    // Hostile programs: correct proxies underneath, or no proxy at all.
    Row { fixture: "fork-ignore-term", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "stderr-flood", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "listen-late", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "crash-segv", fails: EVERY, may_fail: &[], warns: &[] },
    Row { fixture: "exit-at-once", fails: EVERY, may_fail: &[], warns: &[] },
    Row { fixture: "wrong-port", fails: EVERY, may_fail: &[], warns: &[] },
    Row { fixture: "never-listen", fails: EVERY, may_fail: &[], warns: &[] },
    Row { fixture: "accept-and-hold", fails: EVERY, may_fail: &[], warns: &[] },
    // Listens after 7 s: slow to start is not wrong.
    Row { fixture: "slow-start", fails: &[], may_fail: &[], warns: &[] },
    // Its child left the group and session: the harness must still kill it (nothing left).
    Row { fixture: "escape-setsid", fails: &[], may_fail: &[], warns: &[] },
    // The process it started exits 0 before serving: the harness grades that process, and
    // kills the daemon it left.
    Row { fixture: "daemonize", fails: EVERY, may_fail: &[], warns: &[] },
    // Quirks of real proxies: correct, so they pass everything (issue 17, A and B).
    Row { fixture: "health-probe", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "lazy-connect", fails: &[], may_fail: &[], warns: &[] },
    Row { fixture: "correct", fails: &[], may_fail: &[], warns: &[] },
];

/// Fixtures that never listen on the port they are given in any phase: the run says so once and
/// exits 4 instead of grading each phase.
const NEVER_STARTS: &[&str] = &["exit-at-once", "wrong-port", "never-listen", "daemonize"];

fn names(list: &[&str]) -> BTreeSet<String> {
    if list == EVERY {
        return ALL_PHASES.iter().map(|s| s.to_string()).collect();
    }
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
    if NEVER_STARTS.contains(&fixture) {
        // Nothing but the start is judged, and its 30 s deadline would cost a minute a row
        // (the first phase starts alone, then the rest); a fifth of it is still 6 s.
        args.extend(["--timeout-scale", "0.2"]);
    }
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
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let listed: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let rows: BTreeSet<String> = MATRIX.iter().map(|r| r.fixture.to_string()).collect();
    assert_eq!(listed, rows);
    // A bug is whatever `--list` does not describe as hostile or the control.
    let bugs = text.lines().filter(|l| {
        let about = l.split_whitespace().nth(1).unwrap_or("");
        !matches!(about, "hostile:" | "control:" | "quirk:")
    });
    for line in bugs {
        let name = line.split_whitespace().next().unwrap_or("");
        let row = MATRIX.iter().find(|r| r.fixture == name).expect("listed");
        assert!(
            !row.fails.is_empty() && row.fails != EVERY || !row.warns.is_empty(),
            "bug fixture {name} must fail (or warn on) some phases but not all"
        );
    }
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
    stall_on_empty_only => "stall-on-empty-only",
    drop_buffered_on_eof => "drop-buffered-on-eof",
    flip_byte => "flip-byte",
    short_write_resend => "short-write-resend",
    short_write_drop => "short-write-drop",
    max_ten => "max-ten",
    ignore_write_errors => "ignore-write-errors",
    fd_leak => "fd-leak",
    exit_on_refused => "exit-on-refused",
    fd_setsize => "fd-setsize",
    small_backlog => "small-backlog",
    slow_accept_backlog => "slow-accept-backlog",
    fork_ignore_term => "fork-ignore-term",
    listen_late => "listen-late",
    exit_at_once => "exit-at-once",
    never_listen => "never-listen",
    accept_and_hold => "accept-and-hold",
    slow_start => "slow-start",
    escape_setsid => "escape-setsid",
    daemonize => "daemonize",
    health_probe => "health-probe",
    lazy_connect => "lazy-connect",
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

/// Issue 17: the harness told 2 s and the proxy left at 10 s, the lazy phases still fail (a
/// failure against what the harness was told), but their hint names the mismatch, not a
/// missing stall timer (the proxy aborts at 10 s, after the harness's window).
#[test]
fn lazy_hints_name_a_stall_timeout_the_harness_was_not_told() {
    let bin = fixtures_bin();
    let _slot = HeavySlot::acquire();
    let args = [
        "--stall-timeout",
        "2",
        "--only",
        "timeout/lazy-*",
        "--",
        bin.to_str().unwrap(),
        "correct",
        "--stall-timeout",
        "10",
    ];
    let run = run_harness(&args, Duration::from_secs(120));
    assert_eq!(run.failed(), [LAZY_FWD, LAZY_REV], "{}", run.dump());
    assert_eq!(run.code, Some(1), "{}", run.dump());
    let hints: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("    hint: "))
        .collect();
    assert_eq!(hints.len(), 2, "{}", run.dump());
    for hint in hints {
        let after: f64 = hint
            .strip_prefix("the proxy aborted ")
            .and_then(|h| h.split_once("s after the "))
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or_else(|| panic!("hint does not say when the proxy aborted: {hint}"));
        assert!((8.0..=12.0).contains(&after), "{hint}");
        assert!(
            hint.contains(
                "not the 2s the harness was told; pass the same --stall-timeout to both (tcpproxy-test --stall-timeout 2 -- ./proxy --stall-timeout 2)"
            ),
            "{hint}"
        );
    }
    assert!(!run.stdout.contains("never times out"), "{}", run.dump());
    assert_nothing_left(&run);

    // The other way round: told 30 s, the proxy's 10 s abort is too early, and fits its default.
    let args = [
        "--stall-timeout",
        "30",
        "--only",
        "timeout/lazy-forward",
        "--",
        bin.to_str().unwrap(),
        "correct",
    ];
    let run = run_harness(&args, Duration::from_secs(120));
    assert_eq!(run.failed(), [LAZY_FWD], "{}", run.dump());
    // About 10 s: the proxy's timer samples its send queue a tenth of the timeout apart, so the
    // abort may come up to a second late.
    let about: f64 = run
        .stdout
        .split_once("its stall timeout looks like about ")
        .and_then(|(_, rest)| rest.split_once("s, not the 30s the harness was told; pass the same --stall-timeout to both (tcpproxy-test --stall-timeout 30 -- ./proxy --stall-timeout 30)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no mismatch hint\n{}", run.dump()));
    assert!((9.0..=12.0).contains(&about), "{}", run.dump());
    assert_nothing_left(&run);
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
