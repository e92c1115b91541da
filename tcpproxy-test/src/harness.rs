//! The proxy under test as a process: spawned in its own process group, its output drained into
//! bounded tails, its listen port found and awaited, and the whole group killed and reaped on
//! every path (pass, fail, panic, Ctrl-C), with whatever it forked that left the group.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::confine;
use crate::peer::{self, PortTry};
use crate::procfs::{self, Proc};
use testkit::group::{Group, escaped_from};
use testkit::process::{
    describe_status, reap_each_blocking, reap_group_blocking, signal_each, signal_group,
};

/// The most of the proxy's stdout and of its stderr kept: the tail is what explains a failure.
pub const TAIL_BYTES: usize = 8 * 1024;
/// Between SIGTERM to the group and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// How often readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Times a new port is tried when the proxy says the last one is in use.
pub const PORT_TRIES: usize = 3;
/// How long after a proxy exits 0 before listening the harness looks for a daemon it left.
const DAEMON_LOOK: Duration = Duration::from_secs(1);
/// How long each of the proxy's output streams may stay open after it exited: a grandchild may
/// hold them.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// How to start the proxy under test: `program [args] 127.0.0.1 DEST_PORT LISTEN_PORT`.
#[derive(Debug, Clone)]
pub struct ProxyCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// How a phase starts its proxy where it differs from the lab's form
/// (`PROXY 127.0.0.1 DEST_PORT LISTEN_PORT`, with the harness's own limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// DEST_HOST as the proxy is given it; the destination server listens on this address.
    pub dest_host: std::net::IpAddr,
    /// RLIMIT_NOFILE (soft and hard) for the proxy, set in the child before it execs; None: the
    /// harness's own, inherited.
    pub nofile: Option<u64>,
}

impl Launch {
    /// The lab's form: the destination on 127.0.0.1, the harness's limits.
    pub const LAB: Launch = Launch {
        dest_host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        nofile: None,
    };
}

impl Default for Launch {
    fn default() -> Launch {
        Launch::LAB
    }
}

impl fmt::Display for ProxyCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for a in &self.args {
            write!(f, " {}", a.to_string_lossy())?;
        }
        Ok(())
    }
}

/// The children of the harness it accounts for: the process groups of the proxies alive right
/// now, so a Ctrl-C can kill every one of them. Held while a proxy is spawned and registered,
/// while a helper of the harness's own lives ([`run_helper`]), and while strays are picked out,
/// so neither a proxy just forked nor a helper is ever taken for a stray.
static LIVE_GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn live_groups() -> std::sync::MutexGuard<'static, Option<HashSet<i32>>> {
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

fn unregister(pgid: i32) {
    if let Some(set) = live_groups().as_mut() {
        set.remove(&pgid);
    }
}

/// Runs `helper`, which starts a child of the harness's own (the descriptor-limit helper, `nft`,
/// `tc`) and reaps it before returning, with the stray sweep held off meanwhile. That child is
/// ours and in no proxy's group: a proxy stopping in another phase at that moment took it for
/// that proxy's leftover and killed it (docs/reliability.md).
pub fn run_helper<T>(helper: impl FnOnce() -> T) -> T {
    let _held = live_groups();
    helper()
}

/// Makes orphans of the proxy (children it forked, then left) our children, so they can be
/// reaped rather than left as zombies under an init that may not reap, and killed: a child that
/// left the proxy's group (setsid) is out of reach of the group's signal. Linux only.
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_child_subreaper(true);
}

/// Whether orphans come to us. Only then is a child of ours that no live proxy accounts for a
/// proxy's leftover; otherwise (a test binary, say) it may be anyone's.
fn is_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    return nix::sys::prctl::get_child_subreaper().unwrap_or(false);
    #[cfg(not(target_os = "linux"))]
    return false;
}

/// Children of ours that no live proxy accounts for (orphans reparented to us whose group is no
/// live proxy's), and everything under them.
fn strays(table: &[Proc], live: &HashSet<i32>) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let spared = |p: &Proc| live.contains(&p.pid) || live.contains(&p.pgrp);
    let mut found: Vec<Proc> = table
        .iter()
        .filter(|p| p.ppid == me && !spared(p))
        .copied()
        .collect();
    let roots: Vec<i32> = found.iter().map(|p| p.pid).collect();
    found.extend(
        procfs::descendants(table, &roots)
            .into_iter()
            .filter(|p| !spared(p)),
    );
    found
}

/// Kills and reaps the strays: what a stopped proxy left that the group's signal and the
/// escaped list missed (a daemon whose parents exited before anyone looked).
fn kill_strays_blocking() {
    if !is_subreaper() {
        return;
    }
    let victims = with_strays(|victims| {
        signal_each(&victims, Signal::SIGKILL);
        victims
    });
    reap_each_blocking(&victims, Duration::from_secs(2));
}

/// Gives `act` the strays, picked and acted on while no proxy is being spawned and no helper
/// runs.
fn with_strays<T>(act: impl FnOnce(Vec<Proc>) -> T) -> T {
    let live = live_groups();
    let empty = HashSet::new();
    act(strays(
        &procfs::processes(),
        live.as_ref().unwrap_or(&empty),
    ))
}

/// Kills and reaps every process that descends from this one: the end of a run, and Ctrl-C,
/// when no proxy may be left whatever group or session it moved to.
pub fn kill_all_descendants() {
    let me = std::process::id() as i32;
    let all = procfs::descendants(&procfs::processes(), &[me]);
    signal_each(&all, Signal::SIGKILL);
    reap_each_blocking(&all, Duration::from_secs(2));
}

/// Sets every resource limit in `child` (the confinement's and a phase's RLIMIT_NOFILE) and
/// joins its cgroups in the child between fork and exec, so the proxy runs within them from its
/// first instruction (a limit applied after spawn would race its first forks and opens). The one
/// `pre_exec` of the harness: its user and group are set before it by the Command itself.
///
/// The proxy gets standard input, output and error and no other descriptor: whatever the
/// harness inherited (a CI runner's descriptor 3, a build's jobserver pipe) would be the
/// untrusted proxy's to use, and would shift how many descriptors it has free below its limit,
/// which decides whether Descriptor exhaustion's crowd leaves a client waiting at all.
#[allow(unsafe_code)]
fn limit_in_child(command: &mut Command, child: confine::InChild) {
    use nix::sys::resource::setrlimit;
    // SAFETY: the closure runs in the forked child before exec and only calls setrlimit(2),
    // write(2) on descriptors the parent opened and keeps open until the spawn returns, and
    // close_range(2), all async-signal-safe; it allocates nothing (the vectors were built before
    // the fork) and touches no lock the parent may hold.
    unsafe {
        command.pre_exec(move || {
            for (resource, soft, hard) in &child.rlimits {
                setrlimit(*resource, *soft, *hard).map_err(std::io::Error::from)?;
            }
            for fd in &child.join {
                // "0": the writer itself, in v1 and v2 alike.
                let fd = std::os::fd::BorrowedFd::borrow_raw(*fd);
                nix::unistd::write(fd, b"0").map_err(std::io::Error::from)?;
            }
            close_inherited_on_exec();
            Ok(())
        });
    }
}

/// Marks every descriptor above standard error close-on-exec, in the child between fork and
/// exec. Marked rather than closed: std's spawn reports a failed exec through a pipe of its own
/// (already close-on-exec), which must stay open until the exec.
#[allow(unsafe_code)]
fn close_inherited_on_exec() {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors of this
    // (child) process; it touches no memory.
    let done = unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if done != 0 {
        // Before Linux 5.11: the same flag, one descriptor at a time, up to the soft limit.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) writes only the struct it is given; fcntl(2) with F_SETFD on a
        // number that is not open fails with EBADF and changes nothing.
        unsafe {
            let top = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) {
                0 => limit.rlim_cur.min(1 << 16) as i32,
                _ => 1024,
            };
            for fd in 3..top {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// Raises this process's soft descriptor limit to its hard limit: the many-connections phase
/// holds thousands of sockets, and the proxies started inherit the raised limit too.
pub fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Kills every live proxy group at once, and everything that left them, and reaps what it can:
/// the Ctrl-C path.
pub fn kill_all_groups() {
    let groups: Vec<i32> = live_groups()
        .as_mut()
        .map(|s| s.drain().collect())
        .unwrap_or_default();
    let escaped: Vec<Proc> = groups.iter().flat_map(|g| escaped_from(*g)).collect();
    for pgid in &groups {
        signal_group(*pgid, Signal::SIGKILL);
    }
    signal_each(&escaped, Signal::SIGKILL);
    for pgid in groups {
        reap_group_blocking(pgid, Duration::from_secs(2));
    }
    reap_each_blocking(&escaped, Duration::from_secs(2));
    kill_all_descendants();
}

/// Why the proxy could not be brought up for a phase.
#[derive(Debug)]
pub enum StartFailure {
    /// The harness itself failed (no free loopback port, spawn refused by the OS).
    Harness(String),
    /// The proxy exited or never listened; the message says which, with its stderr tail.
    Proxy {
        summary: String,
        details: Vec<String>,
        /// How it ended, if it did (`exit status 3`).
        exit: Option<String>,
        stderr_tail: String,
    },
}

/// Why one proxy instance never listened, in a form that tells repeats of one cause apart from a
/// new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartCause {
    /// Spawning it failed.
    Spawn(String),
    /// It exited before listening (`exit status 3`).
    Exited(String),
    /// It exited before listening, and a process it left behind (pid) listens on its port.
    Daemonized { status: String, pid: i32 },
    /// It did not listen within the limit; it listens on these other ports, if any.
    NeverListened {
        within: Duration,
        elsewhere: Vec<u16>,
    },
}

impl StartCause {
    /// A short clause for a repeat: `it exited first (exit status 3)`.
    pub fn short(&self) -> String {
        match self {
            StartCause::Spawn(e) => format!("spawning it failed: {e}"),
            StartCause::Exited(status) => format!("it exited first ({status})"),
            StartCause::Daemonized { status, .. } => {
                format!("it exited first ({status}), leaving a daemon on its port")
            }
            StartCause::NeverListened { within, elsewhere } if elsewhere.is_empty() => {
                format!("it did not listen within {:.1}s", within.as_secs_f64())
            }
            StartCause::NeverListened { elsewhere, .. } => {
                format!("it listens on {} instead of its port", ports(elsewhere))
            }
        }
    }

    /// Whether `other` is the same failure (ports and pids aside), so one explanation covers
    /// both.
    pub fn is_like(&self, other: &StartCause) -> bool {
        match (self, other) {
            (StartCause::Spawn(a), StartCause::Spawn(b)) => a == b,
            (StartCause::Exited(a), StartCause::Exited(b)) => a == b,
            (StartCause::Daemonized { .. }, StartCause::Daemonized { .. }) => true,
            (
                StartCause::NeverListened { elsewhere: a, .. },
                StartCause::NeverListened { elsewhere: b, .. },
            ) => a.is_empty() == b.is_empty(),
            _ => false,
        }
    }
}

fn ports(list: &[u16]) -> String {
    let shown: Vec<String> = list.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    shown.join(", ")
}

/// A first start that took longer than this share of the start deadline, burning CPU most of
/// that time, is slow enough that many at once would crowd each other out.
const SLOW_START_SHARE: f64 = 0.1;
const CPU_BOUND_SHARE: f64 = 0.5;
/// Permits for "as many at once as there are phases".
const OPEN_GATE: usize = 4096;

/// One run's proxy starts: a gate they pass, and what became of them. The first start runs
/// alone; if it was slow and busy on the CPU (a JVM: 1 s alone, 7-9 s as one of 17 at once),
/// the rest start as many at a time as there are cores, else all at once. Time spent waiting
/// at the gate does not count against a start's deadline.
#[derive(Debug)]
pub struct Starts {
    gate: Semaphore,
    state: Mutex<StartsState>,
}

#[derive(Debug, Default)]
struct StartsState {
    probe_taken: bool,
    /// The first start's time and CPU share, once it finished (successfully or not).
    first: Option<(Duration, f64)>,
    throttled_to: Option<usize>,
    in_flight: usize,
    started: usize,
    never_started: usize,
    slowest: Duration,
}

impl Default for Starts {
    fn default() -> Starts {
        Starts {
            gate: Semaphore::new(1),
            state: Mutex::default(),
        }
    }
}

/// A start's pass through the gate; its permit is held until the start ends.
struct Entry<'a> {
    _permit: SemaphorePermit<'a>,
    probe: bool,
    /// Proxies starting at once when this one entered, itself included.
    beside: usize,
}

impl Starts {
    fn state(&self) -> std::sync::MutexGuard<'_, StartsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn enter(&self) -> Entry<'_> {
        let permit = self.gate.acquire().await.expect("never closed");
        let mut st = self.state();
        let probe = !std::mem::replace(&mut st.probe_taken, true);
        st.in_flight += 1;
        Entry {
            _permit: permit,
            probe,
            beside: st.in_flight,
        }
    }

    fn leave(&self, entry: Entry<'_>, took: Duration, cpu: f64, ok: bool, deadline: Duration) {
        let mut st = self.state();
        st.in_flight -= 1;
        if ok {
            st.started += 1;
            st.slowest = st.slowest.max(took);
        } else {
            st.never_started += 1;
        }
        if entry.probe {
            let share = cpu / took.as_secs_f64().max(1e-3);
            st.first = Some((took, share));
            let slow = took.as_secs_f64() > deadline.as_secs_f64() * SLOW_START_SHARE
                && share >= CPU_BOUND_SHARE;
            // A first start that failed says nothing about crowding: let the rest try at once.
            if ok && slow {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
                st.throttled_to = Some(cores);
                self.gate.add_permits(cores - 1);
            } else {
                self.gate.add_permits(OPEN_GATE);
            }
        }
    }

    /// True when proxies were started and not one of them listened.
    pub fn none_started(&self) -> bool {
        let st = self.state();
        st.started == 0 && st.never_started > 0
    }

    /// How many instances listened, and how many never did.
    pub fn counts(&self) -> (usize, usize) {
        let st = self.state();
        (st.started, st.never_started)
    }

    /// The longest a start that succeeded took, and how many starts ran at once after the
    /// first, if that was limited.
    pub fn slowest(&self) -> (Duration, Option<usize>) {
        let st = self.state();
        (st.slowest, st.throttled_to)
    }

    /// A detail line for a start that ran out of time: how crowded it was, and what to try.
    fn advice(&self, beside: usize) -> String {
        let st = self.state();
        let first = match st.first {
            Some((took, _)) => format!("; the first start, alone, took {:.1}s", took.as_secs_f64()),
            None => String::new(),
        };
        format!(
            "it was one of {beside} proxies starting at once{first}; if it is only slow to start, run fewer phases at once (--jobs 2) or stretch every deadline (--timeout-scale 2)"
        )
    }
}

/// What became of one phase's proxy start, for the suite to report.
pub type StartRecord = Arc<Mutex<Option<Result<Duration, StartCause>>>>;

#[derive(Clone)]
struct PhaseStart {
    starts: Arc<Starts>,
    record: StartRecord,
}

tokio::task_local! {
    /// The run a phase belongs to. A phase starts its proxy deep in its own code; the suite sets
    /// this around each phase so that code need not pass the run along.
    static PHASE_START: PhaseStart;
}

/// Runs `phase` with its proxy starts passing `starts`' gate and recorded in `record`.
pub async fn with_starts<F: std::future::Future>(
    starts: Arc<Starts>,
    record: StartRecord,
    phase: F,
) -> F::Output {
    PHASE_START
        .scope(PhaseStart { starts, record }, phase)
        .await
}

/// A running proxy under test.
pub struct Proxy {
    /// The proxy's process group; its stdout is drained only so a chatty proxy never blocks on a
    /// full pipe (no report shows it).
    group: Group,
    pub listen_port: u16,
    stopped: bool,
    /// Its directory and cgroups, removed when the proxy is dropped (after `group`: fields drop
    /// in order, so the group is killed first).
    _jail: confine::Jail,
}

impl Proxy {
    /// Starts `cmd` pointing at `dest_port` and waits until it listens, trying a fresh listen
    /// port when the proxy reports the last one in use.
    pub async fn start(
        cmd: &ProxyCommand,
        launch: Launch,
        dest_port: u16,
        ready_within: Duration,
    ) -> Result<Proxy, StartFailure> {
        let Ok(phase) = PHASE_START.try_with(PhaseStart::clone) else {
            return Proxy::start_now(cmd, launch, dest_port, ready_within)
                .await
                .map_err(|(f, _)| f);
        };
        let entry = phase.starts.enter().await;
        let began = Instant::now();
        let result = Proxy::start_now(cmd, launch, dest_port, ready_within).await;
        let took = began.elapsed();
        let cpu = match &result {
            Ok(p) => procfs::cpu_seconds(p.pid()),
            Err(_) => 0.0,
        };
        let beside = entry.beside;
        phase
            .starts
            .leave(entry, took, cpu, result.is_ok(), ready_within);
        let mut record = phase.record.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(p) => {
                *record = Some(Ok(took));
                Ok(p)
            }
            Err((mut f, cause)) => {
                if let (
                    StartCause::NeverListened { elsewhere, .. },
                    StartFailure::Proxy { details, .. },
                ) = (&cause, &mut f)
                {
                    if elsewhere.is_empty() {
                        details.push(phase.starts.advice(beside));
                    }
                }
                *record = Some(Err(cause));
                Err(f)
            }
        }
    }

    /// As [`Proxy::start`], at once, with the cause of a failure.
    async fn start_now(
        cmd: &ProxyCommand,
        launch: Launch,
        dest_port: u16,
        ready_within: Duration,
    ) -> Result<Proxy, (StartFailure, StartCause)> {
        let no_port = |e| {
            let msg = format!("cannot find a free loopback port: {e}");
            (StartFailure::Harness(msg.clone()), StartCause::Spawn(msg))
        };
        peer::on_free_port(PORT_TRIES, no_port, |port| async move {
            let mut proxy = match Proxy::spawn(cmd, launch, dest_port, port) {
                Ok(proxy) => proxy,
                Err(f) => {
                    let cause = match &f {
                        StartFailure::Harness(m) => m.clone(),
                        StartFailure::Proxy { summary, .. } => summary.clone(),
                    };
                    return PortTry::Failed((f, StartCause::Spawn(cause)));
                }
            };
            match proxy.await_listening(ready_within).await {
                Ok(()) => PortTry::Started(proxy),
                Err(f) => {
                    let in_use = proxy.group.exited().is_some()
                        && peer::says_port_taken(&proxy.stderr_tail());
                    proxy.stop().await;
                    if in_use {
                        PortTry::Taken(f)
                    } else {
                        PortTry::Failed(f)
                    }
                }
            }
        })
        .await
    }

    fn spawn(
        cmd: &ProxyCommand,
        launch: Launch,
        dest_port: u16,
        listen_port: u16,
    ) -> Result<Proxy, StartFailure> {
        // Outside a run (unit tests) nothing was installed: the defaults.
        let confinement =
            confine::installed().unwrap_or_else(|| confine::install(&confine::Policy::default()));
        // The proxy starts in a directory of its own: paths are given it absolute.
        let program = confine::anchored(cmd.program.as_os_str());
        let args: Vec<OsString> = cmd.args.iter().map(|a| confine::anchored(a)).collect();
        let mut command = Command::new(&program);
        command
            .args(&args)
            .arg(launch.dest_host.to_string())
            .arg(dest_port.to_string())
            .arg(listen_port.to_string());
        let (jail, mut child) =
            confine::Jail::prepare(confinement, &mut command, Path::new(&program), &args)
                .map_err(StartFailure::Harness)?;
        if let Some(n) = launch.nofile {
            child
                .rlimits
                .push((nix::sys::resource::Resource::RLIMIT_NOFILE, n, n));
        }
        limit_in_child(&mut command, child);
        let mut live = live_groups();
        let group = Group::spawn(command, TAIL_BYTES).map_err(|e| StartFailure::Proxy {
            summary: format!("expected to start the proxy, but spawning `{cmd}` failed: {e}"),
            details: vec![],
            exit: None,
            stderr_tail: String::new(),
        })?;
        live.get_or_insert_with(HashSet::new).insert(group.pgid());
        drop(live);
        Ok(Proxy {
            group,
            listen_port,
            stopped: false,
            _jail: jail,
        })
    }

    /// Waits for the listen port to accept, without connecting to it where the OS lets us look
    /// (a probe connection would reach the phase's destination server as a stray client).
    async fn await_listening(&mut self, limit: Duration) -> Result<(), (StartFailure, StartCause)> {
        let started = Instant::now();
        let end = started + limit;
        loop {
            if let Some(status) = self.exit_status() {
                let described = describe_status(status);
                // A daemon's parent exits 0 as its grandchild comes up: give that a moment, so
                // the failure can say what happened rather than only that the proxy exited.
                let daemon = if status.success() {
                    self.daemon_on_port(DAEMON_LOOK).await
                } else {
                    None
                };
                self.await_output().await;
                let port = self.listen_port;
                let (summary, cause) = match daemon {
                    Some(pid) => (
                        format!(
                            "expected the proxy to keep running and listen on port {port}, but it exited first ({described}) and left pid {pid} listening there: it daemonized itself, and tcpproxy-test grades the process it starts (run the proxy in the foreground)"
                        ),
                        StartCause::Daemonized {
                            status: described.clone(),
                            pid,
                        },
                    ),
                    None => (
                        format!(
                            "expected the proxy to listen on port {port}, but it exited first ({described})"
                        ),
                        StartCause::Exited(described.clone()),
                    ),
                };
                let f = StartFailure::Proxy {
                    summary,
                    details: self.stderr_details(),
                    exit: Some(described),
                    stderr_tail: self.stderr_tail(),
                };
                return Err((f, cause));
            }
            if is_listening(self.listen_port).await && self.owns_listener() {
                return Ok(());
            }
            if Instant::now() >= end {
                let elsewhere = self.listening_elsewhere();
                let instead = if elsewhere.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; it listens on {} instead (LISTEN_PORT is the last of its three arguments)",
                        ports(&elsewhere)
                    )
                };
                let f = StartFailure::Proxy {
                    summary: format!(
                        "expected the proxy to listen on 127.0.0.1:{} within {:.1}s, but it never did{instead}",
                        self.listen_port,
                        limit.as_secs_f64()
                    ),
                    details: self.stderr_details(),
                    exit: None,
                    stderr_tail: self.stderr_tail(),
                };
                return Err((
                    f,
                    StartCause::NeverListened {
                        within: limit,
                        elsewhere,
                    },
                ));
            }
            // Either the child exits or the next probe runs, whichever comes first.
            tokio::select! {
                _ = self.group.wait() => {}
                _ = tokio::time::sleep(PROBE_EVERY) => {}
            }
        }
    }

    /// Whether the listener on this proxy's port is the proxy's own: held by its group or what
    /// escaped it. Another process that took the port (another harness's proxy on a shared
    /// host: handing a port number to a child is racy) would otherwise be graded in its place.
    fn owns_listener(&self) -> bool {
        if !procfs::available() {
            return true;
        }
        let table = procfs::processes();
        let pgid = self.group.pgid();
        let mine: HashSet<i32> = escaped_from(pgid)
            .iter()
            .map(|p| p.pid)
            .chain(table.iter().filter(|p| p.pgrp == pgid).map(|p| p.pid))
            .collect();
        procfs::listening_ports(&procfs::socket_inodes_of(mine)).contains(&self.listen_port)
    }

    /// The ports the proxy (its group, and what escaped it) listens on other than its own.
    fn listening_elsewhere(&self) -> Vec<u16> {
        let mut pids = procfs::group_members(self.group.pgid());
        pids.extend(escaped_from(self.group.pgid()).iter().map(|p| p.pid));
        let mut found = procfs::listening_ports(&procfs::socket_inodes_of(pids));
        found.retain(|p| *p != self.listen_port);
        found
    }

    /// A process under us, in no live proxy's group, that listens on this proxy's port within
    /// `limit`: what a daemonizing proxy leaves behind.
    async fn daemon_on_port(&self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        loop {
            if is_listening(self.listen_port).await {
                let me = std::process::id() as i32;
                let live = live_groups().clone().unwrap_or_default();
                let holder = procfs::descendants(&procfs::processes(), &[me])
                    .into_iter()
                    .filter(|p| !live.contains(&p.pgrp) || p.pgrp == self.group.pgid())
                    .find(|p| {
                        let inodes = procfs::socket_inodes_of([p.pid]);
                        procfs::listening_ports(&inodes).contains(&self.listen_port)
                    });
                if let Some(p) = holder {
                    return Some(p.pid);
                }
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// Lets the drains catch the last words of a proxy that exited: its pipes close once the
    /// whole group is gone. Bounded, since a grandchild may hold them open.
    pub async fn await_output(&mut self) {
        self.group.await_output(OUTPUT_GRACE).await;
    }

    /// The exit status if the proxy has exited (checked without waiting).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.group.exit_status()
    }

    /// Waits for the proxy to exit. Cancel-safe.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.group.wait().await
    }

    pub fn pid(&self) -> i32 {
        self.group.pgid()
    }

    pub fn stderr_tail(&self) -> String {
        self.group.stderr().text()
    }

    /// How many bytes the proxy has written on stderr, kept in the tail or not.
    pub fn stderr_bytes(&self) -> u64 {
        self.group.stderr().total()
    }

    /// Detail lines quoting the proxy's stderr tail (last few lines), if it wrote any.
    pub fn stderr_details(&self) -> Vec<String> {
        let tail = self.stderr_tail();
        let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            return vec![];
        }
        let keep = &lines[lines.len().saturating_sub(5)..];
        let mut out = vec![format!("proxy stderr (last {} lines):", keep.len())];
        out.extend(keep.iter().map(|l| {
            let l: String = l.chars().take(200).collect();
            format!("  {l}")
        }));
        out
    }

    /// SIGTERM to the group, SIGKILL after a grace period (grandchildren that ignore SIGTERM
    /// included), then reap the leader and any orphans. Returns the leader's status.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped {
            return self.group.exited();
        }
        let status = self.group.stop(TERM_GRACE).await;
        unregister(self.group.pgid());
        let _ = tokio::task::spawn_blocking(kill_strays_blocking).await;
        self.stopped = true;
        status
    }
}

impl Drop for Proxy {
    /// The panic path: no await is possible here, so kill the group outright; tokio reaps the
    /// leader (`kill_on_drop`), and the next `stop` or exit takes care of orphans.
    fn drop(&mut self) {
        if !self.stopped {
            self.group.kill();
            unregister(self.group.pgid());
        }
    }
}

/// Whether something listens on `port`: asked of the kernel on Linux (sock_diag, else /proc),
/// so no connection is made.
#[cfg(target_os = "linux")]
async fn is_listening(port: u16) -> bool {
    // One netlink request each way, answered within the call: not worth a blocking-pool hop.
    match crate::sockdiag::Diag::open().and_then(|mut d| d.listening(port)) {
        Ok(listening) => listening,
        Err(_) => procfs::listening_on(port),
    }
}

/// Elsewhere, connect and drop; the phase's server may then see one stray connection.
#[cfg(not(target_os = "linux"))]
async fn is_listening(port: u16) -> bool {
    tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port))
        .await
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sweep picks strays only once a running helper is reaped: picked while it ran, the
    /// helper (our child, in no proxy's group) was a stray.
    #[test]
    fn a_helper_is_never_picked_as_a_stray() {
        let (started, helper_pid) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            run_helper(|| {
                let mut child = std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .expect("spawn sleep");
                started.send(child.id() as i32).unwrap();
                let _ = released.recv();
                let _ = child.kill();
                let _ = child.wait();
            })
        });
        let pid = helper_pid.recv().unwrap();
        let (took, picked) = std::sync::mpsc::channel();
        let picker = std::thread::spawn(move || {
            let found = with_strays(|strays| strays.iter().any(|p| p.pid == pid));
            took.send(found).unwrap();
        });
        // While the helper runs, the picker must wait for it; a picker that does not answers at
        // once, naming the helper. (Bounded, so a broken build fails rather than hangs.)
        let early = picked.recv_timeout(Duration::from_secs(2));
        release.send(()).unwrap();
        helper.join().unwrap();
        let found = match early {
            Ok(found) => found,
            Err(_) => picked.recv().unwrap(),
        };
        picker.join().unwrap();
        assert!(!found, "the sweep picked helper {pid} as a stray");
    }

    #[tokio::test]
    async fn a_slow_cpu_bound_first_start_limits_the_rest_to_a_core_each() {
        let deadline = Duration::from_secs(30);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        // 4 s alone, 3.6 CPU-seconds: a JVM.
        let starts = Starts::default();
        let first = starts.enter().await;
        assert!(first.probe && starts.gate.available_permits() == 0);
        starts.leave(first, Duration::from_secs(4), 3.6, true, deadline);
        assert_eq!(starts.gate.available_permits(), cores);
        assert_eq!(starts.slowest(), (Duration::from_secs(4), Some(cores)));
        // As slow, but asleep (the slow-start fixture): crowding costs it nothing.
        let starts = Starts::default();
        let first = starts.enter().await;
        starts.leave(first, Duration::from_secs(7), 0.05, true, deadline);
        assert!(starts.gate.available_permits() > 100);
        // Fast, or failed: all at once.
        let starts = Starts::default();
        let first = starts.enter().await;
        starts.leave(first, Duration::from_secs(30), 30.0, false, deadline);
        assert!(starts.gate.available_permits() > 100);
        assert!(starts.none_started());
    }
}
