//! Results for people and for machines: one model of a finished run, rendered as the human
//! lines, JSON, JUnit XML, TAP, a Gradescope or PrairieLearn `results.json`, or Autolab's
//! scores line.

mod autolab;
mod gradescope;
mod human;
mod json;
mod junit;
mod prairielearn;
mod tap;

use std::time::Duration;

pub use human::{summary, write_outcome, write_outcome_styled};

use crate::phase::{Outcome, Verdict};
use crate::sandbox::Network;

/// An output format for `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per phase, details indented under failures.
    Human,
    /// The versioned JSON model (see docs/grading.md).
    Json,
    /// JUnit XML, one test case per phase.
    Junit,
    /// Test Anything Protocol, version 13.
    Tap,
    /// Gradescope's results.json: a point per phase.
    Gradescope,
    /// PrairieLearn's external grader results.json: the share of phases earned; not gradable
    /// when a phase is inconclusive.
    Prairielearn,
    /// Autolab's scores: a JSON line, last, with 1 or 0 per phase id.
    Autolab,
}

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
    /// The network the proxy ran in (`crate::sandbox`); None when nothing ran.
    pub sandbox: Option<&'static Network>,
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

/// The whole report in `format`.
pub fn render(run: &RunReport, format: Format) -> String {
    match format {
        Format::Human => {
            let mut out = Vec::new();
            if let Some(network) = run.sandbox {
                let _ = human::write_sandbox(&mut out, network);
            }
            for o in run.outcomes {
                let _ = write_outcome(&mut out, o);
            }
            let mut s = String::from_utf8_lossy(&out).into_owned();
            s.push_str(&summary(run.outcomes));
            s.push('\n');
            s
        }
        Format::Json => json::render(run),
        Format::Junit => junit::render(run),
        Format::Tap => tap::render(run),
        Format::Gradescope => gradescope::render(run),
        Format::Prairielearn => prairielearn::render(run),
        Format::Autolab => autolab::render(run),
    }
}

/// The report of a run that never started (a submission missing or not executable), in
/// `format`: every format says it as an error, not as an empty run a reader could take for a
/// pass (JUnit an `<error>` case, TAP `Bail out!`, Gradescope a failed test, JSON `error`,
/// PrairieLearn a score of 0, Autolab a 0 for every phase).
pub fn render_error(run: &RunReport, error: &str, format: Format) -> String {
    match format {
        Format::Human => format!("error: {error}\n"),
        Format::Json => json::render_error(run, error),
        Format::Junit => junit::render_error(run, error),
        Format::Tap => format!("TAP version 13\n1..0\nBail out! {error}\n"),
        Format::Gradescope => gradescope::render_error(run, error),
        Format::Prairielearn => prairielearn::render_error(run, error),
        Format::Autolab => autolab::render_error(run, error),
    }
}

/// A phase's point under docs/grading.md's Scoring: `Some(true)` earned (passed, or a warning,
/// which `--strict` has already made a failure), `Some(false)` lost (failed, or inconclusive:
/// formats with no ungraded test score it 0 and say why), `None` out of the maximum (skipped).
fn point(verdict: Verdict) -> Option<bool> {
    match verdict {
        Verdict::Passed | Verdict::Warning => Some(true),
        Verdict::Failed | Verdict::Inconclusive => Some(false),
        Verdict::Skipped => None,
    }
}

/// What a grader reads when the self-check left phases inconclusive: which, why, and what to do.
/// None when every phase was judged.
fn inconclusive_note(run: &RunReport) -> Option<String> {
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
fn points(verdict: Verdict) -> (f64, f64) {
    match point(verdict) {
        Some(true) => (1.0, 1.0),
        Some(false) => (0.0, 1.0),
        None => (0.0, 0.0),
    }
}

/// A phase's verdict and message as the graders' tests show them: nothing when it passed, else
/// the verdict word first; an inconclusive one says that it is no grade and what to do.
fn verdict_message(verdict: Verdict, message: &str) -> String {
    match verdict {
        Verdict::Passed => String::new(),
        Verdict::Inconclusive => {
            format!("inconclusive (no grade; ask course staff to regrade): {message}")
        }
        v => format!("{v}: {message}"),
    }
}

/// The graders' top line: `tcpproxy-test: 1 passed, 0 failed (stall timeout 10s, seed 7)`.
fn summary_line(run: &RunReport) -> String {
    format!(
        "tcpproxy-test: {} (stall timeout {}s, seed {})",
        summary(run.outcomes),
        run.stall_timeout.as_secs_f64(),
        run.seed
    )
}

/// The graders' text for a run that never started: the whole error (a build log, say), then the
/// settings on a line of their own.
fn error_text(run: &RunReport, error: &str) -> String {
    format!(
        "tcpproxy-test: error: {error}\n(stall timeout {}s, seed {})",
        run.stall_timeout.as_secs_f64(),
        run.seed
    )
}

/// An error's first line, for the places that hold one line (a build log's opening).
fn first_line(error: &str) -> &str {
    error.lines().next().unwrap_or_default()
}

/// A failed test, worth a point, in a grader's report of a run that never started.
struct UnrunTest<'a> {
    name: &'a str,
    /// The phase's id; None for the stand-in test of a submission missing.
    id: Option<&'a str>,
    message: String,
}

/// The tests a grader scores for a run that never started: every phase it would have run (a
/// submission that did not build), with its failure or `not run`; with none (a submission
/// missing), one test named `Submission` carrying the error, so the score is 0 of 1, not 0 of 0.
fn unrun_tests<'a>(run: &RunReport<'a>, error: &str) -> Vec<UnrunTest<'a>> {
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
fn to_json(doc: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("plain data serialises");
    s.push('\n');
    s
}

/// The one-line message and the indented details of an outcome, as plain text.
fn message_and_details(o: &Outcome) -> (String, Vec<String>) {
    match &o.failure {
        None => (String::new(), vec![]),
        Some(f) => {
            let mut details = Vec::new();
            if let Some(h) = &f.hint {
                details.push(format!("hint: {h}"));
            }
            details.extend(f.details.iter().cloned());
            (f.summary.clone(), details)
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A fixed run for the format snapshots: one of each verdict.
    use super::*;
    use crate::phase::Failure;

    pub fn outcomes() -> Vec<Outcome> {
        let mk = |id, name, verdict, failure: Option<Failure>, ms| Outcome {
            id,
            name,
            verdict,
            failure,
            elapsed: Duration::from_millis(ms),
            proxy_exit: None,
            stderr_tail: None,
            closest: None,
        };
        let mut died = mk(
            "shutdown/one-way",
            "One-way shutdown",
            Verdict::Failed,
            Some(
                Failure::new("expected a 1-byte reply before EOF, but the client saw EOF after 1.0s with nothing read")
                    .hint("the proxy closed both sides on the first EOF")
                    .detail("seed: 7"),
            ),
            1900,
        );
        died.proxy_exit = Some("killed by signal SIGSEGV".into());
        died.stderr_tail = Some("segfault at <&\"'>\n".into());
        let mut single = mk(
            "echo/single",
            "Single echo connection",
            Verdict::Passed,
            None,
            12,
        );
        single.closest = Some(crate::deadline::Closest {
            what: "the echo".into(),
            waited: Duration::from_millis(4),
            limit: Duration::from_secs(10),
        });
        vec![
            single,
            died,
            mk(
                "resources/idle-cpu",
                "CPU while idle",
                Verdict::Warning,
                Some(Failure::warning(
                    "expected at most 10% of a core, but it used 99%",
                )),
                3100,
            ),
            mk(
                "resources/fd-leak",
                "Descriptor leaks",
                Verdict::Skipped,
                Some(Failure::skipped("needs Linux /proc")),
                0,
            ),
        ]
    }

    /// The outcomes above and one more, which the self-check could not decide.
    pub fn with_inconclusive() -> Vec<Outcome> {
        let mut all = outcomes();
        all.push(Outcome {
            id: "shutdown/flush",
            name: "Flush before shutdown",
            verdict: Verdict::Inconclusive,
            failure: Some(Failure {
                verdict: Verdict::Inconclusive,
                ..Failure::new("the reference proxy failed it too, each of the 2 times it ran beside this proxy: this host cannot tell")
                    .detail("this proxy, at first: connection 1 of 8: got 4977532 of 5000000 bytes")
            }),
            elapsed: Duration::from_millis(3800),
            proxy_exit: None,
            stderr_tail: None,
            closest: None,
        });
        all
    }

    /// The run of [`outcomes`] as `render` writes it: what each format's snapshot compares.
    pub fn rendered(render: fn(&RunReport) -> String) -> String {
        render(&run(&outcomes()))
    }

    /// A rendered JSON document, parsed: what the JSON formats' tests read fields of.
    #[track_caller]
    pub fn json(rendered: &str) -> serde_json::Value {
        serde_json::from_str(rendered).unwrap_or_else(|e| panic!("{e}:\n{rendered}"))
    }

    pub fn run(outcomes: &[Outcome]) -> RunReport<'_> {
        RunReport {
            proxy: "./tcpproxy".into(),
            reference: false,
            seed: 7,
            stall_timeout: Duration::from_secs(10),
            timeout_scale: 1.0,
            sandbox: None,
            outcomes,
        }
    }
}
