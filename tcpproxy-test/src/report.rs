//! Printing results for people: one line per phase, in suite order, with indented details under
//! a failure, and the closing count.

use std::io::Write;

use crate::phase::{Outcome, Verdict};

/// `NAME: passed`, or `NAME: failed: summary` followed by the hint and the detail lines.
pub fn write_outcome(out: &mut impl Write, o: &Outcome) -> std::io::Result<()> {
    match &o.failure {
        None => writeln!(out, "{}: {}", o.name, o.verdict),
        Some(f) => {
            writeln!(out, "{}: {}: {}", o.name, o.verdict, f.summary)?;
            if let Some(h) = &f.hint {
                writeln!(out, "    hint: {h}")?;
            }
            for d in &f.details {
                writeln!(out, "    {d}")?;
            }
            writeln!(
                out,
                "    phase {} took {:.1}s",
                o.id,
                o.elapsed.as_secs_f64()
            )
        }
    }
}

/// `10 passed, 0 failed`.
pub fn summary(outcomes: &[Outcome]) -> String {
    let passed = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Passed)
        .count();
    let failed = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Failed)
        .count();
    format!("{passed} passed, {failed} failed")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::phase::Failure;

    #[test]
    fn a_failure_prints_summary_hint_and_details_indented() {
        let o = Outcome {
            id: "shutdown/one-way",
            name: "One-way shutdown",
            verdict: Verdict::Failed,
            failure: Some(
                Failure::new("expected a 1-byte reply, but EOF")
                    .hint("closes both sides")
                    .detail("seed: 7"),
            ),
            elapsed: Duration::from_millis(1500),
        };
        let mut out = Vec::new();
        write_outcome(&mut out, &o).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "One-way shutdown: failed: expected a 1-byte reply, but EOF\n    hint: closes both sides\n    seed: 7\n    phase shutdown/one-way took 1.5s\n"
        );
        assert_eq!(summary(&[o]), "0 passed, 1 failed");
    }
}
