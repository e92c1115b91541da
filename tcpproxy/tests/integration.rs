//! Integration tests for `tcpproxy`: the binary runs as a child process, over 127.0.0.1 only.

/// Spawning the proxy, peers, deadlines and byte checks: the one place that does so.
mod support;

/// The command line: usage and start-up errors, help, version, forwarding, signals.
mod cli;
/// Random argument vectors under proptest: an exit code and a message, never a panic or a hang.
mod cli_fuzz;
/// The proxy contract: many pairs, blocked peers, half-close, stall and write-error aborts.
mod contract;
/// Out of descriptors by one or by none: the client closed, or accept paused without a spin.
mod exhaustion;
/// Faults survived: resets at accept and mid-transfer, descriptor exhaustion, SIGTERM in flight.
mod faults;
/// An IPv6 destination: DEST_HOST `::1`, reached over IPv6.
mod ipv6;
/// The operator's log: the listening line and each pair's close line.
mod log;
/// A peer's reset passed on as a reset, in both directions.
mod resets;
/// Random write, read and shutdown schedules under proptest.
mod schedules;
/// A request in two small writes, answered without Nagle's delay (TCP_NODELAY).
mod small_writes;
/// Long runs, ignored by default (`ci/stress`): 5,000 pairs, 100,000 connections, a loss check.
mod stress;
