//! Running the selected phases against one proxy: at most `jobs` at once, each outcome handed
//! over in suite order as soon as it and every phase before it have finished.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::harness::ProxyCommand;
use crate::phase::{self, Outcome, Phase, Rules};

/// Which phases run: `--only` and `--exclude` globs over ids (and names).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub only: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
}

impl Filter {
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

/// Runs `phases` against `cmd`; `each` sees every outcome in order. Err when the harness itself
/// could not run a phase (no loopback port, say).
pub async fn run(
    phases: Vec<Phase>,
    cmd: ProxyCommand,
    rules: Rules,
    jobs: Option<usize>,
    each: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, String> {
    run_watched(phases, cmd, rules, jobs, Running::default(), each).await
}

/// As [`run`], keeping `running` up to date.
pub async fn run_watched(
    phases: Vec<Phase>,
    cmd: ProxyCommand,
    rules: Rules,
    jobs: Option<usize>,
    running: Running,
    mut each: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, String> {
    let slots = Arc::new(Semaphore::new(jobs.unwrap_or(phases.len()).max(1)));
    let cmd = Arc::new(cmd);
    let handles: Vec<_> = phases
        .into_iter()
        .map(|p| {
            let (slots, cmd, running) = (slots.clone(), cmd.clone(), running.clone());
            tokio::spawn(async move {
                let _slot = slots.acquire_owned().await.expect("never closed");
                running.lock().unwrap_or_else(|e| e.into_inner()).push(p.id);
                let outcome = phase::run(&p, &cmd, rules).await;
                running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|id| *id != p.id);
                outcome
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        let o = h.await.map_err(|e| format!("the harness crashed: {e}"))??;
        each(&o);
        outcomes.push(o);
    }
    Ok(outcomes)
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
            ["timeout/active", "timeout/lazy-forward", "timeout/idle"]
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
