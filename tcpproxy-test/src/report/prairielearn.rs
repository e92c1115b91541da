//! PrairieLearn's external grader `results.json`: `score` is the share of points earned (a
//! point per phase, skipped phases out of the maximum, as Gradescope's), `output` the human
//! report, and one test per phase with its `points`, `max_points`, `message` and details. A phase
//! the self-check could not decide makes the whole result `gradable: false`: PrairieLearn then
//! records no score and charges no attempt, which is what an inconclusive run deserves.

use serde::Serialize;

use super::model::RunReport;
use super::text::{
    error_text, first_line, inconclusive_note, message_and_details, points, summary_line, to_json,
    unrun_tests, verdict_message,
};

#[derive(Serialize)]
struct Results {
    gradable: bool,
    /// 0 to 1; PrairieLearn ignores it when `gradable` is false.
    score: f64,
    message: String,
    output: String,
    /// Shown to the student when the result is not gradable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    format_errors: Vec<String>,
    tests: Vec<Test>,
}

#[derive(Serialize)]
struct Test {
    name: String,
    description: String,
    points: f64,
    max_points: f64,
    message: String,
    output: String,
}

pub fn render(run: &RunReport) -> String {
    let tests: Vec<Test> = run
        .outcomes
        .iter()
        .map(|o| {
            let (message, details) = message_and_details(o);
            let (points, max_points) = points(o.verdict);
            Test {
                name: o.name.to_string(),
                description: o.id.to_string(),
                points,
                max_points,
                message: verdict_message(o.verdict, &message),
                output: details.join("\n"),
            }
        })
        .collect();
    let earned: f64 = tests.iter().map(|t| t.points).sum();
    let max: f64 = tests.iter().map(|t| t.max_points).sum();
    let summary = summary_line(run);
    // Nothing judged (every phase skipped on a host without /proc) is no grade either.
    let not_gradable = inconclusive_note(run).or_else(|| {
        (max == 0.0).then(|| {
            "no phase could be judged on this grading host; ask course staff to regrade".to_string()
        })
    });
    let results = match not_gradable {
        None => Results {
            gradable: true,
            score: earned / max,
            message: summary,
            output: super::human::render(run),
            format_errors: vec![],
            tests,
        },
        Some(why) => {
            let why = format!("tcpproxy-test: {why}");
            Results {
                gradable: false,
                score: 0.0,
                message: format!("{why}\n{summary}"),
                output: super::human::render(run),
                format_errors: vec![why],
                tests,
            }
        }
    };
    to_json(&results)
}

/// A run that never started (a submission that did not build): gradable, scoring 0, with the
/// error (the build log) as `output` and its tests each failed, worth a point (see
/// [`unrun_tests`]).
pub fn render_error(run: &RunReport, error: &str) -> String {
    let tests: Vec<Test> = unrun_tests(run, error)
        .into_iter()
        .map(|t| Test {
            name: t.name.to_string(),
            description: t.id.unwrap_or_default().to_string(),
            points: 0.0,
            max_points: 1.0,
            message: t.message,
            output: String::new(),
        })
        .collect();
    to_json(&Results {
        gradable: true,
        score: 0.0,
        message: format!("tcpproxy-test: error: {}", first_line(error)),
        output: error_text(run, error),
        format_errors: vec![],
        tests,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;
    use crate::phase::Verdict;

    #[track_caller]
    fn assert_starts_with(value: &serde_json::Value, prefix: &str) {
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("not a string: {value}"));
        assert!(
            text.starts_with(prefix),
            "{text:?}\ndoes not start with {prefix:?}"
        );
    }

    #[test]
    fn snapshot() {
        let v = fixtures::json(&fixtures::rendered(render));
        assert_eq!(v["gradable"], true);
        // Passed and warning earn their points; the skipped phase is out of the maximum.
        assert_eq!(v["score"], 2.0 / 3.0);
        assert_eq!(
            v["message"],
            "tcpproxy-test: 1 passed, 1 failed, 1 warning, 1 skipped (stall timeout 10s, seed 7)"
        );
        assert!(v.get("format_errors").is_none(), "{v:#}");
        let output = v["output"].as_str().unwrap();
        assert!(
            output.starts_with("Single echo connection: passed\nOne-way shutdown: failed: "),
            "{output}"
        );
        assert!(
            output.ends_with("\n1 passed, 1 failed, 1 warning, 1 skipped\n"),
            "{output}"
        );
        let t = v["tests"].as_array().unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[0]["name"], "Single echo connection");
        assert_eq!(t[0]["description"], "echo/single");
        assert_eq!(t[0]["points"], 1.0);
        assert_eq!(t[0]["max_points"], 1.0);
        assert_eq!(t[0]["message"], "");
        assert_eq!(t[1]["points"], 0.0);
        assert_eq!(t[1]["max_points"], 1.0);
        assert_eq!(
            t[1]["message"],
            "failed: expected a 1-byte reply before EOF, but the client saw EOF after 1.0s with nothing read"
        );
        assert_eq!(
            t[1]["output"],
            "hint: the proxy closed both sides on the first EOF\nseed: 7"
        );
        assert_eq!(t[2]["points"], 1.0);
        assert_eq!(
            t[2]["message"],
            "warning: expected at most 10% of a core, but it used 99%"
        );
        assert_eq!(t[3]["points"], 0.0);
        assert_eq!(t[3]["max_points"], 0.0);
        assert_eq!(t[3]["message"], "skipped: needs Linux /proc");
    }

    #[test]
    fn an_inconclusive_phase_makes_the_result_not_gradable() {
        let outcomes = fixtures::with_inconclusive();
        let v = fixtures::json(&render(&fixtures::run(&outcomes)));
        assert_eq!(v["gradable"], false, "{v:#}");
        assert_eq!(v["score"], 0.0);
        let why = "tcpproxy-test: inconclusive: shutdown/flush: the reference proxy failed it too on this grading host, so the host could not vouch for the result; this is no grade, ask course staff to regrade";
        assert_eq!(v["format_errors"][0], why);
        assert_starts_with(&v["message"], &format!("{why}\n"));
        let t = &v["tests"][4];
        assert_eq!(t["description"], "shutdown/flush");
        assert_eq!(t["points"], 0.0);
        assert_eq!(t["max_points"], 1.0);
        assert_starts_with(
            &t["message"],
            "inconclusive (no grade; ask course staff to regrade): the reference proxy failed it too",
        );
    }

    #[test]
    fn nothing_judged_is_not_gradable() {
        let outcomes: Vec<_> = fixtures::outcomes()
            .into_iter()
            .filter(|o| o.verdict == Verdict::Skipped)
            .collect();
        let v = fixtures::json(&render(&fixtures::run(&outcomes)));
        assert_eq!(v["gradable"], false, "{v:#}");
        assert!(v["score"].as_f64().unwrap().is_finite());
    }

    #[test]
    fn an_error_is_gradable_and_scores_zero_with_the_log_as_output() {
        let outcomes: Vec<_> = fixtures::outcomes()
            .into_iter()
            .map(|mut o| {
                o.verdict = Verdict::Failed;
                o.failure = Some(crate::phase::Failure::new(
                    "not run: the submission did not build",
                ));
                o
            })
            .collect();
        let log = "the submission did not build; its build log (build.log):\ntcpproxy.c:12:5: error: expected ';'";
        let v = fixtures::json(&render_error(&fixtures::run(&outcomes), log));
        assert_eq!(v["gradable"], true);
        assert_eq!(v["score"], 0.0);
        assert_eq!(
            v["message"],
            "tcpproxy-test: error: the submission did not build; its build log (build.log):"
        );
        assert_starts_with(&v["output"], &format!("tcpproxy-test: error: {log}\n"));
        let t = v["tests"].as_array().unwrap();
        assert_eq!(t.len(), outcomes.len());
        assert!(
            t.iter().all(|t| t["points"] == 0.0
                && t["max_points"] == 1.0
                && t["message"] == "failed: not run: the submission did not build"),
            "{v:#}"
        );
        let v = fixtures::json(&render_error(&fixtures::run(&[]), "missing"));
        assert_eq!(v["tests"][0]["max_points"], 1.0);
        assert_eq!(v["tests"][0]["message"], "error: missing");
    }
}
