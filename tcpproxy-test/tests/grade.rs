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
