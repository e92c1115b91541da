//! JUnit XML, as CI systems and nextest-style viewers read it: one suite, a test case per phase
//! (classname = the phase id), failures with their message and details, skips as skipped.
//! Warnings pass, with the warning in the case's system-out. The suite is named after the proxy,
//! so the files of a class merged into one CI view stay apart.

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::model::RunReport;
use super::text::{first_line, message_and_details};
use crate::phase::Verdict;

pub fn render(run: &RunReport) -> String {
    let mut suite = suite_for(run);
    suite.set_time(
        run.outcomes
            .iter()
            .map(|o| o.elapsed)
            .max()
            .unwrap_or_default(),
    );
    for o in run.outcomes {
        let (message, details) = message_and_details(o);
        let status = match o.verdict {
            Verdict::Passed | Verdict::Warning => TestCaseStatus::success(),
            Verdict::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(message.as_str());
                s
            }
            Verdict::Failed | Verdict::Inconclusive => {
                let (kind, ty) = match o.verdict {
                    // An error, not a failure: the harness could not decide, and CI still shows
                    // red.
                    Verdict::Inconclusive => (NonSuccessKind::Error, "inconclusive"),
                    _ => (NonSuccessKind::Failure, "contract"),
                };
                let mut s = TestCaseStatus::non_success(kind);
                s.set_message(message.as_str());
                s.set_type(ty);
                s.set_description(details.join("\n"));
                s
            }
        };
        let mut case = TestCase::new(o.name, status);
        case.set_classname(o.id);
        case.set_time(o.elapsed);
        if o.verdict == Verdict::Warning {
            case.set_system_out(format!("warning: {message}"));
        }
        if let Some(tail) = &o.stderr_tail {
            case.set_system_err_lossy(tail.as_bytes());
        }
        suite.add_test_case(case);
    }
    finish(suite, run)
}

/// A run that never started: one case in error, so CI shows red rather than an empty pass.
pub fn render_error(run: &RunReport, error: &str) -> String {
    let mut suite = suite_for(run);
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
    // An attribute loses its newlines to XML normalisation: the first line is the message, the
    // whole text (a build log) goes in the element, where viewers keep its lines.
    status.set_message(first_line(error));
    status.set_description(error);
    status.set_type("submission");
    let mut case = TestCase::new("Submission", status);
    case.set_classname("submission");
    suite.add_test_case(case);
    finish(suite, run)
}

/// `tcpproxy-test: ./submissions/alice/tcpproxy`.
fn suite_name(run: &RunReport) -> String {
    format!("tcpproxy-test: {}", run.proxy)
}

fn suite_for(run: &RunReport) -> TestSuite {
    let mut suite = TestSuite::new(suite_name(run));
    suite.add_property(("proxy", run.proxy.as_str()));
    suite.add_property(("seed", run.seed.to_string().as_str()));
    suite.add_property((
        "stall_timeout_secs",
        run.stall_timeout.as_secs_f64().to_string().as_str(),
    ));
    suite
}

fn finish(suite: TestSuite, run: &RunReport) -> String {
    let mut report = Report::new(suite_name(run));
    report.add_test_suite(suite);
    report.to_string().expect("an in-memory report serialises")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn snapshot() {
        let got = fixtures::rendered(render);
        // The whole document, as a JUnit reader gets it.
        let want = include_str!("snapshots/junit.xml");
        assert_eq!(got, want, "\n--- got ---\n{got}");
    }
}
