//! A proxy out of descriptors: started with a low RLIMIT_NOFILE, a crowd of clients takes every
//! descriptor it has. It must neither exit nor spin, and must serve again once the crowd leaves.

use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
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

/// How the proxy starts for this phase: with `EXHAUSTION_NOFILE` descriptors at most.
pub const LAUNCH: Launch = Launch {
    nofile: Some(EXHAUSTION_NOFILE),
    ..Launch::LAB
};

/// `EXHAUSTION_CLIENTS` clients connect at once (they wait in the proxy's listen queue where it
/// cannot accept them) and hold `EXHAUSTION_HOLD`, then close; within
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
    let mut crowd = JoinSet::new();
    for _ in 0..EXHAUSTION_CLIENTS {
        let ctx = ctx.clone();
        crowd.spawn(async move {
            let mut client = peer::connect(ctx.proxy_port, None).await?;
            // Tagged as every client is, so the destination tells them from the one after.
            let tag = ctx.router.next_tag();
            let _ = client.write_all(&tag.bytes()).await;
            Ok::<TcpStream, std::io::Error>(client)
        });
    }
    let limit = ctx.scaled(ECHO_DEADLINE);
    let connected = within(
        limit,
        format!("{EXHAUSTION_CLIENTS} connections to the proxy"),
        crowd.join_all(),
    )
    .await?;
    let mut clients = Vec::with_capacity(EXHAUSTION_CLIENTS);
    for (n, c) in connected.into_iter().enumerate() {
        clients.push(c.map_err(|e| {
            Failure::new(format!(
                "client {} of {EXHAUSTION_CLIENTS}: expected to connect to the proxy (its listen queue holds those it cannot accept), but: {e}",
                n + 1
            ))
        })?);
    }

    // The hold is the scenario: the crowd stays while the proxy is out of descriptors.
    let before = Busy::of(pgid);
    tokio::time::sleep(EXHAUSTION_HOLD).await;
    let hold = Busy::of(pgid).since(&before);
    let in_use = in_use_below(pgid, EXHAUSTION_NOFILE);
    drop(clients);

    let turned_away = recover(&ctx).await.map_err(|f| {
        f.detail(format!(
            "while {EXHAUSTION_CLIENTS} clients held on, {in_use} of the proxy's {EXHAUSTION_NOFILE} descriptors were in use"
        ))
    })?;
    if hold.demand() - idle.demand() > EXHAUSTION_CPU_LIMIT {
        return Err(Failure::warning(format!(
            "expected a proxy out of descriptors to wait for one to free up, but while {EXHAUSTION_CLIENTS} clients held on it {hold}, against {:.0}% idle (at most {:.0}% of a core more)",
            idle.demand() * 100.0,
            EXHAUSTION_CPU_LIMIT * 100.0
        ))
        .detail(format!(
            "{in_use} of its {EXHAUSTION_NOFILE} descriptors were in use; it served again afterwards{}",
            match turned_away {
                0 => String::new(),
                n => format!(", after turning away {n} new client(s)"),
            }
        ))
        .hint("the proxy retries accept() at once when it fails with EMFILE: the waiting client keeps the listener readable, so the loop spins (pause accepting, or keep a spare descriptor to close)"));
    }
    Ok(())
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
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    match line["Max open files".len()..].split_whitespace().next()? {
        // RLIM_INFINITY, as getrlimit(2) gives it.
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
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
