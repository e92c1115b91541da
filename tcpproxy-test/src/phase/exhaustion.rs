//! A proxy out of descriptors: started with a low RLIMIT_NOFILE, a crowd of clients takes every
//! descriptor it has. It must neither exit nor spin, and must serve again once the crowd leaves.

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::check;
use crate::deadline::within;
use crate::harness::Launch;
use crate::peer::{self, Pacing};
use crate::procfs;
use crate::sockdiag;

/// How the proxy starts for this phase: with `EXHAUSTION_NOFILE` descriptors at most.
pub const LAUNCH: Launch = Launch {
    nofile: Some(EXHAUSTION_NOFILE),
    ..Launch::LAB
};

/// Clients connect one at a time until one waits in the proxy's listen queue because it has no
/// descriptor left to accept it with (the harness first evens the number it has free, see
/// [`even_free_count`]); the crowd holds on `EXHAUSTION_HOLD`, then closes; within
/// `EXHAUSTION_RECOVER_WITHIN` a new client must echo through the proxy, which must still run.
/// The CPU the proxy burns during the hold is reported; above `EXHAUSTION_CPU_LIMIT` of a core
/// more than it burns idle (measured for `EXHAUSTION_IDLE` first) it is a warning: an accept
/// loop that retries EMFILE at once. A proxy that burns a core whatever happens is CPU while
/// idle's to report, not this phase's.
pub async fn descriptor_exhaustion(ctx: Arc<Ctx>) -> PhaseResult {
    if !procfs::available() {
        return Err(Failure::skipped(
            "needs Linux /proc to read the proxy's descriptor limit and CPU time",
        ));
    }
    let pgid = ctx.proxy_pgid();
    match descriptor_limit(pgid) {
        Some(n) if n == EXHAUSTION_NOFILE => {}
        other => {
            return Err(Failure::harness(format!(
                "the harness started the proxy (pid {pgid}) with RLIMIT_NOFILE {EXHAUSTION_NOFILE}, but its /proc/{pgid}/limits says {}",
                other.map_or_else(|| "nothing readable".to_string(), |n| n.to_string())
            )));
        }
    }

    // The measurement is over a span of time: the idle wait is the baseline.
    let before = Busy::of(pgid);
    tokio::time::sleep(EXHAUSTION_IDLE).await;
    let idle = Busy::of(pgid).since(&before);
    let evened = even_free_count(pgid, EXHAUSTION_NOFILE);
    let limit = evened.limit;

    // The destination echoes every connection and closes after its EOF, so a pair the crowd
    // closes lets go of both its descriptors.
    let mut servers = JoinSet::new();
    let server_ctx = ctx.clone();
    servers.spawn(async move {
        let mut echoes = JoinSet::new();
        // Ends when aborted with the phase, or after this many accepts or timed-out waits.
        for _ in 0..EXHAUSTION_CLIENTS * 10 {
            let Ok(s) = server_ctx.accept().await else {
                continue;
            };
            echoes.spawn(async move {
                let _ = peer::echo(s, Pacing::EAGER).await;
            });
            while echoes.try_join_next().is_some() {}
        }
    });
    let mut crowd = crowd(&ctx, pgid, limit).await?;
    // The hold is the scenario: the crowd stays while the proxy is out of descriptors.
    let before = Busy::of(pgid);
    tokio::time::sleep(EXHAUSTION_HOLD).await;
    let hold = Busy::of(pgid).since(&before);
    let mut held = format!("{}{}", crowd.summary(pgid, limit), evened.clause);
    let waited = crowd.waiting.is_some();
    if let (Some(waiting), true) = (crowd.waiting.as_mut(), evened.lowered) {
        held += &one_more_descriptor(&ctx, pgid, &evened, waiting).await;
    }
    drop(crowd);

    let turned_away = recover(&ctx)
        .await
        .map_err(|f| f.detail(format!("while the crowd held on, {held}")))?;
    if !waited {
        ctx.note(format!(
            "no client was left waiting in the listen queue of a proxy out of descriptors, so whether it spins there was not seen: {held}"
        ));
    }
    if hold.demand() - idle.demand() > EXHAUSTION_CPU_LIMIT {
        return Err(Failure::warning(format!(
            "expected a proxy out of descriptors to wait for one to free up, but while a client waited it {hold}, against {:.0}% idle (at most {:.0}% of a core more)",
            idle.demand() * 100.0,
            EXHAUSTION_CPU_LIMIT * 100.0
        ))
        .detail(format!(
            "{held}; it served again afterwards{}",
            match turned_away {
                0 => String::new(),
                n => format!(", after turning away {n} new client(s)"),
            }
        ))
        .hint("the proxy retries accept() at once when it fails with EMFILE: the waiting client keeps the listener readable, so the loop spins (pause accepting, or keep a spare descriptor to close)"));
    }
    Ok(())
}

/// The crowd: clients connect one at a time, each sending its tag and a byte, until one waits
/// in the proxy's listen queue because the proxy has no descriptor left to accept it (at most
/// `EXHAUSTION_CLIENTS`). Each one is settled before the next connects: paired (its byte echoed
/// back), turned away (closed or reset), or waiting. One at a time, because clients accepted
/// together race for the last descriptors: one takes the last, the other's destination socket
/// fails and it is closed, the descriptor it frees takes the next from the queue, and so on
/// until the queue is empty and nothing is left to make accept(2) fail.
async fn crowd(ctx: &Arc<Ctx>, pgid: i32, limit: u64) -> Result<Crowd, Failure> {
    let mut diag = sockdiag::Diag::open().ok();
    let mut crowd = Crowd::default();
    for n in 1..=EXHAUSTION_CLIENTS {
        // Each client has the echo deadline to settle, not the crowd as a whole: some thirty
        // round trips one after another took more than 10 s on a loaded host through correct
        // proxies (docs/reliability.md), while a proxy that hangs still leaves its client
        // unsettled for the whole deadline.
        let deadline = Instant::now() + ctx.scaled(ECHO_DEADLINE);
        let failed = |what: String| {
            Failure::new(format!("client {n} of the crowd: expected {what}"))
                .detail(crowd.summary(pgid, limit))
        };
        let mut client =
            match tokio::time::timeout_at(deadline, peer::connect(ctx.proxy_port, None)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(failed(format!("to connect to the proxy, but: {e}"))),
                Err(_) => {
                    return Err(failed(format!(
                        "to connect to the proxy within {:.1}s, but it did not",
                        ctx.scaled(ECHO_DEADLINE).as_secs_f64()
                    )));
                }
            };
        let ends = client.local_addr().map(|a| procfs::Ends {
            local: ctx.proxy_port,
            remote: a.port(),
        });
        let mut first = ctx.router.next_tag().bytes().to_vec();
        first.push(b'x');
        // A write that fails means the proxy already closed it: the read below says so.
        let _ = client.write_all(&first).await;
        let queued_after = ctx.scaled(EXHAUSTION_QUEUE_FULL_AFTER);
        let since = Instant::now();
        let mut stuck: Option<Instant> = None;
        loop {
            // Read, not peeked: a client closing with its echo unread would reset its pair
            // rather than end it with a FIN, and the proxy's clean close path (where fd-leak
            // forgets its descriptors) would go untried.
            let mut byte = [0u8; 1];
            match tokio::time::timeout(EXHAUSTION_POLL, client.read(&mut byte)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    crowd.turned_away += 1;
                    break;
                }
                Ok(Ok(_)) => {
                    crowd.paired.push(client);
                    break;
                }
                Err(_) => {}
            }
            // Waiting unaccepted, where the proxy has no descriptor free to accept it with
            // (a slow accept loop leaves clients queued too, for a moment).
            let queued = match (&mut diag, &ends) {
                (Some(d), Ok(e)) => d.queued_for_accept(*e).unwrap_or(false),
                _ => since.elapsed() >= queued_after,
            };
            if queued {
                let in_use = in_use_below(pgid, limit) as u64;
                if in_use >= limit {
                    crowd.waiting = Some(client);
                    return Ok(crowd);
                }
                // Not accepting, with descriptors to spare: it serves so many pairs at a time
                // and no more (Many connections' to judge), and the crowd cannot exhaust it.
                let waited = stuck.get_or_insert_with(Instant::now).elapsed();
                if waited >= queued_after {
                    return Err(Failure::skipped(format!(
                        "the proxy stopped accepting with descriptors to spare: client {n} of the crowd waited {:.1}s in its listen queue while {in_use} of its {limit} descriptors were in use, so it could not be run out of them",
                        waited.as_secs_f64()
                    ))
                    .detail(crowd.summary(pgid, limit)));
                }
            } else {
                stuck = None;
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "its byte echoed through the proxy, the proxy to close it, or it to wait in the listen queue once the proxy was out of descriptors, within {:.1}s of connecting; none of these happened",
                    ctx.scaled(ECHO_DEADLINE).as_secs_f64()
                )));
            }
        }
    }
    Ok(crowd)
}

/// Where the crowd's clients ended up.
#[derive(Default)]
struct Crowd {
    /// Echoed through the proxy: each holds a pair of the proxy's descriptors.
    paired: Vec<TcpStream>,
    /// Closed or reset by the proxy before any echo.
    turned_away: usize,
    /// The last one, waiting in the listen queue of a proxy with no descriptor free.
    waiting: Option<TcpStream>,
}

impl Crowd {
    fn summary(&self, pgid: i32, limit: u64) -> String {
        format!(
            "{} client(s) were paired through the proxy and {} turned away{}, and {} of its {limit} descriptors were in use",
            self.paired.len(),
            self.turned_away,
            if self.waiting.is_some() {
                ", one waited in its listen queue"
            } else {
                ""
            },
            in_use_below(pgid, limit)
        )
    }
}

/// How the harness set the proxy's soft descriptor limit below its hard one for the crowd.
struct Evened {
    /// The soft limit in force.
    limit: u64,
    /// Whether it was set below the hard limit, so one more descriptor can be given.
    lowered: bool,
    /// A clause for the details.
    clause: String,
}

/// Sets the idle proxy's soft descriptor limit to one or two below `hard`, whichever leaves an
/// even number free. The crowd leaves a client waiting on an exhausted proxy only if it runs
/// out exactly: a pair takes two descriptors, so with one left over the next waiting client is
/// accepted into it and closed when the destination's socket cannot be made, and the next
/// likewise, until none waits to make accept(2) fail, and a proxy that would spin never does.
/// Below the hard limit, so the phase can give that one descriptor afterwards on purpose.
fn even_free_count(pgid: i32, hard: u64) -> Evened {
    let in_use = in_use_below(pgid, hard) as u64;
    let soft = if (hard - 1).saturating_sub(in_use) % 2 == 0 {
        hard - 1
    } else {
        hard - 2
    };
    match set_soft_descriptor_limit(pgid, soft) {
        Ok(()) => Evened {
            limit: soft,
            lowered: true,
            clause: format!(
                " (the harness set its limit to {soft}: with {in_use} in use when idle, that leaves an even number free)"
            ),
        },
        Err(e) => Evened {
            limit: hard,
            lowered: false,
            clause: format!(
                " (with {in_use} in use when idle; setting the limit to {soft}, to leave an even number free, failed: {e})"
            ),
        },
    }
}

/// With one client waiting in the listen queue of the exhausted proxy, gives the proxy one more
/// descriptor: it accepts the client into it, cannot make the destination's socket, and must
/// turn the client away (or hold it) and go on serving; `exit-on-refused` exits here. Waits
/// until the client is turned away, or `EXHAUSTION_ONE_FREE` at most. Returns a clause for the
/// details.
async fn one_more_descriptor(
    ctx: &Ctx,
    pgid: i32,
    evened: &Evened,
    waiting: &mut TcpStream,
) -> String {
    if let Err(e) = set_soft_descriptor_limit(pgid, evened.limit + 1) {
        return format!("; raising its limit by one after the hold failed: {e}");
    }
    let mut byte = [0u8; 1];
    match tokio::time::timeout(ctx.scaled(EXHAUSTION_ONE_FREE), waiting.read(&mut byte)).await {
        Ok(Ok(0)) => "; given one more descriptor, it turned the waiting client away (EOF)".into(),
        Ok(Err(e)) => {
            format!("; given one more descriptor, it turned the waiting client away ({e})")
        }
        Ok(Ok(_)) => "; given one more descriptor, it served the waiting client".into(),
        Err(_) => format!(
            "; given one more descriptor, it held the waiting client {:.1}s",
            ctx.scaled(EXHAUSTION_ONE_FREE).as_secs_f64()
        ),
    }
}

/// Sets process `pid`'s soft RLIMIT_NOFILE to `soft`, its hard limit unchanged (prlimit(2)).
/// The kernel allows that to the proxy's own user (or to CAP_SYS_RESOURCE, which root lacks in
/// some containers): where the harness's own call is refused, a child forked for it takes the
/// proxy's user and group first.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_soft_descriptor_limit(pid: i32, soft: u64) -> std::io::Result<()> {
    use std::io::Error;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let hard = parse_descriptor_limits(&limits)
        .map(|(_, hard)| hard)
        .ok_or_else(|| Error::other("no Max open files line in its /proc limits"))?;
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit(2) reads only `new` and, given a null old limit, writes nothing.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) } == 0 {
        return Ok(());
    }
    let refused = Error::last_os_error();
    if refused.raw_os_error() != Some(libc::EPERM) {
        return Err(refused);
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (Some(uid), Some(gid)) = (real_id(&status, "Uid:"), real_id(&status, "Gid:")) else {
        return Err(Error::other("no Uid or Gid line in its /proc status"));
    };
    // Until it exits, the child holds copies of this process's descriptors (the fence keeps a
    // phase's listener from living on in it); and it is ours, not a proxy's leftover for the
    // stray sweep to kill after it has set the limit, when this would think it had not.
    crate::harness::run_helper(|| {
        testkit::fork_fence::forking(|| {
            // SAFETY: between fork and _exit the child makes only system calls (setresgid,
            // setresuid, prlimit, _exit), which are async-signal-safe; it allocates nothing and
            // takes no lock, so the other threads of this process, absent in the child, cannot
            // matter.
            let child = unsafe { libc::fork() };
            if child == 0 {
                unsafe {
                    let errno = if libc::setresgid(gid, gid, gid) != 0
                        || libc::setresuid(uid, uid, uid) != 0
                        || libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) != 0
                    {
                        *libc::__errno_location()
                    } else {
                        0
                    };
                    libc::_exit(errno.clamp(0, 255));
                }
            }
            if child < 0 {
                return Err(Error::last_os_error());
            }
            // The child makes three system calls and exits: the wait is for those alone.
            match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None)? {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                nix::sys::wait::WaitStatus::Exited(_, errno) => {
                    Err(Error::from_raw_os_error(errno))
                }
                other => Err(Error::other(format!("the helper ended so: {other:?}"))),
            }
        })
    })
}

/// The real user or group id on a /proc/PID/status line (`Uid:\t65534\t65534\t65534\t65534`).
fn real_id(status: &str, key: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn set_soft_descriptor_limit(_pid: i32, _soft: u64) -> std::io::Result<()> {
    Err(std::io::Error::other("prlimit(2) is Linux's"))
}

/// What a process group did with the CPU over a span: ran, and (where the kernel keeps
/// schedstat) waited on a run queue, runnable but not running.
#[derive(Debug, Clone, Copy)]
struct Busy {
    at: Instant,
    cpu: f64,
    /// Seconds its threads ran plus waited to run; None without /proc/PID/task/*/schedstat.
    runnable: Option<f64>,
    /// Over a span, from [`Busy::since`]: its length in seconds.
    span: f64,
}

impl Busy {
    fn of(pgid: i32) -> Busy {
        Busy {
            at: Instant::now(),
            cpu: procfs::cpu_seconds(pgid),
            runnable: runnable_seconds(pgid),
            span: 0.0,
        }
    }

    fn since(&self, earlier: &Busy) -> Busy {
        Busy {
            at: self.at,
            cpu: self.cpu - earlier.cpu,
            runnable: self.runnable.zip(earlier.runnable).map(|(a, b)| a - b),
            span: self.at.duration_since(earlier.at).as_secs_f64(),
        }
    }

    /// The share of a core it wanted: a thread that spins is always runnable, however little
    /// of the CPU a crowded host gives it, so its runnable time is the measure, and CPU time
    /// only where the kernel does not keep it.
    fn demand(&self) -> f64 {
        self.runnable.unwrap_or(self.cpu).max(self.cpu) / self.span.max(f64::EPSILON)
    }
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |s: f64| s / self.span.max(f64::EPSILON) * 100.0;
        write!(
            f,
            "used {:.0}% of a core ({:.2}s of CPU in {:.1}s)",
            pct(self.cpu),
            self.cpu,
            self.span
        )?;
        match self.runnable {
            Some(r) => write!(f, " and was runnable {:.0}% of the time", pct(r)),
            None => Ok(()),
        }
    }
}

/// Seconds the group's threads have run and waited on a run queue, summed from
/// /proc/PID/task/TID/schedstat (run time, then wait time, in ns); None where there is none.
fn runnable_seconds(pgid: i32) -> Option<f64> {
    let mut ns: Option<u64> = None;
    for pid in procfs::group_members(pgid) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
            if let (Some(Some(run)), Some(Some(wait))) = (fields.next(), fields.next()) {
                *ns.get_or_insert(0) += run + wait;
            }
        }
    }
    ns.map(|n| n as f64 / 1e9)
}

/// A new client echoes through the proxy, tried again while the proxy turns clients away (it
/// may accept one before the crowd's pairs have all let go of their descriptors). Returns how
/// many were turned away first.
async fn recover(ctx: &Ctx) -> Result<usize, Failure> {
    let limit = ctx.scaled(EXHAUSTION_RECOVER_WITHIN);
    let mut turned_away = 0;
    let mut last = String::new();
    let served = within(
        limit,
        "a new client to echo through the proxy after the crowd left",
        async {
            for attempt in 0u64.. {
                match try_once(ctx, attempt).await {
                    Ok(()) => return Ok(()),
                    Err(Try::TurnedAway(why)) => {
                        turned_away += 1;
                        last = why;
                    }
                    Err(Try::Failed(f)) => return Err(f),
                }
                // Pacing between tries, not a wait for anything.
                tokio::time::sleep(EXHAUSTION_RETRY_EVERY).await;
            }
            unreachable!("the attempts never run out")
        },
    )
    .await;
    match served {
        Ok(Ok(())) => Ok(turned_away),
        Ok(Err(f)) => Err(f),
        Err(e) => {
            let f = Failure::from(e);
            Err(match turned_away {
                0 => f.hint("the proxy stopped serving after it ran out of descriptors: its accept loop gave up, or it exited"),
                n => f.detail(format!("the proxy turned away {n} new client(s), the last: {last}"))
                    .hint("the proxy stopped serving after it ran out of descriptors"),
            })
        }
    }
}

/// How one try of a new client went wrong.
enum Try {
    /// Refused, or closed or reset before any echo: the proxy had no descriptor for it yet.
    TurnedAway(String),
    Failed(Failure),
}

/// A new client sends its tag and a message, and reads the echo (the destination's echo loop
/// serves it as any other).
async fn try_once(ctx: &Ctx, attempt: u64) -> Result<(), Try> {
    let mut client = peer::connect(ctx.proxy_port, None)
        .await
        .map_err(|e| Try::TurnedAway(format!("connect failed: {e}")))?;
    let msg = ctx.payload(attempt, ECHO_MESSAGE_LEN);
    let mut first = ctx.router.next_tag().bytes().to_vec();
    first.extend_from_slice(&msg);
    if let Err(e) = client.write_all(&first).await {
        return Err(Try::TurnedAway(format!("{e} before any echo")));
    }
    let mut got = Vec::with_capacity(msg.len());
    match peer::read_exact_into(&mut client, msg.len(), Pacing::EAGER, &mut got).await {
        Ok(()) => {}
        Err(e) if got.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Try::TurnedAway("closed (EOF) before any echo".into()));
        }
        Err(e) if got.is_empty() && peer::is_reset(&e) => {
            return Err(Try::TurnedAway(format!("{e} before any echo")));
        }
        Err(e) => {
            return Err(Try::Failed(Failure::new(format!(
                "expected a new client's {}-byte echo, but after {} bytes: {e}",
                msg.len(),
                got.len()
            ))));
        }
    }
    match check::compare(&msg, &got) {
        None => Ok(()),
        Some(m) => Err(Try::Failed(
            Failure::new(format!("a new client's echo differs: {}", m.summary()))
                .details(m.details()),
        )),
    }
}

/// How many of the descriptor numbers below `limit` process `pid` holds: the kernel refuses a
/// new one only when all of those are taken, whatever it holds above (a build's jobserver pipe
/// inherited at 251, say).
fn in_use_below(pid: i32, limit: u64) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| {
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
            .filter(|&fd| fd < limit)
            .count()
    })
}

/// The soft RLIMIT_NOFILE of process `pid`, from /proc/PID/limits.
fn descriptor_limit(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_descriptor_limit(&text)
}

/// The soft limit on the "Max open files" line of a /proc/PID/limits text.
fn parse_descriptor_limit(limits: &str) -> Option<u64> {
    parse_descriptor_limits(limits).map(|(soft, _)| soft)
}

/// The soft and hard limits on the "Max open files" line of a /proc/PID/limits text.
fn parse_descriptor_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // RLIM_INFINITY, as getrlimit(2) gives it.
    let value = |f: &str| match f {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    let mut fields = line["Max open files".len()..].split_whitespace();
    Some((value(fields.next()?)?, value(fields.next()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            64                   64                   files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn the_soft_descriptor_limit_is_read_from_proc_limits() {
        assert_eq!(parse_descriptor_limit(LIMITS), Some(64));
        assert_eq!(parse_descriptor_limit("Limit Soft\n"), None);
        let unlimited = LIMITS.replace("64                   64", "unlimited            unlimited");
        assert_eq!(parse_descriptor_limit(&unlimited), Some(u64::MAX));
        assert_eq!(parse_descriptor_limits(LIMITS), Some((64, 64)));
    }

    #[test]
    fn the_real_id_is_the_first_of_four() {
        let status = "Name:\tfixtures\nUid:\t65534\t65534\t65534\t65534\nGid:\t65533\t1\t1\t1\n";
        assert_eq!(real_id(status, "Uid:"), Some(65534));
        assert_eq!(real_id(status, "Gid:"), Some(65533));
        assert_eq!(real_id(status, "Groups:"), None);
    }

    /// What /proc says is what getrlimit(2) says: the phase reads the proxy's limit so, and
    /// treats a mismatch with its Launch as the harness's fault.
    #[test]
    fn the_limit_read_from_proc_is_the_process_s_own() {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit")
            .0;
        assert_eq!(descriptor_limit(std::process::id() as i32), Some(soft));
    }
}
