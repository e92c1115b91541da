//! What the fuzzer says: results (a header, a line per case with `--verbose`, the failure
//! report or the summary), and progress of a long shrink as notes.

use std::path::PathBuf;

use super::cli::{FuzzConfig, Mode};
use super::fuzzer::{Fuzzer, Job, Origin, Outcome, REGRESSIONS_PATH, Totals};
use super::oracle::Violation;
use super::peers::Record;
use super::replay::{save_private, save_private_as, save_private_at, shell_words};
use super::schedule::Case;
use super::shrink::{FLAKY_REPEAT, Progress, Shrunk};
use crate::console::Console;

/// Information lines printed at most; the rest are counted.
const MAX_INFO: usize = 8;

/// `1 case`, `2 cases`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn megabytes(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn proxy_name(config: &FuzzConfig) -> String {
    if config.proxy_words.is_empty() {
        "the bundled reference proxy".to_string()
    } else {
        shell_words(&config.proxy_words)
    }
}

pub(super) fn header(console: &Console, config: &FuzzConfig, jobs: &[Job]) {
    let regressions = jobs
        .iter()
        .filter(|j| matches!(j.origin, Origin::Regression(_)))
        .count();
    let what = match &config.mode {
        Mode::Random { seed, cases } => {
            let extra = if regressions > 0 {
                format!(
                    " after {}",
                    count(
                        regressions,
                        "committed regression schedule",
                        "committed regression schedules"
                    )
                )
            } else {
                String::new()
            };
            format!(
                "seed {seed}, {}{extra}",
                count(*cases as usize, "case", "cases")
            )
        }
        Mode::One { seed, index } => format!("seed {seed}, case {index} only"),
        Mode::Replay { path, cases } => {
            format!(
                "{} from {}",
                count(cases.len(), "schedule", "schedules"),
                path.display()
            )
        }
    };
    console.out_line(format!(
        "fuzzing {} beside the reference proxy: {what}, {} at a time",
        proxy_name(config),
        config.jobs
    ));
}

pub(super) fn did_not_start(console: &Console, why: &str) {
    console.out_line(format!("FAILED: PROXY did not start: {why}"));
}

pub(super) fn case_passed(console: &Console, config: &FuzzConfig, o: &Outcome) {
    if config.verbose {
        console.out_line(format!(
            "{}: passed ({}, {}, {:.1}s; reference {:.1}s)",
            o.origin,
            count(o.case.connections.len(), "connection", "connections"),
            megabytes(o.case.total_bytes()),
            o.proxy.elapsed.as_secs_f64(),
            o.reference.elapsed.as_secs_f64()
        ));
    }
}

pub(super) fn found(console: &Console, origin: &Origin, v: &Violation) {
    console.out_line(format!("{origin} FAILED: {}", v.summary));
}

pub(super) fn shrink_progress(console: &Console, config: &FuzzConfig, progress: Progress<'_>) {
    match progress {
        Progress::Started(budget) => console.out_line(format_args!(
            "shrinking it (for at most {:.0}s)...",
            budget.as_secs_f64()
        )),
        Progress::Step(case, v) if config.verbose => console.err_line(format_args!(
            "tcpproxy-test fuzz: smaller failing schedule ({}, {}): {}",
            count(case.connections.len(), "connection", "connections"),
            megabytes(case.total_bytes()),
            v.summary
        )),
        Progress::Step(..) => {}
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}\n"))
        .collect::<String>()
}

/// Writes the schedule where it can be replayed from; the path, or why not.
fn save(fuzzer: &Fuzzer, origin: &Origin, shrunk: &Shrunk) -> Result<PathBuf, String> {
    let from = match origin {
        Origin::Random { seed, index } => format!(
            "case {index} of seed {seed}, shrunk in {} steps",
            shrunk.steps
        ),
        other => other.to_string(),
    };
    let text = format!(
        "# tcpproxy-test fuzz: a failing schedule ({from}).\n# PROXY: {}\n# failure: {}\n# To keep it as a regression, append it to {REGRESSIONS_PATH}.\n{}",
        proxy_name(&fuzzer.config),
        shrunk.violation.summary,
        shrunk.case
    );
    if let Some(path) = &fuzzer.config.save {
        return std::fs::write(path, text)
            .map(|()| path.clone())
            .map_err(|e| format!("cannot save it to {}: {e}", path.display()));
    }
    let prefix = match origin {
        Origin::Random { seed, index } => format!("tcpproxy-test-fuzz-{seed}-{index}-"),
        Origin::Regression(k) => format!("tcpproxy-test-fuzz-regression-{k}-"),
        Origin::Replay(k) => format!("tcpproxy-test-fuzz-replay-{k}-"),
    };
    save_private(&std::env::temp_dir(), &prefix, &text)
}

/// The command that replays `file` against the same proxy, `repeat` times.
fn replay_command(config: &FuzzConfig, file: &str, repeat: u32) -> String {
    let mut flags = vec!["--replay".to_string(), file.into()];
    if repeat > 1 {
        flags.extend(["--repeat".into(), repeat.to_string()]);
    }
    if config.timeout_scale != 1.0 {
        flags.extend(["--timeout-scale".into(), config.timeout_scale.to_string()]);
    }
    flags.extend(config.sandbox.network.words());
    fuzz_command(config, flags)
}

/// `PROGRAM fuzz FLAGS -- PROXY...` for the same proxy, as a shell would need it typed.
fn fuzz_command(config: &FuzzConfig, flags: Vec<String>) -> String {
    let mut words = vec![config.program.to_string_lossy().into_owned(), "fuzz".into()];
    words.extend(flags);
    if !config.proxy_words.is_empty() {
        words.push("--".into());
        words.extend(
            config
                .proxy_words
                .iter()
                .map(|w| w.to_string_lossy().into_owned()),
        );
    }
    shell_words(&words)
}

/// A run of the minimal schedule, for the failure's page of timelines and its JSON.
#[derive(serde::Serialize)]
pub(super) struct TimelineRun {
    label: &'static str,
    verdict: String,
    timeline: crate::timeline::Timeline,
}

impl TimelineRun {
    pub fn new(label: &'static str, case: &Case, record: &Record) -> TimelineRun {
        TimelineRun {
            label,
            verdict: match super::oracle::judge(case, record) {
                Ok(()) => "passed this time".to_string(),
                Err(v) => format!("failed: {}", v.summary),
            },
            timeline: super::timeline::of(record),
        }
    }
}

/// Saves the page of the failure's timelines beside its schedule (`schedule`): Err says why not.
fn save_timelines(
    fuzzer: &Fuzzer,
    schedule: &std::path::Path,
    shrunk: &Shrunk,
    runs: &[TimelineRun],
) -> Result<PathBuf, String> {
    let v = &shrunk.violation;
    let page = crate::report::fuzz_page(
        &proxy_name(&fuzzer.config),
        &shrunk.case.to_string(),
        &v.summary,
        v.hint.as_deref(),
        &v.details,
        &runs
            .iter()
            .map(|r| crate::report::FuzzRun {
                label: r.label,
                verdict: r.verdict.clone(),
                timeline: &r.timeline,
            })
            .collect::<Vec<_>>(),
    );
    if fuzzer.config.save.is_some() {
        let path = schedule.with_extension("html");
        return std::fs::write(&path, page)
            .map(|()| path.clone())
            .map_err(|e| format!("cannot save the timelines to {}: {e}", path.display()));
    }
    let stem = schedule
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = schedule.parent().unwrap_or(std::path::Path::new("."));
    save_private_as(dir, &format!("{stem}-"), ".html", &page)
}

/// The failure's timelines as JSON, for a script to read what the page draws.
#[derive(serde::Serialize)]
struct TimelinesJson<'a> {
    /// The events' own version (`timeline::VERSION`).
    version: u32,
    runs: &'a [TimelineRun],
}

/// Saves the runs' timelines as JSON beside their page (`page`), named as it is but ending in
/// `.timelines.json`: Err says why not. With `--save` the user chose the name and the file is
/// replaced like the page; otherwise the page's random name keeps this one new, and it is
/// created as privately as the page.
fn save_timelines_json(
    page: &std::path::Path,
    chosen: bool,
    runs: &[TimelineRun],
) -> Result<PathBuf, String> {
    let path = page.with_extension("timelines.json");
    let json = serde_json::to_string_pretty(&TimelinesJson {
        version: crate::timeline::VERSION,
        runs,
    })
    .map_err(|e| format!("cannot write the timelines as JSON: {e}"))?;
    let saved = if chosen {
        std::fs::write(&path, json).map_err(|e| e.to_string())
    } else {
        save_private_at(&path, &json)
    };
    saved
        .map(|()| path.clone())
        .map_err(|e| format!("cannot save the timelines to {}: {e}", path.display()))
}

pub(super) fn failure(
    fuzzer: &Fuzzer,
    origin: &Origin,
    shrunk: &Shrunk,
    reference_note: &str,
    proxy: &[String],
    runs: &[TimelineRun],
) {
    let (config, console) = (&fuzzer.config, &fuzzer.console);
    let mut report = String::new();
    if let Origin::Random { .. } = origin {
        report.push_str(&format!(
            "shrunk: {} in {} ({:.1}s)\n",
            count(
                shrunk.steps as usize,
                "smaller failing schedule",
                "smaller failing schedules"
            ),
            count(shrunk.candidates as usize, "try", "tries"),
            shrunk.took.as_secs_f64()
        ));
    }
    if let Some(note) = &shrunk.note {
        report.push_str(&format!("note: {note}\n"));
    }
    let repeat = if shrunk.flaky {
        report.push_str(&format!(
            "note: it fails only now and then (it failed among copies of itself run at once, not alone); the replay runs it {FLAKY_REPEAT} times\n"
        ));
        FLAKY_REPEAT
    } else {
        config.repeat
    };
    report.push_str("\nminimal failing schedule:\n");
    report.push_str(&indent(&shrunk.case.to_string(), "  "));
    let v = &shrunk.violation;
    report.push_str(&format!("\nfailure: {}\n", v.summary));
    if let Some(h) = &v.hint {
        report.push_str(&format!("    hint: {h}\n"));
    }
    for d in &v.details {
        report.push_str(&format!("    {d}\n"));
    }
    report.push_str(&format!("    {reference_note}\n"));
    for p in proxy {
        report.push_str(&format!("    {p}\n"));
    }
    let replay = match save(fuzzer, origin, shrunk) {
        Ok(path) => {
            let file = path.to_string_lossy().into_owned();
            match origin {
                Origin::Random { seed, index } => report.push_str(&format!(
                    "seed: {seed}, case {index}; schedule saved to {file}\n"
                )),
                _ => report.push_str(&format!("schedule saved to {file}\n")),
            }
            if !runs.is_empty() {
                match save_timelines(fuzzer, &path, shrunk, runs) {
                    Ok(page) => {
                        report.push_str(&format!(
                            "timelines (this proxy beside the reference, on that schedule): {}\n",
                            page.display()
                        ));
                        match save_timelines_json(&page, config.save.is_some(), runs) {
                            Ok(json) => {
                                report.push_str(&format!("timelines as JSON: {}\n", json.display()))
                            }
                            Err(why) => report.push_str(&format!("note: {why}\n")),
                        }
                    }
                    Err(why) => report.push_str(&format!("note: {why}\n")),
                }
            }
            replay_command(config, &file, repeat)
        }
        Err(why) => {
            report.push_str(&format!("note: {why}\n"));
            let Origin::Random { seed, index } = origin else {
                console.out_line(report.trim_end());
                return;
            };
            // Regenerates the unshrunk case and shrinks it again.
            let mut flags = vec![
                "--seed".to_string(),
                seed.to_string(),
                "--case".into(),
                index.to_string(),
            ];
            if let Some(stall) = config.stall_timeout {
                flags.extend(["--stall-timeout".into(), stall.as_secs_f64().to_string()]);
            }
            fuzz_command(config, flags)
        }
    };
    report.push_str(&format!("replay: {replay}"));
    console.out_line(report);
}

pub(super) fn passed(fuzzer: &Fuzzer, totals: &Totals) {
    let console = &fuzzer.console;
    let mut what = Vec::new();
    if totals.regressions > 0 {
        what.push(count(
            totals.regressions,
            "regression schedule",
            "regression schedules",
        ));
    }
    what.push(count(totals.cases, "case", "cases"));
    let mut text = format!(
        "passed: {} kept the contract ({}, {} through each proxy) in {:.1}s",
        what.join(" and "),
        count(totals.connections, "connection", "connections"),
        megabytes(totals.bytes),
        fuzzer.started.elapsed().as_secs_f64()
    );
    if totals.skipped > 0 {
        text.push_str(&format!(
            "\nnote: the time limit of {:.0}s came first; {} not run",
            fuzzer.config.time_limit.as_secs_f64(),
            count(totals.skipped, "case was", "cases were")
        ));
    }
    if !totals.info.is_empty() {
        text.push_str("\ndifferences from the reference that the contract allows:");
        for (origin, d) in totals.info.iter().take(MAX_INFO) {
            text.push_str(&format!("\n  info: {origin}, {d}"));
        }
        if totals.info.len() > MAX_INFO {
            text.push_str(&format!(
                "\n  info: and {} more",
                totals.info.len() - MAX_INFO
            ));
        }
    }
    console.out_line(text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{Event, Kind, Lane, Timeline};

    fn run(label: &'static str, verdict: &str, events: usize) -> TimelineRun {
        TimelineRun {
            label,
            verdict: verdict.to_string(),
            timeline: Timeline {
                events: (0..events)
                    .map(|k| Event {
                        at_ms: k as f64,
                        lane: Lane::Client(1),
                        kind: Kind::Read { total: k as u64 },
                    })
                    .collect(),
                dropped: 0,
            },
        }
    }

    /// The JSON beside the page has both runs' events, under the events' version, and is as
    /// private as the page when the name was not the user's.
    #[test]
    fn a_failure_s_timelines_are_saved_as_json_beside_its_page() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("tcpproxy-test-fuzz-3-6-abcdef-ghijkl.html");
        let runs = [
            run("the proxy under test", "failed: EOF too early", 3),
            run("the reference proxy", "passed this time", 5),
        ];
        let path = save_timelines_json(&page, false, &runs).unwrap();
        assert_eq!(
            path,
            dir.path()
                .join("tcpproxy-test-fuzz-3-6-abcdef-ghijkl.timelines.json")
        );
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o077, 0);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["version"], crate::timeline::VERSION);
        let got: Vec<_> = json["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let events = r["timeline"]["events"].as_array().unwrap();
                (
                    r["label"].as_str().unwrap(),
                    r["verdict"].as_str().unwrap(),
                    events.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("the proxy under test", "failed: EOF too early", 3),
                ("the reference proxy", "passed this time", 5)
            ]
        );
        assert_eq!(json["runs"][1]["timeline"]["events"][4]["kind"], "read");
        // A name of its own is never written over.
        assert!(save_timelines_json(&page, false, &runs).is_err());
        // With --save the user chose it: written again.
        assert!(save_timelines_json(&page, true, &runs).is_ok());
    }
}
