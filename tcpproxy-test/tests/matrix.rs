//! The verdict matrix: every fixture fails exactly the phases it declares (`Fixture::expect`,
//! beside its code in `fixtures/src/bugs/`) and passes the rest, the hostile ones get the right
//! verdict with nothing left running, and the control passes all.

use std::collections::BTreeSet;
use std::time::Duration;

use fixtures::bugs::{ALL, Fails, Fixture};

use crate::support::{ALL_PHASES, HeavySlot, Run, assert_nothing_left, fixtures_bin, run_harness};

/// The stall timeout every fixture is given (and the harness told): short, to keep the matrix
/// quick, but long enough that a loaded machine does not stall a correct proxy's live pair.
const STALL: &str = "3";

/// The display name of the phase with this id, as the harness prints it.
fn name(id: &str) -> &'static str {
    tcpproxy_test::phase::all()
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.name)
        .unwrap_or_else(|| panic!("no phase has the id {id:?} (`tcpproxy-test --list`)"))
}

fn names<'a>(ids: impl IntoIterator<Item = &'a &'static str>) -> BTreeSet<String> {
    ids.into_iter().map(|id| name(id).to_string()).collect()
}

fn fixture(fixture: &str) -> &'static Fixture {
    fixtures::bugs::find(fixture).unwrap_or_else(|| panic!("no fixture is named {fixture:?}"))
}

/// Runs the harness on `fixture` and checks its verdicts against its expectation, both ways.
fn check(fixture_name: &str) -> Run {
    let expect = fixture(fixture_name).expect;
    let bin = fixtures_bin();
    // Rows run side by side, each run in a network namespace of its own, so a never-serving
    // fixture's run can no longer take listen-late's port (CI rehearsal, 2026-12-01).
    let _slot = HeavySlot::acquire();
    let harness = expect.harness_args.map_or(&[][..], |h| h.args);
    // A fixture's harness options may name its own stall timeout; the fixture is told the same.
    let own_stall = harness
        .windows(2)
        .find(|w| w[0] == "--stall-timeout")
        .map(|w| w[1]);
    let mut args = Vec::new();
    if own_stall.is_none() {
        args.extend(["--stall-timeout", STALL]);
    }
    args.extend_from_slice(harness);
    args.extend([
        "--",
        bin.to_str().unwrap(),
        fixture_name,
        "--stall-timeout",
        own_stall.unwrap_or(STALL),
    ]);
    let run = run_harness(&args, Duration::from_secs(300));
    let verdicts = run.verdicts();
    assert_eq!(
        verdicts.len(),
        ALL_PHASES.len(),
        "fixture {fixture_name}: expected a line per phase\n{}",
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
    let must = match expect.fails {
        Fails::Every => ALL_PHASES.iter().map(|s| s.to_string()).collect(),
        Fails::Phases(ids) => names(ids),
    };
    let may = names(expect.may_fail.iter().flat_map(|m| m.phases));
    let missed: Vec<_> = must.difference(&failed).collect();
    let collateral: Vec<_> = failed
        .difference(&must)
        .filter(|p| !may.contains(*p))
        .collect();
    assert!(
        missed.is_empty() && collateral.is_empty(),
        "fixture {fixture_name}: phases that should have failed but did not: {missed:?}; phases that failed but should not have: {collateral:?}\n{}",
        run.dump()
    );
    assert_eq!(
        warned,
        names(expect.warns),
        "fixture {fixture_name}: warnings\n{}",
        run.dump()
    );
    let want_code = if expect.never_starts {
        4
    } else if failed.is_empty() {
        0
    } else {
        1
    };
    assert_eq!(
        run.code,
        Some(want_code),
        "fixture {fixture_name}: exit code\n{}",
        run.dump()
    );
    assert_nothing_left(&run);
    run
}

/// The host applied every limit the run asked for: the run warns on stderr, naming the
/// confinement, only where it could not.
#[track_caller]
fn assert_every_limit_applied(run: &Run) {
    assert!(
        !run.stderr.contains("NOT APPLIED"),
        "expected every limit applied\n{}",
        run.dump()
    );
}

/// A typo in a fixture's expectation would otherwise surface only when its (slow) row runs.
#[test]
fn every_phase_id_in_the_expectations_exists() {
    for f in ALL {
        for id in f.expect.phase_ids() {
            assert!(
                tcpproxy_test::phase::all().iter().any(|p| p.id == id),
                "fixture {}: no phase has the id {id:?} (`tcpproxy-test --list`)",
                f.name
            );
        }
    }
}

/// Every fixture the `fixtures` binary offers is one the library declares, and has exactly one
/// test below (so a new fixture cannot go unchecked, nor a removed one linger).
#[test]
fn every_fixture_has_a_row() {
    let out = std::process::Command::new(fixtures_bin())
        .arg("--list")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let declared: Vec<&str> = ALL.iter().map(|f| f.name).collect();
    assert_eq!(
        listed, declared,
        "the fixtures binary is stale: `cargo build -p fixtures`"
    );
    let mut tested = TESTED.to_vec();
    tested.sort_unstable();
    let mut want = declared.clone();
    want.sort_unstable();
    assert_eq!(
        tested, want,
        "matrix_tests! in tcpproxy-test/tests/matrix.rs must name every fixture once"
    );
}

/// What `ci/soak` reads is what this matrix checks.
#[test]
fn expectations_on_the_command_line_are_the_library_s() {
    let out = std::process::Command::new(fixtures_bin())
        .arg("--expectations")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), ALL.len(), "{text}");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let owned = |ids: &[&str]| -> Vec<String> { ids.iter().map(|s| s.to_string()).collect() };
    for (line, f) in lines.iter().zip(ALL) {
        let e = &f.expect;
        assert_eq!(line["name"], f.name);
        assert_eq!(line["summary"], f.about);
        let (fails, every) = match e.fails {
            Fails::Phases(ids) => (ids, false),
            Fails::Every => (&[][..], true),
        };
        assert_eq!(strings(&line["fails"]), owned(fails), "{}", f.name);
        assert_eq!(line["fails_every_phase"], every, "{}", f.name);
        assert_eq!(strings(&line["warns"]), owned(e.warns), "{}", f.name);
        assert_eq!(line["never_starts"], e.never_starts, "{}", f.name);
        let may = line["may_fail"].as_array().unwrap();
        assert_eq!(may.len(), e.may_fail.len(), "{}", f.name);
        for (got, want) in may.iter().zip(e.may_fail) {
            assert_eq!(strings(&got["phases"]), owned(want.phases), "{}", f.name);
            assert_eq!(got["why"], want.why, "{}", f.name);
        }
        let args = e.harness_args.map_or(&[][..], |h| h.args);
        assert_eq!(strings(&line["harness_args"]), owned(args), "{}", f.name);
    }
}

/// One test per fixture, named for it, so `cargo test matrix::flip_byte` reruns just that one;
/// a test that checks more of a fixture's run than its verdicts takes the run as `|run| {...}`.
/// [`TESTED`] lists the fixtures, for [`every_fixture_has_a_row`].
macro_rules! matrix_tests {
    ($($(#[$meta:meta])* $test:ident => $fixture:literal $(|$run:ident| $more:block)?),* $(,)?) => {
        const TESTED: &[&str] = &[$($fixture),*];
        $(
            $(#[$meta])*
            #[test]
            fn $test() {
                let _run = check($fixture);
                $(
                    let $run = _run;
                    $more
                )?
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
    fin_timeout => "fin-timeout",
    reset_stuck => "reset-stuck",
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
    blocking_connect => "blocking-connect",
    fd_setsize => "fd-setsize",
    emfile_spin => "emfile-spin",
    /// 79 s alone: its phases run one at a time, as each instance burns a core.
    #[ignore = "slow lane: ci/slow, which .ci/run runs"]
    busy_poll => "busy-poll",
    small_backlog => "small-backlog",
    slow_accept_backlog => "slow-accept-backlog",
    ipv4_only => "ipv4-only",
    no_nodelay => "no-nodelay",
    fork_ignore_term => "fork-ignore-term",
    stderr_flood_is_judged_with_bounded_output => "stderr-flood" |run| {
        assert!(
            run.stdout.len() < 64 * 1024,
            "{} bytes of report",
            run.stdout.len()
        );
    },
    crash_segv_names_the_signal => "crash-segv" |run| {
        assert!(
            run.stdout.contains("killed by signal SIGSEGV"),
            "{}",
            run.dump()
        );
    },
    exit_at_once => "exit-at-once",
    listen_late => "listen-late",
    /// Issue 17: it was told "exited first ... Address already in use" in most phases, and a
    /// phase whose port another instance had taken by mistake graded that instance.
    wrong_port_is_told_the_port_it_listens_on => "wrong-port" |run| {
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
    },
    never_listen => "never-listen",
    accept_and_hold => "accept-and-hold",
    /// 46 s alone: the first start is waited out before the rest may start.
    #[ignore = "slow lane: ci/slow, which .ci/run runs"]
    slow_start => "slow-start",
    escape_setsid => "escape-setsid",
    // Issue 13: each of these judges its own containment and, not contained, exits before
    // listening with what escaped, which fails every phase; passing them all is being contained.
    /// A fork failed (EAGAIN) before the 200th child, at its proxy's pids cgroup.
    fork_200_is_capped_by_the_task_limit => "fork-200" |run| {
        assert_every_limit_applied(&run);
    },
    /// A write failed (EFBIG) before its own 1 GiB bound.
    file_writer_is_capped_by_the_file_size_limit => "file-writer",
    /// Only `lo`, no default route: the run's own network namespace.
    net_report_sees_only_loopback => "net-report",
    /// /etc/shadow refused it (EACCES): it ran as nobody, or as the test's user if not root.
    root_reader_is_refused_root_s_files => "root-reader",
    daemonize => "daemonize",
    health_probe => "health-probe",
    lazy_connect => "lazy-connect",
    correct => "correct",
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
    assert_eq!(
        run.failed(),
        [name("timeout/lazy-forward"), name("timeout/lazy-reverse")],
        "{}",
        run.dump()
    );
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
    assert_eq!(
        run.failed(),
        [name("timeout/lazy-forward")],
        "{}",
        run.dump()
    );
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
