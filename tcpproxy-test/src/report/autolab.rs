//! Autolab's scores: its autograder reads the last line of the output as JSON,
//! `{"scores": {"<problem>": <points>, ...}}`, so the report ends with that line, one problem per
//! phase id worth 1 when it earned its point (docs/grading.md, Scoring) and 0 when not; skipped
//! phases are left out. Autolab has no ungraded problem: an inconclusive phase scores 0, and a
//! line before the scores says which phases were inconclusive and to ask for a regrade.

use std::fmt::Write;

use super::model::RunReport;
use super::text::{first_line, inconclusive_note, point};

pub fn render(run: &RunReport) -> String {
    let mut s = String::new();
    if let Some(note) = inconclusive_note(run) {
        let _ = writeln!(s, "tcpproxy-test: {note}");
    }
    s.push_str(&scores_line(run));
    s
}

/// A run that never started: one line with the error's first line (the human lines, or the
/// build log, went to stdout already when the report goes to `--output`), then every phase it
/// would have run scored 0. A submission missing scores no phase at all.
pub fn render_error(run: &RunReport, error: &str) -> String {
    let mut s = format!("tcpproxy-test: error: {}\n", first_line(error));
    s.push_str(&scores_line(run));
    s
}

/// `{"scores": {"echo/single": 1, ...}}` and a newline, phases in suite order (a serde_json map
/// would sort them).
fn scores_line(run: &RunReport) -> String {
    let scores: Vec<String> = run
        .outcomes
        .iter()
        .filter_map(|o| {
            let earned = point(o.verdict)?;
            let id = serde_json::to_string(o.id).expect("a string serialises");
            Some(format!("{id}: {}", u8::from(earned)))
        })
        .collect();
    format!("{{\"scores\": {{{}}}}}\n", scores.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn snapshot() {
        let outcomes = fixtures::outcomes();
        assert_eq!(
            render(&fixtures::run(&outcomes)),
            "{\"scores\": {\"echo/single\": 1, \"shutdown/one-way\": 0, \"resources/idle-cpu\": 1}}\n"
        );
    }

    #[test]
    fn an_inconclusive_phase_scores_zero_after_a_line_asking_for_a_regrade() {
        let outcomes = fixtures::with_inconclusive();
        let got = render(&fixtures::run(&outcomes));
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines.len(), 2, "{got}");
        assert_eq!(
            lines[0],
            "tcpproxy-test: inconclusive: shutdown/flush: the reference proxy failed it too on this grading host, so the host could not vouch for the result; this is no grade, ask course staff to regrade"
        );
        let v = fixtures::json(lines[1]);
        assert_eq!(v["scores"]["shutdown/flush"], 0, "{v}");
        assert_eq!(v["scores"]["echo/single"], 1, "{v}");
        assert_eq!(v["scores"].as_object().unwrap().len(), 4, "{v}");
    }

    #[test]
    fn an_error_scores_zero_in_every_phase_on_the_last_line() {
        let outcomes: Vec<_> = fixtures::outcomes()
            .into_iter()
            .map(|mut o| {
                o.verdict = crate::phase::Verdict::Failed;
                o
            })
            .collect();
        let got = render_error(
            &fixtures::run(&outcomes),
            "the submission did not build; its build log (build.log):\nerror: expected ';'",
        );
        assert_eq!(
            got,
            "tcpproxy-test: error: the submission did not build; its build log (build.log):\n{\"scores\": {\"echo/single\": 0, \"shutdown/one-way\": 0, \"resources/idle-cpu\": 0, \"resources/fd-leak\": 0}}\n"
        );
        assert_eq!(
            render_error(&fixtures::run(&[]), "missing"),
            "tcpproxy-test: error: missing\n{\"scores\": {}}\n"
        );
    }
}
