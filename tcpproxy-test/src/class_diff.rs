//! `tcpproxy-test grade diff OLD NEW`: what changed between two gradings of a class (a regrade
//! request, a harness upgrade). Submissions are matched by name; each one whose status or a
//! phase's verdict changed is listed, phase by phase, after the settings that differ (a new
//! seed or stall timeout may explain a flip). The diff itself is plain data ([`diff`]), rendered
//! as lines ([`human`]) or one JSON document ([`json`]); only [`main`] reads files and writes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::class_table::{self, CLASS_JSON, Class, Counts, Row, Unreadable};
use crate::console::Console;

/// Compare two gradings of a class: the submissions whose verdicts changed, phase by phase.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Compare two gradings of a class, for regrade requests and harness upgrades. \
        OLD and NEW are each a class table: a directory holding class.json (a `grade` or \
        `grade merge` --out-dir) or that class.json itself. Prints the settings that differ, \
        the phases only one table ran, then a line per submission and phase whose verdict \
        changed (`alice  shutdown/flush  failed -> passed`), status changes, submissions in \
        only one table, and a summary. Submissions are matched by name, listed in NEW's order. \
        Exit status: 0 no submission changed; 1 some did; 2 usage error or a table that cannot \
        be read."
)]
pub struct DiffArgs {
    /// The earlier table: a directory holding class.json, or the class.json.
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The later table, likewise.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// `human` (a line per change) or `json` (one document, for scripts).
    #[arg(long, value_name = "F", value_enum, default_value = "human")]
    format: DiffFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// A line per changed (submission, phase), then a summary.
    Human,
    /// The same as one JSON document.
    Json,
}

/// `format` of the JSON document.
pub const CLASS_DIFF_FORMAT: &str = "tcpproxy-test-class-diff";
/// Bumped when a field of the JSON document is removed or changes meaning.
pub const CLASS_DIFF_VERSION: u32 = 1;

/// The verdict cell of a phase a row has none for, as class.csv writes it.
const NOT_RUN: &str = "not run";

/// What differs between two class tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassDiff {
    /// The settings that differ, in class.json's order of fields.
    pub settings: Vec<SettingChange>,
    /// Phase ids only OLD ran (in OLD's order); their verdicts are not compared.
    pub phases_only_in_old: Vec<String>,
    /// Phase ids only NEW ran (in NEW's order).
    pub phases_only_in_new: Vec<String>,
    /// False when that table was interrupted: its missing rows show as only in the other.
    pub old_complete: bool,
    pub new_complete: bool,
    /// Changed submissions in NEW's order, then those only in OLD in OLD's order.
    pub submissions: Vec<SubmissionDiff>,
    pub summary: Summary,
}

/// A setting both tables record, with different values: `seed 1 -> 2`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingChange {
    /// class.json's field name: `seed`, `stall_timeout_secs`, ...
    pub setting: String,
    pub old: String,
    pub new: String,
}

/// One submission that differs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum SubmissionDiff {
    /// In both tables: its status, and each phase both ran whose verdict changed.
    Changed {
        name: String,
        /// Absent when the status did not change.
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<Transition>,
        phases: Vec<PhaseChange>,
    },
    /// Only OLD has a row for it: what that row says.
    OnlyInOld { name: String, row: RowSummary },
    /// Only NEW has a row for it.
    OnlyInNew { name: String, row: RowSummary },
}

/// A status before and after: `error: ... -> graded`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub old: String,
    pub new: String,
}

/// One phase's verdict before and after; `not run` when the row has none for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseChange {
    pub phase: String,
    pub old: String,
    pub new: String,
}

/// A row only one table has: what it says, without its verdicts one by one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowSummary {
    pub path: String,
    pub status: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The counts of the last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// In both tables, with a status or verdict changed.
    pub changed: usize,
    /// In both tables, alike.
    pub unchanged: usize,
    pub only_in_old: usize,
    pub only_in_new: usize,
}

impl ClassDiff {
    /// Whether any submission differs (diff(1)'s exit status 1). Settings and phases only one
    /// table ran are context for the rows, not changes of their own.
    pub fn any_changed(&self) -> bool {
        !self.submissions.is_empty()
    }
}

/// What changed from `old` to `new`, matching submissions by name.
pub fn diff(old: &Class, new: &Class) -> ClassDiff {
    let phases_only_in_old: Vec<String> = only_in(&old.phases, &new.phases);
    let phases_only_in_new: Vec<String> = only_in(&new.phases, &old.phases);
    // Compared in NEW's order: the phases both tables ran.
    let common: Vec<&String> = new
        .phases
        .iter()
        .filter(|p| old.phases.contains(p))
        .collect();
    let mut old_rows: HashMap<&str, &Row> = HashMap::new();
    for r in &old.submissions {
        old_rows.entry(r.name.as_str()).or_insert(r);
    }
    let mut summary = Summary {
        changed: 0,
        unchanged: 0,
        only_in_old: 0,
        only_in_new: 0,
    };
    let mut submissions = Vec::new();
    for n in &new.submissions {
        let Some(o) = old_rows.get(n.name.as_str()) else {
            summary.only_in_new += 1;
            submissions.push(SubmissionDiff::OnlyInNew {
                name: n.name.clone(),
                row: RowSummary::of(n),
            });
            continue;
        };
        let status = (status_key(&o.status) != status_key(&n.status)).then(|| Transition {
            old: o.status.clone(),
            new: n.status.clone(),
        });
        let phases: Vec<PhaseChange> = common
            .iter()
            .filter_map(|p| {
                let (was, is) = (verdict(o, p), verdict(n, p));
                (was != is).then(|| PhaseChange {
                    phase: (*p).clone(),
                    old: was.to_string(),
                    new: is.to_string(),
                })
            })
            .collect();
        if status.is_none() && phases.is_empty() {
            summary.unchanged += 1;
        } else {
            summary.changed += 1;
            submissions.push(SubmissionDiff::Changed {
                name: n.name.clone(),
                status,
                phases,
            });
        }
    }
    let in_new: std::collections::HashSet<&str> =
        new.submissions.iter().map(|r| r.name.as_str()).collect();
    for o in &old.submissions {
        if !in_new.contains(o.name.as_str()) {
            summary.only_in_old += 1;
            submissions.push(SubmissionDiff::OnlyInOld {
                name: o.name.clone(),
                row: RowSummary::of(o),
            });
        }
    }
    ClassDiff {
        settings: settings(old, new),
        phases_only_in_old,
        phases_only_in_new,
        old_complete: old.complete,
        new_complete: new.complete,
        submissions,
        summary,
    }
}

/// The settings a verdict depends on, as class.json names them, where the tables differ.
/// Fields older tables lack are read as their defaults (scale 1, not strict).
fn settings(old: &Class, new: &Class) -> Vec<SettingChange> {
    let version = |c: &Class| {
        if c.harness_version.is_empty() {
            "unknown".to_string()
        } else {
            c.harness_version.clone()
        }
    };
    let shard = |c: &Class| c.shard.map_or("none".to_string(), |s| s.to_string());
    let scale = |c: &Class| c.timeout_scale.unwrap_or(1.0).to_string();
    let strict = |c: &Class| c.strict.unwrap_or(false).to_string();
    let vouched = |c: &Class| c.self_check.clone().unwrap_or_else(|| "off".into());
    let pairs: Vec<(&str, String, String)> = vec![
        ("harness_version", version(old), version(new)),
        ("shard", shard(old), shard(new)),
        ("seed", old.seed_text.clone(), new.seed_text.clone()),
        (
            "stall_timeout_secs",
            old.stall_timeout_secs.to_string(),
            new.stall_timeout_secs.to_string(),
        ),
        ("timeout_scale", scale(old), scale(new)),
        ("strict", strict(old), strict(new)),
        ("self_check", vouched(old), vouched(new)),
        // Verdicts under a lossy link are not comparable with an ideal link's.
        (
            "network",
            old.network_profile().to_string(),
            new.network_profile().to_string(),
        ),
        (
            "phases",
            old.phases.len().to_string(),
            new.phases.len().to_string(),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(setting, o, n)| {
            // The phase count can stay while the selection changes: the ids decide.
            if *setting == "phases" {
                old.phases != new.phases
            } else {
                o != n
            }
        })
        .map(|(setting, old, new)| SettingChange {
            setting: setting.to_string(),
            old,
            new,
        })
        .collect()
}

/// The ids of `a` that `b` lacks, in `a`'s order.
fn only_in(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|p| !b.contains(p)).cloned().collect()
}

/// `row`'s verdict in `phase`, `not run` when it has none (as class.csv's cell).
fn verdict<'a>(row: &'a Row, phase: &str) -> &'a str {
    row.verdicts
        .iter()
        .find(|(p, _)| p == phase)
        .map_or(NOT_RUN, |(_, v)| v.as_str())
}

/// A status as compared: numbers masked, because an error quotes ports and pids that differ on
/// every run (`expected the proxy to listen on port 41827`); a different kind or cause still
/// differs (`error: ... not executable` -> `error: the proxy never started ...`).
fn status_key(status: &str) -> String {
    let mut key = String::with_capacity(status.len());
    let mut in_number = false;
    for c in status.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                key.push('#');
            }
            in_number = true;
        } else {
            key.push(c);
            in_number = false;
        }
    }
    key
}

impl RowSummary {
    fn of(r: &Row) -> RowSummary {
        RowSummary {
            path: r.path.clone(),
            status: r.status.clone(),
            counts: r.counts,
        }
    }

    /// As `grade` prints a finished row: `15 passed, 2 failed`, or the status.
    fn line(&self) -> String {
        class_table::status_line(&self.status, &self.counts)
    }
}

/// The lines for a person: settings, phases only one table ran, a line per change (columns
/// aligned), then the summary. `old` and `new` name the tables in the incomplete-table notes.
pub fn human(d: &ClassDiff, old: &str, new: &str) -> String {
    let mut s = String::new();
    for c in &d.settings {
        let _ = writeln!(s, "settings: {} {} -> {}", c.setting, c.old, c.new);
    }
    for (which, phases) in [
        ("OLD", &d.phases_only_in_old),
        ("NEW", &d.phases_only_in_new),
    ] {
        if !phases.is_empty() {
            let _ = writeln!(s, "phases only in {which}: {}", phases.join(", "));
        }
    }
    for (which, path, complete, other) in [
        ("OLD", old, d.old_complete, "NEW"),
        ("NEW", new, d.new_complete, "OLD"),
    ] {
        if !complete {
            let _ = writeln!(
                s,
                "note: {which} ({path}) is incomplete (interrupted?): submissions it lacks show as only in {other}"
            );
        }
    }
    let mut lines: Vec<(&str, String, String)> = Vec::new();
    for sub in &d.submissions {
        match sub {
            SubmissionDiff::Changed {
                name,
                status,
                phases,
            } => {
                if let Some(t) = status {
                    lines.push((name, "status".into(), format!("{} -> {}", t.old, t.new)));
                }
                for p in phases {
                    lines.push((name, p.phase.clone(), format!("{} -> {}", p.old, p.new)));
                }
            }
            SubmissionDiff::OnlyInOld { name, row } => {
                lines.push((name, "only in OLD".into(), row.line()));
            }
            SubmissionDiff::OnlyInNew { name, row } => {
                lines.push((name, "only in NEW".into(), row.line()));
            }
        }
    }
    let name_width = lines.iter().map(|l| l.0.chars().count()).max().unwrap_or(0);
    let what_width = lines.iter().map(|l| l.1.chars().count()).max().unwrap_or(0);
    for (name, what, change) in &lines {
        let _ = writeln!(s, "{name:<name_width$}  {what:<what_width$}  {change}");
    }
    let m = d.summary;
    let _ = writeln!(
        s,
        "{} submission{} changed, {} unchanged, {} only in OLD, {} only in NEW",
        m.changed,
        if m.changed == 1 { "" } else { "s" },
        m.unchanged,
        m.only_in_old,
        m.only_in_new
    );
    s
}

/// The JSON document: `format`, `version`, the two tables' paths, then the diff's fields.
pub fn json(d: &ClassDiff, old: &str, new: &str) -> String {
    #[derive(Serialize)]
    struct Document<'a> {
        format: &'static str,
        version: u32,
        old: &'a str,
        new: &'a str,
        #[serde(flatten)]
        diff: &'a ClassDiff,
    }
    let doc = Document {
        format: CLASS_DIFF_FORMAT,
        version: CLASS_DIFF_VERSION,
        old,
        new,
        diff: d,
    };
    serde_json::to_string_pretty(&doc).expect("plain data serialises") + "\n"
}

/// The directory `class_table::read` reads for a table given as `path`: the directory itself,
/// or the one holding a class.json given by name. Another file is refused rather than swapped
/// for the class.json beside it.
fn table_dir(path: &Path) -> Result<PathBuf, String> {
    if path.is_dir() || path.file_name().is_none_or(|n| n != CLASS_JSON) {
        if path.exists() && !path.is_dir() {
            return Err(format!(
                "{} is not a class table: give the directory holding its {CLASS_JSON}, or a file named {CLASS_JSON}",
                path.display()
            ));
        }
        return Ok(path.to_path_buf());
    }
    Ok(match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

/// Reads the table at `path` through the one reader; Err: one line naming the file.
fn load(path: &Path) -> Result<Class, String> {
    let dir = table_dir(path)?;
    class_table::read(&dir).map_err(|e| match e {
        Unreadable::Missing(line) | Unreadable::Bad(line) => line,
    })
}

/// `tcpproxy-test grade diff`: the one place here that reads files and writes to `console`.
pub fn main(a: &DiffArgs, console: &Console) -> std::process::ExitCode {
    let code = match load(&a.old).and_then(|old| Ok((old, load(&a.new)?))) {
        Ok((old, new)) => {
            let d = diff(&old, &new);
            let (o, n) = (a.old.display().to_string(), a.new.display().to_string());
            let text = match a.format {
                DiffFormat::Human => human(&d, &o, &n),
                DiffFormat::Json => json(&d, &o, &n),
            };
            console.out(&text);
            if d.any_changed() {
                crate::exit_code::EXIT_FAILED
            } else {
                crate::exit_code::EXIT_PASSED
            }
        }
        Err(msg) => {
            console.err_line(format_args!("tcpproxy-test grade diff: {msg}"));
            crate::exit_code::EXIT_USAGE
        }
    };
    std::process::ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class_table::{CLASS_JSON_FORMAT, CLASS_JSON_VERSION};

    const PHASES: [&str; 3] = ["echo/single", "shutdown/one-way", "shutdown/flush"];

    // Built from JSON, as the tables are read: fields class.json may lack take their defaults.
    fn row(name: &str, status: &str, verdicts: &[&str]) -> Row {
        let count = |v: &str| verdicts.iter().filter(|x| **x == v).count();
        let verdicts: Vec<(&str, &str)> = PHASES
            .iter()
            .copied()
            .zip(verdicts.iter().copied())
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": name,
            "path": format!("submissions/{name}"),
            "status": status,
            "passed": count("passed"),
            "failed": count("failed"),
            "warning": count("warning"),
            "skipped": count("skipped"),
            "verdicts": verdicts,
        }))
        .unwrap()
    }

    /// A table of graded rows: (name, its verdicts).
    fn graded(rows: &[(&str, [&str; 3])]) -> Class {
        class(
            rows.iter()
                .map(|(name, v)| row(name, "graded", v))
                .collect(),
        )
    }

    fn class(rows: Vec<Row>) -> Class {
        let mut c: Class = serde_json::from_value(serde_json::json!({
            "format": CLASS_JSON_FORMAT,
            "version": CLASS_JSON_VERSION,
            "harness_version": "0.1.0",
            "host": "grader",
            "seed": 7,
            "seed_text": "7",
            "stall_timeout_secs": 2.0,
            "timeout_scale": 1.0,
            "strict": false,
            "phases": PHASES,
            "complete": true,
            "submissions": [],
        }))
        .unwrap();
        c.submissions = rows;
        c
    }

    const P: &str = "passed";
    const F: &str = "failed";

    #[test]
    fn equal_tables_have_no_changes() {
        let c = class(vec![row("alice", "graded", &[P, P, F])]);
        let d = diff(&c, &c.clone());
        assert!(!d.any_changed());
        assert!(d.settings.is_empty());
        assert_eq!(
            d.summary,
            Summary {
                changed: 0,
                unchanged: 1,
                only_in_old: 0,
                only_in_new: 0
            }
        );
        assert_eq!(
            human(&d, "a", "b"),
            "0 submissions changed, 1 unchanged, 0 only in OLD, 0 only in NEW\n"
        );
    }

    #[test]
    fn each_changed_verdict_is_a_line_grouped_by_submission_in_new_order() {
        let old = graded(&[
            ("alice", [P, F, F]),
            ("bob", [P, P, P]),
            ("carol", [P, P, F]),
        ]);
        let new = graded(&[
            ("carol", [P, F, P]),
            ("bob", [P, P, P]),
            ("alice", [P, P, "warning"]),
        ]);
        let d = diff(&old, &new);
        assert!(d.any_changed());
        let names: Vec<&str> = d
            .submissions
            .iter()
            .map(|s| match s {
                SubmissionDiff::Changed { name, .. } => name.as_str(),
                _ => panic!("{s:?}"),
            })
            .collect();
        assert_eq!(names, ["carol", "alice"]);
        assert_eq!(
            human(&d, "old", "new"),
            "carol  shutdown/one-way  passed -> failed\n\
             carol  shutdown/flush    failed -> passed\n\
             alice  shutdown/one-way  failed -> passed\n\
             alice  shutdown/flush    failed -> warning\n\
             2 submissions changed, 1 unchanged, 0 only in OLD, 0 only in NEW\n"
        );
    }

    #[test]
    fn a_status_change_is_reported_and_numbers_in_an_error_are_not() {
        let never = |port: u32| {
            format!(
                "error: the proxy never started in any phase: expected the proxy to listen on port {port}, but it exited first"
            )
        };
        let missing = "error: proxy 'submissions/dave/tcpproxy' cannot be used: No such file or directory (os error 2)";
        let old = class(vec![
            row("alice", "graded", &[F, F, F]),
            row("frank", &never(41827), &[F, F, F]),
            row("dave", missing, &[]),
        ]);
        let new = class(vec![
            row("alice", &never(39001), &[F, F, F]),
            row("frank", &never(35555), &[F, F, F]),
            row("dave", "graded", &[P, P, P]),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.summary.changed, 2, "{d:?}");
        assert_eq!(d.summary.unchanged, 1, "frank only changed ports: {d:?}");
        let SubmissionDiff::Changed { status, phases, .. } = &d.submissions[1] else {
            panic!("{d:?}");
        };
        assert_eq!(
            status.as_ref().map(|t| (t.old.as_str(), t.new.as_str())),
            Some((missing, "graded"))
        );
        // A row that could not run has no verdicts: each phase was `not run`.
        assert_eq!(phases.len(), 3);
        assert_eq!(
            (phases[0].old.as_str(), phases[0].new.as_str()),
            (NOT_RUN, P)
        );
        assert_eq!(
            human(&d, "old", "new"),
            format!(
                "alice  status            graded -> {}\n\
                 dave   status            {missing} -> graded\n\
                 dave   echo/single       not run -> passed\n\
                 dave   shutdown/one-way  not run -> passed\n\
                 dave   shutdown/flush    not run -> passed\n\
                 2 submissions changed, 1 unchanged, 0 only in OLD, 0 only in NEW\n",
                never(39001)
            )
        );
    }

    #[test]
    fn submissions_in_one_table_only_are_listed_and_counted() {
        let old = class(vec![
            row("alice", "graded", &[P, P, P]),
            row("bob", "graded", &[P, F, F]),
        ]);
        let new = class(vec![
            row("erin", "graded", &[P, P, P]),
            row("alice", "graded", &[P, P, P]),
        ]);
        let d = diff(&old, &new);
        assert!(d.any_changed());
        assert_eq!(
            d.summary,
            Summary {
                changed: 0,
                unchanged: 1,
                only_in_old: 1,
                only_in_new: 1
            }
        );
        assert_eq!(
            human(&d, "old", "new"),
            "erin  only in NEW  3 passed, 0 failed\n\
             bob   only in OLD  1 passed, 2 failed\n\
             0 submissions changed, 1 unchanged, 1 only in OLD, 1 only in NEW\n"
        );
    }

    #[test]
    fn phases_in_one_table_only_are_a_header_not_a_change_per_row() {
        let old = class(vec![row("alice", "graded", &[P, F, F])]);
        let mut new = class(vec![row("alice", "graded", &[P, F])]);
        new.phases.pop();
        new.submissions[0]
            .verdicts
            .push(("timeout/lazy".into(), P.into()));
        new.phases.push("timeout/lazy".into());
        let d = diff(&old, &new);
        assert_eq!(d.phases_only_in_old, ["shutdown/flush"]);
        assert_eq!(d.phases_only_in_new, ["timeout/lazy"]);
        assert!(!d.any_changed(), "{d:?}");
        assert_eq!(
            human(&d, "old", "new"),
            "settings: phases 3 -> 3\n\
             phases only in OLD: shutdown/flush\n\
             phases only in NEW: timeout/lazy\n\
             0 submissions changed, 1 unchanged, 0 only in OLD, 0 only in NEW\n"
        );
    }

    #[test]
    fn differing_settings_come_first_each_on_its_line() {
        let old = class(vec![row("alice", "graded", &[P, F, F])]);
        let mut new = class(vec![row("alice", "graded", &[P, P, F])]);
        new.seed_text = "8".into();
        new.stall_timeout_secs = 10.0;
        new.strict = Some(true);
        new.harness_version = "0.2.0".into();
        new.timeout_scale = None; // an older table: read as 1, the same
        new.shard = Some(crate::shard::Shard { index: 1, count: 2 });
        new.network = Some("lossy".into()); // the old table's none: ideal
        let d = diff(&old, &new);
        assert_eq!(
            human(&d, "old", "new"),
            "settings: harness_version 0.1.0 -> 0.2.0\n\
             settings: shard none -> 1/2\n\
             settings: seed 7 -> 8\n\
             settings: stall_timeout_secs 2 -> 10\n\
             settings: strict false -> true\n\
             settings: network ideal -> lossy\n\
             alice  shutdown/one-way  failed -> passed\n\
             1 submission changed, 0 unchanged, 0 only in OLD, 0 only in NEW\n"
        );
    }

    #[test]
    fn an_incomplete_table_is_noted() {
        let old = class(vec![row("alice", "graded", &[P, P, P])]);
        let mut new = class(vec![]);
        new.complete = false;
        let text = human(&diff(&old, &new), "old", "grades");
        assert!(
            text.starts_with("note: NEW (grades) is incomplete (interrupted?): submissions it lacks show as only in OLD\n"),
            "{text}"
        );
    }

    #[test]
    fn the_json_document_holds_the_same_changes() {
        let old = graded(&[("alice", [P, F, F]), ("bob", [P, P, P])]);
        let mut new = graded(&[("alice", [P, P, F])]);
        new.seed_text = "8".into();
        let d = diff(&old, &new);
        let v: serde_json::Value = serde_json::from_str(&json(&d, "old", "new")).unwrap();
        assert_eq!(v["format"], CLASS_DIFF_FORMAT);
        assert_eq!(v["version"], CLASS_DIFF_VERSION);
        assert_eq!(
            (v["old"].as_str(), v["new"].as_str()),
            (Some("old"), Some("new"))
        );
        assert_eq!(
            v["settings"],
            serde_json::json!([{"setting": "seed", "old": "7", "new": "8"}])
        );
        assert_eq!(
            v["submissions"],
            serde_json::json!([
                {"change": "changed", "name": "alice", "phases": [
                    {"phase": "shutdown/one-way", "old": "failed", "new": "passed"}
                ]},
                {"change": "only_in_old", "name": "bob", "row": {
                    "path": "submissions/bob", "status": "graded",
                    "passed": 3, "failed": 0, "warning": 0, "skipped": 0, "inconclusive": 0
                }}
            ])
        );
        assert_eq!(
            v["summary"],
            serde_json::json!({"changed": 1, "unchanged": 0, "only_in_old": 1, "only_in_new": 0})
        );
        assert_eq!(v["phases_only_in_new"], serde_json::json!([]));
        assert_eq!(v["old_complete"], true);
    }

    #[test]
    fn a_table_is_a_directory_or_its_class_json() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(table_dir(d).unwrap(), d);
        assert_eq!(table_dir(&d.join(CLASS_JSON)).unwrap(), d);
        assert_eq!(table_dir(Path::new(CLASS_JSON)).unwrap(), Path::new("."));
        // Missing: class_table::read names the file it could not read.
        assert_eq!(table_dir(&d.join("gone")).unwrap(), d.join("gone"));
        let other = d.join("before.json");
        std::fs::write(&other, "{}").unwrap();
        let e = table_dir(&other).unwrap_err();
        assert!(e.contains("before.json is not a class table"), "{e}");
    }
}
