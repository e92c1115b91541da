//! The model every format renders: one finished run.

use std::time::Duration;

use crate::phase::{Outcome, Verdict};
use crate::sandbox::Entered;

/// A finished run of the suite against one proxy.
#[derive(Debug, Clone)]
pub struct RunReport<'a> {
    /// The proxy command as spawned (before the three positional arguments).
    pub proxy: String,
    /// True when the proxy was the bundled reference.
    pub reference: bool,
    pub seed: u64,
    pub stall_timeout: Duration,
    pub timeout_scale: f64,
    /// The network the proxy ran in and its profile (`crate::sandbox`); None when nothing ran.
    pub sandbox: Option<&'static Entered>,
    /// What the proxy ran as and within (`crate::confine`); None when nothing ran.
    pub confinement: Option<&'static crate::confine::Confinement>,
    pub outcomes: &'a [Outcome],
}

impl RunReport<'_> {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.verdict == verdict)
            .count()
    }
}
