//! The exit statuses, one meaning each, the same for the suite, `fuzz` and `grade`.

pub const EXIT_PASSED: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_HARNESS: u8 = 3;
/// Not one phase's proxy listened on its port: one cause, printed once, not a grade per phase.
pub const EXIT_NEVER_STARTED: u8 = 4;
/// As a shell reports a process ended by SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;
