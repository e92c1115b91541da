//! The class table `grade` writes and `grade merge` joins: a row per submission, as
//! class.json (the settings every row was graded with, then the rows) and class.csv (a column
//! per phase). A merge refuses shards that were graded differently or do not add up to the
//! class.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::shard::Shard;

/// Bumped when class.json changes in a way a reader would notice.
pub const CLASS_JSON_VERSION: u32 = 1;

/// One row of the class table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub path: String,
    /// The network it was graded in, as the reports name it (`network namespace`, or `host
    /// network: ` and why: `crate::sandbox`); absent in tables written before it was recorded.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// The `--network` profile its links had (`ideal`, `lossy`, ...); absent likewise.
    #[serde(default)]
    pub network: Option<String>,
    /// `graded`; `error: ...` when it could not run or never listened; `inconclusive: ...`
    /// when the harness could not run it.
    pub status: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Verdict per phase id, in suite order; empty when the submission could not run.
    pub verdicts: Vec<(String, String)>,
    /// The failure hint per phase id, for the phases that did not pass with one: what
    /// class.html counts across the class. Absent in tables written before it was recorded.
    #[serde(default)]
    pub hints: Vec<(String, String)>,
    /// Where its reports are, in a merged table (`SHARD_DIR/NAME`); absent otherwise: `NAME`
    /// beside the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<String>,
}

/// A row's phases counted by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub warning: usize,
    pub skipped: usize,
    /// Phases the reference proxy failed too, beside it, every round of the self-check.
    #[serde(default)]
    pub inconclusive: usize,
}

/// A row as `grade` prints it once finished: `15 passed, 2 failed` when graded, else its
/// status.
pub fn status_line(status: &str, counts: &Counts) -> String {
    if status != "graded" {
        return status.to_string();
    }
    let mut s = format!("{} passed, {} failed", counts.passed, counts.failed);
    if counts.warning > 0 {
        let _ = write!(s, ", {} warning", counts.warning);
    }
    s
}

/// class.json: the settings every row was graded with, and the rows.
#[derive(Clone, Serialize, Deserialize)]
pub struct Class {
    pub format: String,
    pub version: u32,
    /// The tcpproxy-test version that graded it: shards of different versions are not merged.
    #[serde(default)]
    pub harness_version: String,
    /// The machine that graded it (for a merged table, every shard's).
    #[serde(default)]
    pub host: String,
    /// The one-minute load average when the last row was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<f64>,
    /// `--shard K/N`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// A shard's whole class (every name, in order), so a merge can tell a missing row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_submissions: Option<Vec<String>>,
    pub seed: u64,
    /// As in the run report: the seed as a string, which no JSON reader rounds.
    pub seed_text: String,
    pub stall_timeout_secs: f64,
    /// Absent in files written before `--resume` existed.
    #[serde(default)]
    pub timeout_scale: Option<f64>,
    #[serde(default)]
    pub strict: Option<bool>,
    /// The `--network` profile every row was graded under; absent in files written before it
    /// existed, which were all graded on an ideal link.
    #[serde(default)]
    pub network: Option<String>,
    pub phases: Vec<String>,
    /// The proxy that vouched for the host (`bundled` for the reference built into the
    /// harness, else the `--self-check-reference` given); absent with `--no-self-check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_check: Option<String>,
    /// False while the batch runs (and after an interrupt): rows are missing.
    #[serde(default)]
    pub complete: bool,
    pub submissions: Vec<Row>,
}

pub const CLASS_JSON: &str = "class.json";
pub const CLASS_CSV: &str = "class.csv";
pub const CLASS_HTML: &str = "class.html";
pub const CLASS_JSON_FORMAT: &str = "tcpproxy-test-class";

/// Why class.json could not be read as a class table; each says so in one line.
pub enum Unreadable {
    /// There is none.
    Missing(String),
    /// It cannot be read, is not a class table, or is another version.
    Bad(String),
}

/// `dir`'s class.json, with its seed taken from `seed_text`, which no JSON writer rounds (a
/// hand-edited or re-serialised file's number may have been).
pub fn read(dir: &Path) -> Result<Class, Unreadable> {
    let path = dir.join(CLASS_JSON);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let line = format!("cannot read {}: {e}", path.display());
        if e.kind() == std::io::ErrorKind::NotFound {
            Unreadable::Missing(line)
        } else {
            Unreadable::Bad(line)
        }
    })?;
    let mut c: Class = serde_json::from_str(&text)
        .map_err(|e| Unreadable::Bad(format!("{} is not a class table: {e}", path.display())))?;
    if c.format != CLASS_JSON_FORMAT || c.version != CLASS_JSON_VERSION {
        return Err(Unreadable::Bad(format!(
            "{} is {} version {}; this harness reads {CLASS_JSON_FORMAT} version {CLASS_JSON_VERSION}",
            path.display(),
            c.format,
            c.version
        )));
    }
    if let Ok(seed) = c.seed_text.parse() {
        c.seed = seed;
    }
    Ok(c)
}

/// Writes class.json, class.csv and class.html, each replaced whole (an interrupt never leaves
/// half a table).
pub fn write_class(out_dir: &Path, class: &Class) -> Result<(), String> {
    let json = serde_json::to_string_pretty(class).expect("plain data serialises") + "\n";
    let csv = class_csv(&class.phases, &class.submissions);
    let html = crate::class_page::render(class);
    for (file, text) in [(CLASS_JSON, json), (CLASS_CSV, csv), (CLASS_HTML, html)] {
        let (path, partial) = (out_dir.join(file), out_dir.join(format!(".{file}.partial")));
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

impl Class {
    /// The `--network` profile its rows were graded under (`ideal` for a table older than
    /// the field).
    pub fn network_profile(&self) -> &str {
        self.network.as_deref().unwrap_or("ideal")
    }
}

impl Row {
    /// A row saying `status`, nothing counted and no verdicts yet.
    pub fn new(name: impl Into<String>, path: impl Into<String>, status: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            path: path.into(),
            sandbox: None,
            network: None,
            status: status.into(),
            counts: Counts::default(),
            verdicts: vec![],
            hints: vec![],
            reports: None,
        }
    }

    pub fn status_line(&self) -> String {
        status_line(&self.status, &self.counts)
    }
}

/// `submission,path,sandbox,network,status,passed,failed,warning,skipped,inconclusive,<phase
/// ids...>`, one row per submission: where it ran, then what it got. (The two columns sit before
/// `status` so the counts and verdicts keep their places at the end of a row.)
pub fn class_csv(phase_ids: &[String], rows: &[Row]) -> String {
    let mut s = String::from(
        "submission,path,sandbox,network,status,passed,failed,warning,skipped,inconclusive",
    );
    for id in phase_ids {
        let _ = write!(s, ",{}", csv_field(id));
    }
    s.push('\n');
    for r in rows {
        let _ = write!(
            s,
            "{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.name),
            csv_field(&r.path),
            csv_field(r.sandbox.as_deref().unwrap_or_default()),
            csv_field(r.network.as_deref().unwrap_or_default()),
            csv_field(&r.status),
            r.counts.passed,
            r.counts.failed,
            r.counts.warning,
            r.counts.skipped,
            r.counts.inconclusive
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

/// The shards' tables joined: every submission of the class once, in the class's order, each
/// row naming the folder that holds its reports. Err: one line saying what does not add up.
pub fn merge(dirs: &[PathBuf]) -> Result<Class, String> {
    let mut shards: Vec<(&Path, Class)> = Vec::new();
    for dir in dirs {
        let class = read(dir).map_err(|e| match e {
            Unreadable::Missing(line) | Unreadable::Bad(line) => line,
        })?;
        shards.push((dir, class));
    }
    let (first_dir, first) = &shards[0];
    let class = first
        .class_submissions
        .clone()
        .ok_or_else(|| format!("{} was not graded with --shard", first_dir.display()))?;
    let count = first.shard.map_or(0, |s| s.count);
    let mut seen: HashMap<u32, &Path> = HashMap::new();
    let mut rows: HashMap<String, Row> = HashMap::new();
    for (dir, c) in &shards {
        let shard = c
            .shard
            .ok_or_else(|| format!("{} was not graded with --shard", dir.display()))?;
        agree(first_dir, first, dir, c)?;
        if let Some(other) = seen.insert(shard.index, dir) {
            return Err(format!(
                "{} and {} are both shard {shard}",
                other.display(),
                dir.display()
            ));
        }
        if !c.complete {
            return Err(format!(
                "shard {shard} in {} is incomplete (interrupted?): finish it with the same command and --resume",
                dir.display()
            ));
        }
        for row in &c.submissions {
            let mut row = row.clone();
            row.reports = Some(dir.join(&row.name).display().to_string());
            if let Some(twice) = rows.insert(row.name.clone(), row) {
                return Err(format!(
                    "{} has a row in two shards ({} is one)",
                    twice.name,
                    dir.display()
                ));
            }
        }
    }
    if let Some(missing) = (1..=count).find(|k| !seen.contains_key(k)) {
        return Err(format!("shard {missing}/{count} is missing"));
    }
    let expected: BTreeSet<&String> = class.iter().collect();
    if let Some(stray) = rows.keys().find(|n| !expected.contains(n)) {
        return Err(format!("{stray} has a row but is not in the class"));
    }
    let mut merged = Vec::with_capacity(class.len());
    for name in &class {
        let row = rows
            .remove(name)
            .ok_or_else(|| format!("{name} has no row in any shard"))?;
        merged.push(row);
    }
    let mut hosts: Vec<String> = shards.iter().map(|(_, c)| c.host.clone()).collect();
    hosts.dedup();
    Ok(Class {
        shard: None,
        class_submissions: None,
        complete: true,
        host: hosts.join(","),
        load_average: None,
        submissions: merged,
        ..shards[0].1.clone()
    })
}

/// Shards graded alike can be joined: the same harness, seed, settings, phases and class.
fn agree(a_dir: &Path, a: &Class, b_dir: &Path, b: &Class) -> Result<(), String> {
    let differs = |what: &str, x: String, y: String| {
        Err(format!(
            "{} and {} differ in {what} ({x} and {y}): their verdicts cannot share a table",
            a_dir.display(),
            b_dir.display()
        ))
    };
    if a.harness_version != b.harness_version {
        return differs(
            "the harness version",
            a.harness_version.clone(),
            b.harness_version.clone(),
        );
    }
    if a.seed_text != b.seed_text {
        return differs("seed", a.seed_text.clone(), b.seed_text.clone());
    }
    if a.stall_timeout_secs != b.stall_timeout_secs {
        let s = |c: &Class| c.stall_timeout_secs.to_string();
        return differs("stall timeout", s(a), s(b));
    }
    if a.timeout_scale != b.timeout_scale {
        let s = |c: &Class| format!("{:?}", c.timeout_scale);
        return differs("timeout scale", s(a), s(b));
    }
    if a.strict != b.strict {
        let s = |c: &Class| format!("{:?}", c.strict);
        return differs("--strict", s(a), s(b));
    }
    if a.network_profile() != b.network_profile() {
        let s = |c: &Class| c.network_profile().to_string();
        return differs("--network", s(a), s(b));
    }
    if a.phases != b.phases {
        return differs("phases", a.phases.join(" "), b.phases.join(" "));
    }
    if a.self_check != b.self_check {
        let s = |c: &Class| c.self_check.clone().unwrap_or_else(|| "off".into());
        return differs("self-check", s(a), s(b));
    }
    let count = |c: &Class| c.shard.map_or(0, |s| s.count);
    if count(a) != count(b) {
        return differs("shard count", count(a).to_string(), count(b).to_string());
    }
    if a.class_submissions != b.class_submissions {
        return differs("the submissions given", "one list".into(), "another".into());
    }
    Ok(())
}

/// This host's name, for the table: which machine graded a shard.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The one-minute load average: how busy the grading host was when a shard finished.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_csv_has_a_row_per_submission_and_a_column_per_phase() {
        let rows = vec![
            Row {
                counts: Counts {
                    passed: 1,
                    failed: 1,
                    ..Counts::default()
                },
                verdicts: vec![
                    ("echo/single".into(), "passed".into()),
                    ("shutdown/one-way".into(), "failed".into()),
                ],
                sandbox: Some("host network: cannot make a network namespace: a, b".into()),
                network: Some("ideal".into()),
                ..Row::new("alice", "a", "graded")
            },
            Row {
                sandbox: Some("network namespace".into()),
                network: Some("lossy".into()),
                ..Row::new("bob", "b", "error: proxy 'b' is not executable, \"x\"")
            },
        ];
        let ids = ["echo/single".to_string(), "shutdown/one-way".to_string()];
        let csv = class_csv(&ids, &rows);
        assert_eq!(
            csv,
            "submission,path,sandbox,network,status,passed,failed,warning,skipped,inconclusive,echo/single,shutdown/one-way\n\
             alice,a,\"host network: cannot make a network namespace: a, b\",ideal,graded,1,1,0,0,0,passed,failed\n\
             bob,b,network namespace,lossy,\"error: proxy 'b' is not executable, \"\"x\"\"\",0,0,0,0,0,not run,not run\n"
        );
    }
}
