//! Every report format end to end, and the phase filters, on a short run of the reference.

use std::time::Duration;

use crate::support::{
    HeavySlot, Run, assert_has_line, assert_matches, assert_stderr_has, assert_stdout_has,
    fixtures_bin, run_harness, temp_file, temp_path,
};

const LIMIT: Duration = Duration::from_secs(120);
/// Two quick phases, so each format run takes a second or two.
const QUICK: [&str; 4] = ["--only", "echo/single", "--only", "shutdown/one-way"];

fn quick(extra: &[&str]) -> Run {
    let _slot = HeavySlot::acquire();
    let mut args = vec!["--stall-timeout", "2"];
    args.extend_from_slice(&QUICK);
    args.extend_from_slice(extra);
    run_harness(&args, LIMIT)
}

/// The quick phases against the reference in `format`: both pass, exit 0.
fn quick_reference(format: &str) -> Run {
    let run = quick(&["--format", format]);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    run
}

/// The run's stdout, read as one JSON document.
#[track_caller]
fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.dump()))
}

#[test]
fn list_prints_every_phase_id_and_name() {
    let run = run_harness(&["--list"], LIMIT);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_eq!(
        run.stdout.lines().count(),
        crate::support::ALL_PHASES.len(),
        "{}",
        run.dump()
    );
    assert!(
        run.stdout
            .starts_with("echo/single            Single echo connection\n"),
        "{}",
        run.dump()
    );
    assert_stdout_has(
        &run,
        "timeout/lazy-forward   Timeout of lazy forward client\n",
    );
}

#[test]
fn filters_select_phases_and_an_empty_selection_is_a_usage_error() {
    let run = quick(&[]);
    assert_matches(
        "Single echo connection: passed\nOne-way shutdown: passed\n2 passed, 0 failed\n",
        &run.stdout,
    );
    let run = run_harness(&["--only", "no/such-*"], LIMIT);
    assert_eq!(run.code, Some(2), "{}", run.dump());
    assert_stderr_has(&run, "no phase matches");
}

/// The JSON report without each phase's `timeline`, the last field of a phase (its events are
/// checked on their own: their count and times vary from run to run).
fn without_timelines(json: &str) -> String {
    let mut out = String::new();
    let mut rest = json;
    while let Some(start) = rest.find(",\n      \"timeline\": {") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("\n      }")
            .expect("a timeline ends at its phase's indent");
        rest = &rest[start + end + "\n      }".len()..];
    }
    out.push_str(rest);
    out
}

/// A phase the quick run passed, as the JSON report lists it: the two differ only in these.
fn passed_phase_json(id: &str, name: &str) -> String {
    format!(
        r#"    {{
      "id": "{id}",
      "name": "{name}",
      "verdict": "passed",
      "duration_secs": [..],
      "message": "",
      "details": [],
      "proxy_exit": null,
      "stderr_tail": null,
      "closest_wait": {{
        "what": "[..]",
        "waited_secs": [..],
        "limit_secs": [..]
      }}
    }}"#
    )
}

#[test]
fn json_is_the_versioned_model() {
    let run = quick_reference("json");
    let phases = [
        passed_phase_json("echo/single", "Single echo connection"),
        passed_phase_json("shutdown/one-way", "One-way shutdown"),
    ];
    let head = r#"{
  "format": "tcpproxy-test-report",
  "version": 1,
  "proxy": "[..]tcpproxy-test __reference-proxy --stall-timeout 2",
  "reference": true,
  "seed": [..],
  "seed_text": "[..]",
  "stall_timeout_secs": 2.0,
  "timeout_scale": 1.0,
  "sandbox": "network namespace",
  "confinement": "[..]",
  "summary": {
    "passed": 2,
    "failed": 0,
    "warning": 0,
    "skipped": 0
  },
  "phases": ["#;
    assert_matches(
        &format!("{head}\n{}\n  ]\n}}", phases.join(",\n")),
        &without_timelines(&run.stdout),
    );
    assert_the_documented_model_has_the_same_fields(&run.stdout);
    // Each phase's timeline: its own version, the connection it opened, the verdict's moment.
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    for p in doc["phases"].as_array().unwrap() {
        let t = &p["timeline"];
        assert_eq!(t["version"], 1, "{p}");
        let events = t["events"].as_array().unwrap();
        let has = |kind: &str| events.iter().any(|e| e["kind"] == kind);
        assert!(has("ready") && has("connect") && has("read"), "{p}");
        assert_eq!(events.last().unwrap()["verdict"], "passed", "{p}");
        let times: Vec<f64> = events
            .iter()
            .map(|e| e["at_ms"].as_f64().unwrap())
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "in time order: {times:?}"
        );
    }
    // Issue 18: jq 1.6 and JavaScript read 7080451246934867592 as 7080451246934868000, and a
    // replay with that seed sends other bytes; the string beside it survives any reader.
    let run = quick(&["--format", "json", "--seed", "7080451246934867592"]);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_stdout_has(
        &run,
        "  \"seed\": 7080451246934867592,\n  \"seed_text\": \"7080451246934867592\",\n",
    );
}

#[test]
fn junit_goes_to_the_output_file_and_human_lines_stay_on_stdout() {
    let (_dir, path) = temp_path("junit.xml");
    let run = quick(&["--format", "junit", "--output", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    assert_matches(
        "Single echo connection: passed\nOne-way shutdown: passed\n2 passed, 0 failed\n",
        &run.stdout,
    );
    // The layout is the unit snapshot's (src/report/junit.rs); here, that this run reached the
    // file: its proxy, its stall timeout, its two phases.
    let xml = std::fs::read_to_string(&path).unwrap();
    assert!(xml.starts_with("<?xml "), "{xml}");
    for line in [
        r#"<testsuites name="tcpproxy-test: [..]tcpproxy-test __reference-proxy --stall-timeout 2" tests="2" failures="0" errors="0">"#,
        r#"[..]<property name="proxy" value="[..]tcpproxy-test __reference-proxy --stall-timeout 2"/>"#,
        r#"[..]<property name="stall_timeout_secs" value="2"/>"#,
        r#"[..]<testcase name="Single echo connection" classname="echo/single" time="[..]">"#,
        r#"[..]<testcase name="One-way shutdown" classname="shutdown/one-way" time="[..]">"#,
    ] {
        assert_has_line(line, &xml);
    }
}

#[test]
fn tap_reports_failures_with_a_yaml_block() {
    // A proxy that exits at once fails both phases, with its status in the block; it never
    // started, so the run exits 4.
    let run = quick(&["--format", "tap", "sh", "-c", "exit 3"]);
    assert_eq!(run.code, Some(4), "{}", run.dump());
    // The two phases fail alike: only their number, name and id differ.
    let failed = |n: u32, name: &str, id: &str| {
        format!(
            r#"not ok {n} - {name} # {id}
  ---
  message: "expected the proxy to listen on port [..], but it exited first (exit status 3)"
  duration_ms: [..]
  proxy_exit: "exit status 3"
  details:
    - "proxy: [..]"
  ...
"#
        )
    };
    assert_matches(
        &format!(
            "TAP version 13\n1..2\n{}{}",
            failed(1, "Single echo connection", "echo/single"),
            failed(2, "One-way shutdown", "shutdown/one-way")
        ),
        &run.stdout,
    );
}

#[test]
fn gradescope_results_score_a_point_per_phase() {
    let run = quick_reference("gradescope");
    let v = json(&run);
    assert_eq!(v["score"], 2.0, "{}", run.dump());
    assert_eq!(v["max_score"], 2.0);
    assert_eq!(
        v["tests"][0]["name"],
        "Single echo connection (echo/single)"
    );
    assert_eq!(v["tests"][1]["status"], "passed");
    assert!(
        v["output"]
            .as_str()
            .unwrap()
            .starts_with("tcpproxy-test: 2 passed, 0 failed")
    );
}

/// The quick phases against a fixture that fails the second (it closes both sides on the first
/// EOF) and passes the first.
fn quick_close_on_first_eof(format: &str) -> Run {
    let bin = fixtures_bin();
    let run = quick(&[
        "--format",
        format,
        "--",
        bin.to_str().unwrap(),
        "close-on-first-eof",
        "--stall-timeout",
        "2",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.dump());
    run
}

#[test]
fn prairielearn_results_score_the_share_of_phases_earned() {
    let run = quick_reference("prairielearn");
    let v = json(&run);
    assert_eq!(v["gradable"], true, "{}", run.dump());
    assert_eq!(v["score"], 1.0, "{}", run.dump());
    let t = v["tests"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["name"], "Single echo connection");
    assert_eq!(t[0]["description"], "echo/single");
    assert!(
        t.iter()
            .all(|t| t["points"] == 1.0 && t["max_points"] == 1.0)
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("tcpproxy-test: 2 passed, 0 failed"),
        "{v:#}"
    );

    let run = quick_close_on_first_eof("prairielearn");
    let v = json(&run);
    assert_eq!(v["gradable"], true, "{}", run.dump());
    assert_eq!(v["score"], 0.5, "{}", run.dump());
    let t = &v["tests"][1];
    assert_eq!(t["description"], "shutdown/one-way");
    assert_eq!(t["points"], 0.0);
    assert!(
        t["message"].as_str().unwrap().starts_with("failed: "),
        "{t:#}"
    );
    assert!(
        v["output"]
            .as_str()
            .unwrap()
            .contains("\nOne-way shutdown: failed: "),
        "{v:#}"
    );
}

#[test]
fn prairielearn_build_failure_is_gradable_with_score_zero_and_the_log() {
    let (dir, log) = temp_file(
        "build.log",
        "tcpproxy.c:3:1: error: unknown type name 'sockt'\n",
    );
    let results = dir.path().join("results.json");
    let run = run_harness(
        &[
            "--build-failed",
            log.to_str().unwrap(),
            "--format",
            "prairielearn",
            "--output",
            results.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(run.code, Some(1), "{}", run.dump());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    assert_eq!(v["gradable"], true, "{v:#}");
    assert_eq!(v["score"], 0.0, "{v:#}");
    assert!(
        v["output"]
            .as_str()
            .unwrap()
            .contains("error: unknown type name 'sockt'"),
        "{v:#}"
    );
    let t = v["tests"].as_array().unwrap();
    assert_eq!(t.len(), crate::support::ALL_PHASES.len());
    assert!(
        t.iter()
            .all(|t| t["points"] == 0.0 && t["max_points"] == 1.0)
    );
}

#[test]
fn autolab_scores_are_the_last_line() {
    let last_line = |run: &Run| -> serde_json::Value {
        let line = run.stdout.lines().last().expect("some output");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {}", run.dump()))
    };
    let run = quick_reference("autolab");
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.dump());
    assert_eq!(
        last_line(&run),
        serde_json::json!({"scores": {"echo/single": 1, "shutdown/one-way": 1}}),
        "{}",
        run.dump()
    );

    let run = quick_close_on_first_eof("autolab");
    assert_eq!(
        last_line(&run),
        serde_json::json!({"scores": {"echo/single": 1, "shutdown/one-way": 0}}),
        "{}",
        run.dump()
    );
}

/// docs/grading.md's example of the JSON model has the fields a real report has, at the top, in
/// a phase and in its closest wait: a field added to the report is added to the docs.
fn assert_the_documented_model_has_the_same_fields(real: &str) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grading.md"))
        .unwrap();
    let example = doc
        .split("### The JSON model")
        .nth(1)
        .and_then(|s| s.split("```json\n").nth(1))
        .and_then(|s| s.split("\n```").next())
        .expect("docs/grading.md shows the JSON model");
    let doc: serde_json::Value = serde_json::from_str(example).expect("the example is JSON");
    let real: serde_json::Value = serde_json::from_str(real).unwrap();
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    for (at, d, r) in [
        ("the report", &doc, &real),
        ("a phase", &doc["phases"][0], &real["phases"][0]),
        (
            "closest_wait",
            &doc["phases"][0]["closest_wait"],
            &real["phases"][0]["closest_wait"],
        ),
        (
            "timeline",
            &doc["phases"][0]["timeline"],
            &real["phases"][0]["timeline"],
        ),
        ("summary", &doc["summary"], &real["summary"]),
    ] {
        assert_eq!(keys(d), keys(r), "docs/grading.md's JSON model, {at}");
    }
}
