//! Phases that are schedules of the fuzzer's model (`crate::fuzz::schedule`): built for the
//! run's stall timeout and scale, driven through this phase's proxy by the fuzzer's driver
//! (`crate::fuzz::peers`), and judged by the fuzzer's oracle against each case's expectation
//! (`crate::fuzz::oracle`). A failure saves the case that failed in the replay format and names
//! the command that runs it again against the same proxy.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::deadline::{self, Timing};
use crate::fuzz::oracle::{self, Again, Kind, Violation};
use crate::fuzz::peers::{self, Limits, Ports};
use crate::fuzz::replay::{save_private, shell_words};
use crate::fuzz::schedule::{Case, Dir, MIN_HOLD_PIECE, Shutdown, parse_cases};
use crate::fuzz::target::Pair;
use crate::peer::SMALL_RCVBUF;
use crate::procfs;

/// A phase made of schedules, run in turn.
#[derive(Clone, Copy)]
pub struct Flows {
    /// The cases, for the run's timing: each runs once the one before it passed.
    pub cases: fn(&Timing) -> Vec<Case>,
    /// Hints naming the bug the phase is there for, in place of the oracle's, by the rule that
    /// broke.
    pub hints: &'static [(Kind, &'static str)],
}

/// Cases from their text in the replay format; a text without a `case` line is one case. The
/// phases write theirs as the fuzzer prints them, and a unit test parses every phase's text.
pub fn cases(text: &str) -> Vec<Case> {
    let whole = if text.lines().any(|l| l.trim() == "case") {
        text.to_string()
    } else {
        format!("case\n{text}")
    };
    parse_cases(&whole).unwrap_or_else(|e| panic!("a phase's schedule does not parse: {e}\n{text}"))
}

/// `d` as the text form writes it.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Hints for a phase whose bug ends a pair early, by every rule an early end breaks: an EOF
/// before the sender shut down, a reset, an EOF before the last byte.
pub const fn ended_early(hint: &'static str) -> [(Kind, &'static str); 3] {
    [
        (Kind::EarlyEof, hint),
        (Kind::Reset, hint),
        (Kind::LostTail, hint),
    ]
}

/// Round trips on one connection that neither side shuts down (see [`round_trips`]).
pub fn echo(len: usize, pauses: &[Duration]) -> Vec<Case> {
    let (up, down) = round_trips(len, pauses);
    cases(&format!(
        "connection echo
           client->server: {up}; shutdown never; reader eager
           server->client: {down}; shutdown never; reader eager"
    ))
}

/// Round trips on one connection (an echo): before the k-th, the client waits `pauses[k]`;
/// then it writes `len` bytes, and the server, once it has read them, writes them back; the
/// client reads them before going on. The client's and the server's steps.
fn round_trips(len: usize, pauses: &[Duration]) -> (String, String) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for (k, pause) in pauses.iter().enumerate() {
        if !pause.is_zero() {
            up.push(format!("pause {}ms", ms(*pause)));
        }
        let so_far = len * (k + 1);
        up.push(format!("write {len}, await-read {so_far}"));
        down.push(format!("await-read {so_far}, write {len}"));
    }
    (up.join(", "), down.join(", "))
}

/// The client sends a request and half-closes; the server, once it has read the EOF, sends one
/// byte every `TRICKLE_EVERY` for the stall timeout plus `TRICKLE_EXTRA`, then closes. The
/// client must get every byte, then EOF. A half-closed pair is as alive as a whole one: nothing
/// is held, so no stall timer may fire, and a timer that starts at the first EOF (a "FIN
/// timeout") closes it while the server still has bytes to send. Not scaled: the phase is about
/// the proxy's timers, which a loaded host does not stretch.
pub const HALF_OPEN_TRICKLE: Flows = Flows {
    cases: |t| {
        let span = t.stall + TRICKLE_EXTRA;
        let pauses = (span.as_secs_f64() / TRICKLE_EVERY.as_secs_f64()).ceil() as usize;
        let mut down = vec!["await-peer-eof, write 1".to_string()];
        down.extend(vec![
            format!("pause {}ms, write 1", ms(TRICKLE_EVERY));
            pauses
        ]);
        cases(&format!(
            "connection
               client->server: write {TRICKLE_REQUEST}; shutdown after-last-byte; reader eager
               server->client: {}; shutdown after-last-byte; reader eager",
            down.join(", ")
        ))
    },
    hints: &ended_early(
        "the proxy closed a half-closed pair while the other direction was still sending: a timer on half-closed pairs (a FIN timeout) or a stall/idle timer that runs once one side has shut down",
    ),
};

/// Reset by destination (`resetter` Down) or by client (Up): the resetting side sends
/// `RESET_BYTES`; the other side reads them and answers with one byte; once that is in, the
/// resetting side resets (a bare RST: SO_LINGER 0 and close, no FIN first). The other side,
/// which has shut nothing down, waits for the end (EOF or a reset), keeps its side open for
/// `RESET_HOLD`, then shuts down. The answer makes sure every byte arrived before the reset,
/// so the reset is all the phase tests.
fn reset_cases(resetter: Dir) -> Vec<Case> {
    let resetting =
        format!("write {RESET_BYTES}, await-read 1; shutdown reset-after-last-byte; reader eager");
    let other = format!(
        "await-read {RESET_BYTES}, write 1, await-peer-eof, pause {}ms; shutdown after-last-byte; reader eager",
        ms(RESET_HOLD)
    );
    let (up, down) = match resetter {
        Dir::Up => (resetting, other),
        Dir::Down => (other, resetting),
    };
    cases(&format!(
        "connection
           client->server: {up}
           server->client: {down}"
    ))
}

/// The destination resets while the client keeps its side open.
pub const RESET_BY_DESTINATION: Flows = Flows {
    cases: |_| reset_cases(Dir::Down),
    hints: &[
        (
            Kind::Stuck,
            "the proxy does not pass on the destination's reset: once its read from the destination fails (ECONNRESET) it must reset the client's side (or at least shut it down), not stop that direction silently and leave the pair open (tokio #3876)",
        ),
        (
            Kind::Lingering,
            "the proxy keeps the pair's sockets after the destination reset and the client closed: the pair sits in CLOSE_WAIT (a direction that ended on a read error never closed its sockets)",
        ),
    ],
};

/// The client resets while the destination keeps its side open.
pub const RESET_BY_CLIENT: Flows = Flows {
    cases: |_| reset_cases(Dir::Up),
    hints: &[
        (
            Kind::Stuck,
            "the proxy does not pass on the client's reset: once its read from the client fails (ECONNRESET) it must reset the destination's side (or at least shut it down), not stop that direction silently and leave the pair open (tokio #3876)",
        ),
        (
            Kind::Lingering,
            "the proxy keeps the pair's sockets after the client reset and the destination closed: the pair sits in CLOSE_WAIT (a direction that ended on a read error never closed its sockets)",
        ),
    ],
};

/// How each reset of `case` reached the other side, one line per reset: as a reset (RST), as
/// EOF (FIN), or not at all. Both pass; the line says which the proxy does.
fn resets_passed_on(case: &Case, record: &peers::Record) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, (c, conn)) in case.connections.iter().zip(&record.conns).enumerate() {
        for d in Dir::BOTH.into_iter().filter(|d| c.resets(*d)) {
            let f = &conn.flows[d.index()];
            let (sender, receiver) = (d.sender(), d.receiver());
            let after = |at: Duration| {
                let since = at.saturating_sub(f.shut_at.unwrap_or_default());
                format!("{:.1} ms after it", since.as_secs_f64() * 1000.0)
            };
            let how = match (&f.read_failed, f.eof_at) {
                (Some(e), _) if e.reset => format!("as a reset (RST), {}", after(e.at)),
                (Some(e), _) => format!("as a failed read ({}), {}", e.error, after(e.at)),
                (None, Some(at)) => format!("as EOF (FIN), {}", after(at)),
                (None, None) => "neither as EOF nor as a reset".to_string(),
            };
            lines.push(format!(
                "connection {}: the {sender}'s reset reached the {receiver} {how}",
                i + 1
            ));
        }
    }
    lines
}

/// The proxy's CPU time (its whole process group) over a span.
struct Cpu {
    pgid: i32,
    cpu: f64,
    started: Instant,
}

impl Cpu {
    /// None where /proc cannot be read.
    fn start(pgid: i32) -> Option<Cpu> {
        procfs::available().then(|| Cpu {
            pgid,
            cpu: procfs::cpu_seconds(pgid),
            started: Instant::now(),
        })
    }

    /// Seconds of CPU used since the start, and the seconds elapsed.
    fn used(&self) -> (f64, f64) {
        (
            procfs::cpu_seconds(self.pgid) - self.cpu,
            self.started.elapsed().as_secs_f64(),
        )
    }
}

/// After a case with a reset passed: the proxy must not have spun on the dead socket. A
/// warning, as for CPU while idle: a proxy that spins serves every byte right, at a core's cost.
fn spin_check(case: &Case, record: &peers::Record, cpu: Option<Cpu>) -> PhaseResult {
    let Some((used, over)) = cpu.map(|c| c.used()) else {
        return Ok(());
    };
    let share = used / over.max(1e-9);
    tracing::info!("the proxy used {used:.2}s of CPU in {over:.1}s");
    if share <= RESET_CPU_LIMIT {
        return Ok(());
    }
    Err(Failure::warning(format!(
        "expected the proxy to wait quietly once the reset was passed on, but it used {:.0}% of a core over the phase ({used:.2}s of CPU in {over:.1}s; at most {:.0}%)",
        share * 100.0,
        RESET_CPU_LIMIT * 100.0
    ))
    .details(resets_passed_on(case, record))
    .hint("the proxy spins on a socket that was reset: it keeps polling it (an error or hang-up its event loop reports again and again) instead of closing it or taking it off the poll set"))
}

/// The deadlines a flow phase runs under: a round trip or an EOF owed is owed within the echo
/// deadline; the whole schedule, whatever moves, within the backstop. The expectation may
/// lengthen them (`Limits::for_case`). What the proxy does with a pair after both directions
/// are done is `resources/fd-leak`'s to judge, not this phase's, except after a reset: there the
/// end is owed within `RESET_END_WITHIN`, and the pair's sockets must be closed within
/// `RESET_CLOSED_WITHIN` of it ending, since a pair left in CLOSE_WAIT is the bug they look for.
fn limits(ctx: &Ctx, case: &Case) -> Limits {
    let reset = case.connections.iter().any(|c| c.has_reset());
    Limits {
        connect: ctx.scaled(ECHO_DEADLINE),
        quiet: ctx.scaled(if reset {
            RESET_END_WITHIN
        } else {
            ECHO_DEADLINE
        }),
        close: reset.then(|| ctx.scaled(RESET_CLOSED_WITHIN)),
        backstop: ctx.scaled(FLOWS_BACKSTOP) + ctx.timing.stall * 2,
    }
}

/// Runs the phase `id`'s cases through its proxy in turn and judges each.
pub(super) async fn run(ctx: Arc<Ctx>, id: &'static str, flows: Flows) -> PhaseResult {
    for case in (flows.cases)(&ctx.timing) {
        run_case(&ctx, id, case, flows.hints).await?;
    }
    Ok(())
}

/// Runs one case, again on fresh connections while a run cannot be judged ([`Again`], or a reset
/// while the harness's reader was starved, [`starved`]): at most `FLOWS_ATTEMPTS` runs. A case
/// whose held tail the harness was too late to judge every time passes with a warning in the
/// log; one the proxy overshot at least once was judged with an EOF that reached it holding
/// bytes; one starved every time is inconclusive.
async fn run_case(
    ctx: &Ctx,
    id: &'static str,
    mut case: Case,
    hints: &[(Kind, &'static str)],
) -> PhaseResult {
    let mut late = Vec::new();
    let mut starved_runs = Vec::new();
    let mut overshot = false;
    let reset = case.connections.iter().any(|c| c.has_reset());
    for attempt in 1..=FLOWS_ATTEMPTS {
        let cpu = if reset {
            Cpu::start(ctx.proxy_pgid)
        } else {
            None
        };
        let record = drive(ctx, &case).await?;
        let verdict = oracle::judge(&case, &record);
        if let Some(why) = starved(&record, &verdict, ctx.timing.stall) {
            starved_runs.push(format!("attempt {attempt}: {why}"));
            continue;
        }
        match oracle::again(&case, &record, &verdict) {
            None => {
                // Starved tries before this judged one are said, as slow-reader says its own:
                // notes under a pass, details under a failure.
                let tried: Vec<String> = starved_runs
                    .iter()
                    .map(|w| format!("tried again after {w}"))
                    .collect();
                if verdict.is_ok() {
                    for line in &tried {
                        ctx.note(line.clone());
                    }
                }
                let ends = if reset {
                    resets_passed_on(&case, &record)
                } else {
                    Vec::new()
                };
                for line in &ends {
                    ctx.note(line.clone());
                }
                verdict.map_err(|v| {
                    failure(ctx, id, &case, v, hints)
                        .details(ends)
                        .details(tried)
                })?;
                return if reset {
                    spin_check(&case, &record, cpu)
                } else {
                    Ok(())
                };
            }
            Some(Again::Late(why)) => late.push(format!("attempt {attempt}: {why}")),
            Some(Again::Overshot(held)) => {
                overshot = true;
                let piece = (held as usize / 2).max(MIN_HOLD_PIECE);
                for c in &mut case.connections {
                    for f in [&mut c.up, &mut c.down] {
                        if let Shutdown::WhileHeld(tail) = &mut f.shutdown {
                            tail.piece = piece;
                        }
                    }
                }
            }
        }
    }
    if !starved_runs.is_empty() {
        return Err(Failure::inconclusive(format!(
            "no try of a case could be judged: in {} of {FLOWS_ATTEMPTS} the proxy reset a connection while the harness's own reader was late by a quarter of the stall timeout or more, so it may have left a correct proxy stalled: this host is too busy to judge the phase (run again on a quieter host, or with a larger --timeout-scale)",
            starved_runs.len()
        ))
        .details(starved_runs)
        .details(late));
    }
    if !overshot && !late.is_empty() {
        tracing::warn!(phase = id, "held tail skipped: {}", late.join("; "));
    }
    Ok(())
}

/// Why a run's reset may be the harness's: a receiver woke from a pause it had planned
/// `SLOW_LATE_SHARE` of the stall timeout late or more. Its buffers had no room meanwhile, so a
/// correct proxy saw that much less progress than the schedule gives it (the slow-reader phase
/// excuses its tries by the same share, see there).
fn starved(
    record: &peers::Record,
    verdict: &Result<(), Violation>,
    stall: Duration,
) -> Option<String> {
    if !matches!(verdict, Err(v) if v.kind == Kind::Reset) {
        return None;
    }
    let (i, d, late) = record
        .conns
        .iter()
        .enumerate()
        .flat_map(|(i, c)| Dir::BOTH.map(|d| (i, d, c.flows[d.index()].reader_late)))
        .max_by_key(|(_, _, late)| *late)?;
    (late >= stall.mul_f64(SLOW_LATE_SHARE)).then(|| {
        format!(
            "a connection was reset while the {} of connection {} had woken {:.2}s after its planned time (stall timeout {:.2}s)",
            d.receiver(),
            i + 1,
            late.as_secs_f64(),
            stall.as_secs_f64()
        )
    })
}

/// Opens the case's connections through the phase's proxy and runs it.
async fn drive(ctx: &Ctx, case: &Case) -> Result<peers::Record, Failure> {
    let first = ctx.timeline.connections() + 1;
    let mut pairs = Vec::new();
    for c in &case.connections {
        let (client, server) = ctx
            .pair_untraced(c.small_client_rcvbuf.then_some(SMALL_RCVBUF))
            .await?;
        let port = |a: std::io::Result<std::net::SocketAddr>| {
            a.map(|a| a.port()).map_err(|e| {
                Failure::harness(format!("the harness could not name its sockets: {e}"))
            })
        };
        pairs.push(Pair {
            client_port: port(client.local_addr())?,
            proxy_out_port: port(server.peer_addr())?,
            client,
            server,
        });
    }
    let ports = Ports {
        proxy: ctx.proxy_port,
        dest: ctx.dest_port,
        pgid: ctx.proxy_pgid,
    };
    let began = ctx.timeline.elapsed();
    let record = peers::drive(pairs, ports, case, limits(ctx, case), Instant::now()).await;
    crate::fuzz::timeline::note(&ctx.timeline, began, first, &record);
    observe_holds(case, &record, ctx.timing.stall);
    Ok(record)
}

/// Counts how long each held flow kept the proxy stalled against its stall timeout among the
/// phase's waits (`deadline::closest`): the margin a loaded host eats into.
fn observe_holds(case: &Case, record: &peers::Record, stall: Duration) {
    for (c, conn) in case.connections.iter().zip(&record.conns) {
        for (flow, f) in [&c.up, &c.down].into_iter().zip(&conn.flows) {
            if let (Shutdown::WhileHeld(_), Some(h), Some(shut)) =
                (flow.shutdown, f.hold, f.shut_at)
            {
                deadline::observe(
                    "the proxy to be read from again, holding the held tail's bytes (its stall timeout)",
                    shut.saturating_sub(h.clear),
                    stall,
                );
            }
        }
    }
}

/// The oracle's violation as the phase reports it: its own hint where it has one, and where
/// the schedule was saved with the command that replays it.
fn failure(
    ctx: &Ctx,
    id: &str,
    case: &Case,
    v: Violation,
    hints: &[(Kind, &'static str)],
) -> Failure {
    let hint = hints
        .iter()
        .find(|(k, _)| *k == v.kind)
        .map(|(_, h)| h.to_string())
        .or(v.hint);
    let mut f = Failure::new(v.summary).details(v.details);
    if let Some(h) = hint {
        f = f.hint(h);
    }
    let text = format!(
        "# tcpproxy-test: the schedule of phase {id}, which failed: it runs again with\n# tcpproxy-test fuzz --replay FILE -- PROXY\n{case}"
    );
    let prefix = format!("tcpproxy-test-{}-", id.replace('/', "-"));
    match save_private(&std::env::temp_dir(), &prefix, &text) {
        Ok(path) => f.detail(format!("replay: {}", replay_command(ctx, &path))),
        Err(why) => f
            .detail(format!("the schedule, in the replay format ({why}):"))
            .details(case.to_string().lines().map(|l| format!("  {l}"))),
    }
}

/// `tcpproxy-test fuzz --replay FILE -- PROXY ARGS`: the schedule against the same proxy.
fn replay_command(ctx: &Ctx, file: &std::path::Path) -> String {
    let program = std::env::args_os()
        .next()
        .unwrap_or_else(|| "tcpproxy-test".into());
    let mut words = vec![
        program,
        "fuzz".into(),
        "--replay".into(),
        file.as_os_str().to_owned(),
    ];
    if ctx.timing.scale != 1.0 {
        words.extend([
            "--timeout-scale".into(),
            ctx.timing.scale.to_string().into(),
        ]);
    }
    words.push("--".into());
    words.push(ctx.cmd.program.as_os_str().to_owned());
    words.extend(ctx.cmd.args.iter().cloned());
    shell_words(&words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset() -> Result<(), Violation> {
        Err(Violation {
            kind: Kind::Reset,
            summary: "connection 1 reset".into(),
            details: vec![],
            hint: None,
        })
    }

    fn late_reader(late: Duration) -> peers::Record {
        let mut record = peers::Record {
            conns: vec![Default::default(), Default::default()],
            ..Default::default()
        };
        record.conns[1].flows[Dir::Down.index()].reader_late = late;
        record
    }

    #[test]
    fn a_reset_is_excused_only_while_the_harness_reader_was_late_by_a_quarter_of_the_timeout() {
        let stall = Duration::from_secs(3);
        let why = starved(&late_reader(Duration::from_millis(800)), &reset(), stall)
            .expect("0.8 s late of 3 s is a starved harness");
        assert!(
            why.contains("connection 2") && why.contains("0.80s"),
            "{why}"
        );
        assert_eq!(
            starved(&late_reader(Duration::from_millis(700)), &reset(), stall),
            None
        );
        // Only a reset: bytes that differ or an EOF that never came are never the lateness's.
        let wrong = Err(Violation {
            kind: Kind::Bytes,
            ..reset().unwrap_err()
        });
        assert_eq!(
            starved(&late_reader(Duration::from_secs(2)), &wrong, stall),
            None
        );
        assert_eq!(
            starved(&late_reader(Duration::from_secs(2)), &Ok(()), stall),
            None
        );
    }
}
