//! The exit statuses, one meaning each, the same for the suite, `fuzz` and `grade`.

/// Every phase passed; every case kept the contract; every submission has its row.
pub const EXIT_PASSED: u8 = 0;
/// A verdict against the proxy: a phase failed, or the fuzzer found a failing schedule.
pub const EXIT_FAILED: u8 = 1;
/// The command line was wrong (one line on stderr says how); nothing ran.
pub const EXIT_USAGE: u8 = 2;
/// No verdict: the harness could not run, or the host could not vouch for a failure.
pub const EXIT_HARNESS: u8 = 3;
/// Not one phase's proxy listened on its port: one cause, printed once, not a grade per phase.
pub const EXIT_NEVER_STARTED: u8 = 4;
/// As a shell reports a process ended by SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;
