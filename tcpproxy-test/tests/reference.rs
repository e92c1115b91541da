//! The bundled reference proxy passes every phase, with exactly the lines graders expect.

use std::time::Duration;

use crate::support::{ALL_PHASES, HeavySlot, assert_nothing_left, run_harness};

fn expected_output() -> String {
    let mut s: String = ALL_PHASES
        .iter()
        .map(|p| format!("{p}: passed\n"))
        .collect();
    s.push_str(&format!("{} passed, 0 failed\n", ALL_PHASES.len()));
    s
}

#[test]
fn reference_passes_every_phase_with_a_short_stall_timeout() {
    let _slot = HeavySlot::acquire();
    let run = run_harness(&["--stall-timeout", "2"], Duration::from_secs(120));
    assert_eq!(run.stdout, expected_output(), "{}", run.dump());
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_nothing_left(&run);
}

#[test]
fn reference_passes_every_phase_at_the_default_stall_timeout() {
    let _slot = HeavySlot::acquire();
    let run = run_harness(&[], Duration::from_secs(180));
    assert_eq!(run.stdout, expected_output(), "{}", run.dump());
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_nothing_left(&run);
}

/// The reference spawned as a user would name it, PROXY_ARGS before the three positionals,
/// with `extra` proxy arguments.
fn assert_named_reference_passes(extra: &[&str]) {
    let _slot = HeavySlot::acquire();
    let bin = crate::support::harness_bin();
    let mut args = vec![
        "--stall-timeout",
        "1.5",
        "--",
        bin.to_str().unwrap(),
        "__reference-proxy",
        "--stall-timeout",
        "1.5",
    ];
    args.extend_from_slice(extra);
    let run = run_harness(&args, Duration::from_secs(120));
    assert_eq!(run.stdout, expected_output(), "{}", run.dump());
    assert_nothing_left(&run);
}

#[test]
fn reference_binary_passes_when_named_as_the_proxy() {
    assert_named_reference_passes(&[]);
}

#[test]
fn reference_passes_every_phase_without_splice() {
    // The copying path (--no-splice) answers to the same contract as the default splice path.
    assert_named_reference_passes(&["--no-splice"]);
}
