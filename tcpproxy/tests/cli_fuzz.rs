//! Random argument vectors (flags known and unknown, numbers, hosts, unicode, bytes that are not
//! UTF-8) against the binary: exit 0 with text on stdout, or 1 or 2 with one `tcpproxy:` line
//! on stderr; never a panic (exit 101), a signal, or a hang.
//!
//! The library's own parser says beforehand what each vector is. A vector that parses runs the
//! proxy: it gets `--bind 127.0.0.1` if it has no `--bind`, so nothing listens beyond loopback,
//! and is killed after a short while if it has not exited by then (an unresolvable host or a
//! port in use ends it at once). A failing vector is saved in `cli_fuzz.proptest-regressions`
//! beside this file (commit it) and replayed first on every run.

use std::cell::Cell;
use std::ffi::OsString;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tcpproxy::cli::{self, Parsed};

use crate::support::LONG_OPTIONS;
use testkit::argv;
use testkit::deadline::scaled;

/// Cases per run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 64;
const MAX_SHRINK_MS: u32 = 10_000;
/// How long a vector that parses may run before it is killed; it then counts as running.
const RUNS_FOR: f64 = 1.0;
/// A vector that does not parse must exit well within this.
const EXITS_WITHIN: f64 = 10.0;

/// Tokens that are flags, or look like them, besides [`LONG_OPTIONS`] and the shared ones.
const OTHER_FLAGS: &[&str] = &["-v", "-vv", "-vvvvvv", "--="];

/// Every flag token: the long options, the shared ones, then the others.
fn flags() -> Vec<&'static str> {
    [LONG_OPTIONS, argv::SHARED_FLAGS, OTHER_FLAGS].concat()
}

/// Options given a value with `=`, whether they take one or not.
const VALUED: &[&str] = LONG_OPTIONS;

const HOSTS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "nosuch.invalid",
    "",
    " ",
    "127.0.0.1:80",
    "[::1]",
];

const ODD_NUMBERS: &[&str] = &[
    "nan",
    "inf",
    "-inf",
    "1e3",
    "1e400",
    "0x10",
    "+5",
    " 80",
    "80 ",
    "65536",
    "-0",
    "0.0000001",
    "99999999999999999999",
    "18446744073709551616",
    "31536001",
    "67108865",
    "1073741825",
];

fn number() -> impl Strategy<Value = String> {
    argv::number(ODD_NUMBERS)
}

/// One argument; `held` is a port that is in use, so a vector naming it as LISTEN_PORT ends.
fn token(held: u16) -> impl Strategy<Value = OsString> {
    prop_oneof![
        4 => prop::sample::select(flags()).prop_map(OsString::from),
        4 => number().prop_map(OsString::from),
        2 => prop::sample::select(HOSTS).prop_map(OsString::from),
        3 => Just(OsString::from(held.to_string())),
        2 => argv::assignment(VALUED, prop_oneof![number(), "\\PC{0,8}"]),
        1 => argv::unknown_long(),
        1 => argv::unknown_short(),
        2 => "\\PC{0,16}".prop_map(OsString::from),
        1 => argv::any_text(),
        1 => argv::raw_bytes(),
    ]
}

/// Three positionals that may well be valid, among options that may well be: vectors that get
/// past the parser, to the start-up checks and beyond.
fn plausible(held: u16) -> impl Strategy<Value = Vec<OsString>> {
    let port = prop_oneof![
        3 => Just(held.to_string()),
        1 => argv::written(1u32..=65535),
        1 => number(),
    ];
    let option = prop_oneof![
        (prop::sample::select(VALUED), number()).prop_map(|(f, v)| vec![f.to_string(), v]),
        (prop::sample::select(VALUED), prop::sample::select(HOSTS))
            .prop_map(|(f, v)| vec![f.to_string(), v.to_string()]),
        prop::sample::select(flags()).prop_map(|f| vec![f.to_string()]),
    ];
    (
        prop::sample::select(HOSTS),
        port.clone(),
        port,
        prop::collection::vec(option, 0..=3),
    )
        .prop_map(|(host, dest, listen, options)| {
            let mut args = vec![vec![host.to_string()], vec![dest], vec![listen]];
            args.extend(options);
            args
        })
        .prop_shuffle()
        .prop_map(|groups| groups.into_iter().flatten().map(OsString::from).collect())
}

fn parse(args: &[OsString]) -> Parsed {
    cli::parse(std::iter::once(OsString::from("tcpproxy")).chain(args.iter().cloned()))
}

/// The vector as run: with `--bind 127.0.0.1` in front when it would run the proxy on every
/// interface.
fn confined(mut args: Vec<OsString>) -> Vec<OsString> {
    if let Parsed::Run(c) = parse(&args) {
        if c.bind.is_none() {
            args.splice(0..0, ["--bind".into(), "127.0.0.1".into()]);
        }
    }
    args
}

/// Runs one vector; `Ok(true)` when it parsed and was still running when killed.
fn run_case(args: &[OsString]) -> Result<bool, String> {
    let expected = parse(args);
    let runs = matches!(expected, Parsed::Run(_));
    let limit = scaled(if runs { RUNS_FOR } else { EXITS_WITHIN });
    let ran = argv::run(
        assert_cmd::cargo::cargo_bin!("tcpproxy"),
        args,
        limit,
        &expected,
    )?;
    let (stdout, stderr, context) = (&ran.stdout, &ran.stderr, &ran.context);
    match (&expected, ran.status.code()) {
        (Parsed::Run(_), None) if ran.killed => Ok(true),
        (_, None) if ran.killed => Err(format!("hung: {context}")),
        (_, Some(101)) => Err(format!("panicked: {context}")),
        (Parsed::Info(text), Some(0)) if stdout == text && stderr.is_empty() => Ok(false),
        (Parsed::Usage(msg), Some(2))
            if *stderr == format!("tcpproxy: {msg}\n") && stdout.is_empty() =>
        {
            Ok(false)
        }
        (Parsed::Run(_), Some(1))
            if stderr.starts_with("tcpproxy: ") && stderr.lines().count() == 1 =>
        {
            Ok(false)
        }
        _ => Err(format!("unexpected: {context}")),
    }
}

#[test]
fn any_argument_vector_exits_0_1_or_2_with_a_message_and_never_panics() {
    let held = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let held_port = held.local_addr().expect("local_addr").port();
    let config = testkit::property::config(CASES, MAX_SHRINK_MS, file!());
    let cases = config.cases;
    let vectors = prop_oneof![
        prop::collection::vec(token(held_port), 0..=7),
        plausible(held_port),
    ]
    .prop_map(confined);
    // Shrinking reruns cases, so the tally is of every vector tried.
    let (runs, usage, kept) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let result = TestRunner::new(config).run(&vectors, |args| {
        match parse(&args) {
            Parsed::Run(_) => runs.set(runs.get() + 1),
            Parsed::Usage(_) => usage.set(usage.get() + 1),
            Parsed::Info(_) => {}
        }
        let still_running = run_case(&args).map_err(TestCaseError::fail)?;
        kept.set(kept.get() + u32::from(still_running));
        Ok(())
    });
    let (runs, usage, kept) = (runs.get(), usage.get(), kept.get());
    testkit::property::assert_held(
        result,
        "vector",
        file!(),
        "cargo test -p tcpproxy --test integration cli_fuzz",
    );
    eprintln!(
        "{cases} argument vectors: {usage} usage errors, {runs} parsed ({kept} of them still \
         running when killed), the rest help or version"
    );
    drop(held);
}

/// The fuzzer's own pieces: a vector that would run on every interface is confined to loopback.
#[test]
fn a_vector_that_runs_is_bound_to_loopback() {
    let args: Vec<OsString> = ["127.0.0.1", "80", "8080"].map(OsString::from).to_vec();
    let Parsed::Run(c) = parse(&confined(args)) else {
        panic!("the lab's form parses");
    };
    assert_eq!(c.bind, Some(Ipv4Addr::LOCALHOST.into()));
    let args: Vec<OsString> = ["h", "80"].map(OsString::from).to_vec();
    assert_eq!(confined(args.clone()), args);
}
