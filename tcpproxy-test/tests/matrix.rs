//! Broken proxies fail exactly the phases they should, and pass the others.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{ALL_PHASES, assert_nothing_left, fixtures_bin, run_harness};

/// Each fixture and the phases it must fail; every other phase must pass.
const MATRIX: &[(&str, &[&str])] = &[
    ("close-on-first-eof", &["One-way shutdown"]),
    (
        "unbounded-buffer",
        &[
            "Timeout of lazy forward client",
            "Timeout of lazy reverse client",
        ],
    ),
    (
        "blocking-writes",
        &[
            "Mix of blocked and normal",
            "Timeout of lazy forward client",
            "Timeout of lazy reverse client",
        ],
    ),
];

/// The stall timeout the matrix gives every fixture, short to keep the run quick.
const STALL: &str = "2";

fn check(fixture: &str) {
    let (_, expected) = MATRIX
        .iter()
        .find(|(f, _)| *f == fixture)
        .expect("in the matrix");
    let bin = fixtures_bin();
    let run = run_harness(
        &[
            "--stall-timeout",
            STALL,
            "--",
            bin.to_str().unwrap(),
            fixture,
            "--stall-timeout",
            STALL,
        ],
        Duration::from_secs(240),
    );
    let failed: BTreeSet<String> = run.failed().into_iter().collect();
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(run.verdicts().len(), ALL_PHASES.len(), "{}", run.dump());
    let missed: Vec<_> = expected.difference(&failed).collect();
    let collateral: Vec<_> = failed.difference(&expected).collect();
    assert!(
        missed.is_empty() && collateral.is_empty(),
        "fixture {fixture}: phases that should have failed but passed: {missed:?}; phases that failed but should not: {collateral:?}\n{}",
        run.dump()
    );
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert_nothing_left(&run);
}

#[test]
fn close_on_first_eof_fails_one_way_shutdown_only() {
    check("close-on-first-eof");
}

#[test]
fn unbounded_buffer_fails_the_lazy_phases_only() {
    check("unbounded-buffer");
}

#[test]
fn blocking_writes_fail_mix_and_lazy_phases_only() {
    check("blocking-writes");
}
