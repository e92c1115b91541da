//! Shrinking a failing case with proptest's value tree: `simplify` while the candidate still
//! fails, `complicate` when it passes, each candidate run alone through the proxy under test,
//! within a time and a candidate budget.
//!
//! A candidate counts as failing only if it breaks the same rule as the original ([`Kind`]), so
//! shrinking cannot slip to another bug, or to a failure a loaded host made up.
//!
//! Every schedule kept as "failing" did fail, so the result is always a real failure; timing
//! only decides how small it gets. A candidate that passes alone runs again as several copies at
//! once (as the fuzz run interleaves cases) before it counts as passing, since some bugs (bytes
//! lost at EOF) show only now and then, and more often under load.

use std::time::Duration;

use tokio::time::Instant;

use super::fuzzer::Fuzzer;
use super::oracle::{self, Kind, Violation};
use super::schedule::Case;
use super::strategy;

/// Candidates tried at most, whatever time is left.
const MAX_CANDIDATES: u32 = 400;
/// Rounds (alone, then copies at once) of the original case before concluding it fails only
/// alongside other cases.
const REPRODUCE_ROUNDS: u32 = 3;
/// Copies of a flaky minimal schedule the replay command runs.
pub const FLAKY_REPEAT: u32 = 10;

/// The smallest failing schedule found, and how it was found.
pub struct Shrunk {
    pub case: Case,
    pub violation: Violation,
    /// Smaller failing schedules found on the way.
    pub steps: u32,
    pub candidates: u32,
    pub took: Duration,
    /// Why shrinking stopped where it did, when it is worth saying.
    pub note: Option<String>,
    /// The schedule failed only among copies of itself, not alone: a replay must repeat it.
    pub flaky: bool,
}

impl Shrunk {
    pub fn as_is(case: Case, violation: Violation, note: &str) -> Shrunk {
        Shrunk {
            case,
            violation,
            steps: 0,
            candidates: 0,
            took: Duration::ZERO,
            note: Some(note.to_string()),
            flaky: false,
        }
    }
}

/// Whether the proxy under test fails `case` the way it failed first (`kind`): run alone, then
/// as copies at once. The violation and whether it came alone, if either run fails so.
async fn fails(fuzzer: &Fuzzer, case: &Case, kind: Kind) -> Option<(Violation, bool)> {
    // A proxy that died on the last candidate is started afresh; if it cannot be, this
    // candidate cannot be judged, and counts as passing.
    fuzzer.proxy.ensure_running().await.ok()?;
    let rec = fuzzer.run_alone(&fuzzer.proxy, case).await;
    if let Err(v) = oracle::judge(case, &rec) {
        if v.kind == kind {
            return Some((v, true));
        }
    }
    fuzzer.proxy.ensure_running().await.ok()?;
    let copies = fuzzer.config.jobs.max(2);
    let v = fuzzer.run_copies(case, copies, kind).await?;
    Some((v, false))
}

/// What shrinking tells whoever shows its progress (it prints nothing itself).
pub enum Progress<'a> {
    /// Shrinking begins, for at most this long.
    Started(Duration),
    /// A smaller schedule that still fails.
    Step(&'a Case, &'a Violation),
}

/// Shrinks case `index` of `seed` (which is `case`, failing with `violation`).
pub async fn shrink(
    fuzzer: &Fuzzer,
    seed: u64,
    index: u64,
    case: &Case,
    violation: Violation,
    progress: impl Fn(Progress<'_>),
) -> Shrunk {
    let started = Instant::now();
    let left = fuzzer
        .config
        .time_limit
        .saturating_sub(fuzzer.started.elapsed());
    let budget = fuzzer.config.shrink_time.min(left);
    if budget.is_zero() {
        return Shrunk::as_is(case.clone(), violation, "no time left to shrink it");
    }
    progress(Progress::Started(budget));
    let deadline = started + budget;
    let mut reproduced = None;
    for _ in 0..REPRODUCE_ROUNDS {
        reproduced = fails(fuzzer, case, violation.kind).await;
        if reproduced.is_some() || Instant::now() >= deadline {
            break;
        }
    }
    let Some((again, alone)) = reproduced else {
        let mut shrunk = Shrunk::as_is(
            case.clone(),
            violation,
            &format!(
                "it failed alongside other cases, but neither alone nor as copies of itself in {REPRODUCE_ROUNDS} rounds, so it is shown unshrunk"
            ),
        );
        shrunk.flaky = true;
        return shrunk;
    };
    let mut tree = strategy::case_tree(seed, index, fuzzer.config.stall_timeout);
    debug_assert_eq!(
        &tree.current(),
        case,
        "case {index} of seed {seed} regenerates"
    );
    let mut best = Shrunk {
        case: case.clone(),
        violation: again,
        steps: 0,
        candidates: 0,
        took: Duration::ZERO,
        note: None,
        flaky: !alone,
    };
    let mut tried: Vec<(Case, Option<(Violation, bool)>)> = Vec::new();
    if tree.simplify() {
        loop {
            if Instant::now() >= deadline {
                best.note = Some(format!(
                    "shrinking stopped at its time limit of {:.0}s; a smaller failing schedule may exist",
                    budget.as_secs_f64()
                ));
                break;
            }
            if best.candidates >= MAX_CANDIDATES {
                best.note = Some(format!(
                    "shrinking stopped after {MAX_CANDIDATES} candidates; a smaller failing schedule may exist"
                ));
                break;
            }
            let candidate = tree.current();
            // A tree steps back to a value it already tried (the last failing one, when a
            // bisection ends): answer from memory rather than sockets.
            let verdict = if candidate == best.case {
                Some((best.violation.clone(), !best.flaky))
            } else if let Some((_, v)) = tried.iter().find(|(c, _)| *c == candidate) {
                v.clone()
            } else {
                best.candidates += 1;
                let v = fails(fuzzer, &candidate, best.violation.kind).await;
                tried.push((candidate.clone(), v.clone()));
                v
            };
            match verdict {
                Some((v, alone)) => {
                    if candidate != best.case {
                        progress(Progress::Step(&candidate, &v));
                        best.case = candidate;
                        best.violation = v;
                        best.flaky = !alone;
                        best.steps += 1;
                    }
                    if !tree.simplify() {
                        break;
                    }
                }
                None => {
                    if !tree.complicate() {
                        break;
                    }
                }
            }
        }
    }
    best.took = started.elapsed();
    best
}
