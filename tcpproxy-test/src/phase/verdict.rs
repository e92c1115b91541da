//! A phase's verdict, and why it did not simply pass.

use crate::deadline::Expired;

/// A phase's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    /// Not a contract violation, but worth knowing (a proxy that burns CPU while idle).
    Warning,
    /// The phase cannot run here (no /proc, say); the line says why.
    Skipped,
    /// The proxy failed it, and so did the reference proxy run beside it each time it was run
    /// again (`--self-check`): the host, not the proxy, may be at fault, so no grade is given.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Warning => "warning",
            Verdict::Skipped => "skipped",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// Why a phase did not simply pass: one line (what was expected, what happened), detail lines,
/// and a hint naming the likely bug when the evidence fits a known pattern. Most are failures;
/// [`Failure::warning`] and [`Failure::skipped`] make the milder verdicts.
#[derive(Debug, Clone)]
pub struct Failure {
    pub verdict: Verdict,
    pub summary: String,
    pub details: Vec<String>,
    pub hint: Option<String>,
    /// The harness itself could not go on (a port it held was lost): no verdict on the proxy.
    /// [`run`](super::run) makes it the run's harness error.
    pub harness: bool,
}

impl Failure {
    pub fn new(summary: impl Into<String>) -> Failure {
        Failure {
            verdict: Verdict::Failed,
            summary: summary.into(),
            details: vec![],
            hint: None,
            harness: false,
        }
    }

    /// The harness's own fault: the run ends with a harness error, never a failed phase.
    pub fn harness(summary: impl Into<String>) -> Failure {
        Failure {
            harness: true,
            ..Failure::new(summary)
        }
    }

    /// Reported, but only `--strict` makes it fail the run.
    pub fn warning(summary: impl Into<String>) -> Failure {
        Failure {
            verdict: Verdict::Warning,
            ..Failure::new(summary)
        }
    }

    /// The host kept the harness from judging the phase (it was too late for its own schedule
    /// every time it tried): no grade either way.
    pub fn inconclusive(why: impl Into<String>) -> Failure {
        Failure {
            verdict: Verdict::Inconclusive,
            ..Failure::new(why)
        }
    }

    /// The phase could not run here; `why` says what is missing.
    pub fn skipped(why: impl Into<String>) -> Failure {
        Failure {
            verdict: Verdict::Skipped,
            ..Failure::new(why)
        }
    }

    pub fn detail(mut self, line: impl Into<String>) -> Failure {
        self.details.push(line.into());
        self
    }

    pub fn details(mut self, lines: impl IntoIterator<Item = String>) -> Failure {
        self.details.extend(lines);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }
}

impl From<Expired> for Failure {
    fn from(e: Expired) -> Failure {
        Failure::new(format!(
            "expected {} within {:.1}s, but it did not happen",
            e.what,
            e.waited.as_secs_f64()
        ))
    }
}

pub type PhaseResult = Result<(), Failure>;
