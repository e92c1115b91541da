//! Phases that are one schedule of the fuzzer's model (`crate::fuzz::schedule`): built for the
//! run's stall timeout and scale, driven through this phase's proxy by the fuzzer's driver
//! (`crate::fuzz::peers`), and judged by the fuzzer's oracle against the schedule's expectation
//! (`crate::fuzz::oracle`). A failure saves the schedule in the replay format and names the
//! command that runs it again against the same proxy.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::params::*;
use super::{Ctx, Failure, PhaseResult};
use crate::deadline::Timing;
use crate::fuzz::oracle::{self, Kind, Violation};
use crate::fuzz::output::{save_private, shell_words};
use crate::fuzz::peers::{self, Limits, Ports};
use crate::fuzz::schedule::{Case, parse_cases};
use crate::fuzz::target::Pair;
use crate::peer::SMALL_RCVBUF;

/// A phase made of one schedule.
#[derive(Clone, Copy)]
pub struct Flows {
    /// The schedule, for the run's timing.
    pub case: fn(&Timing) -> Case,
    /// Hints naming the bug the phase is there for, in place of the oracle's, by the rule that
    /// broke.
    pub hints: &'static [(Kind, &'static str)],
}

/// A schedule from its text (the replay format, without the `case` line): the phases write
/// theirs as the fuzzer prints them. Every phase's text is parsed by a unit test.
pub fn case(text: &str) -> Case {
    let mut cases = parse_cases(&format!("case\n{text}"))
        .unwrap_or_else(|e| panic!("a phase's schedule does not parse: {e}\n{text}"));
    assert_eq!(cases.len(), 1, "a phase's schedule is one case:\n{text}");
    cases.remove(0)
}

/// `d` as the text form writes it.
pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Round trips on one connection (an echo): before the k-th, the client waits `pauses[k]`;
/// then it writes `len` bytes, and the server, once it has read them, writes them back; the
/// client reads them before going on. The client's and the server's steps.
pub fn round_trips(len: usize, pauses: &[Duration]) -> (String, String) {
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

/// The deadlines a flow phase runs under: a round trip or an EOF owed is owed within the echo
/// deadline; the whole schedule, whatever moves, within the backstop. The expectation may
/// lengthen them (`Limits::for_case`). What the proxy does with a pair after both directions
/// are done is `resources/fd-leak`'s to judge, not this phase's.
fn limits(ctx: &Ctx) -> Limits {
    Limits {
        connect: ctx.scaled(ECHO_DEADLINE),
        quiet: ctx.scaled(ECHO_DEADLINE),
        close: None,
        backstop: ctx.scaled(FLOWS_BACKSTOP) + ctx.timing.stall * 2,
    }
}

/// Runs the phase `id`'s schedule through its proxy and judges it.
pub(super) async fn run(ctx: Arc<Ctx>, id: &'static str, flows: Flows) -> PhaseResult {
    let case = (flows.case)(&ctx.timing);
    let mut pairs = Vec::new();
    for c in &case.connections {
        let (client, server) = ctx
            .pair(c.small_client_rcvbuf.then_some(SMALL_RCVBUF))
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
    let record = peers::drive(pairs, ports, &case, limits(&ctx), Instant::now()).await;
    match oracle::judge(&case, &record) {
        Ok(()) => Ok(()),
        Err(v) => Err(failure(&ctx, id, &case, v, flows.hints)),
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
