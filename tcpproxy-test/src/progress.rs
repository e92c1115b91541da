//! What a person at a terminal sees while the suite runs: a line under the results naming the
//! phases still running, how long the run has taken and how many verdicts are in. Nothing at
//! all when stdout is not a terminal, so logs and pipes get the plain lines. The line is cut to
//! the terminal's width (a wrapped line is redrawn as two and leaves its first half behind), and
//! it is cleared however the run ends, Ctrl-C included.

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
        // Drawn on stdout, the terminal the results go to, so the two never interleave.
        Progress::start_on(total, show.then(ProgressDrawTarget::stdout))
    }

    /// A progress line drawn on `target`, or none.
    fn start_on(total: usize, target: Option<ProgressDrawTarget>) -> Progress {
        let running = Running::default();
        let done = Arc::new(AtomicUsize::new(0));
        let Some(target) = target else {
            return Progress {
                bar: None,
                running,
                done,
                ticker: None,
            };
        };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        // `wide_msg` takes what the terminal has left and cuts the message to it.
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>3} {pos}/{len} done · {wide_msg}")
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
        drop(self);
    }
}

/// An interrupted run drops its progress with the rest of its work, before the interrupt
/// message is printed; clearing here keeps that message on a clean line.
impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use indicatif::InMemoryTerm;

    use super::*;

    const COLS: u16 = 60;

    fn shown(total: usize) -> (Progress, InMemoryTerm) {
        let term = InMemoryTerm::new(10, COLS);
        let p = Progress::start_on(
            total,
            Some(ProgressDrawTarget::term_like(Box::new(term.clone()))),
        );
        (p, term)
    }

    #[tokio::test]
    async fn the_line_fits_the_terminal_however_many_phases_run() {
        let (p, term) = shown(17);
        p.running().lock().unwrap().extend([
            "echo/single",
            "echo/many",
            "shutdown/one-way",
            "shutdown/flush",
            "stall/slow-reader",
            "descriptors/leak",
        ]);
        let bar = p.bar.clone().expect("shown");
        bar.set_message("running echo/single echo/many shutdown/one-way shutdown/flush stall/slow-reader descriptors/leak");
        bar.set_position(3);
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(lines.len(), 1, "one line, not wrapped: {screen:?}");
        assert!(lines[0].chars().count() <= COLS as usize, "{screen:?}");
        assert!(
            lines[0].contains("3/17 done · running echo/single"),
            "{screen:?}"
        );
    }

    #[tokio::test]
    async fn dropping_it_unfinished_clears_the_line() {
        let (p, term) = shown(17);
        p.landed();
        assert!(
            term.contents().contains("1/17 done"),
            "{:?}",
            term.contents()
        );
        // What an interrupt does: the work holding it is dropped, finish never called.
        drop(p);
        assert_eq!(term.contents(), "");
    }
}
