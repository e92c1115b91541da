//! Gradescope's `results.json`: one test per phase worth a point (skipped phases are worth
//! none), `status` per test, and text students see in `output`.

use serde::Serialize;

use super::model::RunReport;
use super::text::{
    error_text, message_and_details, point, points, summary_line, to_json, unrun_tests,
    verdict_message,
};

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
            // Gradescope has no ungraded test: an inconclusive one scores 0 and says why.
            let (score, max_score) = points(o.verdict);
            let mut output = verdict_message(o.verdict, &message);
            for d in details {
                output.push('\n');
                output.push_str(&d);
            }
            Test {
                name: test_name(o.name, Some(o.id)),
                number: (i + 1).to_string(),
                score,
                max_score,
                status: if point(o.verdict) == Some(false) {
                    "failed"
                } else {
                    "passed"
                },
                output,
            }
        })
        .collect();
    to_json(&Results {
        score: tests.iter().map(|t| t.score).sum(),
        max_score: tests.iter().map(|t| t.max_score).sum(),
        output: summary_line(run),
        tests,
    })
}

/// A run that never started: its tests each fail, worth a point, so students see 0 of the full
/// score (see [`unrun_tests`]). The error (a build log, say) is the top-level `output`, which
/// Gradescope shows above the tests.
pub fn render_error(run: &RunReport, error: &str) -> String {
    let tests: Vec<Test> = unrun_tests(run, error)
        .into_iter()
        .enumerate()
        .map(|(i, t)| Test {
            name: test_name(t.name, t.id),
            number: (i + 1).to_string(),
            score: 0.0,
            max_score: 1.0,
            status: "failed",
            output: t.message,
        })
        .collect();
    to_json(&Results {
        score: 0.0,
        max_score: tests.iter().map(|t| t.max_score).sum(),
        output: error_text(run, error),
        tests,
    })
}

/// `Single echo connection (echo/single)`: Gradescope shows only the name, so it carries the id.
fn test_name(name: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{name} ({id})"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn snapshot() {
        let v = fixtures::json(&fixtures::rendered(render));
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
        let v = fixtures::json(&render_error(&fixtures::run(&outcomes), "did not\nbuild"));
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
        let v = fixtures::json(&render_error(&fixtures::run(&[]), "missing"));
        assert_eq!(v["max_score"], 1.0);
        assert_eq!(v["tests"][0]["output"], "error: missing");
    }
}
