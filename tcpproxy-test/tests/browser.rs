//! The HTML reports in a real browser: headless Chromium (Debian's `chromium`, which .ci/run
//! installs) opens a reference run's report, a failing fixture's, and a graded class of five's
//! class.html from file://. Each must render with no console message, make no network request
//! (Chromium's net log, read for requests the page started), and hold what a reader needs: a
//! timeline for each phase, a row for each submission.
//!
//! Chromium runs in a network namespace of its own with nothing up, so its own background
//! requests (update checks) cannot leave the machine either; the page's would fail the same way,
//! and the net log still records that they were tried.
//!
//! All of them are in the slow lane (`ci/slow`, which .ci/run runs): `cargo test --workspace`
//! needs no browser.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::grade::{Handed, TWO_PHASES, class_of, grade};
use crate::support::{HeavySlot, fixtures_bin, run_harness};

/// What Chromium saw: the DOM after load, its console lines, and the URLs the page requested.
struct Loaded {
    dom: String,
    console: Vec<String>,
    requested: Vec<String>,
}

fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
        .expect(
            "these tests open the HTML reports in headless Chromium: install Debian's `chromium` (apt-get install chromium), as .ci/run does",
        )
}

/// Opens `page` in headless Chromium, in an empty network namespace, and reports what it saw.
fn open(page: &Path) -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let netlog = dir.path().join("netlog.json");
    let url = format!("file://{}", page.display());
    // Root unshares a network namespace directly; anyone else through a user namespace.
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = Command::new("unshare");
    cmd.arg(if root { "--net" } else { "-rn" })
        .arg("timeout")
        .arg("60")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-default-apps",
            "--disable-breakpad",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg("--dump-dom")
        .arg(&url);
    let out = cmd.output().expect("unshare and chromium can be started");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    Loaded {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
        requested: page_requests(&netlog),
    }
}

/// The URLs requested on behalf of a file:// page (its network isolation key names file://),
/// from Chromium's net log; the browser's own requests carry a null key and are not the page's.
fn page_requests(netlog: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(netlog).unwrap_or_else(|e| panic!("{e}"));
    // A log cut short (Chromium ended as it wrote) lacks its closing brackets.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .unwrap_or_else(|e| panic!("chromium's net log does not parse: {e}"));
    log["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let p = &e["params"];
            let url = p["url"].as_str()?;
            let key = p["network_isolation_key"].as_str()?;
            (key.contains("file://") && !url.starts_with("file:") && !url.starts_with("data:"))
                .then(|| url.to_string())
        })
        .collect()
}

#[track_caller]
fn assert_clean(what: &str, l: &Loaded) {
    assert!(l.console.is_empty(), "{what}: console: {:#?}", l.console);
    assert!(
        l.requested.is_empty(),
        "{what}: requested {:#?}",
        l.requested
    );
}

/// The check itself can fail: a page with a script error and an image from another host is
/// caught on both counts.
#[test]
#[ignore = "slow lane: ci/slow, which .ci/run runs"]
fn a_page_with_a_script_error_and_a_remote_image_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><p>x</p><img src=\"http://127.0.0.1:9/x.png\"><script>nothing();</script>",
    )
    .unwrap();
    let l = open(&page);
    assert!(
        l.console
            .iter()
            .any(|c| c.contains("nothing is not defined")),
        "{:?}",
        l.console
    );
    assert_eq!(l.requested, ["http://127.0.0.1:9/x.png"]);
}

/// The reference's report and a failing fixture's: a timeline per phase, nothing fetched, no
/// console message.
#[test]
#[ignore = "slow lane: ci/slow, which .ci/run runs"]
fn run_reports_render_with_a_timeline_per_phase() {
    let _slot = HeavySlot::acquire();
    let dir = tempfile::tempdir().unwrap();
    let fixtures = fixtures_bin();
    let fixture = fixtures.to_str().unwrap();
    for (what, args, code) in [
        ("the reference", vec![], 0),
        (
            "close-on-first-eof",
            vec!["--only", "shutdown/*", "--", fixture, "close-on-first-eof"],
            1,
        ),
    ] {
        let page = dir.path().join(format!("{what}.html"));
        let mut all = vec!["--format", "html", "--output", page.to_str().unwrap()];
        all.extend(args);
        let run = run_harness(&all, Duration::from_secs(180));
        assert_eq!(run.code, Some(code), "{what}: {}", run.dump());
        let size = std::fs::metadata(&page).unwrap().len();
        assert!(size < 2 << 20, "{what}: the report is {size} bytes");
        let l = open(&page);
        assert_clean(what, &l);
        let phases = l.dom.matches("<section class=\"phase ").count();
        let timelines = l.dom.matches("<svg class=\"timeline\"").count();
        assert!(phases > 0, "{what}: no phase in the page");
        assert_eq!(timelines, phases, "{what}: a timeline per phase");
        if code == 1 {
            assert!(
                l.dom.contains("✗ failed"),
                "{what}: no failed verdict shown"
            );
            assert!(l.dom.contains("<dt>Hint</dt>"), "{what}: no hint shown");
        }
    }
}

/// A class of five, graded: class.html has a row per submission linking to its report.html,
/// which exists and opens clean too.
#[test]
#[ignore = "slow lane: ci/slow, which .ci/run runs"]
fn class_html_has_a_row_per_submission() {
    let _slot = HeavySlot::acquire();
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let class = class_of(&[
        ("alice", Handed::Correct),
        ("bob", Handed::ClosesOnFirstEof),
        ("carol", Handed::Fixture("no-half-close --stall-timeout 2")),
        ("dave", Handed::Fixture("flip-byte --stall-timeout 2")),
        ("erin", Handed::Correct),
    ]);
    let out = class.path().join("out");
    let run = grade(
        TWO_PHASES,
        &out,
        class.path(),
        &names,
        Duration::from_secs(240),
    );
    assert_eq!(run.code, Some(0), "{}", run.dump());
    let l = open(&out.join("class.html"));
    assert_clean("class.html", &l);
    for name in names {
        assert!(
            l.dom.contains(&format!("<tr data-submission=\"{name}\">")),
            "no row for {name}"
        );
        assert!(out.join(name).join("report.html").is_file(), "{name}");
    }
    assert_eq!(l.dom.matches("<tr data-submission=").count(), names.len());
    assert_clean("bob's report", &open(&out.join("bob").join("report.html")));
}
