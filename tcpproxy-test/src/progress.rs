//! What a person at a terminal sees while the suite runs: a line under the results naming the
//! phases still running, how long the run has taken and how many verdicts are in. Nothing at
//! all when stdout is not a terminal, so logs and pipes get the plain lines.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::suite::Running;

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);

pub struct Progress {
    bar: Option<ProgressBar>,
    running: Running,
    done: Arc<AtomicUsize>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// A progress line for `total` phases, drawn only when `show`.
    pub fn start(total: usize, show: bool) -> Progress {
        let running = Running::default();
        let done = Arc::new(AtomicUsize::new(0));
        if !show {
            return Progress {
                bar: None,
                running,
                done,
                ticker: None,
            };
        }
        // Drawn on stdout, the terminal the results go to, so the two never interleave.
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>3} {pos}/{len} done · {msg}")
                .expect("a valid template"),
        );
        let ticker = {
            let (bar, running) = (bar.clone(), running.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(TICK);
                loop {
                    tick.tick().await;
                    let ids = running.lock().unwrap_or_else(|e| e.into_inner()).join(" ");
                    bar.set_message(if ids.is_empty() {
                        "starting".to_string()
                    } else {
                        format!("running {ids}")
                    });
                    bar.tick();
                }
            })
        };
        Progress {
            bar: Some(bar),
            running,
            done,
            ticker: Some(ticker),
        }
    }

    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// The set the suite keeps up to date.
    pub fn running(&self) -> Running {
        self.running.clone()
    }

    /// Prints above the progress line (or just prints, when there is none).
    pub fn above(&self, print: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// One more verdict is in.
    pub fn landed(&self) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(bar) = &self.bar {
            bar.set_position(n as u64);
        }
    }

    /// Removes the line, leaving only the results.
    pub fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
