//! Bad invocations and proxies that cannot be brought up: a clear verdict, a bounded run, and
//! nothing left running.

use std::time::Duration;

use crate::support::{
    ALL_PHASES, HeavySlot, Run, assert_nothing_left, assert_stderr_has, assert_stdout_has,
    run_harness, write_executable,
};

const LIMIT: Duration = Duration::from_secs(90);

/// The suite against `sh -c script`, a proxy that never listens, with the deadlines scaled to
/// 0.2 (a 6 s start deadline): every phase fails to start it, exit 4, and whatever the script
/// started is gone when the harness exits.
#[track_caller]
fn never_listening(script: &str) -> Run {
    let run = run_harness(&["--timeout-scale", "0.2", "sh", "-c", script], LIMIT);
    assert_eq!(run.code, Some(4), "{}", run.dump());
    assert_nothing_left(&run);
    run
}

#[track_caller]
fn assert_usage_error(args: &[&str], want: &str) {
    let run = run_harness(args, LIMIT);
    assert_eq!(run.code, Some(2), "{}", run.dump());
    assert!(run.stdout.is_empty(), "{}", run.dump());
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr\n{}",
        run.dump()
    );
    assert!(lines[0].starts_with("tcpproxy-test: "), "{}", run.dump());
    assert!(
        lines[0].contains(want),
        "expected {want:?} in the error\n{}",
        run.dump()
    );
}

#[test]
fn a_missing_proxy_is_a_usage_error() {
    assert_usage_error(&["./no/such/proxy"], "No such file");
    assert_usage_error(&["no-such-proxy-on-path"], "not found on PATH");
}

#[test]
fn a_directory_or_non_executable_proxy_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(&[dir.path().to_str().unwrap()], "is a directory");
    let script = dir.path().join("proxy with spaces.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    assert_usage_error(&[script.to_str().unwrap()], "not executable");
    let orphan = dir.path().join("orphan.py");
    write_executable(&orphan, "#!/no/such/python3\n");
    assert_usage_error(&[orphan.to_str().unwrap()], "/no/such/python3");
}

/// Issue 17: these exited 1, every phase failing, where README promises 2.
#[test]
fn a_missing_script_or_env_interpreter_is_a_usage_error() {
    assert_usage_error(
        &["python3", "./does-not-exist.py"],
        "'./does-not-exist.py' for python3 does not exist",
    );
    assert_usage_error(&["sh", "no-such-script.sh"], "does not exist");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("proxy.py");
    write_executable(&script, "#!/usr/bin/env no-such-python2\n");
    assert_usage_error(
        &[script.to_str().unwrap()],
        "'no-such-python2' was not found on PATH",
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    assert_usage_error(&["--frobnicate"], "--frobnicate");
    assert_usage_error(&["--stall-timeout", "soon"], "soon");
    assert_usage_error(&["--jobs", "0", "sh"], "0");
    // Issue 18: found only after the whole run; now before anything runs (a run exits 0 here).
    assert_usage_error(
        &["--output", "/nonexistent/dir/r.json"],
        "cannot write the report to /nonexistent/dir/r.json: ",
    );
    let dir = tempfile::tempdir().unwrap();
    assert_usage_error(
        &["--output", dir.path().to_str().unwrap()],
        "it is a directory",
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn help_exits_zero() {
    let run = run_harness(&["--help"], LIMIT);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_stdout_has(&run, "--stall-timeout");
    // Usage lines name the command as typed (`grade --help` said `Usage: grade`).
    for sub in ["fuzz", "grade"] {
        let run = run_harness(&[sub, "--help"], LIMIT);
        assert_eq!(run.code, Some(0), "{}", run.dump());
        assert_stdout_has(&run, &format!("Usage: tcpproxy-test {sub} "));
    }
}

/// Issue 11: `grade --stall-timeout inf` panicked (exit 101, from `Duration::from_secs_f64`)
/// where the suite gave exit 2. Every numeric flag of every subcommand now goes through one set
/// of value parsers: the same bad numbers, the same one line, exit 2, before anything runs.
#[test]
fn every_subcommand_refuses_bad_numbers_the_same_way() {
    let flags: [(&[&str], &str, &[&str]); 8] = [
        (&[], "--stall-timeout", &[]),
        (&[], "--timeout-scale", &[]),
        (&["fuzz"], "--time-limit", &[]),
        (&["fuzz"], "--shrink-time", &[]),
        (&["fuzz"], "--timeout-scale", &[]),
        (&["fuzz"], "--stall-timeout", &[]),
        (&["grade"], "--stall-timeout", &["no-such-submission"]),
        (&["grade"], "--timeout-scale", &["no-such-submission"]),
    ];
    for (sub, flag, rest) in flags {
        for bad in ["inf", "NaN", "1e30", "-1", "garbage"] {
            let given = format!("{flag}={bad}");
            let mut args: Vec<&str> = sub.to_vec();
            args.push(&given);
            args.extend_from_slice(rest);
            let run = run_harness(&args, LIMIT);
            let prefix = match sub {
                [] => "tcpproxy-test: ".to_string(),
                [s, ..] => format!("tcpproxy-test {s}: "),
            };
            let lines: Vec<&str> = run.stderr.lines().collect();
            assert!(
                run.code == Some(2)
                    && run.stdout.is_empty()
                    && lines.len() == 1
                    && lines[0].starts_with(&prefix)
                    && lines[0].contains(&format!("'{bad}'"))
                    && lines[0].contains(": expected a "),
                "{args:?}\n{}",
                run.dump()
            );
        }
    }
}

/// Issue 17: 17 copies of one failure (86-148 lines) and exit 1 became the failure once, a short
/// line per phase, and exit 4.
#[test]
fn a_proxy_that_exits_at_once_is_explained_once_and_exits_4() {
    let run = run_harness(
        &["sh", "-c", "echo 'cannot bind: bad luck' >&2; exit 3"],
        LIMIT,
    );
    assert_eq!(run.code, Some(4), "{}", run.dump());
    assert_eq!(run.failed().len(), ALL_PHASES.len(), "{}", run.dump());
    let count = |s: &str| run.stdout.matches(s).count();
    // The stderr tail is quoted once (the command line quoting it is not that).
    assert_eq!(
        count("\n      cannot bind: bad luck\n"),
        1,
        "{}",
        run.dump()
    );
    assert_eq!(
        count("failed: the proxy never started (see above): it exited first (exit status 3)"),
        ALL_PHASES.len() - 1,
        "{}",
        run.dump()
    );
    // A line per phase, two for the one explained in full, then the count.
    assert!(
        run.stdout.lines().count() <= 2 * ALL_PHASES.len() + 5,
        "{}",
        run.dump()
    );
    assert!(
        run.stdout
            .ends_with(&format!("0 passed, {} failed\n", ALL_PHASES.len())),
        "{}",
        run.dump()
    );
    assert_stderr_has(&run, "the proxy never started");
    assert_nothing_left(&run);
}

#[test]
fn a_proxy_that_never_listens_fails_within_the_readiness_deadline() {
    // `exec` so the shell itself is the long-lived process; a stray child would count too.
    // Scaled to 6 s of the 30 s start deadline: the first start alone, then the rest at once.
    let run = never_listening("exec sleep 300");
    assert_eq!(run.failed().len(), ALL_PHASES.len(), "{}", run.dump());
    assert_stdout_has(&run, "within 6.0s, but it never did");
    assert_stdout_has(&run, "--jobs");
    assert!(run.elapsed < Duration::from_secs(40), "{}", run.dump());
}

/// Issue 17: a `setsid sleep 612 &` child was left behind once per phase.
#[test]
fn a_proxy_whose_child_leaves_its_session_leaves_nothing_behind() {
    never_listening("setsid sleep 612 & exec sleep 300");
}

#[test]
fn a_proxy_that_floods_stderr_is_judged_and_its_output_bounded() {
    let _slot = HeavySlot::acquire();
    let run = never_listening("while :; do echo flood flood flood; done >&2");
    assert_stdout_has(&run, "flood");
    // Only a tail is kept: the report stays small however much the proxy wrote.
    assert!(
        run.stdout.len() < 64 * 1024,
        "{} bytes of report",
        run.stdout.len()
    );
}

#[test]
fn a_proxy_whose_children_ignore_sigterm_leaves_nothing_behind() {
    // The child ignores SIGTERM and outlives its parent; only the group SIGKILL ends it.
    never_listening("trap '' TERM; (trap '' TERM; sleep 300) & sleep 300");
}

#[test]
fn ctrl_c_mid_run_kills_every_proxy_and_exits_130() {
    use std::io::BufRead as _;
    let _slot = HeavySlot::acquire();
    let marker = format!("tcpproxy-test-ctrl-c-{}", std::process::id());
    let mut harness = std::process::Command::new(crate::support::harness_bin())
        .args(["--stall-timeout", "10"])
        .env("TCPPROXY_TEST_MARKER", &marker)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first verdict is in: every other phase's proxy is still running (the lazy phases
    // take the whole 10 s stall timeout).
    let mut first = String::new();
    std::io::BufReader::new(harness.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("Single echo connection:"), "{first}");
    let running = crate::support::survivors(&marker);
    assert!(!running.is_empty(), "expected proxies running mid-run");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(harness.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = harness.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let left = crate::support::survivors(&marker);
    assert!(left.is_empty(), "left running after Ctrl-C: {left:#?}");
}

#[test]
fn a_proxy_path_with_spaces_runs() {
    let _slot = HeavySlot::acquire();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("my proxy");
    let harness = crate::support::harness_bin();
    write_executable(
        &script,
        &format!(
            "#!/bin/sh\nexec '{}' __reference-proxy --stall-timeout 2 \"$@\"\n",
            harness.display()
        ),
    );
    let run = run_harness(
        &[
            "--stall-timeout",
            "2",
            "--only",
            "echo/single",
            script.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(
        run.stdout,
        "Single echo connection: passed\n1 passed, 0 failed\n",
        "{}",
        run.dump()
    );
    assert_nothing_left(&run);
}

/// Issue 11: the integer flags (counts, seeds, a case number) go through the same parsers as
/// the seconds and factors, also when the bad number is a word of its own (`--jobs -1`): the
/// same one line as `--stall-timeout inf`, exit 2. Every numeric flag of every command is
/// checked in cli.rs's tests, found in the parser's tree.
#[test]
fn integer_flags_refuse_bad_numbers_as_the_seconds_do() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["fuzz", "--cases", "NaN"],
            "tcpproxy-test fuzz: invalid value 'NaN' for '--cases <N>': expected a number of cases from 0 to 4294967295, got 'NaN' (see --help)",
        ),
        (
            &["fuzz", "--cases", "1e30"],
            "tcpproxy-test fuzz: invalid value '1e30' for '--cases <N>': expected a number of cases from 0 to 4294967295, got '1e30' (see --help)",
        ),
        (
            &["fuzz", "--jobs", "-1"],
            "tcpproxy-test fuzz: invalid value '-1' for '--jobs <N>': expected a number of cases at once from 1 to 64, got '-1' (see --help)",
        ),
        (
            &["grade", "--jobs", "0", "x"],
            "tcpproxy-test grade: invalid value '0' for '--jobs <N>': expected a number of submissions from 1 to 4294967295, got '0' (see --help)",
        ),
        (
            &["grade", "--seed", "-1", "x"],
            "tcpproxy-test grade: invalid value '-1' for '--seed <N>': expected a seed from 0 to 18446744073709551615, got '-1' (see --help)",
        ),
    ];
    for (args, want) in cases {
        let run = run_harness(args, LIMIT);
        assert!(
            run.code == Some(2) && run.stdout.is_empty() && run.stderr == format!("{want}\n"),
            "{args:?}: expected exit 2 and {want:?}\n{}",
            run.dump()
        );
    }
}
