//! A process started as the leader of a process group of its own and treated as untrusted: its
//! stdout and stderr drained into bounded tails, and the whole group, with whatever it forked that
//! left the group, killed and reaped on every path (stop, drop, panic). The harness's proxy under
//! test and the reference proxy of the proxy's own tests both run as one.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::pipe2;
use tokio::process::{Child, Command};

use crate::process::{reap_each_blocking, reap_group_blocking, signal_each, signal_group};
use crate::procfs::{self, Proc, Usage};
use crate::tail::Capture;

/// How long the leader may take to die of SIGKILL before [`Group::stop`] stops waiting.
const KILLED_WITHIN: Duration = Duration::from_secs(5);
/// How long the rest of the group, and what escaped it, may take to be reaped.
const REAPED_WITHIN: Duration = Duration::from_secs(2);
/// How often [`Group::kill_and_reap_blocking`] looks whether the leader is gone.
const REAP_POLL: Duration = Duration::from_millis(5);

/// A running process group we started; dropping it kills the whole group and what escaped it.
#[derive(Debug)]
pub struct Group {
    child: Child,
    /// The leader's pid, which is the group's id.
    pgid: i32,
    stdout: Capture,
    stderr: Capture,
    /// The leader's exit status once observed.
    exited: Option<ExitStatus>,
    /// Stopped or killed: nothing of it is left for `Drop` to kill.
    ended: bool,
}

impl Group {
    /// Spawns `cmd` as the leader of a new process group, stdin from /dev/null, stdout and
    /// stderr each drained into a tail of the last `keep` bytes.
    pub fn spawn(mut cmd: Command, keep: usize) -> io::Result<Group> {
        let (out_rd, out_wr) = cloexec_pipe()?;
        let (err_rd, err_wr) = cloexec_pipe()?;
        cmd.stdin(Stdio::null())
            .stdout(out_wr)
            .stderr(err_wr)
            // Its own group: the whole group, grandchildren included, can be signalled at once,
            // and /proc readings of the group are its alone.
            .process_group(0)
            .kill_on_drop(true);
        let child = crate::fork_fence::forking(|| cmd.spawn())?;
        // Our copies of the write ends go with `cmd`, so each drain sees EOF once the group is
        // gone.
        drop(cmd);
        let pgid = child.id().expect("a just-spawned child has a pid") as i32;
        Ok(Group {
            child,
            pgid,
            stdout: Capture::drain(std::fs::File::from(out_rd), keep),
            stderr: Capture::drain(std::fs::File::from(err_rd), keep),
            exited: None,
            ended: false,
        })
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    pub fn stdout(&self) -> &Capture {
        &self.stdout
    }

    pub fn stderr(&self) -> &Capture {
        &self.stderr
    }

    /// The leader's exit status if it was seen to exit, without looking again.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.exited
    }

    /// The leader's exit status if it has exited (looked at without waiting).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
            }
        }
        self.exited
    }

    /// Waits for the leader to exit. Cancel-safe: a later call goes on waiting.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let status = self.child.wait().await?;
        self.exited = Some(status);
        Ok(status)
    }

    /// What `/proc` says about the group now; `None` once no member is left.
    pub fn usage(&self) -> Option<Usage> {
        procfs::usage(self.pgid)
    }

    /// Sends `signal` to every member of the group and to what escaped it.
    pub fn signal(&self, signal: Signal) {
        let escaped = escaped_from(self.pgid);
        signal_group(self.pgid, signal);
        signal_each(&escaped, signal);
    }

    /// SIGKILL to the group and what escaped it, without waiting: the leader is reaped in the
    /// background (`kill_on_drop`), its orphans by whoever reaps them next.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.ended = true;
    }

    /// SIGTERM to the group and what escaped it, SIGKILL after `grace` (to grandchildren that
    /// ignore SIGTERM too), then reaps the leader, the rest of the group and what escaped it.
    /// Returns the leader's status. Only the first call does anything.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.ended {
            return self.exited;
        }
        let mut escaped = escaped_from(self.pgid);
        signal_group(self.pgid, Signal::SIGTERM);
        signal_each(&escaped, Signal::SIGTERM);
        if self.exited.is_none() {
            let _ = tokio::time::timeout(grace, self.wait()).await;
        }
        // Whatever it forked during the grace period counts too.
        for p in escaped_from(self.pgid) {
            if !escaped.contains(&p) {
                escaped.push(p);
            }
        }
        signal_group(self.pgid, Signal::SIGKILL);
        signal_each(&escaped, Signal::SIGKILL);
        if self.exited.is_none() {
            let _ = tokio::time::timeout(KILLED_WITHIN, self.wait()).await;
        }
        // The leader is reaped (tokio did it); what is left in the group are our orphans, and
        // the escaped come to us as their parents die.
        let pgid = self.pgid;
        let _ = tokio::task::spawn_blocking(move || {
            reap_group_blocking(pgid, REAPED_WITHIN);
            reap_each_blocking(&escaped, REAPED_WITHIN);
        })
        .await;
        self.ended = true;
        self.exited
    }

    /// [`Group::stop`] at once (SIGKILL, no grace) for code that cannot await (a `Drop`):
    /// blocks until the leader is reaped, or for at most `limit`.
    pub fn kill_and_reap_blocking(&mut self, limit: Duration) -> Option<ExitStatus> {
        let escaped = escaped_from(self.pgid);
        signal_group(self.pgid, Signal::SIGKILL);
        signal_each(&escaped, Signal::SIGKILL);
        let end = std::time::Instant::now() + limit;
        while self.exit_status().is_none() && std::time::Instant::now() < end {
            std::thread::sleep(REAP_POLL);
        }
        reap_group_blocking(self.pgid, REAPED_WITHIN.min(limit));
        reap_each_blocking(&escaped, REAPED_WITHIN.min(limit));
        self.ended = true;
        self.exited
    }

    /// Waits, up to `limit` each, for stdout and stderr to end, so their tails hold the last
    /// words of a process that exited: the pipes close once the whole group is gone, unless a
    /// grandchild holds them.
    pub async fn await_output(&self, limit: Duration) {
        self.stdout.closed(limit).await;
        self.stderr.closed(limit).await;
    }
}

impl Drop for Group {
    /// The path of a panic or a cancelled phase: no await is possible here, so kill the group
    /// outright.
    fn drop(&mut self) {
        if !self.ended {
            self.kill();
        }
    }
}

/// A pipe whose ends are closed in every child but the one they are given to.
fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe2(OFlag::O_CLOEXEC)?)
}

/// What descends from the group leader `leader` (or from a member of its group) outside its
/// group, read while the parent links still hold: a child in a session of its own escapes the
/// group's signal, and once its parent dies nothing but this list ties it to the group.
pub fn escaped_from(leader: i32) -> Vec<Proc> {
    let table = procfs::processes();
    let mut roots: Vec<i32> = table
        .iter()
        .filter(|p| p.pgrp == leader)
        .map(|p| p.pid)
        .collect();
    roots.push(leader);
    let mut found = procfs::descendants(&table, &roots);
    found.retain(|p| p.pgrp != leader);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }

    #[tokio::test]
    async fn output_is_kept_and_complete_once_the_group_is_gone() {
        let mut g = Group::spawn(sh("echo out; echo err >&2; exit 3"), 1024).unwrap();
        let status = g.wait().await.unwrap();
        assert_eq!(status.code(), Some(3));
        g.await_output(Duration::from_secs(5)).await;
        assert_eq!(g.stdout().text(), "out\n");
        assert_eq!(g.stderr().text(), "err\n");
        assert_eq!(g.exited(), Some(status));
    }

    #[tokio::test]
    async fn stop_kills_a_child_that_left_the_group_and_ignores_sigterm() {
        // The leader starts a child in a session of its own that ignores SIGTERM, says its pid
        // and waits.
        let script = "setsid sh -c 'trap \"\" TERM; echo $$; exec sleep 600' & wait";
        let mut g = Group::spawn(sh(script), 1024).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(10), g.stdout().contains("\n"))
                .await
                .unwrap()
        );
        let escapee: i32 = g.stdout().text().trim().parse().unwrap();
        let seen = procfs::process(escapee).expect("the escapee runs");
        assert_ne!(seen.pgrp, g.pgid());
        assert!(escaped_from(g.pgid()).contains(&seen));
        g.stop(Duration::from_millis(100)).await;
        // The escapee holds the stdout pipe: it closes once the escapee is gone too.
        assert!(g.stdout().closed(Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn dropping_a_group_kills_it() {
        let g = Group::spawn(sh("exec sleep 600"), 1024).unwrap();
        let stderr = g.stderr().clone();
        drop(g);
        // The pipe closes once no process holds it: the leader is dead.
        assert!(stderr.closed(Duration::from_secs(10)).await);
    }
}
