//! The fuzzer's command line: `tcpproxy-test fuzz [OPTIONS] [PROXY [PROXY_ARGS...]]`, its
//! defaults and checks, turned into a validated [`FuzzConfig`] before anything runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tcpproxy::flag_value;

use super::schedule::{Case, parse_cases};
use crate::harness::ProxyCommand;
use crate::proxy_program::{ProxyWords, unknown_flag};

/// Cases generated when `--cases` is not given.
pub const CASES: u32 = 64;
/// Cases run at once (each through both proxies, each of a few connections).
pub const JOBS: u32 = 4;
/// The bound on a whole run, shrinking included.
pub const TIME_LIMIT: Duration = Duration::from_secs(600);
/// The bound on shrinking one failure.
pub const SHRINK_TIME: Duration = Duration::from_secs(60);
/// The reference proxy's stall timeout: longer than any schedule's reader can outlast (at
/// most `MAX_STALL_TIMEOUT` + 4 s), so no schedule can make it abort a pair.
pub const REFERENCE_STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `--stall-timeout` a case is made to outlast.
const MAX_STALL_TIMEOUT: f64 = 60.0;

/// `fuzz`'s flags, a subcommand of the one command line (`crate::cli`).
#[derive(Debug, clap::Args)]
#[command(
    about = "Random read/write/shutdown schedules through PROXY and the reference proxy side by side",
    long_about = "Random read/write/shutdown schedules through PROXY and the reference proxy side by side.\n\n\
        Each case opens a few connections at once through one long-lived instance of PROXY\n\
        (spawned as `PROXY [PROXY_ARGS...] 127.0.0.1 DEST_PORT LISTEN_PORT`), and the same case\n\
        through the bundled reference proxy. A case fails when PROXY breaks the contract: bytes\n\
        differ, an EOF comes early, late or never, a pair is left open, or a connection is reset.\n\
        The first failure is shrunk to a minimal schedule, printed with a command that replays it.\n\
        Without PROXY, fuzzes the bundled reference proxy.\n\n\
        Give PROXY a stall timeout of 5 s or more: readers stall for up to 1.5 s. Tell the fuzzer\n\
        that timeout (--stall-timeout) and some cases read slowly for longer than it.\n\n\
        Exit status: 0 no failure, 1 a failure found, 2 usage error, 3 the harness could not run,\n\
        4 PROXY never started (it exited or never listened), 130 interrupted.",
    after_help = "Examples:\n  tcpproxy-test fuzz ./tcpproxy\n  tcpproxy-test fuzz --seed 7 --cases 200 -- python3 proxy.py\n  tcpproxy-test fuzz --seed 7 --case 12 ./tcpproxy\n  tcpproxy-test fuzz --replay /tmp/tcpproxy-test-fuzz-7-12-Qx3kZt.txt ./tcpproxy"
)]
pub struct Args {
    /// Random cases to run (after the committed regression schedules).
    #[arg(long, allow_negative_numbers = true, value_name = "N", default_value_t = CASES, value_parser = |s: &str| flag_value::whole(s, "a number of cases", 0..=u32::MAX))]
    cases: u32,

    /// Seed for the cases (ChaCha20); printed with every failure [default: random].
    #[arg(long, allow_negative_numbers = true, value_name = "S", value_parser = |s: &str| flag_value::whole(s, "a seed", 0..=u64::MAX))]
    seed: Option<u64>,

    /// Run only case I of --seed (and shrink it if it fails).
    #[arg(long, allow_negative_numbers = true, value_name = "I", requires = "seed", value_parser = |s: &str| flag_value::whole(s, "a case number", 0..=u64::MAX))]
    case: Option<u64>,

    /// Run the schedules in FILE (as a failure saves them) instead of random cases.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seed", "case", "cases"])]
    replay: Option<PathBuf>,

    /// Cases run at once, each through both proxies.
    #[arg(long, allow_negative_numbers = true, value_name = "N", default_value_t = JOBS, value_parser = |s: &str| flag_value::whole(s, "a number of cases at once", 1..=64u32))]
    jobs: u32,

    /// Stop starting cases after this many seconds; shrinking ends by then too.
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", default_value_t = TIME_LIMIT.as_secs_f64(), value_parser = |s: &str| flag_value::seconds(s, flag_value::DAY_SECS))]
    time_limit: f64,

    /// Shrink a failure for at most this many seconds.
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", default_value_t = SHRINK_TIME.as_secs_f64(), value_parser = |s: &str| flag_value::seconds_or_zero(s, flag_value::DAY_SECS))]
    shrink_time: f64,

    /// Stretch every deadline by this factor, for slow or loaded hosts.
    #[arg(long, allow_negative_numbers = true, value_name = "F", default_value_t = 1.0, value_parser = flag_value::factor)]
    timeout_scale: f64,

    /// Run every case N times (copies run at once, up to --jobs): for failures that show only
    /// now and then.
    #[arg(long, allow_negative_numbers = true, value_name = "N", default_value_t = 1, value_parser = |s: &str| flag_value::whole(s, "a number of runs of each case", 1..=1000u32))]
    repeat: u32,

    /// The stall timeout PROXY was given. With it, one case in eight adds a connection whose
    /// reader takes 32 KiB every 250 ms for this long plus 4 s while its writer pushes as fast
    /// as it can: always progressing, so PROXY must not abort it [default: no such case].
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", value_parser = |s: &str| flag_value::seconds(s, MAX_STALL_TIMEOUT))]
    stall_timeout: Option<f64>,

    /// Skip the committed regression schedules that otherwise run first.
    #[arg(long)]
    no_regressions: bool,

    /// Where to save the minimal failing schedule [default: a file in the temp directory].
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,

    /// A line per case.
    #[arg(short, long)]
    verbose: bool,

    #[command(flatten)]
    sandbox: crate::sandbox::Flag,

    #[command(flatten)]
    confine: crate::confine::Flag,

    #[command(flatten)]
    proxy: ProxyWords,
}

/// What a run does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Cases 0..`cases` of `seed`.
    Random { seed: u64, cases: u32 },
    /// Case `index` of `seed` alone.
    One { seed: u64, index: u64 },
    /// The schedules of a file.
    Replay { path: PathBuf, cases: Vec<Case> },
}

/// A validated fuzz run.
#[derive(Debug, Clone)]
pub struct FuzzConfig {
    pub proxy: ProxyCommand,
    /// PROXY as the user wrote it (empty for the bundled reference), for the replay command.
    pub proxy_words: Vec<OsString>,
    pub reference: ProxyCommand,
    /// This executable as invoked, for the replay command.
    pub program: OsString,
    pub mode: Mode,
    pub jobs: usize,
    /// Runs of every case.
    pub repeat: u32,
    pub time_limit: Duration,
    pub shrink_time: Duration,
    pub timeout_scale: f64,
    /// PROXY's stall timeout, when the user gave it: cases may then outlast it.
    pub stall_timeout: Option<Duration>,
    pub regressions: bool,
    pub save: Option<PathBuf>,
    pub verbose: bool,
    /// `--sandbox` and `--network`: the network the run takes (`crate::sandbox`).
    pub sandbox: crate::sandbox::Flag,
    /// `--run-as` and `--limit-*`: what each proxy runs as and within (`crate::confine`).
    pub confine: crate::confine::Policy,
}

/// A validated run from `fuzz`'s flags (`program`: this executable as invoked; `ours`: the
/// command line's words before its first `--`), or one line saying what is wrong.
pub fn config(a: Args, program: OsString, ours: &[OsString]) -> Result<FuzzConfig, String> {
    unknown_flag(&a.proxy.words, ours)?;
    let reference = crate::reference::command(REFERENCE_STALL_TIMEOUT)?;
    let proxy = a.proxy.command()?.unwrap_or_else(|| reference.clone());
    let mode = match (a.replay, a.seed, a.case) {
        (Some(path), _, _) => Mode::Replay {
            cases: read_schedules(&path)?,
            path,
        },
        (None, Some(seed), Some(index)) => Mode::One { seed, index },
        (None, seed, _) => Mode::Random {
            seed: seed.unwrap_or_else(rand::random),
            cases: a.cases,
        },
    };
    Ok(FuzzConfig {
        proxy,
        proxy_words: a.proxy.words,
        reference,
        program,
        mode,
        jobs: a.jobs as usize,
        repeat: a.repeat,
        time_limit: Duration::from_secs_f64(a.time_limit),
        shrink_time: Duration::from_secs_f64(a.shrink_time),
        timeout_scale: a.timeout_scale,
        stall_timeout: a.stall_timeout.map(Duration::from_secs_f64),
        regressions: !a.no_regressions,
        save: a.save,
        verbose: a.verbose,
        sandbox: a.sandbox,
        confine: a.confine.policy()?,
    })
}

/// The schedules of a replay file, or one line saying why there are none.
pub fn read_schedules(path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the schedule file {}: {e}", path.display()))?;
    let cases =
        parse_cases(&text).map_err(|e| format!("the schedule file {}: {e}", path.display()))?;
    if cases.is_empty() {
        return Err(format!(
            "the schedule file {} holds no `case`",
            path.display()
        ));
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fuzz`'s flags alone, as the one command line flattens them (`crate::cli` adds the
    /// command's name to a usage error).
    #[derive(Debug, clap::Parser)]
    struct Fuzz {
        #[command(flatten)]
        args: Args,
    }

    /// `tcpproxy-test fuzz ARGS`: the run, or the usage error's line.
    fn parse_strs(args: &[&str]) -> Result<FuzzConfig, String> {
        use clap::Parser as _;
        let argv = std::iter::once("fuzz").chain(args.iter().copied());
        let fuzz = Fuzz::try_parse_from(argv).map_err(|e| tcpproxy::cli::one_line(&e))?;
        let words: Vec<OsString> = args.iter().map(OsString::from).collect();
        let ours = crate::proxy_program::before_dashes(&words);
        config(fuzz.args, "tcpproxy-test".into(), ours)
    }

    fn run(args: &[&str]) -> FuzzConfig {
        parse_strs(args).unwrap_or_else(|m| panic!("expected a run for {args:?}, got {m}"))
    }

    fn usage(args: &[&str]) -> String {
        match parse_strs(args) {
            Err(m) => m,
            Ok(c) => panic!("expected a usage error for {args:?}, got {c:?}"),
        }
    }

    #[test]
    fn defaults_fuzz_the_reference_with_random_seed_and_64_cases() {
        let c = run(&[]);
        assert!(c.proxy_words.is_empty());
        assert_eq!(c.proxy.args[0], crate::reference::REFERENCE_SUBCOMMAND);
        assert!(matches!(c.mode, Mode::Random { cases: 64, .. }));
        assert_eq!((c.jobs, c.repeat, c.regressions), (4, 1, true));
        assert_eq!(c.shrink_time, SHRINK_TIME);
        assert_eq!(c.program, "tcpproxy-test");
    }

    #[test]
    fn seed_and_case_select_one_case() {
        let c = run(&["--seed", "7", "--case", "12"]);
        assert!(matches!(c.mode, Mode::One { seed: 7, index: 12 }));
        assert!(usage(&["--case", "12"]).contains("--seed"));
        assert!(usage(&["--bogus"]).contains("unexpected argument '--bogus'"));
        assert!(usage(&["--bogus", "--", "sh"]).contains("unexpected argument '--bogus'"));
    }

    #[test]
    fn proxy_args_come_after_the_proxy_with_or_without_dashes() {
        let c = run(&["--jobs", "2", "sh", "-c", "exit 0"]);
        assert_eq!(c.jobs, 2);
        assert!(c.proxy.program.ends_with("sh"));
        assert_eq!(c.proxy.args, ["-c", "exit 0"]);
        let c = run(&["--", "sh", "--cases", "3"]);
        assert_eq!(c.proxy.args, ["--cases", "3"]);
        assert!(matches!(c.mode, Mode::Random { cases: 64, .. }));
    }

    #[test]
    fn a_replay_file_is_read_before_anything_runs() {
        let dir = std::env::temp_dir().join(format!("fuzz-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(
            &good,
            "case\n connection\n  client->server: write 3; shutdown after-last-byte; reader eager\n  server->client: no-writes; shutdown at-start; reader eager\n",
        )
        .unwrap();
        let c = run(&["--replay", good.to_str().unwrap()]);
        assert!(matches!(&c.mode, Mode::Replay { cases, .. } if cases.len() == 1));
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "case\n nonsense\n").unwrap();
        assert!(usage(&["--replay", bad.to_str().unwrap()]).contains("line 2"));
        assert!(
            usage(&["--replay", dir.join("missing").to_str().unwrap()]).contains("cannot read")
        );
        assert!(
            usage(&["--replay", good.to_str().unwrap(), "--seed", "1"])
                .contains("cannot be used with")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_numbers_and_proxies_are_usage_errors() {
        for args in [
            &["--cases", "x"][..],
            &["--jobs", "0"],
            &["--repeat", "0"],
            &["--time-limit", "0"],
            &["--shrink-time", "-1"],
            &["--timeout-scale", "0"],
            &["--seed", "-3"],
            &["--stall-timeout", "0"],
            &["--stall-timeout", "inf"],
            &["--stall-timeout", "NaN"],
            &["--stall-timeout", "1e30"],
            &["--stall-timeout", "61"],
            &["./no/such/proxy"],
        ] {
            usage(args);
        }
        assert_eq!(
            run(&["--stall-timeout", "2.5"]).stall_timeout,
            Some(Duration::from_millis(2500))
        );
        assert_eq!(run(&[]).stall_timeout, None);
        assert!(matches!(run(&["--shrink-time", "0"]).shrink_time, d if d.is_zero()));
    }
}
