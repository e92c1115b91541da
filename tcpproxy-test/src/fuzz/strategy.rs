//! The proptest strategy that generates cases, and the per-case random source that makes case I
//! of seed S the same case on every machine and every run.
//!
//! Shrinking runs real sockets, and a failing candidate can cost seconds (a missing EOF is
//! known only after the quiet limit), so the strategy is built to shrink in few steps: whole
//! groups of features (all of a flow's writes, all of its timing) come off in one step before
//! any is shrunk alone, optional features are dropped before their values are shrunk
//! ([`DropFirst`]), numbers try their lowest value before bisecting ([`LowFirst`]), and a choice
//! tries every plainer alternative, plainest first ([`Choice`]). Proptest's own option, integer
//! and union trees shrink the value first, bisect from the middle, and try only the alternative
//! just before the current one.

use proptest::prelude::*;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::time::Duration;

use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;

use super::schedule::{
    Case, Connection, Dir, Expect, Flow, HeldTail, KIB, MAX_STALL_MS, MAX_WRITE, Pace, Reader,
    Shutdown, Slicer, Stall, Step,
};

/// Independent connections opened together in one case.
pub const MAX_CONNECTIONS: usize = 3;
/// How often a case adds staggered copies of its first connection, how many at most, and the
/// most each adds to the one before: as the flush phase does, since whether a proxy still holds
/// a stream's tail when the EOF comes depends on where the tail falls in its drain cycle.
const STAGGER_CHANCE: f64 = 0.4;
const MAX_STAGGERED: u64 = 5;
const MAX_STAGGER_STEP: u64 = 32 * KIB as u64;
/// Plain steps in one flow (a bulk step and an await come on top).
const MAX_STEPS: usize = 4;
/// A bulk step's size. Long enough to pass offset 1,000,003 about half the time, since bugs
/// deep in a stream exist (`flip-byte`); short enough to stay well under a second on loopback.
const BULK_MIN: u64 = 512 * KIB as u64;
const BULK_MAX: u64 = 2048 * KIB as u64;
/// How often a flow writes anything, and how often one that does has a bulk step, by
/// direction: mostly uploads, as in the lab's bulk phases.
const WRITES_CHANCE: f64 = 0.85;
const BULK_CHANCE_UP: f64 = 0.55;
const BULK_CHANCE_DOWN: f64 = 0.18;
const MAX_PAUSE_MS: u64 = 300;

/// How often a case gets a connection whose reader outlasts the proxy's stall timeout, when
/// the fuzzer knows it (`--stall-timeout`).
const OUTLAST_CHANCE: f64 = 0.125;
/// How much longer than the stall timeout such a reader keeps reading: as the slow-reader
/// phase does, long enough that a proxy counting from the first stuck byte aborts it.
const OUTLAST_BY: Duration = Duration::from_secs(4);
/// Such a reader's pace: 32 KiB every 250 ms, as the slow-reader phase's.
const OUTLAST_PACE: Pace = Pace::Slow {
    bytes: 32 * KIB,
    every_ms: 250,
};
/// Keys the draw of the outlasting connection apart from the case's own stream, so a case's
/// other connections are the same with and without `--stall-timeout`.
const OUTLAST_KEY: u64 = 0x6f75_746c_6173_7421;

/// The case at `index` of the run seeded `seed`, as a proptest value tree: its `current()` is
/// the case, and `simplify`/`complicate` shrink it. Given the proxy's stall timeout, one case in
/// eight ends with a connection whose reader keeps taking a little for longer than that.
pub fn case_tree(
    seed: u64,
    index: u64,
    stall_timeout: Option<Duration>,
) -> Box<dyn ValueTree<Value = Case>> {
    let case = plain_case_tree(seed, index);
    let Some(stall) = stall_timeout else {
        return case;
    };
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ OUTLAST_KEY);
    rng.set_stream(index);
    let tail = rng.random_bool(OUTLAST_CHANCE).then(|| {
        let dir = if rng.random_bool(0.5) {
            Dir::Up
        } else {
            Dir::Down
        };
        outlasting(dir, stall)
    });
    Box::new(WithTail {
        case,
        tail: DropFirstTree {
            inner: tail.map(Just),
            state: Dropping::Whole,
            inner_moved: false,
        },
        tail_moved: false,
    })
}

/// A connection whose writer in `dir` pushes as fast as it can while its reader takes a little
/// every 250 ms for `stall` + 4 s: always progressing, so the proxy must not abort it.
pub fn outlasting(dir: Dir, stall: Duration) -> Connection {
    let rate = OUTLAST_PACE.rate().expect("a slow pace has a rate");
    let len = (rate * (stall + OUTLAST_BY).as_secs_f64()) as usize;
    let quiet = Flow::plain(Vec::new());
    let busy = Flow {
        reader: Reader {
            pace: OUTLAST_PACE,
            stall: None,
        },
        ..Flow::plain(vec![Step::Bulk(len)])
    };
    let (up, down) = match dir {
        Dir::Up => (busy, quiet),
        Dir::Down => (quiet, busy),
    };
    // The destination's sockets are always slow receivers; the client's is made one when it
    // is the slow reader, so the proxy's buffer, not the kernel's, holds what waits.
    let mut c = Connection {
        echo: false,
        small_client_rcvbuf: dir == Dir::Down,
        up,
        down,
    };
    c.normalize();
    c
}

/// A case and, perhaps, one more connection, which shrinking drops first.
struct WithTail {
    case: Box<dyn ValueTree<Value = Case>>,
    tail: DropFirstTree<Just<Connection>>,
    /// The last simplification was the tail's, so a complication is too.
    tail_moved: bool,
}

impl ValueTree for WithTail {
    type Value = Case;

    fn current(&self) -> Case {
        let mut case = self.case.current();
        case.connections.extend(self.tail.current());
        case
    }

    fn simplify(&mut self) -> bool {
        self.tail_moved = self.tail.simplify();
        self.tail_moved || self.case.simplify()
    }

    fn complicate(&mut self) -> bool {
        if self.tail_moved {
            self.tail.complicate()
        } else {
            self.case.complicate()
        }
    }
}

fn plain_case_tree(seed: u64, index: u64) -> Box<dyn ValueTree<Value = Case>> {
    let mut key = [0u8; 32];
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    rng.set_stream(index);
    rng.fill_bytes(&mut key);
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    case()
        .boxed()
        .new_tree(&mut runner)
        .expect("the case strategy rejects nothing")
}

pub fn case() -> impl Strategy<Value = Case> {
    // The copies come first, so they are dropped before the connection they copy shrinks:
    // the other way round, shrinking stops where only the copies still fail.
    (
        DropFirst::new(
            STAGGER_CHANCE,
            (
                LowFirst::new(1, MAX_STAGGERED),
                LowFirst::new(1, MAX_STAGGER_STEP),
            ),
        ),
        prop::collection::vec(connection(), 1..=MAX_CONNECTIONS),
    )
        .prop_map(|(stagger, mut connections)| {
            if let Some((copies, step)) = stagger {
                let first = connections[0].clone();
                for k in 1..=copies {
                    connections.push(staggered(&first, (k * step) as usize));
                }
            }
            Case {
                connections,
                expect: Expect::Contract,
            }
        })
}

/// `c` with every stream `extra` bytes longer (its longest step grows), so copies of one
/// schedule end at different points of the proxy's drain cycle.
fn staggered(c: &Connection, extra: usize) -> Connection {
    let mut c = c.clone();
    for f in [&mut c.up, &mut c.down] {
        let longest = f
            .steps
            .iter_mut()
            .filter_map(|s| match s {
                Step::Write(n) | Step::Bulk(n) => Some(n),
                Step::Pause(_) | Step::AwaitPeerEof | Step::AwaitRead(_) => None,
            })
            .max_by_key(|n| **n);
        if let Some(n) = longest {
            *n += extra;
        }
    }
    c.normalize();
    c
}

/// A connection's parts, ordered as they shrink: both flows' timing first (it costs run time
/// in every later candidate), then their writes, then how they end, then the client's socket.
fn connection() -> impl Strategy<Value = Connection> {
    (
        DropFirst::new(0.75, timing()),
        DropFirst::new(0.75, timing()),
        writes(Dir::Up),
        writes(Dir::Down),
        shutdown(),
        shutdown(),
        DropFirst::new(0.2, position()),
        DropFirst::new(0.2, position()),
        prop::bool::weighted(0.5),
    )
        .prop_map(
            |(t_up, t_down, w_up, w_down, s_up, s_down, a_up, a_down, small_client_rcvbuf)| {
                let mut c = Connection {
                    echo: false,
                    small_client_rcvbuf,
                    up: flow(w_up, t_up, s_up, a_up),
                    down: flow(w_down, t_down, s_down, a_down),
                };
                c.normalize();
                c
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    Choice::new(vec![
        (
            4,
            LowFirst::log(1, MAX_WRITE as u64)
                .prop_map(|n| Step::Write(n as usize))
                .boxed(),
        ),
        (
            1,
            LowFirst::new(0, MAX_PAUSE_MS)
                .prop_map(|ms| Step::Pause(ms as u32))
                .boxed(),
        ),
    ])
}

/// Where an extra step goes, as a percentage of the way through the steps.
fn position() -> LowFirst {
    LowFirst::new(0, 100)
}

fn insert_at(steps: &mut Vec<Step>, at: u64, step: Step) {
    let i = (steps.len() * at as usize).div_ceil(100).min(steps.len());
    steps.insert(i, step);
}

fn shutdown() -> impl Strategy<Value = Shutdown> {
    // Shrinks towards the plainest ending, the first.
    Choice::new(vec![
        (5, Just(Shutdown::AfterLastByte).boxed()),
        (
            2,
            LowFirst::new(1, 500)
                .prop_map(|ms| Shutdown::SlowClose(ms as u32))
                .boxed(),
        ),
        (1, Just(Shutdown::AtStart).boxed()),
        (2, Just(Shutdown::Never).boxed()),
        (3, Just(Shutdown::WhileHeld(HeldTail::GENERATED)).boxed()),
    ])
}

/// The timing of a flow, dropped as a whole first when shrinking: (latency, slicer, pace,
/// stall as (per mille of the flow, ms)).
type Timing = (Option<u64>, Option<Slicer>, Pace, Option<(u64, u64)>);

fn timing() -> impl Strategy<Value = Timing> {
    let slicer = (
        LowFirst::new(1, 1024),
        DropFirst::new(0.5, LowFirst::new(1, 1000)),
    )
        .prop_map(|(size, delay)| Slicer {
            size: size as usize,
            delay_us: delay.unwrap_or(0) as u32,
        });
    // A pace shrinks to the plainer paces before it, never within itself: a smaller chunk or
    // rate is no simpler, only slower.
    let pace = Choice::new(vec![
        (4, Just(Pace::Eager).boxed()),
        (2, (1..=16 * KIB).prop_map(Pace::Chunks).no_shrink().boxed()),
        (
            2,
            (64..=8192u32).prop_map(Pace::Bandwidth).no_shrink().boxed(),
        ),
        (
            1,
            (1..=16usize, 1..=64 * KIB)
                .prop_map(|(size, bytes)| Pace::Trickle { size, bytes })
                .no_shrink()
                .boxed(),
        ),
    ]);
    (
        DropFirst::new(0.35, LowFirst::new(1, 50)),
        DropFirst::new(0.3, slicer),
        pace,
        DropFirst::new(
            0.4,
            (
                LowFirst::new(0, 1000),
                LowFirst::new(100, MAX_STALL_MS.into()),
            ),
        ),
    )
}

/// A flow's writes: plain steps, and perhaps a bulk step at a percentage of the way through.
type Writes = Option<(Vec<Step>, Option<(u64, u64)>)>;

fn writes(dir: Dir) -> impl Strategy<Value = Writes> {
    let bulk_chance = match dir {
        Dir::Up => BULK_CHANCE_UP,
        Dir::Down => BULK_CHANCE_DOWN,
    };
    DropFirst::new(
        WRITES_CHANCE,
        (
            prop::collection::vec(step(), 0..=MAX_STEPS),
            DropFirst::new(bulk_chance, (LowFirst::new(BULK_MIN, BULK_MAX), position())),
        ),
    )
}

/// Puts a flow together from its drawn parts, normalized.
fn flow(writes: Writes, timing: Option<Timing>, shutdown: Shutdown, await_at: Option<u64>) -> Flow {
    let (mut steps, bulk) = writes.unwrap_or_default();
    if let Some((len, at)) = bulk {
        insert_at(&mut steps, at, Step::Bulk(len as usize));
    }
    if let Some(at) = await_at {
        insert_at(&mut steps, at, Step::AwaitPeerEof);
    }
    let total: usize = steps
        .iter()
        .map(|s| match s {
            Step::Write(n) | Step::Bulk(n) => *n,
            _ => 0,
        })
        .sum();
    let (latency, slicer, pace, stall) = timing.unwrap_or((None, None, Pace::Eager, None));
    let mut f = Flow {
        steps,
        latency_ms: latency.unwrap_or(0) as u32,
        slicer,
        shutdown,
        reader: Reader {
            pace,
            stall: stall.map(|(per_mille, ms)| Stall {
                after: total * per_mille as usize / 1000,
                ms: ms as u32,
            }),
        },
    };
    f.normalize();
    f
}

// ---- value trees that shrink in few steps ----

/// `Some(value)` with probability `p`, else `None`; shrinks to `None` in one step, and only if
/// that passes, shrinks the value.
#[derive(Debug, Clone)]
pub struct DropFirst<S> {
    p: f64,
    inner: S,
}

impl<S: Strategy> DropFirst<S> {
    pub fn new(p: f64, inner: S) -> DropFirst<S> {
        DropFirst { p, inner }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropping {
    /// The value, not yet tried without.
    Whole,
    /// Trying `None`.
    Dropped,
    /// `None` passed, so the value stays and shrinks itself.
    Kept,
}

pub struct DropFirstTree<T> {
    inner: Option<T>,
    state: Dropping,
    /// The last simplification was the inner value's, so a complication is too.
    inner_moved: bool,
}

impl<S: Strategy> Strategy for DropFirst<S> {
    type Tree = DropFirstTree<S::Tree>;
    type Value = Option<S::Value>;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let inner = if runner.rng().random_bool(self.p) {
            Some(self.inner.new_tree(runner)?)
        } else {
            None
        };
        Ok(DropFirstTree {
            inner,
            state: Dropping::Whole,
            inner_moved: false,
        })
    }
}

impl<T: ValueTree> ValueTree for DropFirstTree<T> {
    type Value = Option<T::Value>;

    fn current(&self) -> Self::Value {
        match (&self.inner, self.state) {
            (Some(t), Dropping::Whole | Dropping::Kept) => Some(t.current()),
            _ => None,
        }
    }

    fn simplify(&mut self) -> bool {
        self.shrink_step(true)
    }

    fn complicate(&mut self) -> bool {
        self.shrink_step(false)
    }
}

impl<T: ValueTree> DropFirstTree<T> {
    /// The shrinker's moves as one table: a simplification, or the complication that undoes
    /// the last one; false where there is none. Dropping the value comes first; once the
    /// value proves needed, the inner tree shrinks it.
    fn shrink_step(&mut self, simplify: bool) -> bool {
        let Some(inner) = &mut self.inner else {
            return false;
        };
        match (self.state, simplify) {
            (Dropping::Whole, true) => {
                self.state = Dropping::Dropped;
                self.inner_moved = false;
                true
            }
            (Dropping::Dropped, false) => {
                self.state = Dropping::Kept;
                true
            }
            (Dropping::Kept, true) => {
                self.inner_moved = inner.simplify();
                self.inner_moved
            }
            (Dropping::Kept, false) if self.inner_moved => inner.complicate(),
            _ => false,
        }
    }
}

/// An integer in `lo..=hi`; shrinks by trying `lo` first, then bisecting between the largest
/// value seen to pass and the smallest seen to fail. With `log`, values are drawn evenly over
/// the orders of magnitude rather than over the range.
#[derive(Debug, Clone, Copy)]
pub struct LowFirst {
    lo: u64,
    hi: u64,
    log: bool,
}

impl LowFirst {
    pub fn new(lo: u64, hi: u64) -> LowFirst {
        LowFirst { lo, hi, log: false }
    }

    pub fn log(lo: u64, hi: u64) -> LowFirst {
        LowFirst { lo, hi, log: true }
    }
}

#[derive(Debug, Clone)]
pub struct LowFirstTree {
    lo: u64,
    curr: u64,
    /// The smallest value known to fail (the last one accepted).
    fail: u64,
    /// The largest value known to pass, once one has.
    pass: Option<u64>,
}

impl Strategy for LowFirst {
    type Tree = LowFirstTree;
    type Value = u64;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let rng = runner.rng();
        let curr = if self.log {
            let (a, b) = (self.lo.max(1).ilog2(), self.hi.ilog2());
            let bits = rng.random_range(a..=b);
            let (from, to) = (
                (1u64 << bits).max(self.lo),
                ((2u64 << bits) - 1).min(self.hi),
            );
            rng.random_range(from..=to)
        } else {
            rng.random_range(self.lo..=self.hi)
        };
        Ok(LowFirstTree {
            lo: self.lo,
            curr,
            fail: curr,
            pass: None,
        })
    }
}

impl ValueTree for LowFirstTree {
    type Value = u64;

    fn current(&self) -> u64 {
        self.curr
    }

    fn simplify(&mut self) -> bool {
        self.fail = self.curr;
        let floor = self.pass.map_or(self.lo, |p| p + 1);
        if floor >= self.fail {
            return false;
        }
        self.curr = match self.pass {
            None => self.lo,
            Some(_) => floor + (self.fail - floor) / 2,
        };
        true
    }

    fn complicate(&mut self) -> bool {
        if self.curr == self.fail {
            return false;
        }
        self.pass = Some(self.curr);
        let floor = self.curr + 1;
        // Back at `fail` once nothing is left between: known to fail, so shrinking moves on.
        self.curr = floor + (self.fail - floor) / 2;
        true
    }
}

/// One of several alternatives, drawn by weight; shrinks by trying each alternative before the
/// current one, plainest (first) first, then by shrinking the current one.
#[derive(Debug)]
pub struct Choice<T> {
    options: Vec<(u32, BoxedStrategy<T>)>,
}

impl<T: std::fmt::Debug> Choice<T> {
    pub fn new(options: Vec<(u32, BoxedStrategy<T>)>) -> Choice<T> {
        assert!(
            options.iter().any(|(w, _)| *w > 0),
            "a choice needs a weight"
        );
        Choice { options }
    }
}

pub struct ChoiceTree<T> {
    /// A tree for every alternative, so earlier ones can be tried.
    options: Vec<Box<dyn ValueTree<Value = T>>>,
    /// The alternative known to fail.
    pick: usize,
    /// An earlier alternative being tried.
    trying: Option<usize>,
    /// The next earlier alternative to try; every one before it passed.
    next_try: usize,
    inner_moved: bool,
}

impl<T: std::fmt::Debug> Strategy for Choice<T> {
    type Tree = ChoiceTree<T>;
    type Value = T;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let total: u32 = self.options.iter().map(|(w, _)| w).sum();
        let mut draw = runner.rng().random_range(0..total);
        let pick = self
            .options
            .iter()
            .position(|(w, _)| {
                let here = draw < *w;
                draw = draw.saturating_sub(*w);
                here
            })
            .expect("the draw is below the total weight");
        let options = self
            .options
            .iter()
            .map(|(_, s)| s.new_tree(runner))
            .collect::<Result<_, _>>()?;
        Ok(ChoiceTree {
            options,
            pick,
            trying: None,
            next_try: 0,
            inner_moved: false,
        })
    }
}

impl<T: std::fmt::Debug> ValueTree for ChoiceTree<T> {
    type Value = T;

    fn current(&self) -> T {
        self.options[self.trying.unwrap_or(self.pick)].current()
    }

    fn simplify(&mut self) -> bool {
        if let Some(t) = self.trying.take() {
            // It failed too: it is the plainest failing alternative, since all before it passed.
            self.pick = t;
        }
        if self.next_try < self.pick {
            self.trying = Some(self.next_try);
            self.next_try += 1;
            return true;
        }
        self.inner_moved = self.options[self.pick].simplify();
        self.inner_moved
    }

    fn complicate(&mut self) -> bool {
        if self.trying.take().is_some() {
            // Back to the alternative known to fail; the next simplification tries the next.
            return true;
        }
        self.inner_moved && self.options[self.pick].complicate()
    }
}

#[cfg(test)]
mod tests {
    use super::super::schedule::parse_cases;
    use super::*;

    fn cases(seed: u64, n: u64) -> Vec<Case> {
        (0..n).map(|i| case_tree(seed, i, None).current()).collect()
    }

    /// Shrinks `tree` under `fails` as the fuzzer does; the minimum and the candidates tried.
    fn shrink<T: ValueTree + ?Sized>(
        tree: &mut T,
        fails: impl Fn(&T::Value) -> bool,
    ) -> (T::Value, u32) {
        let mut best = tree.current();
        let mut tries = 0;
        if tree.simplify() {
            while tries < 10_000 {
                let cand = tree.current();
                tries += 1;
                if fails(&cand) {
                    best = cand;
                    if !tree.simplify() {
                        break;
                    }
                } else if !tree.complicate() {
                    break;
                }
            }
        }
        (best, tries)
    }

    fn tree<S: Strategy>(s: S, seed: u8) -> S::Tree {
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
        );
        s.new_tree(&mut runner).unwrap()
    }

    // ---- the value trees ----

    #[test]
    fn low_first_finds_the_threshold_by_bisection() {
        for seed in 0..20 {
            let mut t = tree(LowFirst::new(10, 1_000_000), seed);
            let start = t.current();
            let (min, tries) = shrink(&mut t, |v| *v > 1000);
            if start > 1000 {
                assert_eq!(min, 1001, "seed {seed}");
                assert!(tries <= 25, "{tries} tries");
            }
        }
    }

    #[test]
    fn low_first_tries_the_lowest_value_first() {
        let mut t = tree(LowFirst::new(3, 1_000_000), 1);
        let (min, tries) = shrink(&mut t, |_| true);
        assert_eq!((min, tries), (3, 1));
    }

    #[test]
    fn low_first_log_draws_every_order_of_magnitude() {
        let mut runner = TestRunner::deterministic();
        let s = LowFirst::log(1, 1 << 18);
        let small = (0..200)
            .filter(|_| s.new_tree(&mut runner).unwrap().current() < 64)
            .count();
        assert!((20..100).contains(&small), "{small} of 200 below 64");
    }

    #[test]
    fn choice_tries_the_plainest_alternative_first() {
        let s = || {
            Choice::new(vec![
                (1, Just(0u64).boxed()),
                (1, Just(1u64).boxed()),
                (1, LowFirst::new(10, 100).boxed()),
            ])
        };
        let mut t = (0..)
            .map(|seed| tree(s(), seed))
            .find(|t| t.current() >= 10)
            .unwrap();
        assert_eq!(shrink(&mut t, |_| true), (0, 1));
        let mut t = (0..)
            .map(|seed| tree(s(), seed))
            .find(|t| t.current() >= 10)
            .unwrap();
        assert_eq!(shrink(&mut t, |v| *v != 0).0, 1);
        let mut t = (0..)
            .map(|seed| tree(s(), seed))
            .find(|t| t.current() >= 10)
            .unwrap();
        assert_eq!(shrink(&mut t, |v| *v >= 20).0, 20);
    }

    #[test]
    fn drop_first_drops_before_shrinking_the_value() {
        let s = DropFirst::new(1.0, LowFirst::new(0, 1000));
        // Anything fails: one step, straight to None.
        let (min, tries) = shrink(&mut tree(s.clone(), 4), |_| true);
        assert_eq!((min, tries), (None, 1));
        // Only values of 500 and more fail: None passes, then the value shrinks to 500.
        let mut t = tree(s, 5);
        if t.current().unwrap() >= 500 {
            let (min, _) = shrink(&mut t, |v| v.is_some_and(|v| v >= 500));
            assert_eq!(min, Some(500));
        }
    }

    // ---- cases ----

    #[test]
    fn a_seed_and_index_always_give_the_same_case() {
        assert_eq!(cases(7, 20), cases(7, 20));
        assert_ne!(cases(7, 20), cases(8, 20));
        // Case 5 does not depend on the cases before it.
        assert_eq!(case_tree(7, 5, None).current(), cases(7, 6)[5]);
    }

    /// Told the stall timeout, a case keeps its own connections and may gain one that outlasts
    /// it; shrinking tries that one's removal first.
    #[test]
    fn a_stall_timeout_adds_an_outlasting_connection_to_some_cases_only() {
        let stall = Duration::from_secs(10);
        let mut with_tail = 0;
        for i in 0..200 {
            let plain = case_tree(5, i, None).current();
            let mut tree = case_tree(5, i, Some(stall));
            let case = tree.current();
            assert_eq!(
                case.connections[..plain.connections.len()],
                plain.connections[..]
            );
            let Some(tail) = case.connections.get(plain.connections.len()) else {
                continue;
            };
            with_tail += 1;
            assert_eq!(case.connections.len(), plain.connections.len() + 1);
            let (slow, quiet) = if tail.small_client_rcvbuf {
                (&tail.down, &tail.up)
            } else {
                (&tail.up, &tail.down)
            };
            assert_eq!(slow.reader.pace, OUTLAST_PACE);
            assert!(quiet.steps.is_empty());
            let rate = OUTLAST_PACE.rate().unwrap();
            assert!(slow.total() as f64 / rate >= (stall + OUTLAST_BY).as_secs_f64() - 0.01);
            assert!(tree.simplify());
            assert_eq!(tree.current(), plain);
            let text = case.to_string();
            assert_eq!(parse_cases(&text).unwrap(), [case], "{text}");
        }
        // One in eight of 200: 25 expected; the bounds are far out in either tail.
        assert!((8..=50).contains(&with_tail), "{with_tail}");
    }

    #[test]
    fn generated_cases_print_and_parse_back_unchanged() {
        for c in cases(1, 200) {
            let text = c.to_string();
            assert_eq!(parse_cases(&text).unwrap(), [c], "{text}");
        }
    }

    #[test]
    fn generated_cases_are_already_normal() {
        for c in cases(2, 200) {
            let mut n = c.clone();
            n.connections.iter_mut().for_each(Connection::normalize);
            assert_eq!(n, c);
        }
    }

    #[test]
    fn the_default_case_count_reaches_every_kind_of_schedule() {
        // Each bug class needs its kind of schedule within the first 64 cases of a seed.
        for seed in 0..8 {
            let cs = cases(seed, 64);
            let flows = || {
                cs.iter()
                    .flat_map(|c| c.connections.iter())
                    .flat_map(|c| [&c.up, &c.down])
            };
            let long_uploads = cs
                .iter()
                .flat_map(|c| &c.connections)
                .filter(|c| c.up.total() > 1_000_003)
                .count();
            assert!(
                long_uploads >= 5,
                "seed {seed}: {long_uploads} long uploads"
            );
            assert!(flows().filter(|f| f.awaits_peer_eof()).count() >= 5);
            assert!(flows().filter(|f| f.shutdown == Shutdown::Never).count() >= 5);
            assert!(flows().filter(|f| f.reader.stall.is_some()).count() >= 5);
            assert!(flows().filter(|f| f.slicer.is_some()).count() >= 3);
            assert!(
                flows()
                    .filter(|f| matches!(f.reader.pace, Pace::Trickle { .. }))
                    .count()
                    >= 3
            );
        }
    }

    #[test]
    fn a_long_upload_shrinks_to_one_bulk_step_just_past_the_threshold() {
        // Shrink a case with a long upload under "some upload is longer than 1,000,003 bytes":
        // one connection, a bulk step of 1,000,004 bytes, nothing else.
        let mut tree = (0..)
            .map(|i| case_tree(3, i, None))
            .find(|t| {
                t.current()
                    .connections
                    .iter()
                    .any(|c| c.up.total() > 1_000_003)
            })
            .unwrap();
        let (best, tries) = shrink(tree.as_mut(), |c: &Case| {
            c.connections.iter().any(|c| c.up.total() > 1_000_003)
        });
        let plain = "case\n  connection\n    client->server: bulk 1000004; shutdown after-last-byte; reader eager\n    server->client: no-writes; shutdown after-last-byte; reader eager\n";
        assert_eq!(best.to_string(), plain);
        assert!(tries < 80, "{tries} candidates");
    }

    #[test]
    fn a_structural_failure_shrinks_in_few_failing_steps() {
        // "A side waits for the other's EOF" needs no bytes and no timing: every group of
        // features comes off in one step, so few candidates fail on the way.
        for i in 0..40 {
            let mut tree = case_tree(11, i, None);
            let fails = |c: &Case| {
                c.connections
                    .iter()
                    .any(|c| c.up.awaits_peer_eof() || c.down.awaits_peer_eof())
            };
            if !fails(&tree.current()) {
                continue;
            }
            let failing = std::cell::Cell::new(0);
            let (best, _) = shrink(tree.as_mut(), |c| {
                let f = fails(c);
                failing.set(failing.get() + f as u32);
                f
            });
            assert_eq!(best.connections.len(), 1, "{best}");
            assert_eq!(best.total_bytes(), 0, "{best}");
            assert!(
                failing.get() <= 16,
                "case {i}: {} failing steps",
                failing.get()
            );
        }
    }
}
