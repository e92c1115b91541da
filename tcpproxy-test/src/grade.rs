//! `tcpproxy-test grade`: a whole class at once. Each submission is graded like a single run;
//! the results become a class table (CSV and JSON) and a folder of artifacts per submission. A
//! submission that is missing or cannot run gets its own row, never an aborted batch.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;
use tcpproxy::cli::NotRun;
use tcpproxy::flag_value;
use tokio::sync::Semaphore;

use crate::cli::resolve;
use crate::deadline::Timing;
use crate::harness::ProxyCommand;
use crate::phase::{Outcome, Rules, Verdict};
use crate::report::{self, Format, RunReport};
use crate::suite::{self, Filter};

/// The executable looked for inside a submission that is a directory.
pub const SUBMISSION_EXECUTABLE: &str = "tcpproxy";
/// Bumped when class.json changes in a way a reader would notice.
pub const CLASS_JSON_VERSION: u32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "tcpproxy-test grade",
    about = "Grade many proxies: a class table (CSV, JSON) and artifacts per submission",
    long_about = "Grade many proxies. Each SUBMISSION is an executable, or a directory holding an \
        executable named `tcpproxy`. Writes OUT_DIR/class.csv, OUT_DIR/class.json and, per \
        submission, OUT_DIR/NAME/{report.txt,report.json,junit.xml}. Exit status: 0 once every \
        submission has a row, whatever its grade; 2 usage error; 3 the harness could not run; \
        130 interrupted."
)]
struct Args {
    /// Where the class table and per-submission artifacts go.
    #[arg(long, value_name = "DIR", default_value = "grades")]
    out_dir: PathBuf,
    /// Submissions graded at once (each runs its phases concurrently).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    jobs: u32,
    /// The stall timeout every submission was written for.
    #[arg(long, value_name = "SECS", default_value_t = crate::cli::STALL_TIMEOUT.as_secs_f64(), value_parser = |s: &str| flag_value::seconds(s, flag_value::DAY_SECS))]
    stall_timeout: f64,
    /// Stretch every other deadline by this factor.
    #[arg(long, value_name = "F", default_value_t = 1.0, value_parser = flag_value::factor)]
    timeout_scale: f64,
    /// Payload seed, the same for every submission [default: random].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Count warnings as failures.
    #[arg(long)]
    strict: bool,
    /// Run only phases matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Skip phases matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Executables, or directories holding an executable named `tcpproxy`.
    #[arg(value_name = "SUBMISSION", required = true)]
    submissions: Vec<PathBuf>,
}

/// One row of the class table.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    path: String,
    /// `graded`, or why it could not be (`error: ...`).
    status: String,
    passed: usize,
    failed: usize,
    warning: usize,
    skipped: usize,
    /// Verdict per phase id, in suite order; empty when the submission could not run.
    verdicts: Vec<(String, String)>,
}

#[derive(Serialize)]
struct Class<'a> {
    format: &'static str,
    version: u32,
    seed: u64,
    /// As in the run report: the seed as a string, which no JSON reader rounds.
    seed_text: String,
    stall_timeout_secs: f64,
    phases: Vec<&'static str>,
    submissions: &'a [Row],
}

pub fn main_with_args(args: Vec<OsString>) -> std::process::ExitCode {
    // Named as a user types it, for usage lines (`args[1]` is `grade`).
    let words =
        std::iter::once(OsString::from("tcpproxy-test grade")).chain(args.into_iter().skip(2));
    let a = match tcpproxy::cli::try_parse::<Args, _, _>(words) {
        Ok(a) => a,
        Err(NotRun::Info(text)) => {
            print!("{text}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(NotRun::Usage(line)) => {
            eprintln!("tcpproxy-test grade: {line}");
            return std::process::ExitCode::from(crate::EXIT_USAGE);
        }
    };
    let filter = match (crate::cli::globs(&a.only), crate::cli::globs(&a.exclude)) {
        (Ok(only), Ok(exclude)) => Filter { only, exclude },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tcpproxy-test grade: {e}");
            return std::process::ExitCode::from(crate::EXIT_USAGE);
        }
    };
    crate::runtime::run("tcpproxy-test grade", grade(a, filter))
}

async fn grade(a: Args, filter: Filter) -> u8 {
    crate::harness::become_subreaper();
    crate::harness::raise_descriptor_limit();
    if let Err(e) = std::fs::create_dir_all(&a.out_dir) {
        eprintln!(
            "tcpproxy-test grade: cannot create {}: {e}",
            a.out_dir.display()
        );
        return crate::EXIT_HARNESS;
    }
    let seed = a.seed.unwrap_or_else(rand::random);
    let stall = Duration::from_secs_f64(a.stall_timeout);
    let rules = Rules {
        timing: Timing {
            stall,
            scale: a.timeout_scale,
        },
        seed,
        strict: a.strict,
    };
    let phase_ids: Vec<&'static str> = filter.select().iter().map(|p| p.id).collect();
    let names = unique_names(&a.submissions);
    let slots = Arc::new(Semaphore::new(a.jobs as usize));
    let out_dir = Arc::new(a.out_dir.clone());
    let handles: Vec<_> = a
        .submissions
        .iter()
        .cloned()
        .zip(names)
        .map(|(path, name)| {
            let (slots, filter, out_dir) = (slots.clone(), filter.clone(), out_dir.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.expect("never closed");
                grade_one(&path, name, filter, rules, stall, a.timeout_scale, &out_dir).await
            })
        })
        .collect();
    let mut rows = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(row)) => {
                eprintln!("graded {}: {}", row.name, row.status_line());
                rows.push(row);
            }
            Ok(Err(msg)) => {
                eprintln!("tcpproxy-test grade: the harness could not run: {msg}");
                return crate::EXIT_HARNESS;
            }
            Err(e) => {
                eprintln!("tcpproxy-test grade: the harness crashed: {e}");
                return crate::EXIT_HARNESS;
            }
        }
    }
    let class = Class {
        format: "tcpproxy-test-class",
        version: CLASS_JSON_VERSION,
        seed,
        seed_text: seed.to_string(),
        stall_timeout_secs: a.stall_timeout,
        phases: phase_ids.clone(),
        submissions: &rows,
    };
    let json = serde_json::to_string_pretty(&class).expect("plain data serialises") + "\n";
    let csv = class_csv(&phase_ids, &rows);
    for (file, text) in [("class.json", json), ("class.csv", csv)] {
        let path = a.out_dir.join(file);
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("tcpproxy-test grade: cannot write {}: {e}", path.display());
            return crate::EXIT_HARNESS;
        }
    }
    let _ = writeln!(
        std::io::stdout(),
        "graded {} submissions into {}",
        rows.len(),
        a.out_dir.display()
    );
    let inconclusive = rows
        .iter()
        .filter(|r| r.status.starts_with("inconclusive"))
        .count();
    if inconclusive > 0 {
        eprintln!(
            "tcpproxy-test grade: {inconclusive} submission(s) inconclusive: the harness could not run them; regrade those"
        );
        return crate::EXIT_HARNESS;
    }
    crate::EXIT_PASSED
}

impl Row {
    fn status_line(&self) -> String {
        if self.status == "graded" {
            let mut s = format!("{} passed, {} failed", self.passed, self.failed);
            if self.warning > 0 {
                let _ = write!(s, ", {} warning", self.warning);
            }
            s
        } else {
            self.status.clone()
        }
    }
}

/// Writes a submission's reports for a run that graded nothing, each saying `msg`.
fn write_error_reports(
    dir: &Path,
    proxy: &str,
    rules: Rules,
    stall: Duration,
    scale: f64,
    msg: &str,
) -> Result<(), String> {
    let run = RunReport {
        proxy: proxy.to_string(),
        reference: false,
        seed: rules.seed,
        stall_timeout: stall,
        timeout_scale: scale,
        outcomes: &[],
    };
    let files = REPORTS.map(|(file, format)| (file, report::render_error(&run, msg, format)));
    replace_artifacts(dir, &files)
}

/// Runs of the suite tried on one submission before a harness fault makes its row inconclusive.
const HARNESS_ATTEMPTS: usize = 3;

/// Grades one submission, writing its artifacts; Err only when its artifacts cannot be written.
async fn grade_one(
    path: &Path,
    name: String,
    filter: Filter,
    rules: Rules,
    stall: Duration,
    scale: f64,
    out_dir: &Path,
) -> Result<Row, String> {
    let mut row = Row {
        name: name.clone(),
        path: path.display().to_string(),
        status: "graded".into(),
        passed: 0,
        failed: 0,
        warning: 0,
        skipped: 0,
        verdicts: vec![],
    };
    let dir = out_dir.join(&name);
    let exe = if path.is_dir() {
        path.join(SUBMISSION_EXECUTABLE)
    } else {
        path.to_path_buf()
    };
    // A bare name would be looked up on PATH; a submission is always a file here.
    let exe = if exe.components().count() == 1 {
        Path::new(".").join(exe)
    } else {
        exe
    };
    let program = match resolve(&exe) {
        Ok(p) => p,
        Err(msg) => {
            row.status = format!("error: {msg}");
            write_error_reports(&dir, &exe.display().to_string(), rules, stall, scale, &msg)?;
            return Ok(row);
        }
    };
    let cmd = ProxyCommand {
        program,
        args: vec![],
    };
    let proxy = cmd.to_string();
    // A harness fault (its own port taken, say) is no verdict on the student: try again, and if
    // it persists the row says inconclusive rather than failed.
    let mut attempt = 1;
    let outcomes: Vec<Outcome> = loop {
        match suite::run(filter.select(), cmd.clone(), rules, None, |_| {}).await {
            Ok(o) => break o,
            Err(msg) if attempt < HARNESS_ATTEMPTS => {
                eprintln!(
                    "tcpproxy-test grade: {name}: the harness could not run ({msg}); trying again"
                );
                attempt += 1;
            }
            Err(msg) => {
                let msg = format!(
                    "the harness could not run, {HARNESS_ATTEMPTS} times: {msg}; this is no verdict on the submission"
                );
                row.status = format!("inconclusive: {msg}");
                write_error_reports(&dir, &proxy, rules, stall, scale, &msg)?;
                return Ok(row);
            }
        }
    };
    let count = |v| outcomes.iter().filter(|o| o.verdict == v).count();
    row.passed = count(Verdict::Passed);
    row.failed = count(Verdict::Failed);
    row.warning = count(Verdict::Warning);
    row.skipped = count(Verdict::Skipped);
    row.verdicts = outcomes
        .iter()
        .map(|o| (o.id.to_string(), o.verdict.to_string()))
        .collect();
    let run = RunReport {
        proxy,
        reference: false,
        seed: rules.seed,
        stall_timeout: stall,
        timeout_scale: scale,
        outcomes: &outcomes,
    };
    let mut files: Vec<(&str, String)> = REPORTS
        .iter()
        .map(|&(file, format)| (file, report::render(&run, format)))
        .collect();
    let stderr: String = outcomes
        .iter()
        .filter_map(|o| {
            o.stderr_tail
                .as_ref()
                .map(|t| format!("== {} ==\n{t}\n", o.id))
        })
        .collect();
    if !stderr.is_empty() {
        files.push((STDERR, stderr));
    }
    replace_artifacts(&dir, &files)?;
    Ok(row)
}

/// The reports in a submission's folder, every run, whether it was graded or could not run.
const REPORTS: [(&str, Format); 3] = [
    ("report.txt", Format::Human),
    ("report.json", Format::Json),
    ("junit.xml", Format::Junit),
];
/// The proxies' stderr tails, written only when a phase that did not pass left one.
const STDERR: &str = "stderr.txt";

/// Makes `files` the whole of what grade keeps in `dir`: each is written beside its place and
/// renamed over it (a reader sees the old file or the new, never half of one), then any other
/// file grade writes is removed, so nothing from an earlier run sits beside this one's (an old
/// passing junit.xml beside a new error shows CI a pass). Files of other names are not grade's
/// and stay: the folder may be somebody's directory.
fn replace_artifacts(dir: &Path, files: &[(&str, String)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (file, text) in files {
        let (path, partial) = (dir.join(file), dir.join(format!(".{file}.partial")));
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let ours = REPORTS.iter().map(|(file, _)| *file).chain([STDERR]);
    for file in ours.filter(|f| !files.iter().any(|(written, _)| written == f)) {
        let path = dir.join(file);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "cannot remove {} left by an earlier run: {e}",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// Row names from paths: the file name, or the directory's name; repeats get `-2`, `-3`.
fn unique_names(paths: &[PathBuf]) -> Vec<String> {
    let mut seen = HashSet::new();
    paths
        .iter()
        .map(|p| {
            let base = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty() && n != "." && n != "..")
                .unwrap_or_else(|| "submission".into());
            let base: String = base
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let mut name = base.clone();
            let mut n = 1;
            while !seen.insert(name.clone()) {
                n += 1;
                name = format!("{base}-{n}");
            }
            name
        })
        .collect()
}

/// `submission,status,passed,failed,warning,skipped,<phase ids...>`, one row per submission.
fn class_csv(phase_ids: &[&str], rows: &[Row]) -> String {
    let mut s = String::from("submission,status,passed,failed,warning,skipped");
    for id in phase_ids {
        let _ = write!(s, ",{}", csv_field(id));
    }
    s.push('\n');
    for r in rows {
        let _ = write!(
            s,
            "{},{},{},{},{},{}",
            csv_field(&r.name),
            csv_field(&r.status),
            r.passed,
            r.failed,
            r.warning,
            r.skipped
        );
        for id in phase_ids {
            let v = r
                .verdicts
                .iter()
                .find(|(p, _)| p == id)
                .map_or("not run", |(_, v)| v.as_str());
            let _ = write!(s, ",{v}");
        }
        s.push('\n');
    }
    s
}

/// RFC 4180: quote fields with commas, quotes or newlines.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_safe() {
        let paths: Vec<PathBuf> = ["a/alice", "b/alice", "bob smith/", "x/tcpproxy"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            unique_names(&paths),
            ["alice", "alice-2", "bob_smith", "tcpproxy"]
        );
    }

    #[test]
    fn the_class_csv_has_a_row_per_submission_and_a_column_per_phase() {
        let rows = vec![
            Row {
                name: "alice".into(),
                path: "a".into(),
                status: "graded".into(),
                passed: 1,
                failed: 1,
                warning: 0,
                skipped: 0,
                verdicts: vec![
                    ("echo/single".into(), "passed".into()),
                    ("shutdown/one-way".into(), "failed".into()),
                ],
            },
            Row {
                name: "bob".into(),
                path: "b".into(),
                status: "error: proxy 'b' is not executable, \"x\"".into(),
                passed: 0,
                failed: 0,
                warning: 0,
                skipped: 0,
                verdicts: vec![],
            },
        ];
        let csv = class_csv(&["echo/single", "shutdown/one-way"], &rows);
        assert_eq!(
            csv,
            "submission,status,passed,failed,warning,skipped,echo/single,shutdown/one-way\n\
             alice,graded,1,1,0,0,passed,failed\n\
             bob,\"error: proxy 'b' is not executable, \"\"x\"\"\",0,0,0,0,not run,not run\n"
        );
    }
}
