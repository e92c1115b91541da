//! Batch grading: a class of good, broken, crashing and missing submissions, each with its row.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use crate::support::{HeavySlot, assert_matches, fixtures_bin, harness_bin, run_harness};

/// A submission directory holding an executable `tcpproxy` that runs `target args...`.
fn submission(dir: &Path, name: &str, target: &Path, args: &str) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let exe = d.join("tcpproxy");
    std::fs::write(
        &exe,
        format!("#!/bin/sh\nexec '{}' {args} \"$@\"\n", target.display()),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_class_gets_a_row_per_submission_whatever_state_it_is_in() {
    let class = tempfile::tempdir().unwrap();
    let c = class.path();
    submission(
        c,
        "alice",
        &harness_bin(),
        "__reference-proxy --stall-timeout 2",
    );
    submission(
        c,
        "bob",
        &fixtures_bin(),
        "close-on-first-eof --stall-timeout 2",
    );
    submission(c, "carol", &fixtures_bin(), "crash-segv");
    std::fs::create_dir_all(c.join("dave")).unwrap(); // handed in nothing
    let out = c.join("out");
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    let args: Vec<String> = [
        "grade",
        "--stall-timeout",
        "2",
        "--only",
        "echo/single",
        "--only",
        "shutdown/one-way",
        "--out-dir",
        &arg(&out),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(
        ["alice", "bob", "carol", "dave", "erin"]
            .iter()
            .map(|n| arg(&c.join(n))),
    )
    .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _slot = HeavySlot::acquire();
    let run = run_harness(&args, Duration::from_secs(180));
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let csv = std::fs::read_to_string(out.join("class.csv")).unwrap();
    assert_matches(
        "submission,status,passed,failed,warning,skipped,echo/single,shutdown/one-way
alice,graded,2,0,0,0,passed,passed
bob,graded,1,1,0,0,passed,failed
carol,graded,0,2,0,0,failed,failed
dave,error: proxy '[..]/dave/tcpproxy' cannot be used: No such file or directory (os error 2),0,0,0,0,not run,not run
erin,error: proxy '[..]/erin' cannot be used: No such file or directory (os error 2),0,0,0,0,not run,not run
",
        &csv,
    );
    let class_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("class.json")).unwrap()).unwrap();
    assert_eq!(class_json["format"], "tcpproxy-test-class");
    assert_eq!(class_json["submissions"].as_array().unwrap().len(), 5);
    let carol = std::fs::read_to_string(out.join("carol/report.txt")).unwrap();
    assert!(carol.contains("killed by signal SIGSEGV"), "{carol}");
    for file in ["report.txt", "report.json", "junit.xml"] {
        assert!(out.join("bob").join(file).is_file(), "bob/{file} missing");
    }
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
    let grade = || {
        let args = [
            "grade",
            "--stall-timeout",
            "2",
            "--only",
            "echo/single",
            "--out-dir",
            out.to_str().unwrap(),
            alice.to_str().unwrap(),
        ];
        let run = run_harness(&args, Duration::from_secs(60));
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

    submission(c, "alice", &fixtures_bin(), "exit-at-once");
    grade();
    assert_eq!(
        files(),
        ["junit.xml", "report.json", "report.txt", "stderr.txt"]
    );
    assert!(read("stderr.txt").contains("exit-at-once"));

    submission(c, "alice", &fixtures_bin(), "correct --stall-timeout 2");
    grade();
    assert_eq!(
        files(),
        ["junit.xml", "report.json", "report.txt"],
        "the failing run's stderr.txt stayed"
    );
    assert_eq!(json()["phases"][0]["verdict"], "passed");
    assert!(read("junit.xml").contains("failures=\"0\""));

    std::fs::set_permissions(
        alice.join("tcpproxy"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    grade();
    assert_eq!(files(), ["junit.xml", "report.json", "report.txt"]);
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
    assert!(csv.contains("alice,\"error: proxy"), "{csv}");
}
