//! The reference proxy vouching for the host (`--self-check`). A phase the proxy under test
//! failed is run again, the proxy and the bundled reference side by side, so both meet the same
//! load at the same moment. A pass settles it (a pass is never the host's doing). A failure
//! stands only when it comes back in every one of [`ROUNDS`] rounds while the reference passes
//! beside it; where the reference fails too, the host cannot tell a broken proxy from a slow
//! machine, and the phase is inconclusive rather than failed. A run with no failure needs no
//! reference at all.

use std::sync::Arc;

use crate::harness::{ProxyCommand, Starts};
use crate::phase::{self, Failure, Outcome, Rules, Verdict};
use crate::suite::{self, Running};

/// Rounds a failed phase is run again beside the reference: a failure stands only if it comes
/// back in each of them while the reference passes.
pub const ROUNDS: usize = 2;

/// What the self-check did to one run.
#[derive(Debug, Default, Clone)]
pub struct Checked {
    /// Rounds run beside the reference (0: nothing failed).
    pub rounds: usize,
    /// Failures the reference vouched for: it passed the phase beside the proxy, which failed.
    pub confirmed: usize,
    /// Failures that did not come back beside a passing reference: the later verdict stands.
    pub cleared: usize,
    /// Failures the reference shared every round.
    pub inconclusive: usize,
    /// One line per phase whose verdict it changed or confirmed, for the reader.
    pub notes: Vec<String>,
}

/// Runs the failed phases of `outcomes` again beside the reference, up to [`ROUNDS`] times, and
/// puts each phase's final verdict in its place: passed as soon as the proxy passes it (a pass is
/// never the host's doing); failed only when it failed again in every round while the reference
/// passed beside it; otherwise inconclusive. One round is not enough: on a heavily loaded host a
/// correct proxy can miss a deadline by a hair in the same round the reference makes it
/// (docs/reliability.md). Err when the harness itself could not run.
pub async fn confirm_failures(
    outcomes: &mut [Outcome],
    proxy: &ProxyCommand,
    reference: &ProxyCommand,
    rules: Rules,
) -> Result<Checked, String> {
    let mut checked = Checked::default();
    let mut open: Vec<usize> = (0..outcomes.len())
        .filter(|&i| outcomes[i].verdict == Verdict::Failed)
        .collect();
    // Per phase: rounds in which it failed beside a passing reference, and the reference's own
    // failure from the latest round it failed.
    let mut confirmed = vec![0usize; outcomes.len()];
    let mut theirs: Vec<Option<String>> = vec![None; outcomes.len()];
    for round in 1..=ROUNDS {
        if open.is_empty() {
            break;
        }
        let ids: Vec<&str> = open.iter().map(|&i| outcomes[i].id).collect();
        let pick = || {
            phase::all()
                .into_iter()
                .filter(|p| ids.contains(&p.id))
                .collect::<Vec<_>>()
        };
        let run = |cmd: &ProxyCommand| {
            suite::run_watched(
                pick(),
                cmd.clone(),
                rules,
                None,
                Running::default(),
                Arc::new(Starts::default()),
                |_| {},
            )
        };
        let (again, by_reference) = tokio::join!(run(proxy), run(reference));
        let (again, by_reference) = (again?, by_reference?);
        checked.rounds = round;
        open.retain(|&i| {
            let id = outcomes[i].id;
            let find = |list: &[Outcome]| list.iter().find(|o| o.id == id).cloned();
            let (Some(mine), Some(reference)) = (find(&again), find(&by_reference)) else {
                // Every picked phase comes back from both runs; if one did not, leave it open.
                return true;
            };
            if mine.verdict != Verdict::Failed {
                let first = outcomes[i]
                    .failure
                    .as_ref()
                    .map(|f| f.summary.clone())
                    .unwrap_or_default();
                checked.cleared += 1;
                checked.notes.push(format!(
                    "{}: failed at first ({first}), then {} in round {round} beside the reference proxy; the later verdict stands",
                    mine.name, mine.verdict
                ));
                outcomes[i] = mine;
                return false;
            }
            if reference.verdict == Verdict::Failed {
                theirs[i] = reference.failure.map(|f| f.summary);
                return true;
            }
            confirmed[i] += 1;
            if confirmed[i] < ROUNDS {
                return true;
            }
            let mut settled = mine;
            if let Some(f) = &mut settled.failure {
                f.details.push(format!(
                    "self-check: failed again in each of {ROUNDS} rounds beside the reference proxy, which passed it each time"
                ));
            }
            checked.confirmed += 1;
            checked
                .notes
                .push(format!("{}: failed again beside a passing reference, every round", settled.name));
            outcomes[i] = settled;
            false
        });
    }
    for i in open {
        checked.inconclusive += 1;
        let o = &mut outcomes[i];
        let shared = checked.rounds - confirmed[i];
        let mut f = Failure::new(format!(
            "the reference proxy failed it too, beside this proxy, in {shared} of the {} rounds it was run again: this host could not confirm the failure, so this is no verdict on the proxy (grade it again on a quieter host)",
            checked.rounds
        ));
        f.verdict = Verdict::Inconclusive;
        if let Some(mine) = &o.failure {
            f.details
                .push(format!("this proxy, at first: {}", mine.summary));
            f.details.extend(mine.details.iter().cloned());
        }
        if let Some(summary) = &theirs[i] {
            f.details
                .push(format!("the reference proxy, beside it: {summary}"));
        }
        checked
            .notes
            .push(format!("{}: inconclusive: {}", o.name, f.summary));
        o.verdict = Verdict::Inconclusive;
        o.failure = Some(f);
    }
    Ok(checked)
}
