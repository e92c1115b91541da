//! `tcpproxy-test grade`: a whole class at once. Each submission is graded like a single run;
//! the results become a class table (CSV and JSON) and a folder of artifacts per submission. A
//! submission that is missing or cannot run gets its own row, never an aborted batch.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tcpproxy::flag_value;
use tokio::sync::Semaphore;

use crate::class_table::{
    self, CLASS_CSV, CLASS_JSON, CLASS_JSON_FORMAT, CLASS_JSON_VERSION, Class, Counts, Row,
    Unreadable, write_class,
};
use crate::console::Console;
use crate::contract::STALL_TIMEOUT;
use crate::deadline::Timing;
use crate::harness::{ProxyCommand, Starts};
use crate::phase::{Outcome, Rules, Verdict};
use crate::proxy_program::resolve;
use crate::report::{self, Format, RunReport};
use crate::shard::{self, Shard};
use crate::suite::{self, Filter, Running};

/// The executable looked for inside a submission that is a directory.
pub const SUBMISSION_EXECUTABLE: &str = "tcpproxy";
/// `grade`'s flags, a subcommand of the one command line (`crate::cli`).
#[derive(Debug, clap::Args)]
#[command(
    about = "Grade many proxies: a class table (CSV, JSON, HTML) and artifacts per submission",
    long_about = "Grade many proxies. Each SUBMISSION is an executable, or a directory holding an \
        executable named `tcpproxy`. Writes OUT_DIR/class.csv, OUT_DIR/class.json, \
        OUT_DIR/class.html (the class at a glance) and, per submission, \
        OUT_DIR/NAME/{report.txt,report.json,junit.xml,report.html}. The table is rewritten as \
        each submission finishes, so an interrupted batch keeps every row it finished; \
        `--resume` then grades only the others. With `--shard K/N` (and `--seed`), it grades \
        only its share of the submissions; `grade merge` joins the shards' tables. Exit status: \
        0 once every submission has a row, whatever its grade; 2 usage error; 3 the harness \
        could not run (or a row is inconclusive); 130 interrupted.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    subcommand_value_name = "COMMAND"
)]
pub struct Args {
    /// Where the class table and per-submission artifacts go.
    #[arg(long, value_name = "DIR", default_value = "grades")]
    out_dir: PathBuf,
    /// Submissions graded at once (each runs its phases concurrently).
    #[arg(long, allow_negative_numbers = true, value_name = "N", default_value_t = 1, value_parser = |s: &str| flag_value::count(s, "submissions", u32::MAX as usize))]
    jobs: usize,
    /// The stall timeout every submission was written for.
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", default_value_t = STALL_TIMEOUT.as_secs_f64(), value_parser = |s: &str| flag_value::seconds(s, flag_value::DAY_SECS))]
    stall_timeout: f64,
    /// Stretch every other deadline by this factor.
    #[arg(long, allow_negative_numbers = true, value_name = "F", default_value_t = 1.0, value_parser = flag_value::factor)]
    timeout_scale: f64,
    /// Payload seed, the same for every submission [default: random].
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = |s: &str| flag_value::whole(s, "a seed", 0..=u64::MAX))]
    seed: Option<u64>,
    /// Count warnings as failures.
    #[arg(long)]
    strict: bool,
    /// Take failures as they come: do not run a failed phase again beside the reference proxy.
    /// (By default each is, up to twice, and one the reference fails too is inconclusive.)
    #[arg(long)]
    no_self_check: bool,
    /// The proxy that vouches for the host (a staff solution, say), started like a submission
    /// [default: the bundled reference proxy].
    #[arg(long, value_name = "PROGRAM", conflicts_with = "no_self_check")]
    self_check_reference: Option<PathBuf>,
    /// Keep the rows OUT_DIR/class.json already has for these submissions (same paths, same
    /// settings) and grade only the rest; the seed is taken from it.
    #[arg(long)]
    resume: bool,
    /// Grade only shard K of N: the submissions whose name hashes to it, the same split on
    /// every machine given the same SUBMISSIONs. Needs --seed, so every shard sends the same
    /// payloads.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Take --shard from the scheduler: a Slurm job array (SLURM_ARRAY_TASK_ID, _MIN, _COUNT)
    /// or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with TCPPROXY_TEST_SHARD_COUNT set to
    /// the Job's completions).
    #[arg(long, conflicts_with = "shard")]
    shard_from_env: bool,
    /// Run only phases matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Skip phases matching GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    #[command(flatten)]
    sandbox: crate::sandbox::Flag,
    #[command(flatten)]
    confine: crate::confine::Flag,
    /// Executables, or directories holding an executable named `tcpproxy`.
    #[arg(value_name = "SUBMISSION", required = true)]
    submissions: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<GradeCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum GradeCommand {
    /// Join the class tables of `grade --shard` runs into one, as a single `grade` writes it.
    Merge(MergeArgs),
    // Its help, short and long, is on DiffArgs.
    Diff(crate::class_diff::DiffArgs),
}

#[derive(Debug, clap::Args)]
#[command(
    long_about = "Join the class tables of `grade --shard K/N` runs into one. Each SHARD_DIR is \
        a shard's --out-dir (copied back from its machine). Every shard must be there, finished, \
        graded by the same harness version with the same seed, settings, phases and \
        SUBMISSIONs; each submission must have one row. Writes OUT_DIR/class.csv, \
        OUT_DIR/class.json and OUT_DIR/class.html, whose rows name the folder holding their \
        reports. Exit status: 0 \
        merged; 2 the shards do not add up (one line says why)."
)]
pub struct MergeArgs {
    /// Where the merged class table goes.
    #[arg(long, value_name = "DIR", default_value = "grades")]
    out_dir: PathBuf,
    /// The shards' output directories.
    #[arg(value_name = "SHARD_DIR", required = true)]
    shards: Vec<PathBuf>,
}

/// A validated `grade`: its flags and the phases they select, or a merge.
#[derive(Debug)]
pub enum Grade {
    Class {
        args: Box<Args>,
        filter: Filter,
        /// `--run-as` and `--limit-*`, checked (`crate::confine`).
        confine: crate::confine::Policy,
    },
    Merge(MergeArgs),
    Diff(crate::class_diff::DiffArgs),
}

/// Checks what clap cannot: the phase globs, and a seed for shards.
pub fn config(mut args: Args) -> Result<Grade, String> {
    if let Some(GradeCommand::Merge(m)) = args.command {
        return Ok(Grade::Merge(m));
    }
    if let Some(GradeCommand::Diff(d)) = args.command {
        return Ok(Grade::Diff(d));
    }
    if args.shard_from_env {
        args.shard = Some(shard::from_env(|name| std::env::var(name).ok())?);
    }
    if args.shard.is_some() && args.seed.is_none() {
        return Err(
            "--shard needs --seed: every shard must send the same payloads (any number, the same on every machine)"
                .into(),
        );
    }
    let filter = Filter::new(&args.only, &args.exclude)?;
    let confine = args.confine.policy()?;
    Ok(Grade::Class {
        args: Box::new(args),
        filter,
        confine,
    })
}

/// `tcpproxy-test grade`, its flags parsed and checked.
pub fn main(g: Grade, console: Console) -> std::process::ExitCode {
    let (a, filter) = match g {
        Grade::Class {
            args,
            filter,
            confine,
        } => {
            crate::confine::announce("tcpproxy-test grade", &confine, &console);
            (*args, filter)
        }
        Grade::Merge(m) => return merge(&m, &console),
        Grade::Diff(d) => return crate::class_diff::main(&d, &console),
    };
    let finished = Arc::new(AtomicUsize::new(0));
    let note = {
        let (finished, out_dir) = (finished.clone(), a.out_dir.clone());
        move || {
            let n = finished.load(Ordering::Relaxed);
            (n > 0).then(|| {
                format!(
                    "{} holds the {n} finished; the same command with --resume grades the rest",
                    out_dir.join(CLASS_CSV).display()
                )
            })
        }
    };
    crate::runtime::run_noting(
        "tcpproxy-test grade",
        a.sandbox,
        grade(a, filter, finished, console),
        note,
    )
}

/// `grade merge`: the shards' tables joined into OUT_DIR's.
fn merge(m: &MergeArgs, console: &Console) -> std::process::ExitCode {
    let code = match class_table::merge(&m.shards).and_then(|class| {
        std::fs::create_dir_all(&m.out_dir)
            .map_err(|e| format!("cannot create {}: {e}", m.out_dir.display()))?;
        write_class(&m.out_dir, &class)?;
        Ok(class.submissions.len())
    }) {
        Ok(n) => {
            console.out_line(format_args!(
                "merged {} shards, {n} submissions, into {}",
                m.shards.len(),
                m.out_dir.display()
            ));
            crate::exit_code::EXIT_PASSED
        }
        Err(msg) => {
            console.err_line(format_args!("tcpproxy-test grade merge: {msg}"));
            crate::exit_code::EXIT_USAGE
        }
    };
    std::process::ExitCode::from(code)
}

async fn grade(a: Args, filter: Filter, finished: Arc<AtomicUsize>, console: Console) -> u8 {
    crate::harness::become_subreaper();
    crate::harness::raise_descriptor_limit();
    if let Err(e) = std::fs::create_dir_all(&a.out_dir) {
        console.err_line(format_args!(
            "tcpproxy-test grade: cannot create {}: {e}",
            a.out_dir.display()
        ));
        return crate::exit_code::EXIT_HARNESS;
    }
    let phase_ids: Vec<String> = filter.select().iter().map(|p| p.id.to_string()).collect();
    // Names come from the whole list, so every shard names a submission alike.
    let all_names = unique_names(&a.submissions);
    let (submissions, names): (Vec<PathBuf>, Vec<String>) = a
        .submissions
        .iter()
        .cloned()
        .zip(all_names.iter().cloned())
        .filter(|(_, name)| a.shard.is_none_or(|s| s.takes(name)))
        .unzip();
    let paths: Vec<String> = submissions
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if let Some(s) = a.shard {
        console.err_line(format_args!(
            "tcpproxy-test grade: shard {s}: {} of the {} submissions",
            names.len(),
            all_names.len()
        ));
    }
    let earlier = if a.resume {
        match resumable(&a, &phase_ids, &console) {
            Ok(c) => c,
            Err(msg) => {
                console.err_line(format_args!("tcpproxy-test grade: --resume: {msg}"));
                return crate::exit_code::EXIT_USAGE;
            }
        }
    } else {
        None
    };
    let seed = match &earlier {
        Some(c) => c.seed,
        None => a.seed.unwrap_or_else(rand::random),
    };
    let mut rows: Vec<Option<Row>> = vec![None; names.len()];
    if let Some(c) = &earlier {
        let kept = kept_rows(c, &names, &paths, &a.out_dir);
        for (slot, row) in rows.iter_mut().zip(kept) {
            *slot = row;
        }
        let n = rows.iter().flatten().count();
        console.err_line(format_args!(
            "tcpproxy-test grade: resuming: {n} of {} submissions already have a row in {}; grading the other {}",
            rows.len(),
            a.out_dir.join(CLASS_JSON).display(),
            rows.len() - n
        ));
    }
    let stall = Duration::from_secs_f64(a.stall_timeout);
    // The deadlines' own scale: --timeout-scale, stretched for the network profile.
    let scale = a.timeout_scale * a.sandbox.stretch();
    let rules = Rules {
        timing: Timing { stall, scale },
        seed,
        strict: a.strict,
    };
    let mut class = Class {
        format: CLASS_JSON_FORMAT.into(),
        version: CLASS_JSON_VERSION,
        harness_version: env!("CARGO_PKG_VERSION").into(),
        host: class_table::host(),
        load_average: None,
        shard: a.shard,
        class_submissions: a.shard.map(|_| all_names.clone()),
        seed,
        seed_text: seed.to_string(),
        stall_timeout_secs: a.stall_timeout,
        timeout_scale: Some(a.timeout_scale),
        strict: Some(a.strict),
        network: Some(a.sandbox.network.profile.name().into()),
        self_check: vouched_by(&a),
        phases: phase_ids.clone(),
        complete: false,
        submissions: vec![],
    };
    let reference = if a.no_self_check {
        None
    } else {
        let made = match &a.self_check_reference {
            Some(program) => resolve(program).map(|program| ProxyCommand {
                program,
                args: vec![],
            }),
            None => crate::reference::command(stall),
        };
        match made {
            Ok(r) => Some(Arc::new(r)),
            Err(msg) => {
                console.err_line(format_args!(
                    "tcpproxy-test grade: --self-check-reference: {msg}"
                ));
                return crate::exit_code::EXIT_USAGE;
            }
        }
    };
    let slots = Arc::new(Semaphore::new(a.jobs));
    let out_dir = Arc::new(a.out_dir.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (path, name)) in submissions.iter().cloned().zip(&names).enumerate() {
        if rows[i].is_some() {
            continue;
        }
        let (slots, filter, out_dir, name, reference, console) = (
            slots.clone(),
            filter.clone(),
            out_dir.clone(),
            name.clone(),
            reference.clone(),
            console.clone(),
        );
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("never closed");
            let how = How {
                filter,
                rules,
                stall,
                scale,
                reference,
            };
            let row = grade_one(&path, name, how, &out_dir, &console).await;
            (i, row)
        });
    }
    let (total, to_grade) = (rows.len(), tasks.len());
    let started = Instant::now();
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let (i, row) = match joined {
            Ok((i, Ok(row))) => (i, row),
            Ok((_, Err(msg))) => {
                console.err_line(format_args!(
                    "tcpproxy-test grade: the harness could not run: {msg}"
                ));
                return crate::exit_code::EXIT_HARNESS;
            }
            Err(e) => {
                console.err_line(format_args!(
                    "tcpproxy-test grade: the harness crashed: {e}"
                ));
                return crate::exit_code::EXIT_HARNESS;
            }
        };
        done += 1;
        console.err_line(format_args!(
            "[{done}/{to_grade}] {}: {} ({})",
            row.name,
            row.status_line(),
            eta(started.elapsed(), done, to_grade)
        ));
        rows[i] = Some(row);
        if let Err(msg) = save(&mut class, &rows, &a.out_dir) {
            console.err_line(format_args!("tcpproxy-test grade: {msg}"));
            return crate::exit_code::EXIT_HARNESS;
        }
        finished.store(class.submissions.len(), Ordering::Relaxed);
    }
    // Everything came from the earlier run: the table is written again, as complete.
    if to_grade == 0
        && let Err(msg) = save(&mut class, &rows, &a.out_dir)
    {
        console.err_line(format_args!("tcpproxy-test grade: {msg}"));
        return crate::exit_code::EXIT_HARNESS;
    }
    console.out_line(format_args!(
        "graded {total} submission{} into {}",
        if total == 1 { "" } else { "s" },
        a.out_dir.display()
    ));
    let inconclusive = class
        .submissions
        .iter()
        .filter(|r| r.status.starts_with("inconclusive"))
        .count();
    if inconclusive > 0 {
        console.err_line(format_args!(
            "tcpproxy-test grade: {inconclusive} submission(s) inconclusive: the harness could not run or could not decide them (see their status); regrade those (--resume grades only them)"
        ));
        return crate::exit_code::EXIT_HARNESS;
    }
    crate::exit_code::EXIT_PASSED
}

/// Writes the table as it stands: the rows so far, in the order given, complete once every
/// submission has one.
fn save(class: &mut Class, rows: &[Option<Row>], out_dir: &Path) -> Result<(), String> {
    class.submissions = rows.iter().flatten().cloned().collect();
    class.complete = class.submissions.len() == rows.len();
    class.load_average = class_table::load_average();
    write_class(out_dir, class)
}

/// class.json's `self_check`: who vouches for the host, or None with `--no-self-check`.
fn vouched_by(a: &Args) -> Option<String> {
    (!a.no_self_check).then(|| {
        a.self_check_reference
            .as_ref()
            .map_or("bundled".to_string(), |p| p.display().to_string())
    })
}

/// The earlier class.json, if there is one and it was graded as this run would grade: the same
/// phases, stall timeout, scale and strictness, and the seed given (if any). Rows graded under
/// other settings would not be comparable, so a mismatch is refused rather than mixed in.
fn resumable(a: &Args, phase_ids: &[String], console: &Console) -> Result<Option<Class>, String> {
    let path = a.out_dir.join(CLASS_JSON);
    let c = match class_table::read(&a.out_dir) {
        Ok(c) => c,
        Err(Unreadable::Missing(_)) => {
            console.err_line(format_args!(
                "tcpproxy-test grade: --resume: no {} yet; grading every submission",
                path.display()
            ));
            return Ok(None);
        }
        Err(Unreadable::Bad(line)) => return Err(line),
    };
    // `what` is the flag, or empty when `then` and `now` name it themselves.
    let differs = |what: &str, then: String, now: String| {
        let then = if what.is_empty() {
            then
        } else {
            format!("{what} {then}")
        };
        Err(format!(
            "{} was graded with {then}, this run has {now}; give the same flags, or a new --out-dir",
            path.display()
        ))
    };
    if let Some(seed) = a.seed.filter(|s| *s != c.seed) {
        return differs("--seed", c.seed.to_string(), seed.to_string());
    }
    if c.stall_timeout_secs != a.stall_timeout {
        return differs(
            "--stall-timeout",
            c.stall_timeout_secs.to_string(),
            a.stall_timeout.to_string(),
        );
    }
    if c.timeout_scale.unwrap_or(1.0) != a.timeout_scale {
        return differs(
            "--timeout-scale",
            c.timeout_scale.unwrap_or(1.0).to_string(),
            a.timeout_scale.to_string(),
        );
    }
    let profile = a.sandbox.network.profile.name();
    if c.network_profile() != profile {
        return differs("--network", c.network_profile().into(), profile.into());
    }
    if c.strict.unwrap_or(false) != a.strict {
        let word = |s: bool| if s { "--strict" } else { "no --strict" }.to_string();
        return differs("", word(c.strict.unwrap_or(false)), word(a.strict));
    }
    if c.shard != a.shard {
        let word =
            |s: Option<Shard>| s.map_or("no --shard".to_string(), |s| format!("--shard {s}"));
        return differs("", word(c.shard), word(a.shard));
    }
    if c.phases != phase_ids {
        return differs("the phases", c.phases.join(" "), phase_ids.join(" "));
    }
    let words = |v: Option<&str>| match v {
        None => "--no-self-check".to_string(),
        Some("bundled") => "the self-check".to_string(),
        Some(p) => format!("--self-check-reference {p}"),
    };
    let now = vouched_by(a);
    if c.self_check != now {
        return differs("", words(c.self_check.as_deref()), words(now.as_deref()));
    }
    Ok(Some(c))
}

/// The earlier rows worth keeping, by position in this run's submissions: same name and path,
/// graded, and its report still on disk. Error and inconclusive rows are tried again: the fix
/// (a file handed in late, a freed port) is usually why one resumes.
fn kept_rows(c: &Class, names: &[String], paths: &[String], out_dir: &Path) -> Vec<Option<Row>> {
    let by_name: HashMap<&str, &Row> = c.submissions.iter().map(|r| (r.name.as_str(), r)).collect();
    names
        .iter()
        .zip(paths)
        .map(|(name, path)| {
            let row = by_name.get(name.as_str())?;
            let keep = row.path == *path
                && row.status == "graded"
                && out_dir.join(name).join("report.json").is_file();
            keep.then(|| (*row).clone())
        })
        .collect()
}

/// `2m10s elapsed, about 4m left`: the rate so far, over every job, carried to the rest.
fn eta(elapsed: Duration, done: usize, total: usize) -> String {
    let spent = format!("{} elapsed", short(elapsed));
    if done >= total {
        return spent;
    }
    let left = elapsed.mul_f64((total - done) as f64 / done.max(1) as f64);
    format!("{spent}, about {} left", short(left))
}

/// `45s`, `3m10s`, `1h02m`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
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
        sandbox: crate::sandbox::entered(),
        confinement: crate::confine::installed(),
        outcomes: &[],
    };
    let files = REPORTS.map(|(file, format)| (file, report::render_error(&run, msg, format)));
    replace_artifacts(dir, &files)
}

/// Runs of the suite tried on one submission before a harness fault makes its row inconclusive.
const HARNESS_ATTEMPTS: usize = 3;

/// How every submission is graded.
struct How {
    filter: Filter,
    rules: Rules,
    stall: Duration,
    scale: f64,
    /// The proxy that vouches for the host (`crate::vouch`); None with `--no-self-check`.
    reference: Option<Arc<ProxyCommand>>,
}

/// Grades one submission, writing its artifacts; Err only when its artifacts cannot be written.
async fn grade_one(
    path: &Path,
    name: String,
    how: How,
    out_dir: &Path,
    console: &Console,
) -> Result<Row, String> {
    let How {
        filter,
        rules,
        stall,
        scale,
        reference,
    } = how;
    let mut row = Row::new(name.clone(), path.display().to_string(), "graded");
    // Where it runs: the batch's one namespace, as this process entered it.
    if let Some(entered) = crate::sandbox::entered() {
        row.sandbox = Some(entered.network.to_string());
        row.network = Some(entered.profile.name().into());
    }
    let dir = out_dir.join(&name);
    // A row that graded nothing: `status: msg` (`error` when the submission cannot be run,
    // `inconclusive` when the harness could not judge it), and its reports each saying `msg`.
    let unjudged = |mut row: Row, status: &str, proxy: &str, msg: String| {
        row.status = format!("{status}: {msg}");
        write_error_reports(&dir, proxy, rules, stall, scale, &msg).map(|()| row)
    };
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
        Err(msg) => return unjudged(row, "error", &exe.display().to_string(), msg),
    };
    let cmd = ProxyCommand {
        program,
        args: vec![],
    };
    let proxy = cmd.to_string();
    // A harness fault (its own port taken, say) is no verdict on the student: try again, and if
    // it persists the row says inconclusive rather than failed.
    let mut attempt = 1;
    let (mut outcomes, starts): (Vec<Outcome>, Arc<Starts>) = loop {
        let starts = Arc::new(Starts::default());
        let run = suite::run_watched(
            filter.select(),
            cmd.clone(),
            rules,
            None,
            Running::default(),
            starts.clone(),
            |_| {},
        );
        match run.await {
            Ok(o) => break (o, starts),
            Err(msg) if attempt < HARNESS_ATTEMPTS => {
                console.err_line(format_args!(
                    "tcpproxy-test grade: {name}: the harness could not run ({msg}); trying again"
                ));
                attempt += 1;
            }
            Err(msg) => {
                let msg = format!(
                    "the harness could not run, {HARNESS_ATTEMPTS} times: {msg}; this is no verdict on the submission"
                );
                return unjudged(row, "inconclusive", &proxy, msg);
            }
        }
    };
    let failed = outcomes.iter().any(|o| o.verdict == Verdict::Failed);
    // A submission that never started fails for itself; the host has nothing to vouch for.
    if let Some(reference) = reference.filter(|_| failed && !starts.none_started()) {
        match crate::vouch::confirm_failures(&mut outcomes, &cmd, &reference, rules).await {
            Ok(c) => {
                for note in &c.notes {
                    console.err_line(format_args!(
                        "tcpproxy-test grade: {name}: self-check: {note}"
                    ));
                }
            }
            Err(msg) => {
                let msg = format!(
                    "the harness could not run the self-check: {msg}; this is no verdict on the submission"
                );
                return unjudged(row, "inconclusive", &proxy, msg);
            }
        }
    }
    let count = |v| outcomes.iter().filter(|o| o.verdict == v).count();
    row.counts = Counts {
        passed: count(Verdict::Passed),
        failed: count(Verdict::Failed),
        warning: count(Verdict::Warning),
        skipped: count(Verdict::Skipped),
        inconclusive: count(Verdict::Inconclusive),
    };
    if row.counts.inconclusive > 0 {
        row.status = format!(
            "inconclusive: {} of its failures could not be confirmed beside the reference proxy, which failed them too; grade it again on a quieter host (--resume grades only such rows)",
            row.counts.inconclusive
        );
    }
    row.verdicts = outcomes
        .iter()
        .map(|o| (o.id.to_string(), o.verdict.to_string()))
        .collect();
    row.hints = outcomes
        .iter()
        .filter_map(|o| Some((o.id.to_string(), o.failure.as_ref()?.hint.clone()?)))
        .collect();
    if starts.none_started() {
        // A script with a syntax error, a binary for another machine: not one phase was a test
        // of forwarding, so the row says why in its status rather than as 17 failures.
        row.status = format!("error: {}", never_started(&outcomes));
    }
    let run = RunReport {
        proxy,
        reference: false,
        seed: rules.seed,
        stall_timeout: stall,
        timeout_scale: scale,
        sandbox: crate::sandbox::entered(),
        confinement: crate::confine::installed(),
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

/// `the proxy never started: expected ... but it exited first (exit status 2); its stderr
/// begins: ./tcpproxy: 3: Syntax error: "then" unexpected`.
fn never_started(outcomes: &[Outcome]) -> String {
    let first = outcomes
        .iter()
        .find_map(|o| o.failure.as_ref().map(|f| (o, f)));
    let Some((o, f)) = first else {
        return "the proxy never started".into();
    };
    let mut s = format!("the proxy never started in any phase: {}", f.summary);
    let line = o
        .stderr_tail
        .as_deref()
        .and_then(|t| t.lines().map(str::trim).find(|l| !l.is_empty()));
    if let Some(line) = line {
        let line: String = line.chars().take(STDERR_LINE_CHARS).collect();
        let _ = write!(s, "; its stderr begins: {line}");
    }
    s
}

/// Enough of a stderr line for a table cell: the interpreter's complaint, not a whole trace.
const STDERR_LINE_CHARS: usize = 200;

/// The reports in a submission's folder, every run, whether it was graded or could not run.
const REPORTS: [(&str, Format); 4] = [
    ("report.txt", Format::Human),
    ("report.json", Format::Json),
    ("junit.xml", Format::Junit),
    ("report.html", Format::Html),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_carries_the_rate_so_far_to_the_rest() {
        assert_eq!(
            eta(Duration::from_secs(130), 2, 6),
            "2m10s elapsed, about 4m20s left"
        );
        assert_eq!(eta(Duration::from_secs(45), 3, 3), "45s elapsed");
        assert_eq!(short(Duration::from_secs(3725)), "1h02m");
    }

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
}
