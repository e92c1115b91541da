//! The JSON model: versioned, documented in docs/grading.md, stable for scripts to read.

use serde::Serialize;

use super::model::RunReport;
use super::text::{message_and_details, to_json};
use crate::phase::Verdict;

/// Names the document, so a reader can tell it from other JSON.
pub const JSON_FORMAT: &str = "tcpproxy-test-report";
/// Bumped on any change a reader could notice (a field removed or its meaning changed); new
/// fields may appear without a bump.
pub const JSON_VERSION: u32 = 1;

#[derive(Serialize)]
struct Document<'a> {
    format: &'static str,
    version: u32,
    proxy: &'a str,
    reference: bool,
    seed: u64,
    /// The seed again as a string: readers that hold numbers as doubles (jq 1.6, JavaScript)
    /// round a 64-bit seed, and a replay with the rounded one sends other bytes.
    seed_text: String,
    stall_timeout_secs: f64,
    timeout_scale: f64,
    /// `network namespace` (the run's own: only loopback), or `host network: <why>`; absent
    /// when nothing ran (`--build-failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<String>,
    /// `--network`'s profile (`lossy`, `slow`, `delay`); absent when the link was ideal, so a
    /// reader of an unimpaired run sees the fields it always has.
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<&'static str>,
    /// What each proxy ran as and within: its user, and each limit with how it held
    /// (`crate::confine`); absent when nothing ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    confinement: Option<String>,
    summary: Summary,
    phases: Vec<Phase<'a>>,
    /// Why the run never started (only then present; `phases` is then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Serialize)]
struct Summary {
    passed: usize,
    failed: usize,
    warning: usize,
    skipped: usize,
    /// Only with `--self-check`, and only when there are any: readers of the first model see
    /// the same four counts as before.
    #[serde(skip_serializing_if = "is_zero")]
    inconclusive: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Phase<'a> {
    id: &'a str,
    name: &'a str,
    /// `passed`, `failed`, `warning` or `skipped`.
    verdict: String,
    duration_secs: f64,
    /// Empty when passed.
    message: String,
    details: Vec<String>,
    proxy_exit: Option<&'a str>,
    stderr_tail: Option<&'a str>,
    /// The phase's wait that used the largest share of its deadline.
    closest_wait: Option<ClosestWait<'a>>,
    /// What happened, in time order (`crate::timeline`); absent when nothing was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<TimelineJson<'a>>,
}

#[derive(Serialize)]
struct TimelineJson<'a> {
    /// The events' own version (`timeline::VERSION`).
    version: u32,
    events: &'a [crate::timeline::Event],
    /// Events left out once the phase had `timeline::MAX_EVENTS`.
    dropped: usize,
}

#[derive(Serialize)]
struct ClosestWait<'a> {
    what: &'a str,
    waited_secs: f64,
    limit_secs: f64,
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn render(run: &RunReport) -> String {
    render_document(run, None)
}

pub fn render_error(run: &RunReport, error: &str) -> String {
    render_document(run, Some(error))
}

fn render_document(run: &RunReport, error: Option<&str>) -> String {
    to_json(&Document {
        format: JSON_FORMAT,
        version: JSON_VERSION,
        proxy: &run.proxy,
        reference: run.reference,
        seed: run.seed,
        seed_text: run.seed.to_string(),
        stall_timeout_secs: run.stall_timeout.as_secs_f64(),
        timeout_scale: run.timeout_scale,
        sandbox: run.sandbox.map(|e| e.network.to_string()),
        confinement: run.confinement.map(ToString::to_string),
        network: run
            .sandbox
            .map(|e| e.profile)
            .filter(|p| p.is_impaired())
            .map(|p| p.name()),
        summary: Summary {
            passed: run.count(Verdict::Passed),
            failed: run.count(Verdict::Failed),
            warning: run.count(Verdict::Warning),
            skipped: run.count(Verdict::Skipped),
            inconclusive: run.count(Verdict::Inconclusive),
        },
        phases: run
            .outcomes
            .iter()
            .map(|o| {
                let (message, details) = message_and_details(o);
                Phase {
                    id: o.id,
                    name: o.name,
                    verdict: o.verdict.to_string(),
                    duration_secs: millis(o.elapsed),
                    message,
                    details,
                    proxy_exit: o.proxy_exit.as_deref(),
                    stderr_tail: o.stderr_tail.as_deref(),
                    closest_wait: o.closest.as_ref().map(|c| ClosestWait {
                        what: &c.what,
                        waited_secs: millis(c.waited),
                        limit_secs: millis(c.limit),
                    }),
                    timeline: (!o.timeline.events.is_empty()).then(|| TimelineJson {
                        version: crate::timeline::VERSION,
                        events: &o.timeline.events,
                        dropped: o.timeline.dropped,
                    }),
                }
            })
            .collect(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn snapshot() {
        let got = fixtures::rendered(render);
        let want = r#"{
  "format": "tcpproxy-test-report",
  "version": 1,
  "proxy": "./tcpproxy",
  "reference": false,
  "seed": 7,
  "seed_text": "7",
  "stall_timeout_secs": 10.0,
  "timeout_scale": 1.0,
  "summary": {
    "passed": 1,
    "failed": 1,
    "warning": 1,
    "skipped": 1
  },
  "phases": [
    {
      "id": "echo/single",
      "name": "Single echo connection",
      "verdict": "passed",
      "duration_secs": 0.012,
      "message": "",
      "details": [],
      "proxy_exit": null,
      "stderr_tail": null,
      "closest_wait": {
        "what": "the echo",
        "waited_secs": 0.004,
        "limit_secs": 10.0
      }
    },
    {
      "id": "shutdown/one-way",
      "name": "One-way shutdown",
      "verdict": "failed",
      "duration_secs": 1.9,
      "message": "expected a 1-byte reply before EOF, but the client saw EOF after 1.0s with nothing read",
      "details": [
        "hint: the proxy closed both sides on the first EOF",
        "seed: 7"
      ],
      "proxy_exit": "killed by signal SIGSEGV",
      "stderr_tail": "segfault at <&\"'>\n",
      "closest_wait": null
    },
    {
      "id": "resources/idle-cpu",
      "name": "CPU while idle",
      "verdict": "warning",
      "duration_secs": 3.1,
      "message": "expected at most 10% of a core, but it used 99%",
      "details": [],
      "proxy_exit": null,
      "stderr_tail": null,
      "closest_wait": null
    },
    {
      "id": "resources/fd-leak",
      "name": "Descriptor leaks",
      "verdict": "skipped",
      "duration_secs": 0.0,
      "message": "needs Linux /proc",
      "details": [],
      "proxy_exit": null,
      "stderr_tail": null,
      "closest_wait": null
    }
  ]
}
"#;
        assert_eq!(got, want, "\n--- got ---\n{got}");
    }

    #[test]
    fn the_network_and_an_impaired_profile_follow_the_settings() {
        use crate::network::Profile;
        use crate::sandbox::{Entered, Network};
        static NAMESPACE: Entered = Entered {
            network: Network::Namespace,
            profile: Profile::Ideal,
        };
        static SLOW: Entered = Entered {
            network: Network::Namespace,
            profile: Profile::Slow,
        };
        let outcomes = fixtures::outcomes();
        let run = RunReport {
            sandbox: Some(&NAMESPACE),
            ..fixtures::run(&outcomes)
        };
        let got = render(&run);
        assert!(
            got.contains(
                "  \"timeout_scale\": 1.0,\n  \"sandbox\": \"network namespace\",\n  \"summary\": {"
            ),
            "{got}"
        );
        let run = RunReport {
            sandbox: Some(&SLOW),
            timeout_scale: 2.0,
            ..fixtures::run(&outcomes)
        };
        let got = render(&run);
        assert!(
            got.contains(
                "  \"timeout_scale\": 2.0,\n  \"sandbox\": \"network namespace\",\n  \"network\": \"slow\",\n  \"summary\": {"
            ),
            "{got}"
        );
    }
}
