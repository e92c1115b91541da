//! Batch grading: a class of good, broken, crashing and missing submissions, each with its row.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use crate::support::{
    HeavySlot, Run, assert_matches, assert_stderr_has, assert_stdout_has, fixtures_bin,
    harness_bin, run_harness, write_executable,
};

/// The settings of most gradings here: a fixed seed, a short stall timeout, and two phases, one
/// that [`Handed::Correct`] and [`Handed::ClosesOnFirstEof`] both pass and one only the first
/// passes.
pub(crate) const TWO_PHASES: &[&str] = &[
    "--seed",
    "7",
    "--stall-timeout",
    "2",
    "--only",
    "echo/single",
    "--only",
    "shutdown/one-way",
];

/// What a student handed in.
#[derive(Clone, Copy)]
pub(crate) enum Handed {
    /// A `tcpproxy` that runs the reference proxy: it passes every phase.
    Correct,
    /// One that closes both sides on the first EOF: it fails `shutdown/one-way`.
    ClosesOnFirstEof,
    /// One that runs `fixtures ARGS`.
    Fixture(&'static str),
    /// A `tcpproxy` that is this shell script.
    Script(&'static str),
    /// Nothing: an empty folder.
    Nothing,
}

/// Puts `handed` in the submission folder `class/name`, over what was there.
fn hand_in(class: &Path, name: &str, handed: Handed) {
    let d = class.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let exec = |target: &Path, args: &str| {
        format!("#!/bin/sh\nexec '{}' {args} \"$@\"\n", target.display())
    };
    let program = match handed {
        Handed::Correct => exec(&harness_bin(), "__reference-proxy --stall-timeout 2"),
        Handed::ClosesOnFirstEof => exec(&fixtures_bin(), "close-on-first-eof --stall-timeout 2"),
        Handed::Fixture(args) => exec(&fixtures_bin(), args),
        Handed::Script(body) => format!("#!/bin/sh\n{body}"),
        Handed::Nothing => return,
    };
    write_executable(&d.join("tcpproxy"), &program);
}

/// A class folder holding these submissions.
pub(crate) fn class_of(submissions: &[(&str, Handed)]) -> tempfile::TempDir {
    let class = tempfile::tempdir().unwrap();
    for &(name, handed) in submissions {
        hand_in(class.path(), name, handed);
    }
    class
}

/// The arguments of `tcpproxy-test grade FLAGS... --out-dir OUT CLASS/NAME...`.
fn grade_args(flags: &[&str], out: &Path, class: &Path, names: &[&str]) -> Vec<String> {
    let mut args = vec!["grade".to_string()];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.extend(["--out-dir".to_string(), path(out)]);
    args.extend(names.iter().map(|n| path(&class.join(n))));
    args
}

/// Runs `tcpproxy-test grade` with [`grade_args`], killed if it outlives `limit`.
pub(crate) fn grade(
    flags: &[&str],
    out: &Path,
    class: &Path,
    names: &[&str],
    limit: Duration,
) -> Run {
    let args = grade_args(flags, out, class, names);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_harness(&args, limit)
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn a_class_gets_a_row_per_submission_whatever_state_it_is_in() {
    let class = class_of(&[
        ("alice", Handed::Correct),
        ("bob", Handed::ClosesOnFirstEof),
        ("carol", Handed::Fixture("crash-segv")),
        ("dave", Handed::Nothing),
        // A syntax error: it never listens.
        ("frank", Handed::Script("if then\n")),
    ]);
    let c = class.path();
    let out = c.join("out");
    let _slot = HeavySlot::acquire();
    let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let run = grade(TWO_PHASES, &out, c, &names, Duration::from_secs(180));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let csv = std::fs::read_to_string(out.join("class.csv")).unwrap();
    assert_matches(
        "submission,path,sandbox,network,status,passed,failed,warning,skipped,inconclusive,echo/single,shutdown/one-way
alice,[..]/alice,network namespace[..],ideal,graded,2,0,0,0,0,passed,passed
bob,[..]/bob,network namespace[..],ideal,graded,1,1,0,0,0,passed,failed
carol,[..]/carol,network namespace[..],ideal,graded,0,2,0,0,0,failed,failed
dave,[..]/dave,network namespace[..],ideal,error: proxy '[..]/dave/tcpproxy' cannot be used: No such file or directory (os error 2),0,0,0,0,0,not run,not run
erin,[..]/erin,network namespace[..],ideal,error: proxy '[..]/erin' cannot be used: No such file or directory (os error 2),0,0,0,0,0,not run,not run
frank,[..]/frank,network namespace[..],ideal,\"error: the proxy never started in any phase: expected the proxy to listen on port [..], but it exited first (exit status 2); its stderr begins: [..]Syntax error[..]\",0,2,0,0,0,failed,failed
",
        &csv,
    );
    let class_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("class.json")).unwrap()).unwrap();
    assert_eq!(class_json["format"], "tcpproxy-test-class");
    assert_eq!(class_json["submissions"].as_array().unwrap().len(), 6);
    assert_eq!(class_json["complete"], true);
    // Each row says where it ran; the table says under which profile its rows were graded.
    assert_eq!(class_json["network"], "ideal");
    for row in class_json["submissions"].as_array().unwrap() {
        assert_eq!(row["network"], "ideal", "{row}");
        assert_matches("network namespace[..]", row["sandbox"].as_str().unwrap());
    }
    assert_class_json_documented(&class_json);
    // Each junit.xml names its own suite, so a CI view merging the class keeps them apart.
    let suite = |name: &str| {
        let xml = std::fs::read_to_string(out.join(name).join("junit.xml")).unwrap();
        let at = xml.find("<testsuite name=\"").expect("a suite") + "<testsuite name=\"".len();
        xml[at..at + xml[at..].find('"').unwrap()].to_string()
    };
    assert_matches("tcpproxy-test: [..]/alice/tcpproxy", &suite("alice"));
    assert_matches("tcpproxy-test: [..]/bob/tcpproxy", &suite("bob"));
    let progress: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        progress.len(),
        6,
        "a progress line per submission: {}",
        run.dump()
    );
    assert_matches("[6/6] [..] elapsed)", progress[5]);
    let carol = std::fs::read_to_string(out.join("carol/report.txt")).unwrap();
    assert!(carol.contains("killed by signal SIGSEGV"), "{carol}");
    for file in ["report.txt", "report.json", "junit.xml", "report.html"] {
        assert!(out.join("bob").join(file).is_file(), "bob/{file} missing");
    }
    let class_html = std::fs::read_to_string(out.join("class.html")).unwrap();
    assert_eq!(
        class_html.matches("<tr data-submission=").count(),
        6,
        "class.html has a row per submission"
    );
    crate::support::assert_nothing_left(&run);
}

/// Issue 17: a regrade into the same `--out-dir` left the earlier run's files, so a submission
/// that went from passing to `chmod -x` kept a `passed` report.json and a `failures="0"`
/// junit.xml beside an old stderr.txt. Three runs into one folder: a failing run that leaves a
/// stderr.txt, a passing one, then one that cannot run; each must leave only its own files.
#[test]
fn a_regrade_leaves_only_its_own_files_in_the_submissions_folder() {
    let class = tempfile::tempdir().unwrap();
    let c = class.path();
    let out = c.join("out");
    let alice = c.join("alice");
    let folder = out.join("alice");
    let regrade = || {
        let flags = ["--stall-timeout", "2", "--only", "echo/single"];
        let run = grade(&flags, &out, c, &["alice"], Duration::from_secs(60));
        assert_eq!(run.code, Some(0), "{}", run.dump());
        crate::support::assert_nothing_left(&run);
    };
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let read = |file: &str| std::fs::read_to_string(folder.join(file)).unwrap();
    let json = || -> serde_json::Value { serde_json::from_str(&read("report.json")).unwrap() };

    hand_in(c, "alice", Handed::Fixture("exit-at-once"));
    regrade();
    assert_eq!(
        files(),
        [
            "junit.xml",
            "report.html",
            "report.json",
            "report.txt",
            "stderr.txt"
        ]
    );
    assert!(read("stderr.txt").contains("exit-at-once"));

    hand_in(c, "alice", Handed::Fixture("correct --stall-timeout 2"));
    regrade();
    assert_eq!(
        files(),
        ["junit.xml", "report.html", "report.json", "report.txt"],
        "the failing run's stderr.txt stayed"
    );
    assert_eq!(json()["phases"][0]["verdict"], "passed");
    assert!(read("junit.xml").contains("failures=\"0\""));

    std::fs::set_permissions(
        alice.join("tcpproxy"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    regrade();
    assert_eq!(
        files(),
        ["junit.xml", "report.html", "report.json", "report.txt"]
    );
    assert_matches(
        "error: proxy '[..]/alice/tcpproxy' is not executable (try chmod +x, or name its interpreter: python3 [..]/alice/tcpproxy)\n",
        &read("report.txt"),
    );
    let report = json();
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("is not executable"),
        "{report}"
    );
    assert_eq!(report["phases"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["summary"]["passed"], 0, "{report}");
    let junit = read("junit.xml");
    assert!(junit.contains("errors=\"1\""), "{junit}");
    assert!(junit.contains("<error message=\"proxy &apos;"), "{junit}");
    assert!(junit.contains("is not executable"), "{junit}");
    let csv = std::fs::read_to_string(out.join("class.csv")).unwrap();
    assert!(csv.contains(",ideal,\"error: proxy"), "{csv}");
}

/// Issue 18: Ctrl-C wrote no class table and there was no way to go on. Now the table is
/// rewritten as each submission finishes, and `--resume` grades only what has no row.
#[test]
fn an_interrupted_class_keeps_its_rows_and_resume_grades_the_rest() {
    use std::io::BufRead as _;
    // Two that never listen: each holds its slot for the whole start deadline, so after the
    // first row is in, at least one of them is still being graded when Ctrl-C comes.
    let class = class_of(&[
        ("alice", Handed::Correct),
        ("bob", Handed::Script("exec sleep 300\n")),
        ("carol", Handed::Script("exec sleep 300\n")),
    ]);
    let c = class.path();
    let out = c.join("out");
    let names = ["alice", "bob", "carol"];
    let flags = |stall_timeout: &'static str, resume: bool| {
        let mut v = vec![
            "--jobs",
            "1",
            "--seed",
            "7",
            "--stall-timeout",
            stall_timeout,
        ];
        if resume {
            v.push("--resume");
        }
        v.extend(["--only", "echo/single"]);
        v
    };
    let _slot = HeavySlot::acquire();
    let marker = format!("tcpproxy-test-grade-resume-{}", std::process::id());
    let mut interrupted = std::process::Command::new(harness_bin())
        .args(grade_args(&flags("2", false), &out, c, &names))
        .env("TCPPROXY_TEST_MARKER", &marker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(interrupted.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("[1/3]") {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "grade ended early");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(interrupted.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = interrupted.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("class.csv holds the "), "{rest}");
    assert!(rest.contains("with --resume grades the rest"), "{rest}");
    let left = crate::support::survivors(&marker);
    assert!(left.is_empty(), "left running after Ctrl-C: {left:#?}");
    let table = |file: &str| std::fs::read_to_string(out.join(file)).unwrap();
    let json: serde_json::Value = serde_json::from_str(&table("class.json")).unwrap();
    assert_eq!(json["complete"], false, "{json}");
    let kept = json["submissions"].as_array().unwrap().len();
    assert!((1..3).contains(&kept), "{json}");
    assert_eq!(table("class.csv").lines().count(), 1 + kept);

    // The two are fixed; a resume under other settings is refused, the same settings grade
    // only the rows not yet graded.
    hand_in(c, "bob", Handed::Correct);
    hand_in(c, "carol", Handed::Correct);
    let alice_report = out.join("alice/report.json");
    let alice_before = std::fs::metadata(&alice_report).map(|m| m.modified().unwrap());
    let refused = grade(&flags("3", true), &out, c, &names, Duration::from_secs(60));
    assert_eq!(refused.code, Some(2), "{}", refused.dump());
    assert_matches(
        "tcpproxy-test grade: --resume: [..]class.json was graded with --stall-timeout 2, this run has 3; give the same flags, or a new --out-dir\n",
        &refused.stderr,
    );
    // Rows graded on an ideal link do not mix with rows graded on an impaired one.
    let mut slow = flags("2", true);
    slow.extend(["--network", "slow"]);
    let refused = grade(&slow, &out, c, &names, Duration::from_secs(60));
    assert_eq!(refused.code, Some(2), "{}", refused.dump());
    assert_matches(
        "tcpproxy-test grade: --resume: [..]class.json was graded with --network ideal, this run has slow; give the same flags, or a new --out-dir",
        refused
            .stderr
            .lines()
            .find(|l| l.contains("--resume"))
            .unwrap_or_default(),
    );
    let run = grade(&flags("2", true), &out, c, &names, Duration::from_secs(120));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let graded_now = run.stderr.lines().filter(|l| l.starts_with('[')).count();
    let kept_graded = json["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "graded")
        .count();
    assert_eq!(graded_now, 3 - kept_graded, "{}", run.dump());
    assert_stderr_has(&run, &format!("resuming: {kept_graded} of 3 submissions"));
    let json: serde_json::Value = serde_json::from_str(&table("class.json")).unwrap();
    assert_eq!(json["complete"], true, "{json}");
    assert_eq!(json["seed_text"], "7");
    let statuses: Vec<&str> = json["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["graded"; 3], "{json}");
    if kept_graded == 1 {
        let alice_after = std::fs::metadata(&alice_report).map(|m| m.modified().unwrap());
        assert_eq!(
            alice_before.ok(),
            alice_after.ok(),
            "alice was graded again"
        );
    }
    crate::support::assert_nothing_left(&run);
}

/// docs/grading.md's class.json table names every field a real class.json has, and no other.
fn assert_class_json_documented(class_json: &serde_json::Value) {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grading.md"))
        .unwrap();
    let section = doc
        .split("### class.json")
        .nth(1)
        .expect("docs/grading.md has a class.json section");
    let section = section.split("\n#").next().unwrap();
    let rows: Vec<(String, &str)> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(key, rest)| (key.to_string(), rest)))
        .collect();
    // Fields only some tables have (sharded, merged) say so; the rest must be in this one.
    let documented: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|(_, meaning)| !meaning.contains(" only"))
        .map(|(key, _)| key.clone())
        .collect();
    let mut real = std::collections::BTreeSet::new();
    real.extend(class_json.as_object().unwrap().keys().cloned());
    real.extend(
        class_json["submissions"][0]
            .as_object()
            .unwrap()
            .keys()
            .cloned(),
    );
    // One line documents the five counts.
    let documented: std::collections::BTreeSet<String> = documented
        .into_iter()
        .chain(["failed", "warning", "skipped", "inconclusive"].map(String::from))
        .collect();
    assert_eq!(
        documented, real,
        "docs/grading.md's class.json table is out of date"
    );
}

/// Issue 15, in part: a class split with `--shard K/N` on "two machines" and joined with `grade
/// merge` gives the table a single `grade` gives, verdict for verdict; pieces that do not add up
/// are refused with one line and exit 2.
#[test]
fn shards_merge_into_the_table_one_grade_writes() {
    let class = class_of(&[
        ("alice", Handed::Correct),
        ("bob", Handed::ClosesOnFirstEof),
        ("carol", Handed::Correct),
        ("dave", Handed::ClosesOnFirstEof),
        ("erin", Handed::Correct),
    ]);
    let c = class.path();
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let dir = |d: &str| path(&c.join(d));
    let grade_into = |extra: &[&str], out: &str| {
        let flags = [TWO_PHASES, extra].concat();
        let run = grade(&flags, &c.join(out), c, &names, Duration::from_secs(180));
        crate::support::assert_nothing_left(&run);
        run
    };
    let _slot = HeavySlot::acquire();
    let whole = grade_into(&[], "whole");
    assert_eq!(whole.code, Some(0), "{}", whole.dump());
    for k in ["1/2", "2/2"] {
        let run = grade_into(&["--shard", k], &format!("shard{}", &k[..1]));
        assert_eq!(run.code, Some(0), "{}", run.dump());
    }
    let merge = |shards: &[&str]| {
        let mut args = vec![
            "grade".to_string(),
            "merge".into(),
            "--out-dir".into(),
            dir("merged"),
        ];
        args.extend(shards.iter().map(|s| dir(s)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_harness(&args, Duration::from_secs(30))
    };
    let run = merge(&["shard1", "shard2"]);
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let read = |d: &str, f: &str| std::fs::read_to_string(c.join(d).join(f)).unwrap();
    assert_eq!(read("merged", "class.csv"), read("whole", "class.csv"));
    let json =
        |d: &str| -> serde_json::Value { serde_json::from_str(&read(d, "class.json")).unwrap() };
    let (merged, whole) = (json("merged"), json("whole"));
    assert_eq!(merged["complete"], true);
    for (m, w) in merged["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(whole["submissions"].as_array().unwrap())
    {
        assert_eq!(m["verdicts"], w["verdicts"], "{m} vs {w}");
        let reports = m["reports"].as_str().unwrap();
        assert!(
            Path::new(reports).join("report.json").is_file(),
            "{reports} has no report"
        );
    }
    // Fields only sharded and merged tables have are in docs/grading.md's table too.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grading.md"))
        .unwrap();
    for (table, row) in [
        (json("shard1"), json("shard1")["submissions"][0].clone()),
        (merged.clone(), merged["submissions"][0].clone()),
    ] {
        for key in table
            .as_object()
            .unwrap()
            .keys()
            .chain(row.as_object().unwrap().keys())
        {
            // One line documents the five counts, under `passed`.
            let counted = ["failed", "warning", "skipped", "inconclusive"].contains(&key.as_str());
            assert!(
                counted || doc.contains(&format!("| `{key}` |")),
                "class.json's {key} is not documented"
            );
        }
    }
    let refused = merge(&["shard1"]);
    assert_eq!(refused.code, Some(2), "{}", refused.dump());
    assert_eq!(
        refused.stderr,
        "tcpproxy-test grade merge: shard 2/2 is missing\n"
    );
    let refused = merge(&["shard1", "shard1"]);
    assert_eq!(refused.code, Some(2), "{}", refused.dump());
    assert_matches(
        "tcpproxy-test grade merge: [..]shard1 and [..]shard1 are both shard 1/2\n",
        &refused.stderr,
    );
    let refused = merge(&["shard1", "whole"]);
    assert_eq!(refused.code, Some(2), "{}", refused.dump());
    assert_matches(
        "tcpproxy-test grade merge: [..]whole was not graded with --shard\n",
        &refused.stderr,
    );
}

/// Issue 15: `grade diff OLD NEW` lists, for a regrade or a harness upgrade, the submissions
/// whose verdicts changed, phase by phase, after the settings that differ; exit 0 when none
/// changed, 1 when some did, 2 when a table cannot be read. OLD is a real (tiny) grading; NEW
/// is its class.json edited as a regrade would change it.
#[test]
fn grade_diff_lists_what_changed_between_two_gradings() {
    let class = class_of(&[("alice", Handed::Correct), ("bob", Handed::Correct)]);
    let c = class.path();
    let old = c.join("old");
    let run = grade(
        TWO_PHASES,
        &old,
        c,
        &["alice", "bob"],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    crate::support::assert_nothing_left(&run);

    // The regrade: another seed, a phase added, bob's one-way verdict flipped, carol added.
    let mut table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(old.join("class.json")).unwrap()).unwrap();
    table["seed"] = 8.into();
    table["seed_text"] = "8".into();
    table["phases"]
        .as_array_mut()
        .unwrap()
        .push("shutdown/flush".into());
    let rows = table["submissions"].as_array_mut().unwrap();
    for row in rows.iter_mut() {
        let verdicts = row["verdicts"].as_array_mut().unwrap();
        verdicts.push(serde_json::json!(["shutdown/flush", "passed"]));
    }
    let was = rows[1]["verdicts"][1][1].as_str().unwrap().to_string();
    let now = if was == "passed" { "failed" } else { "passed" };
    rows[1]["verdicts"][1][1] = now.into();
    for (count, by) in [(was.as_str(), -1), (now, 1)] {
        let n = rows[1][count].as_i64().unwrap() + by;
        rows[1][count] = n.into();
    }
    let mut carol = rows[0].clone();
    carol["name"] = "carol".into();
    carol["path"] = path(&c.join("carol")).into();
    carol["status"] = "graded".into();
    carol["passed"] = 3.into();
    carol["failed"] = 0.into();
    rows.push(carol);
    let new = c.join("new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(new.join("class.json"), table.to_string()).unwrap();

    let diff = |args: &[&str]| {
        let mut all = vec!["grade", "diff"];
        all.extend(args);
        run_harness(&all, Duration::from_secs(30))
    };
    let (old_dir, new_json) = (path(&old), path(&new.join("class.json")));

    let same = diff(&[&old_dir, &path(&old.join("class.json"))]);
    assert_eq!(same.code, Some(0), "{}", same.dump());
    assert_eq!(
        same.stdout,
        "0 submissions changed, 2 unchanged, 0 only in OLD, 0 only in NEW\n"
    );
    assert_eq!(same.stderr, "");

    let changed = diff(&[&old_dir, &new_json]);
    assert_eq!(changed.code, Some(1), "{}", changed.dump());
    assert_eq!(
        changed.stdout,
        format!(
            "settings: seed 7 -> 8\n\
             settings: phases 2 -> 3\n\
             phases only in NEW: shutdown/flush\n\
             bob    shutdown/one-way  {was} -> {now}\n\
             carol  only in NEW       3 passed, 0 failed\n\
             1 submission changed, 1 unchanged, 0 only in OLD, 1 only in NEW\n"
        )
    );

    let back = diff(&[&path(&new), &old_dir]);
    assert_eq!(back.code, Some(1), "{}", back.dump());
    assert_stdout_has(&back, "\nphases only in OLD: shutdown/flush\n");
    assert_stdout_has(&back, "\ncarol  only in OLD       3 passed, 0 failed\n");

    let json = diff(&["--format", "json", &old_dir, &new_json]);
    assert_eq!(json.code, Some(1), "{}", json.dump());
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON document");
    assert_eq!(v["format"], "tcpproxy-test-class-diff");
    assert_eq!(v["version"], 1);
    assert_eq!(
        v["settings"][0],
        serde_json::json!({"setting": "seed", "old": "7", "new": "8"})
    );
    assert_eq!(
        v["phases_only_in_new"],
        serde_json::json!(["shutdown/flush"])
    );
    assert_eq!(
        v["submissions"][0],
        serde_json::json!({"change": "changed", "name": "bob", "phases": [
            {"phase": "shutdown/one-way", "old": was, "new": now}
        ]})
    );
    assert_eq!(v["submissions"][1]["change"], "only_in_new");
    assert_eq!(v["submissions"][1]["name"], "carol");
    assert_eq!(
        v["summary"],
        serde_json::json!({"changed": 1, "unchanged": 1, "only_in_old": 0, "only_in_new": 1})
    );
    let json_same = diff(&["--format", "json", &old_dir, &old_dir]);
    assert_eq!(json_same.code, Some(0), "{}", json_same.dump());

    // A table that is missing, or of another version, is one line naming the file, exit 2.
    let missing = diff(&[&path(&c.join("nowhere")), &new_json]);
    assert_eq!(missing.code, Some(2), "{}", missing.dump());
    assert_eq!(missing.stdout, "");
    assert_matches(
        "tcpproxy-test grade diff: cannot read [..]/nowhere/class.json: No such file or directory (os error 2)\n",
        &missing.stderr,
    );
    let future = c.join("future");
    std::fs::create_dir_all(&future).unwrap();
    table["version"] = 2.into();
    std::fs::write(future.join("class.json"), table.to_string()).unwrap();
    let refused = diff(&[&old_dir, &path(&future)]);
    assert_eq!(refused.code, Some(2), "{}", refused.dump());
    assert_matches(
        "tcpproxy-test grade diff: [..]/future/class.json is tcpproxy-test-class version 2; this harness reads tcpproxy-test-class version 1\n",
        &refused.stderr,
    );
    let usage = diff(&[&old_dir]);
    assert_eq!(usage.code, Some(2), "{}", usage.dump());
    assert!(
        usage.stderr.starts_with("tcpproxy-test grade diff: "),
        "{}",
        usage.dump()
    );
}
