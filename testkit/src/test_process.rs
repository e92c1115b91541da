//! A process as a test drives it: a [`Group`] named by its command line, whose waits panic
//! naming that command and what they awaited, and which, dropped in a failing test, prints how
//! it ended and the tail of its stderr with the failure.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;

use crate::deadline::{scaled, with_deadline};
use crate::group::Group;
use crate::process::describe_status;
use crate::procfs::Usage;

/// How long a process that exited may take to close its stderr (only a child it left could hold
/// it open), and how long a killed one may take to be reaped.
const GONE_SECS: f64 = 5.0;

/// A process a test started, killed and reaped (with anything it forked) when dropped.
#[derive(Debug)]
pub struct TestProcess {
    group: Group,
    /// The command line as a person would type it: what every message names.
    command: String,
}

impl TestProcess {
    /// Starts `cmd` (see [`Group::spawn`]), keeping the last `keep` bytes of its stderr;
    /// `command` is how messages name it. Panics if it cannot be spawned.
    pub fn spawn(cmd: Command, command: String, keep: usize) -> TestProcess {
        let program = std::path::PathBuf::from(cmd.as_std().get_program());
        let group = Group::spawn(cmd, keep)
            .unwrap_or_else(|e| panic!("cannot spawn `{command}` ({}): {e}", program.display()));
        TestProcess { group, command }
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Waits until its stderr holds `needle` (true) or it closes its stderr without (false).
    pub async fn stderr_contains(&self, needle: &str) -> bool {
        self.group.stderr().contains(needle).await
    }

    /// Waits until its stderr contains `needle` (the tail kept, so a line logged once and then
    /// buried under `keep` bytes of others is missed); panics if it exits without logging it.
    pub async fn wait_stderr(&mut self, needle: &str, limit: Duration) {
        let what = format!("`{}` to log {needle:?}", self.command);
        if !with_deadline(limit, what, self.stderr_contains(needle)).await {
            self.assert_running();
            panic!(
                "`{}` closed its stderr without logging {needle:?}",
                self.command
            );
        }
    }

    /// The lines of its stderr (the tail kept) that contain `needle`.
    pub fn stderr_lines_with(&mut self, needle: &str) -> Vec<String> {
        self.stderr_tail()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// What it wrote to stderr so far (the tail), complete once it has exited.
    pub fn stderr_tail(&mut self) -> String {
        if self.group.exit_status().is_some() {
            // The pipe is at EOF once it is gone: wait for every last line.
            self.group.stderr().closed_blocking(scaled(GONE_SECS));
        }
        self.group.stderr().text()
    }

    /// What `/proc` says about it now: descriptors, resident memory, CPU time.
    #[track_caller]
    pub fn usage(&self) -> Usage {
        self.group
            .usage()
            .unwrap_or_else(|| panic!("`{}`: no process left in its group", self.command))
    }

    /// Sends a signal by name (`"TERM"`, `"INT"`) to it and anything it forked.
    pub fn signal(&self, name: &str) {
        let signal: Signal = format!("SIG{name}")
            .parse()
            .unwrap_or_else(|e| panic!("no signal SIG{name}: {e}"));
        self.group.signal(signal);
    }

    /// Waits for it to exit on its own.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let what = format!("`{}` to exit", self.command);
        with_deadline(limit, what, self.group.wait())
            .await
            .unwrap_or_else(|e| panic!("wait for `{}`: {e}", self.command))
    }

    /// Panics if it has exited: what a test says when a peer's misbehaviour must never end it.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.group.exit_status() {
            let stderr = self.stderr_tail();
            panic!(
                "`{}` exited unexpectedly: {}; stderr: {}",
                self.command,
                describe_status(status),
                stderr.trim()
            );
        }
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        let status = self.group.kill_and_reap_blocking(scaled(GONE_SECS));
        if std::thread::panicking() {
            let status = status.map_or_else(|| "not reaped".to_string(), describe_status);
            let stderr = self.stderr_tail();
            eprintln!(
                "--- `{}` ({status}); stderr tail:\n{stderr}---",
                self.command
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> TestProcess {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        TestProcess::spawn(cmd, format!("sh -c '{script}'"), 1024)
    }

    #[tokio::test]
    async fn a_process_that_exited_reports_its_status_and_every_line() {
        let mut p = sh("echo one >&2; echo two >&2; exit 4");
        assert!(!p.stderr_contains("three").await);
        let status = p.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(4));
        assert_eq!(p.stderr_tail(), "one\ntwo\n");
        assert_eq!(p.stderr_lines_with("tw"), ["two"]);
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.assert_running()));
        let message = *failed.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(
            message,
            "`sh -c 'echo one >&2; echo two >&2; exit 4'` exited unexpectedly: exit status 4; \
             stderr: one\ntwo"
        );
    }

    #[tokio::test]
    async fn a_signal_by_name_ends_it() {
        let mut p = sh("echo up >&2; exec sleep 600");
        p.wait_stderr("up", Duration::from_secs(10)).await;
        p.assert_running();
        p.signal("TERM");
        let status = p.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(describe_status(status), "killed by signal SIGTERM");
    }
}
