//! The lab's contract in the numbers the harness shares: what a proxy is held to when nothing
//! on the command line says otherwise.

use std::time::Duration;

/// The stall timeout the proxy under test was given, when nothing says otherwise (the lab's,
/// and the reference proxy's default).
pub const STALL_TIMEOUT: Duration = tcpproxy::cli::STALL_TIMEOUT;
