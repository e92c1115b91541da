//! What every test here needs: the binaries, a bounded run of the harness, its phase lines
//! parsed, and a check that nothing it started is left running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The harness under test.
pub fn harness_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tcpproxy-test"))
}

/// The broken proxies of the `fixtures` package, found beside this test's executable as
/// ripgrep's tests find theirs (`cargo test --workspace` builds every package's binaries).
pub fn fixtures_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = dir.join("fixtures");
    assert!(
        bin.is_file(),
        "expected the fixtures binary at {}; build it with `cargo build -p fixtures` or run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Writes `text` to `path` as a file its owner may execute: a script standing in for a proxy.
pub fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod +x {}: {e}", path.display()));
    open_to_other_users(path);
}

/// Lets other users reach `path`: search permission on each directory above it. Run as root
/// (as CI runs), the harness starts proxies as `nobody` (`--run-as`), which cannot pass a
/// tempfile directory (0700), and refuses a proxy it could not run.
pub fn open_to_other_users(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(full) = std::path::absolute(path) else {
        return;
    };
    for dir in full.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))
                .unwrap_or_else(|e| panic!("chmod o+x {}: {e}", dir.display()));
        }
    }
}

/// One finished run of the harness.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub marker: String,
}

impl Run {
    /// Phase name -> the verdict word, from lines `NAME: verdict[: ...]`.
    pub fn verdicts(&self) -> BTreeMap<String, String> {
        self.stdout
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| {
                let (name, rest) = l.split_once(": ")?;
                let verdict = rest.split(':').next()?.trim();
                Some((name.to_string(), verdict.to_string()))
            })
            .collect()
    }

    /// Names of the phases that failed.
    pub fn failed(&self) -> Vec<String> {
        self.verdicts()
            .into_iter()
            .filter(|(_, v)| v == "failed")
            .map(|(n, _)| n)
            .collect()
    }

    /// Everything needed to debug a failed assertion without a rerun.
    pub fn dump(&self) -> String {
        format!(
            "exit code: {:?}\nelapsed: {:.1}s\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs the harness with `args`, killing it if it outlives `limit`. The proxies it starts inherit
/// a unique marker in their environment, so [`assert_nothing_left`] can find any survivor.
pub fn run_harness(args: &[&str], limit: Duration) -> Run {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let marker = format!(
        "tcpproxy-test-it-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    // A proxy or script named here is run by `nobody` when the tests run as root.
    for arg in args.iter().map(Path::new).filter(|p| p.exists()) {
        open_to_other_users(arg);
    }
    let started = Instant::now();
    let out = assert_cmd::Command::new(harness_bin())
        .args(args)
        .env("TCPPROXY_TEST_MARKER", &marker)
        .timeout(limit)
        .output()
        .expect("the harness can be started");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
        marker,
    }
}

/// Processes whose environment carries `marker`: what a run left behind.
pub fn survivors(marker: &str) -> Vec<String> {
    let needle = format!("TCPPROXY_TEST_MARKER={marker}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| {
            let env = std::fs::read(e.path().join("environ")).ok()?;
            let has = env.split(|&b| b == 0).any(|kv| kv == needle.as_bytes());
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // A zombie still awaiting its reaper is gone in every way that matters but one;
            // count it anyway: the harness promises to reap.
            has.then(|| format!("pid {}: {}", e.file_name().to_string_lossy(), stat.trim()))
        })
        .collect()
}

#[track_caller]
pub fn assert_nothing_left(run: &Run) {
    let left = survivors(&run.marker);
    assert!(
        left.is_empty(),
        "processes left running after the harness exited: {left:#?}\n{}",
        run.dump()
    );
}

/// Every phase, in order: the ten of the 2002 tester, then the ones added since.
pub static ALL_PHASES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| tcpproxy_test::phase::all().iter().map(|p| p.name).collect());

#[test]
fn survivors_sees_a_process_carrying_the_marker() {
    // The leftover check must be able to fail: a live process with the marker is found.
    let marker = format!("survivor-check-{}", std::process::id());
    // The child says it is running (its environment is then its own, not a pre-exec copy), and
    // then waits on its stdin without exec'ing again: a second exec (it was `exec sleep 30`)
    // leaves a moment in which /proc shows no environment, and a CI run read it then
    // (docs/reliability.md).
    let mut child = std::process::Command::new("sh")
        .args(["-c", "echo up; read -r _"])
        .env("TCPPROXY_TEST_MARKER", &marker)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "up\n");
    let found = survivors(&marker);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(survivors(&marker).is_empty());
}

/// Full suite runs allowed at once in this test binary where each run of the harness has a
/// network namespace of its own (`--sandbox auto`, the default): their ports cannot collide, and
/// on 2 cores four at once kept every verdict of the matrix (README, "Tests", has the runs and
/// their load). The test threads bound it too: four, from `.cargo/config.toml`, unless
/// `RUST_TEST_THREADS` or `--test-threads` says otherwise.
const SANDBOXED_HEAVY_RUNS: usize = 4;

/// Full suite runs allowed at once: [`SANDBOXED_HEAVY_RUNS`], or one where the host refuses the
/// harness a network namespace, since runs on one loopback took each other's ports (listen-late
/// lost its port to a never-serving fixture's run beside it, CI rehearsal of 2026-12-01).
static HEAVY_RUNS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    // `on` exits 3 at once where it is refused; elsewhere the stand-in never listens (exit 4).
    let probe = std::process::Command::new(harness_bin())
        .args(["--sandbox", "on", "--only", "echo/single", "--", "true"])
        .output()
        .expect("the harness can be started");
    if probe.status.code() == Some(3) {
        1
    } else {
        SANDBOXED_HEAVY_RUNS
    }
});

static HEAVY: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A slot for one full suite run, held until dropped.
pub struct HeavySlot;

impl HeavySlot {
    pub fn acquire() -> HeavySlot {
        let (lock, cvar) = &HEAVY;
        let mut running = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= *HEAVY_RUNS {
            running = cvar.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        HeavySlot
    }
}

impl Drop for HeavySlot {
    fn drop(&mut self) {
        let (lock, cvar) = &HEAVY;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        cvar.notify_one();
    }
}

/// Compares `got` with `expected` line by line, where `[..]` in an expected line matches any
/// text (times, ports, seeds, paths). Panics showing both on a mismatch.
#[track_caller]
pub fn assert_matches(expected: &str, got: &str) {
    let ok = expected.lines().count() == got.lines().count()
        && expected
            .lines()
            .zip(got.lines())
            .all(|(e, g)| line_matches(e, g));
    assert!(
        ok,
        "output does not match the snapshot\n--- expected ---\n{expected}\n--- got ---\n{got}"
    );
}

fn line_matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first)
        || !line[first.len()..].ends_with(last)
        || line.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn wildcards_match_within_a_line_only() {
    assert!(line_matches("took [..]s", "took 1.5s"));
    assert!(line_matches("[..]:[..] ok", "127.0.0.1:4242 ok"));
    assert!(!line_matches("took [..]s", "took 1.5"));
    assert!(!line_matches("exact", "exactly"));
}

/// Asserts that the run's stdout contains `part`, showing the whole run otherwise.
#[track_caller]
pub fn assert_stdout_has(run: &Run, part: &str) {
    assert_output_has(run, "stdout", &run.stdout, part);
}

/// Asserts that the run's stderr contains `part`, showing the whole run otherwise.
#[track_caller]
pub fn assert_stderr_has(run: &Run, part: &str) {
    assert_output_has(run, "stderr", &run.stderr, part);
}

#[track_caller]
fn assert_output_has(run: &Run, stream: &str, text: &str, part: &str) {
    assert!(
        text.contains(part),
        "expected {stream} to contain {part:?}\n{}",
        run.dump()
    );
}

/// A path named `name` in a fresh temporary directory, which goes away with the guard returned.
pub fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    (dir, path)
}

/// [`temp_path`], holding a file with `text`.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, path) = temp_path(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    (dir, path)
}

/// Asserts that some line of `got` matches `pattern` (`[..]` matches any text, as in
/// [`assert_matches`]). Panics showing both otherwise.
#[track_caller]
pub fn assert_has_line(pattern: &str, got: &str) {
    assert!(
        got.lines().any(|l| line_matches(pattern, l)),
        "no line matches\n--- pattern ---\n{pattern}\n--- got ---\n{got}"
    );
}
