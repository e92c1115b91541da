//! What the machine formats share: a phase's point under docs/grading.md's Scoring, and a
//! run's and an outcome's text as they show it.

use super::human::summary;
use super::model::RunReport;
use crate::phase::{Outcome, Verdict};

/// A phase's point under docs/grading.md's Scoring: `Some(true)` earned (passed, or a warning,
/// which `--strict` has already made a failure), `Some(false)` lost (failed, or inconclusive:
/// formats with no ungraded test score it 0 and say why), `None` out of the maximum (skipped).
pub(super) fn point(verdict: Verdict) -> Option<bool> {
    match verdict {
        Verdict::Passed | Verdict::Warning => Some(true),
        Verdict::Failed | Verdict::Inconclusive => Some(false),
        Verdict::Skipped => None,
    }
}

/// What a grader reads when the self-check left phases inconclusive: which, why, and what to do.
/// None when every phase was judged.
pub(super) fn inconclusive_note(run: &RunReport) -> Option<String> {
    let ids: Vec<&str> = run
        .outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Inconclusive)
        .map(|o| o.id)
        .collect();
    if ids.is_empty() {
        return None;
    }
    Some(format!(
        "inconclusive: {}: the reference proxy failed {} too on this grading host, so the host could not vouch for the result; this is no grade, ask course staff to regrade",
        ids.join(", "),
        if ids.len() == 1 { "it" } else { "them" }
    ))
}

/// A phase's points under Scoring, as `(earned, out of)`: 1 of 1, 0 of 1, or 0 of 0 (skipped).
pub(super) fn points(verdict: Verdict) -> (f64, f64) {
    match point(verdict) {
        Some(true) => (1.0, 1.0),
        Some(false) => (0.0, 1.0),
        None => (0.0, 0.0),
    }
}

/// A phase's verdict and message as the graders' tests show them: nothing when it passed, else
/// the verdict word first; an inconclusive one says that it is no grade and what to do.
pub(super) fn verdict_message(verdict: Verdict, message: &str) -> String {
    match verdict {
        Verdict::Passed => String::new(),
        Verdict::Inconclusive => {
            format!("inconclusive (no grade; ask course staff to regrade): {message}")
        }
        v => format!("{v}: {message}"),
    }
}

/// The graders' top line: `tcpproxy-test: 1 passed, 0 failed (stall timeout 10s, seed 7)`.
pub(super) fn summary_line(run: &RunReport) -> String {
    format!(
        "tcpproxy-test: {} (stall timeout {}s, seed {})",
        summary(run.outcomes),
        run.stall_timeout.as_secs_f64(),
        run.seed
    )
}

/// The graders' text for a run that never started: the whole error (a build log, say), then the
/// settings on a line of their own.
pub(super) fn error_text(run: &RunReport, error: &str) -> String {
    format!(
        "tcpproxy-test: error: {error}\n(stall timeout {}s, seed {})",
        run.stall_timeout.as_secs_f64(),
        run.seed
    )
}

/// An error's first line, for the places that hold one line (a build log's opening).
pub(super) fn first_line(error: &str) -> &str {
    error.lines().next().unwrap_or_default()
}

/// A failed test, worth a point, in a grader's report of a run that never started.
pub(super) struct UnrunTest<'a> {
    pub(super) name: &'a str,
    /// The phase's id; None for the stand-in test of a submission missing.
    pub(super) id: Option<&'a str>,
    pub(super) message: String,
}

/// The tests a grader scores for a run that never started: every phase it would have run (a
/// submission that did not build), with its failure or `not run`; with none (a submission
/// missing), one test named `Submission` carrying the error, so the score is 0 of 1, not 0 of 0.
pub(super) fn unrun_tests<'a>(run: &RunReport<'a>, error: &str) -> Vec<UnrunTest<'a>> {
    if run.outcomes.is_empty() {
        return vec![UnrunTest {
            name: "Submission",
            id: None,
            message: format!("error: {error}"),
        }];
    }
    run.outcomes
        .iter()
        .map(|o| UnrunTest {
            name: o.name,
            id: Some(o.id),
            message: match message_and_details(o).0 {
                m if m.is_empty() => "not run".into(),
                m => format!("failed: {m}"),
            },
        })
        .collect()
}

/// A JSON document, pretty-printed, and the newline a file ends with.
pub(super) fn to_json(doc: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("plain data serialises");
    s.push('\n');
    s
}

/// The one-line message and the indented details of an outcome, as plain text.
pub(super) fn message_and_details(o: &Outcome) -> (String, Vec<String>) {
    match &o.failure {
        None => (String::new(), o.notes.clone()),
        Some(f) => {
            let mut details = Vec::new();
            if let Some(h) = &f.hint {
                details.push(format!("hint: {h}"));
            }
            details.extend(f.details.iter().cloned());
            details.extend(o.notes.iter().filter(|n| !f.details.contains(n)).cloned());
            (f.summary.clone(), details)
        }
    }
}
