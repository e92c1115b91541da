//! A proxy as a process group: signalled as one, killed and reaped whatever it forked, and its
//! end put in words. Both the harness and the proxy's own tests start a proxy in a group of its
//! own (`process_group(0)`) and end it through here.

use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::procfs::{self, Proc};

/// Sends `signal` to every member of the group `pgid`; a group already gone is no error.
pub fn signal_group(pgid: i32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pgid), signal);
}

/// Sends `signal` to each of `procs` that is still the process seen (same start time), so a
/// pid reused since is left alone.
pub fn signal_each(procs: &[Proc], signal: Signal) {
    for p in procs {
        if procfs::process(p.pid).is_some_and(|now| now.started == p.started) {
            let _ = kill(Pid::from_raw(p.pid), signal);
        }
    }
}

/// Waits until each of `procs` is gone, reaping those that are our children (or become ours as
/// their parents die), for at most `limit`.
pub fn reap_each_blocking(procs: &[Proc], limit: Duration) {
    let me = std::process::id() as i32;
    let end = std::time::Instant::now() + limit;
    let mut left = procs.to_vec();
    while !left.is_empty() && std::time::Instant::now() < end {
        left.retain(|p| match procfs::process(p.pid) {
            Some(now) if now.started == p.started && now.ppid == me => matches!(
                waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            ),
            // Still under a parent that is dying too: it comes to us next.
            Some(now) if now.started == p.started => true,
            _ => false,
        });
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Reaps every child of ours in the group `pgid` (the leader and, as subreaper, its orphans)
/// until none is left or `limit` passes.
pub fn reap_group_blocking(pgid: i32, limit: Duration) {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => {}
            // ECHILD: nothing of that group is left to reap.
            Err(_) => return,
        }
    }
}

/// How a process ended, in words: `exit status 3` or `killed by signal SIGSEGV`.
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        format!("{status}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_named() {
        assert_eq!(
            describe_status(ExitStatus::from_raw(3 << 8)),
            "exit status 3"
        );
        assert_eq!(
            describe_status(ExitStatus::from_raw(11)),
            "killed by signal SIGSEGV"
        );
    }
}
