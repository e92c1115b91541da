//! Lazy peers: one end writes as fast as it can and the other never reads. The proxy must abort
//! the pair once its buffered data has made no progress for the stall timeout: not much later
//! (it would hold resources for a dead peer) and not much earlier (it would abort slow peers).
//! Both are flows ([`super::flows`]) judged by the oracle's abort window.

use std::time::Duration;

use super::flows::{self, Flows};
use super::params::*;
use crate::deadline::Timing;

/// How long after the last progress the harness keeps watching a pair it has already failed,
/// to tell a proxy with no stall timer from one whose timer is set differently from what the
/// harness was told: twice the stall timeout, and at least the usual default (a proxy left at
/// its default of 10 s while the harness was told 2), plus slack.
fn diagnosis_until(stall: Duration, slack: Duration) -> Duration {
    (stall * 2).max(crate::contract::STALL_TIMEOUT) + slack
}

/// The abort window: no earlier than `LAZY_EARLIEST` of the stall timeout after connecting, no
/// later than the stall timeout plus slack after the writer's last progress.
fn expect(t: &Timing) -> String {
    let slack = t.scaled(LAZY_SLACK);
    format!(
        "expect aborted: stall-timeout {}ms, earliest {}ms, slack {}ms, watch {}ms",
        flows::ms(t.stall),
        flows::ms(t.stall.mul_f64(LAZY_EARLIEST)),
        flows::ms(slack),
        flows::ms(diagnosis_until(t.stall, slack))
    )
}

/// The destination never reads (small receive buffer, by the phase's row, so the stall is
/// real); the client writes.
pub const FORWARD: Flows = Flows {
    cases: |t| {
        flows::cases(&format!(
            "{}
             connection
               client->server: bulk {LAZY_WRITE_LIMIT}; shutdown never; reader never
               server->client: no-writes; shutdown never; reader eager",
            expect(t)
        ))
    },
    hints: &[],
};

/// The mirror: the client never reads (small receive buffer); the destination server writes.
pub const REVERSE: Flows = Flows {
    cases: |t| {
        flows::cases(&format!(
            "{}
             connection client-rcvbuf=small
               client->server: no-writes; shutdown never; reader eager
               server->client: bulk {LAZY_WRITE_LIMIT}; shutdown never; reader never",
            expect(t)
        ))
    },
    hints: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diagnosis_covers_the_default_timeout_and_twice_the_one_told() {
        let slack = Duration::from_secs(5);
        // Told 2 s: long enough to see a proxy left at its default 10 s abort.
        assert_eq!(
            diagnosis_until(Duration::from_secs(2), slack),
            Duration::from_secs(15)
        );
        assert_eq!(
            diagnosis_until(Duration::from_secs(30), slack),
            Duration::from_secs(65)
        );
    }
}
