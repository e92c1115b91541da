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

/// `10 passed, 0 failed`, then `, 1 warning` and `, 1 skipped` when there are any.
pub fn summary(outcomes: &[Outcome]) -> String {
    let count = |v| outcomes.iter().filter(|o| o.verdict == v).count();
    let mut s = format!(
        "{} passed, {} failed",
        count(Verdict::Passed),
        count(Verdict::Failed)
    );
    match count(Verdict::Warning) {
        0 => {}
        1 => s.push_str(", 1 warning"),
        n => s.push_str(&format!(", {n} warnings")),
    }
    if count(Verdict::Skipped) > 0 {
        s.push_str(&format!(", {} skipped", count(Verdict::Skipped)));
    }
    s
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

    #[test]
    fn the_summary_counts_warnings_and_skips_only_when_present() {
        let mk = |verdict| Outcome {
            id: "x",
            name: "X",
            verdict,
            failure: None,
            elapsed: Duration::ZERO,
        };
        let all = [
            mk(Verdict::Passed),
            mk(Verdict::Passed),
            mk(Verdict::Failed),
            mk(Verdict::Warning),
            mk(Verdict::Skipped),
        ];
        assert_eq!(summary(&all), "2 passed, 1 failed, 1 warning, 1 skipped");
        assert_eq!(summary(&all[..2]), "2 passed, 0 failed");
    }
}
