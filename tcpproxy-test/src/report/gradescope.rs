//! Gradescope's `results.json`: one test per phase worth a point (skipped phases are worth
//! none), `status` per test, and text students see in `output`.

use serde::Serialize;

use super::{RunReport, message_and_details};
use crate::phase::Verdict;

#[derive(Serialize)]
struct Results {
    score: f64,
    max_score: f64,
    output: String,
    tests: Vec<Test>,
}

#[derive(Serialize)]
struct Test {
    name: String,
    number: String,
    score: f64,
    max_score: f64,
    /// Gradescope knows `passed` and `failed`; a warning is not a lost point.
    status: &'static str,
    output: String,
}

pub fn render(run: &RunReport) -> String {
    let tests: Vec<Test> = run
        .outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let (message, details) = message_and_details(o);
            let max_score = if o.verdict == Verdict::Skipped {
                0.0
            } else {
                1.0
            };
            // Gradescope has no ungraded test: an inconclusive one scores 0 and says why.
            let passed = !matches!(o.verdict, Verdict::Failed | Verdict::Inconclusive);
            let mut output = match o.verdict {
                Verdict::Passed => String::new(),
                Verdict::Failed => format!("failed: {message}"),
                Verdict::Warning => format!("warning: {message}"),
                Verdict::Skipped => format!("skipped: {message}"),
                Verdict::Inconclusive => {
                    format!("inconclusive (no grade; ask course staff to regrade): {message}")
                }
            };
            for d in details {
                output.push('\n');
                output.push_str(&d);
            }
            Test {
                name: format!("{} ({})", o.name, o.id),
                number: (i + 1).to_string(),
                score: if passed { max_score } else { 0.0 },
                max_score,
                status: if passed { "passed" } else { "failed" },
                output,
            }
        })
        .collect();
    let results = Results {
        score: tests.iter().map(|t| t.score).sum(),
        max_score: tests.iter().map(|t| t.max_score).sum(),
        output: format!(
            "tcpproxy-test: {} (stall timeout {}s, seed {})",
            super::summary(run.outcomes),
            run.stall_timeout.as_secs_f64(),
            run.seed
        ),
        tests,
    };
    let mut s = serde_json::to_string_pretty(&results).expect("plain data serialises");
    s.push('\n');
    s
}

/// A run that never started. The phases it would have run (a submission that did not build)
/// each become a failed test worth a point, so students see 0 of the full score; with none (a
/// submission missing), one failed test, so the score is 0 of 1, not 0 of 0. The error (a build
/// log, say) is the top-level `output`, which Gradescope shows above the tests.
pub fn render_error(run: &RunReport, error: &str) -> String {
    let mut tests: Vec<Test> = run
        .outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| Test {
            name: format!("{} ({})", o.name, o.id),
            number: (i + 1).to_string(),
            score: 0.0,
            max_score: 1.0,
            status: "failed",
            output: match message_and_details(o).0 {
                m if m.is_empty() => "not run".into(),
                m => format!("failed: {m}"),
            },
        })
        .collect();
    if tests.is_empty() {
        tests.push(Test {
            name: "Submission".into(),
            number: "1".into(),
            score: 0.0,
            max_score: 1.0,
            status: "failed",
            output: format!("error: {error}"),
        });
    }
    let results = Results {
        score: 0.0,
        max_score: tests.iter().map(|t| t.max_score).sum(),
        output: format!(
            "tcpproxy-test: error: {error}\n(stall timeout {}s, seed {})",
            run.stall_timeout.as_secs_f64(),
            run.seed
        ),
        tests,
    };
    let mut s = serde_json::to_string_pretty(&results).expect("plain data serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn snapshot() {
        let outcomes = fixtures::outcomes();
        let got = render(&fixtures::run(&outcomes));
        let v: serde_json::Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["score"], 2.0);
        assert_eq!(v["max_score"], 3.0);
        assert_eq!(
            v["output"],
            "tcpproxy-test: 1 passed, 1 failed, 1 warning, 1 skipped (stall timeout 10s, seed 7)"
        );
        let t = &v["tests"];
        assert_eq!(t[0]["name"], "Single echo connection (echo/single)");
        assert_eq!(t[0]["status"], "passed");
        assert_eq!(t[1]["status"], "failed");
        assert_eq!(t[1]["score"], 0.0);
        assert_eq!(
            t[1]["output"],
            "failed: expected a 1-byte reply before EOF, but the client saw EOF after 1.0s with nothing read\nhint: the proxy closed both sides on the first EOF\nseed: 7"
        );
        assert_eq!(t[2]["status"], "passed");
        assert_eq!(t[2]["score"], 1.0);
        assert_eq!(t[3]["max_score"], 0.0);
        assert_eq!(t.as_array().unwrap().len(), 4);
    }

    #[test]
    fn an_error_scores_zero_of_every_phase_it_names_or_of_one() {
        let outcomes = fixtures::outcomes();
        let v: serde_json::Value =
            serde_json::from_str(&render_error(&fixtures::run(&outcomes), "did not\nbuild"))
                .unwrap();
        assert_eq!(v["score"], 0.0);
        assert_eq!(v["max_score"], outcomes.len() as f64);
        assert!(
            v["output"]
                .as_str()
                .unwrap()
                .starts_with("tcpproxy-test: error: did not\nbuild\n"),
            "{v}"
        );
        let t = v["tests"].as_array().unwrap();
        assert_eq!(t.len(), outcomes.len());
        assert!(
            t.iter()
                .all(|t| t["status"] == "failed" && t["score"] == 0.0)
        );
        let v: serde_json::Value =
            serde_json::from_str(&render_error(&fixtures::run(&[]), "missing")).unwrap();
        assert_eq!(v["max_score"], 1.0);
        assert_eq!(v["tests"][0]["output"], "error: missing");
    }
}
