//! Running the selected phases against one proxy: at most `jobs` at once, each outcome handed
//! over in suite order as soon as it and every phase before it have finished.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::harness::{self, ProxyCommand, StartCause, StartRecord, Starts};
use crate::phase::{self, Failure, Outcome, Phase, Rules};

/// Which phases run: `--only` and `--exclude` globs over ids (and names).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub only: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
}

impl Filter {
    /// The filter of `--only` and `--exclude`; Err names a glob that does not parse.
    pub fn new(only: &[String], exclude: &[String]) -> Result<Filter, String> {
        let globs = |list: &[String]| {
            list.iter()
                .map(|g| glob::Pattern::new(g).map_err(|e| format!("invalid glob '{g}': {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Filter {
            only: globs(only)?,
            exclude: globs(exclude)?,
        })
    }

    pub fn admits(&self, phase: &Phase) -> bool {
        let hit = |p: &glob::Pattern| p.matches(phase.id) || p.matches(phase.name);
        (self.only.is_empty() || self.only.iter().any(hit)) && !self.exclude.iter().any(hit)
    }

    /// The suite's phases this filter keeps, in suite order.
    pub fn select(&self) -> Vec<Phase> {
        phase::all()
            .into_iter()
            .filter(|p| self.admits(p))
            .collect()
    }
}

/// The ids of the phases running right now, for a progress display.
pub type Running = Arc<std::sync::Mutex<Vec<&'static str>>>;

/// Runs `phases` against `cmd`, keeping `running` up to date and every proxy start recorded in
/// `starts`; `each` sees every outcome in order: a start failure in full the first time its
/// cause comes up, and in one line after that; the outcomes returned are all in full. Err when
/// the harness itself could not run a phase (no loopback port, say).
pub async fn run_watched(
    phases: Vec<Phase>,
    cmd: ProxyCommand,
    rules: Rules,
    jobs: Option<usize>,
    running: Running,
    starts: Arc<Starts>,
    mut each: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, String> {
    let slots = Arc::new(Semaphore::new(jobs.unwrap_or(phases.len()).max(1)));
    let cmd = Arc::new(cmd);
    let handles: Vec<_> = phases
        .into_iter()
        .map(|p| {
            let (slots, cmd, running) = (slots.clone(), cmd.clone(), running.clone());
            let record = StartRecord::default();
            let task = harness::with_starts(starts.clone(), record.clone(), async move {
                let _slot = slots.acquire_owned().await.expect("never closed");
                running.lock().unwrap_or_else(|e| e.into_inner()).push(p.id);
                let outcome = phase::run(&p, &cmd, rules).await;
                running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|id| *id != p.id);
                outcome
            });
            (tokio::spawn(task), record)
        })
        .collect();
    let mut outcomes = Vec::with_capacity(handles.len());
    let mut explained: Vec<StartCause> = Vec::new();
    for (h, record) in handles {
        let o = h.await.map_err(|e| format!("the harness crashed: {e}"))??;
        let cause = match &*record.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Err(cause)) => Some(cause.clone()),
            _ => None,
        };
        match cause {
            Some(c) if explained.iter().any(|e| e.is_like(&c)) => each(&repeat(&o, &c)),
            Some(c) => {
                explained.push(c);
                each(&o);
            }
            None => each(&o),
        }
        outcomes.push(o);
    }
    Ok(outcomes)
}

/// A phase whose proxy failed to start for a reason already explained in full, in one line.
fn repeat(o: &Outcome, cause: &StartCause) -> Outcome {
    let mut f = Failure::new(format!(
        "the proxy never started (see above): {}",
        cause.short()
    ));
    if let Some(full) = &o.failure {
        f.verdict = full.verdict;
    }
    Outcome {
        failure: Some(f),
        ..o.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(f: &Filter) -> Vec<&'static str> {
        f.select().iter().map(|p| p.id).collect()
    }

    fn pats(globs: &[&str]) -> Vec<glob::Pattern> {
        globs
            .iter()
            .map(|g| glob::Pattern::new(g).unwrap())
            .collect()
    }

    #[test]
    fn no_filter_keeps_the_whole_suite_in_order() {
        let all = ids(&Filter::default());
        assert_eq!(all.len(), phase::all().len());
        assert_eq!(all[0], "echo/single");
    }

    #[test]
    fn only_and_exclude_match_ids_and_names() {
        let f = Filter {
            only: pats(&["timeout/*"]),
            exclude: pats(&["*lazy-reverse"]),
        };
        assert_eq!(
            ids(&f),
            [
                "timeout/active",
                "timeout/lazy-forward",
                "timeout/idle",
                "timeout/slow-reader"
            ]
        );
        let f = Filter {
            only: pats(&["One-way shutdown"]),
            exclude: vec![],
        };
        assert_eq!(ids(&f), ["shutdown/one-way"]);
        let f = Filter {
            only: vec![],
            exclude: pats(&["resources/*", "load/*"]),
        };
        assert!(!ids(&f).iter().any(|id| id.starts_with("resources/")));
    }
}
