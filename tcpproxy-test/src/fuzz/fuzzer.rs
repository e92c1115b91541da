//! One fuzz run's state and its cases: both proxies, the deadlines and the clock, where each
//! case came from, and what running one through both proxies showed. The run's loop, the
//! shrinker and the output all read it; it calls none of them.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cli::FuzzConfig;
use super::oracle::{self, Violation};
use super::peers::{self, Limits, Record};
use super::schedule::Case;
use super::target::Target;
use crate::console::Console;

/// Schedules that once exposed a bug, run before the random cases of every run. Each is already
/// minimal; add a failure's saved schedule here to keep it.
pub const REGRESSIONS: &str = include_str!("../../fuzz-regressions.txt");
/// Where [`REGRESSIONS`] lives, for messages.
pub const REGRESSIONS_PATH: &str = "tcpproxy-test/fuzz-regressions.txt";

/// Where a case came from: says how to name it, replay it, and whether it can shrink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The k-th (from 1) committed regression schedule.
    Regression(usize),
    /// Case `index` of `seed`: generated, so it can shrink.
    Random { seed: u64, index: u64 },
    /// The k-th (from 1) schedule of the `--replay` file.
    Replay(usize),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Regression(k) => write!(f, "regression {k}"),
            Origin::Random { index, .. } => write!(f, "case {index}"),
            Origin::Replay(k) => write!(f, "schedule {k}"),
        }
    }
}

#[derive(Clone)]
pub struct Job {
    pub origin: Origin,
    pub case: Case,
}

/// One case run through both proxies and judged.
pub struct Outcome {
    pub origin: Origin,
    pub case: Case,
    pub proxy: Record,
    pub reference: Record,
    pub verdict: Result<(), Violation>,
    pub reference_verdict: Result<(), Violation>,
}

/// What the passing cases added up to.
#[derive(Default)]
pub struct Totals {
    pub regressions: usize,
    pub cases: usize,
    pub connections: usize,
    pub bytes: usize,
    /// Cases not started because the time limit came first.
    pub skipped: usize,
    /// Differences the contract allows: (origin, what).
    pub info: Vec<(Origin, String)>,
}

/// The run: both proxies, the deadlines, the clock.
pub struct Fuzzer {
    pub config: FuzzConfig,
    pub proxy: Arc<Target>,
    pub reference: Arc<Target>,
    pub limits: Limits,
    pub started: Instant,
    /// Where the run's lines go.
    pub console: Console,
}

impl Fuzzer {
    /// `case` through one proxy with nothing else running, judged as usual.
    pub async fn run_alone(&self, target: &Target, case: &Case) -> Record {
        let mut rec = peers::run(target, case, self.limits).await;
        rec.proxy_died = target.died().await;
        rec
    }

    /// `copies` runs of `case` at once through the proxy under test; the first failure of
    /// `kind`, if any.
    pub async fn run_copies(
        &self,
        case: &Case,
        copies: usize,
        kind: oracle::Kind,
    ) -> Option<Violation> {
        let mut set = JoinSet::new();
        for _ in 0..copies {
            let (proxy, case, limits) = (self.proxy.clone(), case.clone(), self.limits);
            set.spawn(
                async move { oracle::judge(&case, &peers::run(&proxy, &case, limits).await) },
            );
        }
        let verdicts = set.join_all().await;
        let died = self.proxy.died().await;
        let mut rec = Record::default();
        if died.is_some() {
            rec.proxy_died = died;
            return oracle::judge(case, &rec).err().filter(|v| v.kind == kind);
        }
        verdicts
            .into_iter()
            .filter_map(Result::err)
            .find(|v| v.kind == kind)
    }
}

pub async fn run_job(
    proxy: Arc<Target>,
    reference: Arc<Target>,
    job: Job,
    limits: Limits,
) -> Outcome {
    let (mut p, mut r) = tokio::join!(
        peers::run(&proxy, &job.case, limits),
        peers::run(&reference, &job.case, limits)
    );
    p.proxy_died = proxy.died().await;
    r.proxy_died = reference.died().await;
    Outcome {
        verdict: oracle::judge(&job.case, &p),
        reference_verdict: oracle::judge(&job.case, &r),
        origin: job.origin,
        case: job.case,
        proxy: p,
        reference: r,
    }
}
