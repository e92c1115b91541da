//! Random argument vectors against the harness binary: exit 0 (help, version, the list) or 2 with
//! one `tcpproxy-test:` line on stderr, as the library's parser says beforehand; never a panic
//! (exit 101), a signal, or a hang.
//!
//! No vector may start a suite: each either opens with `--only` and a glob no phase matches (the
//! filter is checked before the proxy is looked for), or is all flags followed by `--` and a
//! proxy that does not exist. The parser is asked first, and a vector it would run is a failure
//! of this generator, reported without running anything. A failing vector is saved in
//! `cli_fuzz.proptest-regressions` beside this file (commit it) and replayed first.

use std::cell::Cell;
use std::ffi::OsString;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{TestCaseError, TestRunner};
use tcpproxy_test::cli::{self, Parsed};
use testkit::argv;

use crate::support::harness_bin;

/// Cases per run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 64;
const MAX_SHRINK_MS: u32 = 10_000;
/// Parsing and printing take milliseconds; anything near this is a hang.
const EXITS_WITHIN: Duration = Duration::from_secs(20);
/// Matches no phase id or name.
const NO_PHASE: &str = "no-such-phase-*-cli-fuzz";
/// Does not exist, so a vector that gets this far is a usage error.
const NO_PROXY: &str = "/nonexistent/cli-fuzz/proxy";

/// The harness's own flags but `--only`, which the generator sets itself.
const FLAGS: &[&str] = &[
    "--stall-timeout",
    "--timeout-scale",
    "--seed",
    "--jobs",
    "--strict",
    "--format",
    "--output",
    "--list",
    "--exclude",
];

/// Every flag token: the harness's own, then the shared ones.
fn flags() -> Vec<&'static str> {
    [FLAGS, argv::SHARED_FLAGS].concat()
}

/// Flags that take a value (`--only` is the generator's to set).
const VALUED: &[&str] = &[
    "--stall-timeout",
    "--timeout-scale",
    "--seed",
    "--jobs",
    "--format",
    "--output",
    "--exclude",
];

const WORDS: &[&str] = &[
    "human",
    "json",
    "junit",
    "tap",
    "gradescope",
    "xml",
    "*",
    "timeout/*",
    "[unclosed",
    "echo/single",
    "/dev/null",
    "sh",
    "python3",
    "grade",
    "fuzz",
    "__reference-proxy",
    "",
];

/// Numbers the harness's parser is likely to get wrong: words, past `u64`, huge and tiny.
const ODD_NUMBERS: &[&str] = &[
    "nan",
    "inf",
    "-0",
    "1e9",
    "86401",
    "0.0001",
    "18446744073709551616",
];

fn number() -> impl Strategy<Value = String> {
    argv::number(ODD_NUMBERS)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        number(),
        prop::sample::select(WORDS).prop_map(str::to_string),
        "\\PC{0,12}",
    ]
}

/// Anything at all, except a way to set `--only`.
fn any_token() -> impl Strategy<Value = OsString> {
    prop_oneof![
        4 => flag_token(),
        3 => value().prop_map(OsString::from),
        1 => argv::any_text(),
        1 => argv::raw_bytes(),
    ]
    .prop_filter("the generator sets --only itself", |t| {
        !t.to_string_lossy().starts_with("--only")
    })
}

/// A token that starts with `-`, so it is never taken for the proxy before `--`.
fn flag_token() -> impl Strategy<Value = OsString> {
    prop_oneof![
        4 => prop::sample::select(flags()).prop_map(OsString::from),
        4 => argv::assignment(VALUED, value()),
        1 => argv::unknown_long(),
        1 => argv::unknown_short(),
    ]
    .prop_filter("the generator sets --only itself", |t| {
        !t.to_string_lossy().starts_with("--only")
    })
}

/// `--only NO_PHASE`, then anything: the filter selects nothing, so no suite can start.
fn filtered_out() -> impl Strategy<Value = Vec<OsString>> {
    prop::collection::vec(any_token(), 0..=7).prop_map(|rest| {
        let mut args = vec![OsString::from("--only"), OsString::from(NO_PHASE)];
        args.extend(rest);
        args
    })
}

/// Flags, `--`, a proxy that does not exist and its arguments: the proxy is looked for, and
/// not found.
fn missing_proxy() -> impl Strategy<Value = Vec<OsString>> {
    (
        prop::collection::vec(flag_token(), 0..=5),
        prop::collection::vec(any_token(), 0..=3),
    )
        .prop_map(|(flags, proxy_args)| {
            let mut args = flags;
            args.extend([OsString::from("--"), OsString::from(NO_PROXY)]);
            args.extend(proxy_args);
            args
        })
}

fn parse(args: &[OsString]) -> Parsed {
    cli::parse(std::iter::once(OsString::from("tcpproxy-test")).chain(args.iter().cloned()))
}

fn run_case(args: &[OsString]) -> Result<(), String> {
    let expected = parse(args);
    if matches!(
        expected,
        Parsed::Run(_) | Parsed::Fuzz(_) | Parsed::Grade(_)
    ) {
        return Err(format!(
            "the generator made a vector that would run something: {args:?}: {expected:?}"
        ));
    }
    let ran = argv::run(&harness_bin(), args, EXITS_WITHIN, &expected)?;
    let (stdout, stderr, context) = (&ran.stdout, &ran.stderr, &ran.context);
    match (&expected, ran.status.code()) {
        (_, None) if ran.killed => Err(format!("hung: {context}")),
        (_, Some(101)) => Err(format!("panicked: {context}")),
        (Parsed::Info(text), Some(0)) if stdout == text && stderr.is_empty() => Ok(()),
        (Parsed::List(filter), Some(0))
            if stdout.lines().count() == filter.select().len() && stderr.is_empty() =>
        {
            Ok(())
        }
        (Parsed::Usage(line), Some(2)) if *stderr == format!("{line}\n") && stdout.is_empty() => {
            Ok(())
        }
        _ => Err(format!("unexpected: {context}")),
    }
}

#[test]
fn any_argument_vector_exits_0_or_2_with_a_message_and_never_panics() {
    let config = testkit::property::config(CASES, MAX_SHRINK_MS, file!());
    let cases = config.cases;
    let vectors = prop_oneof![filtered_out(), missing_proxy()];
    // Shrinking reruns cases, so the tally is of every vector tried.
    let (usage, listed) = (Cell::new(0), Cell::new(0));
    let result = TestRunner::new(config).run(&vectors, |args| {
        match parse(&args) {
            Parsed::Usage(_) => usage.set(usage.get() + 1),
            Parsed::List(_) => listed.set(listed.get() + 1),
            Parsed::Info(_) | Parsed::Run(_) | Parsed::Fuzz(_) | Parsed::Grade(_) => {}
        }
        run_case(&args).map_err(TestCaseError::fail)
    });
    testkit::property::assert_held(
        result,
        "vector",
        file!(),
        "cargo test -p tcpproxy-test --test integration cli_fuzz",
    );
    eprintln!(
        "{cases} argument vectors: {} usage errors, {} lists, the rest help or version",
        usage.get(),
        listed.get()
    );
}

/// The two shapes are what keep suites from starting: check they do, by the parser's word.
#[test]
fn the_generator_never_makes_a_vector_that_runs() {
    let mut runner = TestRunner::deterministic();
    for shape in [filtered_out().boxed(), missing_proxy().boxed()] {
        for _ in 0..500 {
            let args = shape.new_tree(&mut runner).expect("a vector").current();
            assert!(
                !matches!(parse(&args), Parsed::Run(_)),
                "this vector would run a suite: {args:?}"
            );
        }
    }
}
