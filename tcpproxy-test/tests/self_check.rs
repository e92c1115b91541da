//! The reference vouching for the host (`--self-check`, on by default in `grade`): a failure the
//! reference does not share stands, one it shares is inconclusive (exit 3), never failed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    HeavySlot, assert_nothing_left, assert_stdout_has, fixtures_bin, run_harness,
};

/// An executable at `dir/name` that runs fixture `fixture` with the stall timeout of these tests.
fn fixture_exe(dir: &Path, name: &str, fixture: &str) -> PathBuf {
    let exe = dir.join(name);
    std::fs::write(
        &exe,
        format!(
            "#!/bin/sh\nexec '{}' {fixture} --stall-timeout 2 \"$@\"\n",
            fixtures_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

const PHASE: &str = "shutdown/one-way";

#[test]
fn a_failure_the_reference_passes_beside_it_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let bug = fixture_exe(dir.path(), "bug", "close-on-first-eof");
    let _slot = HeavySlot::acquire();
    let run = run_harness(
        &[
            "--self-check",
            "--stall-timeout",
            "2",
            "--only",
            PHASE,
            bug.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(1), "{}", run.dump());
    assert!(
        run.stdout.contains("After the self-check:")
            && run.stdout.contains(
                "self-check: failed again in each of 2 rounds beside the reference proxy, which passed it each time"
            ),
        "{}",
        run.dump()
    );
    assert_stdout_has(&run, "0 passed, 1 failed\n");
    assert_nothing_left(&run);
}

#[test]
fn a_failure_the_reference_shares_is_inconclusive_in_a_run_and_in_a_class() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bug = fixture_exe(d, "bug", "close-on-first-eof");
    // A "reference" with the same bug fails the phase beside it every round, as a reference
    // would on a host too loaded to forward correctly.
    let sick = fixture_exe(d, "sick-reference", "close-on-first-eof");
    let report = d.join("report.json");
    let _slot = HeavySlot::acquire();
    let run = run_harness(
        &[
            "--self-check",
            "--self-check-reference",
            sick.to_str().unwrap(),
            "--stall-timeout",
            "2",
            "--only",
            PHASE,
            "--format",
            "json",
            "--output",
            report.to_str().unwrap(),
            bug.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(3), "{}", run.dump());
    assert!(
        run.stdout.contains(
            "One-way shutdown: inconclusive: the reference proxy failed it too, beside this proxy, in 2 of the 2 rounds"
        ) && run.stdout.contains("0 passed, 0 failed, 1 inconclusive\n"),
        "{}",
        run.dump()
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["phases"][0]["verdict"], "inconclusive");
    assert_eq!(json["summary"]["inconclusive"], 1);
    assert_nothing_left(&run);

    // In a class: the row says inconclusive and counts it; the correct one is untouched.
    let good = fixture_exe(d, "good", "correct");
    let out = d.join("out");
    let class = |extra: &[&str]| {
        let mut args = vec![
            "grade",
            "--seed",
            "5",
            "--stall-timeout",
            "2",
            "--only",
            PHASE,
            "--out-dir",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.extend([bug.to_str().unwrap(), good.to_str().unwrap()]);
        run_harness(&args, Duration::from_secs(180))
    };
    let run = class(&["--self-check-reference", sick.to_str().unwrap()]);
    assert_eq!(run.code, Some(3), "{}", run.dump());
    let csv = std::fs::read_to_string(out.join("class.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows[1].starts_with("bug,")
            && rows[1].contains("\"inconclusive: 1 of its failures could not be confirmed beside the reference proxy")
            && rows[1].ends_with(",0,0,0,0,1,inconclusive"),
        "{csv}"
    );
    assert!(rows[2].ends_with(",graded,1,0,0,0,0,passed"), "{csv}");
    // Rows vouched for by one reference are not mixed with rows graded without a self-check.
    let run = class(&["--resume", "--no-self-check"]);
    assert_eq!(run.code, Some(2), "{}", run.dump());
    assert!(
        run.stderr.contains("--self-check-reference") && run.stderr.contains("--no-self-check"),
        "{}",
        run.dump()
    );
}
