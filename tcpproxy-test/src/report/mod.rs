//! Results for people and for machines: one model of a finished run, rendered as the human
//! lines, JSON, JUnit XML, TAP, a Gradescope or PrairieLearn `results.json`, Autolab's
//! scores line, or a self-contained HTML page with each phase's timeline.

mod autolab;
mod gradescope;
mod html;
mod human;
mod json;
mod junit;
mod model;
mod prairielearn;
mod svg;
mod tap;
mod text;

pub use html::{FuzzRun, document, fuzz_page};
pub use human::{summary, write_outcome, write_outcome_styled};
pub use model::RunReport;

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
    /// One self-contained HTML page (no script, nothing fetched): verdicts, and per phase
    /// expected against observed, hint, details, stderr tail and a timeline of its connections.
    Html,
}

/// The whole report in `format`.
pub fn render(run: &RunReport, format: Format) -> String {
    match format {
        Format::Human => human::render(run),
        Format::Json => json::render(run),
        Format::Junit => junit::render(run),
        Format::Tap => tap::render(run),
        Format::Gradescope => gradescope::render(run),
        Format::Prairielearn => prairielearn::render(run),
        Format::Autolab => autolab::render(run),
        Format::Html => html::render(run),
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
        Format::Html => html::render_error(run, error),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A fixed run for the format snapshots: one of each verdict.
    use std::time::Duration;

    use super::*;
    use crate::phase::{Failure, Outcome, Verdict};

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
            timeline: Default::default(),
            notes: vec![],
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
            timeline: Default::default(),
            notes: vec![],
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
            confinement: None,
            outcomes,
        }
    }
}
