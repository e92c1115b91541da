//! The command line, one clap tree for the whole program: the suite's flags, or the `fuzz` and
//! `grade` subcommands (their flags live beside their code), with their defaults and checks and
//! finding the proxy to test. Every usage error is one line naming the command as typed. Every
//! numeric flag, here and in the subcommands, takes a negative number as its value
//! (`allow_negative_numbers`), so that its parser in `tcpproxy::flag_value` refuses it in the
//! same words as any other bad number, not as an unknown flag.

use std::ffi::OsString;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use tcpproxy::flag_value;

use crate::contract::STALL_TIMEOUT;
use crate::harness::ProxyCommand;
use crate::proxy_program::{ProxyWords, before_dashes, resolve, unknown_flag};
use crate::report::Format;
use crate::suite::Filter;

/// The whole command line: the suite's flags and PROXY, or a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "tcpproxy-test",
    version,
    propagate_version = true,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    subcommand_value_name = "COMMAND",
    about = "Conformance tests for TCP proxies (a port of MIT 6.824's tcpproxy-test)",
    long_about = "Conformance tests for TCP proxies (a port of MIT 6.824's tcpproxy-test).\n\n\
        Runs each phase against its own instance of PROXY, spawned as\n\
        `PROXY [PROXY_ARGS...] 127.0.0.1 DEST_PORT LISTEN_PORT`, and prints one line per phase.\n\
        Without PROXY, tests the bundled reference proxy.\n\n\
        Exit status: 0 all passed, 1 a phase failed, 2 usage error, 3 the harness could not run,\n\
        4 the proxy never started (it listened in no phase), 130 interrupted.\n\n\
        With --build-failed LOG, runs nothing: every phase fails as not run, the report's error\n\
        is the end of LOG, PROXY may be omitted, and the exit status is 1.",
    after_help = "Examples:\n  tcpproxy-test ./tcpproxy\n  tcpproxy-test python3 proxy.py\n  tcpproxy-test --stall-timeout 2 -- ./tcpproxy --stall-timeout 2\n  tcpproxy-test --format junit --output junit.xml ./tcpproxy\n  \
        make tcpproxy > build.log 2>&1 || tcpproxy-test --build-failed build.log --format gradescope --output results.json"
)]
struct Cli {
    #[command(flatten)]
    suite: Args,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    // No doc comments here: they would replace the subcommands' own about texts.
    Fuzz(crate::fuzz::cli::Args),
    Grade(crate::grade::Args),
}

/// The suite's flags and PROXY.
#[derive(Debug, clap::Args)]
struct Args {
    /// The stall timeout the proxy under test was given; the lazy phases judge against it.
    #[arg(long, allow_negative_numbers = true, value_name = "SECS", default_value_t = STALL_TIMEOUT.as_secs_f64(), value_parser = |s: &str| flag_value::seconds(s, flag_value::DAY_SECS))]
    stall_timeout: f64,

    /// Stretch every other deadline by this factor, for slow or loaded hosts.
    #[arg(long, allow_negative_numbers = true, value_name = "F", default_value_t = 1.0, value_parser = flag_value::factor)]
    timeout_scale: f64,

    /// Seed for the payloads (ChaCha20); printed on failure to reproduce a run.
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = |s: &str| flag_value::whole(s, "a seed", 0..=u64::MAX))]
    seed: Option<u64>,

    /// Phases run at once [default: all].
    #[arg(long, allow_negative_numbers = true, value_name = "N", value_parser = |s: &str| flag_value::count(s, "phases", u32::MAX as usize))]
    jobs: Option<usize>,

    /// Count warnings (a proxy that burns CPU while idle) as failures.
    #[arg(long)]
    strict: bool,

    /// Run each failed phase again beside the bundled reference proxy (up to twice): where the
    /// reference fails it too, the phase is inconclusive (exit 3), not failed.
    #[arg(long)]
    self_check: bool,

    /// The proxy that vouches for the host in --self-check (a staff solution, say), started like
    /// PROXY [default: the bundled reference proxy].
    #[arg(long, value_name = "PROGRAM", requires = "self_check")]
    self_check_reference: Option<PathBuf>,

    /// Report format. With --output, the report goes to FILE and the human lines to stdout.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Format::Human)]
    format: Format,

    /// Write the report (in --format) to FILE.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Print every phase's id and name, and exit.
    #[arg(long)]
    list: bool,

    /// Run only phases whose id or name matches GLOB (repeatable), e.g. 'timeout/*'.
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,

    /// Skip phases whose id or name matches GLOB (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,

    /// The submission did not build: start nothing, fail every phase as not run, and report the
    /// last 8 KiB of LOG (its build output) as the error. PROXY may be omitted. Exits 1.
    #[arg(long, value_name = "LOG")]
    build_failed: Option<PathBuf>,

    #[command(flatten)]
    sandbox: crate::sandbox::Flag,

    #[command(flatten)]
    confine: crate::confine::Flag,

    #[command(flatten)]
    proxy: ProxyWords,
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) proxy: ProxyCommand,
    /// True when testing the bundled reference proxy.
    pub(crate) reference: bool,
    pub(crate) stall_timeout: Duration,
    pub(crate) timeout_scale: f64,
    pub(crate) seed: Option<u64>,
    pub(crate) jobs: Option<usize>,
    pub(crate) strict: bool,
    /// `--self-check`: failures are run again beside the reference (`crate::vouch`); `Some`
    /// holds the reference to run, `--self-check-reference` or the bundled one.
    pub(crate) self_check: Option<ProxyCommand>,
    pub(crate) format: Format,
    pub(crate) output: Option<PathBuf>,
    /// One line each for stderr before the run: what was given but may not mean what it says.
    pub(crate) warnings: Vec<String>,
    pub(crate) filter: Filter,
    /// `--build-failed LOG`: the submission did not build, so nothing runs and every phase is
    /// reported failed with this error (that, and the end of LOG). `proxy` is then only a name,
    /// never looked for.
    pub(crate) build_failed: Option<String>,
    /// `--sandbox` and `--network`: the network the run takes (`crate::sandbox`).
    pub(crate) sandbox: crate::sandbox::Flag,
    /// `--run-as` and `--limit-*`: what each proxy runs as and within (`crate::confine`).
    pub(crate) confine: crate::confine::Policy,
}

/// What a report names as the proxy when `--build-failed` was given no PROXY.
const NOT_BUILT_PROXY: &str = "(did not build)";

/// The most of a build log a report carries: compiler errors come last, and Gradescope shows the
/// whole `output` on one page.
const BUILD_LOG_TAIL: usize = 8 * 1024;

#[derive(Debug)]
pub enum Parsed {
    Run(Box<Config>),
    /// `--list`: print the phases and exit 0.
    List(Filter),
    /// `fuzz`, validated.
    Fuzz(Box<crate::fuzz::cli::FuzzConfig>),
    /// `grade`, validated.
    Grade(Box<crate::grade::Grade>),
    /// `--help`, `--version`: print and exit 0.
    Info(String),
    /// The line for stderr, naming the command (`tcpproxy-test fuzz: ...`); exit 2.
    Usage(String),
}

const NAME: &str = "tcpproxy-test";

/// The suite's own long flags (`--only`, ...), read from the parser so none is left out, for
/// telling a user who wrote one after PROXY that it went to the proxy, which would fail every
/// phase with its usage. Help and version are left out: after PROXY they are the proxy's own.
fn suite_flags() -> Vec<String> {
    use clap::CommandFactory as _;
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !["help", "version"].contains(long))
        .map(|long| format!("--{long}"))
        .collect()
}

pub fn parse(args: impl IntoIterator<Item = OsString>) -> Parsed {
    let args: Vec<OsString> = args.into_iter().collect();
    let program = args.first().cloned().unwrap_or_else(|| NAME.into());
    let ours = before_dashes(args.get(1..).unwrap_or_default());
    let dashes = ours.len() + 1 < args.len();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => return from_clap(&e, &args),
    };
    match cli.command {
        Some(Command::Fuzz(a)) => match crate::fuzz::cli::config(a, program, ours) {
            Ok(c) => Parsed::Fuzz(Box::new(c)),
            Err(m) => Parsed::Usage(format!("{NAME} fuzz: {m}")),
        },
        Some(Command::Grade(a)) => match crate::grade::config(a) {
            Ok(g) => Parsed::Grade(Box::new(g)),
            Err(m) => Parsed::Usage(format!("{NAME} grade: {m}")),
        },
        None => match suite(cli.suite, ours, dashes) {
            Err(m) => Parsed::Usage(format!("{NAME}: {m}")),
            Ok(parsed) => parsed,
        },
    }
}

/// Help and version text, or a usage error as one line named after the (sub)command that was
/// being parsed.
fn from_clap(e: &clap::Error, args: &[OsString]) -> Parsed {
    use clap::CommandFactory as _;
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return Parsed::Info(e.render().to_string());
    }
    // The error does not say which subcommand it came from; a parse that ignores errors does.
    let mut who = NAME.to_string();
    if let Ok(m) = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
    {
        let mut at = &m;
        while let Some((sub, inner)) = at.subcommand() {
            who = format!("{who} {sub}");
            at = inner;
        }
    }
    Parsed::Usage(format!("{who}: {}", tcpproxy::cli::one_line(e)))
}

/// The suite's run from its flags, or a usage message.
fn suite(a: Args, ours: &[OsString], dashes: bool) -> Result<Parsed, String> {
    let mut warnings = Vec::new();
    unknown_flag(&a.proxy.words, ours)?;
    if !dashes {
        let flags = suite_flags();
        let after: Vec<String> = a
            .proxy
            .words
            .iter()
            .skip(1)
            .map(|w| w.to_string_lossy().into_owned())
            .filter(|w| {
                flags
                    .iter()
                    .any(|f| w.split('=').next() == Some(f.as_str()))
            })
            .collect();
        if !after.is_empty() {
            warnings.push(format!(
                "warning: {} after PROXY go{} to the proxy, not to tcpproxy-test; put tcpproxy-test's options before PROXY (write `--` before PROXY to silence this)",
                after.join(", "),
                if after.len() == 1 { "es" } else { "" }
            ));
        }
    }
    let filter = Filter::new(&a.only, &a.exclude)?;
    if a.list {
        return Ok(Parsed::List(filter));
    }
    if filter.select().is_empty() {
        return Err("no phase matches --only/--exclude (see --list)".into());
    }
    let stall_timeout = Duration::from_secs_f64(a.stall_timeout);
    let build_failed = a
        .build_failed
        .as_deref()
        .map(build_log_message)
        .transpose()?;
    let (proxy, reference) = if build_failed.is_some() {
        // PROXY was never built, so it is not looked for: only named in the report.
        let (program, args) = match a.proxy.words.split_first() {
            Some((program, rest)) => (PathBuf::from(program), rest.to_vec()),
            None => (PathBuf::from(NOT_BUILT_PROXY), vec![]),
        };
        (ProxyCommand { program, args }, false)
    } else {
        match a.proxy.command()? {
            Some(proxy) => (proxy, false),
            None => (crate::reference::command(stall_timeout)?, true),
        }
    };
    if let Some(path) = &a.output {
        writable(path)?;
    }
    let self_check = match (a.self_check, &a.self_check_reference) {
        (false, _) => None,
        (true, Some(program)) => Some(ProxyCommand {
            program: resolve(program)?,
            args: vec![],
        }),
        (true, None) => Some(crate::reference::command(stall_timeout)?),
    };
    Ok(Parsed::Run(Box::new(Config {
        proxy,
        reference,
        stall_timeout,
        // The profile's stretch is part of the run's scale, as if given: the reports name both.
        timeout_scale: a.timeout_scale * a.sandbox.stretch(),
        seed: a.seed,
        jobs: a.jobs,
        strict: a.strict,
        self_check,
        format: a.format,
        output: a.output,
        filter,
        warnings,
        build_failed,
        sandbox: a.sandbox,
        confine: a.confine.policy()?,
    })))
}

/// The error a report gives for a submission that did not build: that, and the end of its build
/// log `path`, from a line start where the cut allows, decoded lossily (a compiler may print
/// anything).
fn build_log_message(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read the build log {shown}: {e}");
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if meta.is_dir() {
        return Err(format!(
            "cannot read the build log {shown}: it is a directory"
        ));
    }
    let (tail, total) = if meta.is_file() {
        // Seek rather than read it all: a runaway build can log gigabytes.
        let total = meta.len();
        let start = total.saturating_sub(BUILD_LOG_TAIL as u64);
        file.seek(SeekFrom::Start(start)).map_err(cannot)?;
        let mut tail = Vec::with_capacity(BUILD_LOG_TAIL);
        file.take(BUILD_LOG_TAIL as u64)
            .read_to_end(&mut tail)
            .map_err(cannot)?;
        (tail, total)
    } else {
        // A pipe or a device: no length to seek by, so stream it and keep the end.
        let mut tail = Vec::new();
        let mut total = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(cannot(e)),
            };
            total += n as u64;
            tail.extend_from_slice(&chunk[..n]);
            if tail.len() > 2 * BUILD_LOG_TAIL {
                tail.drain(..tail.len() - BUILD_LOG_TAIL);
            }
        }
        if tail.len() > BUILD_LOG_TAIL {
            tail.drain(..tail.len() - BUILD_LOG_TAIL);
        }
        (tail, total)
    };
    let cut = (tail.len() as u64) < total;
    let mut shown_bytes: &[u8] = &tail;
    if cut {
        // A partial first line (or a UTF-8 character cut in two) only confuses the reader.
        if let Some(nl) = shown_bytes.iter().position(|&b| b == b'\n') {
            shown_bytes = &shown_bytes[nl + 1..];
        }
    }
    let text = String::from_utf8_lossy(shown_bytes);
    let text = text.trim_end();
    Ok(if text.is_empty() && !cut {
        format!("the submission did not build (its build log {shown} is empty)")
    } else if cut {
        format!(
            "the submission did not build; the end of its build log ({shown}, the last {} of {total} bytes):\n{text}",
            shown_bytes.len()
        )
    } else {
        format!("the submission did not build; its build log ({shown}):\n{text}")
    })
}

/// Checks, before anything runs, that a report can be written to `path`, so a missing folder
/// costs no run. A file is created beside it and removed again, so the check neither leaves
/// nor truncates anything.
fn writable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path.is_dir() {
        return Err(format!(
            "cannot write the report to {shown}: it is a directory"
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".tcpproxy-test-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot write the report to {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Parsed {
        parse(
            std::iter::once("tcpproxy-test")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    #[test]
    fn no_proxy_means_the_bundled_reference_with_the_same_stall_timeout() {
        let Parsed::Run(c) = parse_strs(&["--stall-timeout", "2"]) else {
            panic!("expected a run")
        };
        assert!(c.reference);
        assert_eq!(c.proxy.args[0], crate::reference::REFERENCE_SUBCOMMAND);
        assert_eq!(c.proxy.args[2], "2");
        assert_eq!(c.stall_timeout, Duration::from_secs(2));
    }

    #[test]
    fn the_suite_flags_are_read_from_the_parser() {
        let flags = suite_flags();
        for f in [
            "--stall-timeout",
            "--only",
            "--exclude",
            "--build-failed",
            "--list",
        ] {
            assert!(flags.iter().any(|x| x == f), "{f} missing from {flags:?}");
        }
        assert!(
            !flags.iter().any(|x| x == "--help" || x == "--version"),
            "{flags:?}"
        );
    }

    #[test]
    fn a_dash_word_for_proxy_is_an_unknown_flag_and_suite_flags_after_proxy_warn() {
        assert!(matches!(
            parse_strs(&["--bogus"]),
            Parsed::Usage(m) if m.starts_with("tcpproxy-test: unexpected argument '--bogus'")
        ));
        // A `--` after it does not make it PROXY; one before it does.
        assert!(matches!(
            parse_strs(&["--bogus", "--", "sh"]),
            Parsed::Usage(m) if m.starts_with("tcpproxy-test: unexpected argument '--bogus'")
        ));
        assert!(matches!(
            parse_strs(&["--", "--bogus"]),
            Parsed::Usage(m) if m.contains("proxy '--bogus' is not a file")
        ));
        let Parsed::Run(c) = parse_strs(&["sh", "--only", "echo/single", "--jobs=2", "-x"]) else {
            panic!("expected a run")
        };
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("warning: --only, --jobs=2 after PROXY go to the proxy"),
            "{:?}",
            c.warnings
        );
        let Parsed::Run(c) = parse_strs(&["--", "sh", "--stall-timeout", "2"]) else {
            panic!("expected a run")
        };
        assert!(c.warnings.is_empty());
        let Parsed::Run(c) = parse_strs(&["sh", "-c", "exit 0"]) else {
            panic!("expected a run")
        };
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn proxy_args_come_after_the_proxy_with_or_without_dashes() {
        let Parsed::Run(c) = parse_strs(&["sh", "-c", "exit 0"]) else {
            panic!("expected a run")
        };
        assert!(c.proxy.program.ends_with("sh"));
        assert_eq!(
            c.proxy.args,
            vec![OsString::from("-c"), OsString::from("exit 0")]
        );
        let Parsed::Run(c) = parse_strs(&["--jobs", "2", "--", "sh", "--stall-timeout", "2"])
        else {
            panic!("expected a run")
        };
        assert_eq!(c.jobs, Some(2));
        assert_eq!(
            c.proxy.args,
            vec![OsString::from("--stall-timeout"), OsString::from("2")]
        );
    }

    #[test]
    fn a_missing_or_unrunnable_proxy_is_a_usage_error() {
        let dir = std::env::temp_dir();
        for (args, want) in [
            (vec!["./no/such/proxy"], "cannot be used"),
            (vec!["no-such-command-anywhere"], "not found on PATH"),
            (vec![dir.to_str().unwrap()], "is a directory"),
            (vec!["sh", "./no/such/script.sh"], "does not exist"),
        ] {
            match parse_strs(&args) {
                Parsed::Usage(m) => assert!(m.contains(want), "{m}"),
                other => panic!("expected a usage error for {args:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn filters_and_formats_parse() {
        let Parsed::Run(c) = parse_strs(&[
            "--only",
            "timeout/*",
            "--exclude",
            "*reverse",
            "--format",
            "junit",
            "--output",
            "r.xml",
        ]) else {
            panic!("expected a run")
        };
        assert_eq!(c.format, Format::Junit);
        assert_eq!(c.output, Some(PathBuf::from("r.xml")));
        let timeouts = crate::phase::all()
            .iter()
            .filter(|p| p.id.starts_with("timeout/"))
            .count();
        assert_eq!(
            c.filter.select().len(),
            timeouts - 1,
            "every timeout phase but one"
        );
        assert!(matches!(
            parse_strs(&["--list", "--only", "echo/*"]),
            Parsed::List(_)
        ));
        assert!(
            matches!(parse_strs(&["--only", "nothing/*"]), Parsed::Usage(m) if m.contains("no phase matches"))
        );
        assert!(
            matches!(parse_strs(&["--only", "[unclosed"]), Parsed::Usage(m) if m.contains("invalid glob"))
        );
        assert!(matches!(parse_strs(&["--format", "xml"]), Parsed::Usage(_)));
    }

    #[test]
    fn build_failed_needs_no_proxy_and_a_readable_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        std::fs::write(
            &log,
            "cc -o tcpproxy tcpproxy.c\ntcpproxy.c:3: error: expected ';'\n",
        )
        .unwrap();
        let log_arg = log.to_str().unwrap();
        let Parsed::Run(c) = parse_strs(&["--build-failed", log_arg, "--format", "json"]) else {
            panic!("expected a report of a failed build")
        };
        assert_eq!(c.proxy.to_string(), NOT_BUILT_PROXY);
        assert_eq!(c.format, Format::Json);
        let message = c.build_failed.unwrap();
        assert!(
            message.starts_with("the submission did not build;"),
            "{message}"
        );
        assert!(message.ends_with("error: expected ';'"), "{message}");
        // PROXY is not looked for: it was never built.
        let Parsed::Run(c) = parse_strs(&["--build-failed", log_arg, "./no/such/tcpproxy"]) else {
            panic!("expected a report of a failed build")
        };
        assert_eq!(c.proxy.to_string(), "./no/such/tcpproxy");
        assert!(c.build_failed.is_some());
        for (log, want) in [
            (
                "./no/such/build.log",
                "cannot read the build log ./no/such/build.log: ",
            ),
            (dir.path().to_str().unwrap(), "it is a directory"),
        ] {
            match parse_strs(&["--build-failed", log]) {
                Parsed::Usage(m) => assert!(m.contains(want) && !m.contains('\n'), "{m}"),
                other => panic!("expected a usage error for {log}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_long_build_log_keeps_its_last_lines_whole_and_bad_bytes_decode() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let mut text: Vec<u8> = Vec::new();
        for i in 0..2000 {
            text.extend_from_slice(format!("warning {i}: \u{e9}t\u{e9}\n").as_bytes());
        }
        text.extend_from_slice(b"error: \xff last\n");
        std::fs::write(&log, &text).unwrap();
        let m = build_log_message(&log).unwrap();
        let (head, tail) = m.split_once('\n').unwrap();
        assert!(head.contains(&format!("of {} bytes", text.len())), "{head}");
        assert!(tail.len() <= BUILD_LOG_TAIL, "{}", tail.len());
        assert!(tail.starts_with("warning "), "{tail:.40}");
        assert!(tail.ends_with("warning 1999: \u{e9}t\u{e9}\nerror: \u{fffd} last"));
        std::fs::write(&log, "").unwrap();
        assert!(build_log_message(&log).unwrap().ends_with("is empty)"));
    }

    #[test]
    fn a_subcommand_s_usage_error_names_the_subcommand() {
        for (args, want) in [
            (
                &["fuzz", "--bogus"][..],
                "tcpproxy-test fuzz: unexpected argument '--bogus'",
            ),
            (
                &["fuzz", "--cases", "x"],
                "tcpproxy-test fuzz: invalid value 'x'",
            ),
            (
                &["grade", "--jobs", "0"],
                "tcpproxy-test grade: invalid value '0'",
            ),
        ] {
            match parse_strs(args) {
                Parsed::Usage(m) => assert!(m.starts_with(want), "{m}"),
                other => panic!("expected a usage error for {args:?}, got {other:?}"),
            }
        }
    }

    /// Issue 11: every numeric flag of every command, found in the parser's tree by the type its
    /// value parses to, refuses inf, NaN, 1e30, -1 and garbage, and 0 unless the range it names
    /// starts at 0, each as one usage line worded as `--stall-timeout inf` is.
    #[test]
    fn every_numeric_flag_of_every_command_refuses_bad_numbers_alike() {
        use clap::CommandFactory as _;
        use std::any::TypeId;

        /// (subcommand path, long flag, value name) of each numeric flag under `cmd`.
        fn numeric_flags(
            cmd: &clap::Command,
            path: &[String],
            out: &mut Vec<(Vec<String>, String, String)>,
        ) {
            let numeric = [
                TypeId::of::<u8>(),
                TypeId::of::<u16>(),
                TypeId::of::<u32>(),
                TypeId::of::<u64>(),
                TypeId::of::<usize>(),
                TypeId::of::<i32>(),
                TypeId::of::<i64>(),
                TypeId::of::<f32>(),
                TypeId::of::<f64>(),
            ];
            for a in cmd.get_arguments() {
                let type_id = a.get_value_parser().type_id();
                if let Some(long) = a.get_long()
                    && numeric.iter().any(|t| type_id == *t)
                {
                    let value =
                        a.get_value_names().expect("a numeric flag names its value")[0].to_string();
                    out.push((path.to_vec(), long.to_string(), value));
                }
            }
            for sub in cmd.get_subcommands() {
                let mut p = path.to_vec();
                p.push(sub.get_name().to_string());
                numeric_flags(sub, &p, out);
            }
        }

        let mut flags = Vec::new();
        numeric_flags(&Cli::command(), &[], &mut flags);
        for (path, long) in [
            (&[][..], "jobs"),
            (&["fuzz"], "cases"),
            (&["grade"], "jobs"),
        ] {
            assert!(
                flags.iter().any(|(p, l, _)| p == path && l == long),
                "--{long} of {path:?} not found among {flags:?}"
            );
        }
        let refused =
            |path: &[String], long: &str, value: &str, bad: &str| -> Result<String, String> {
                let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
                let flag = format!("--{long}");
                args.extend([flag.as_str(), bad]);
                let who = std::iter::once(NAME)
                    .chain(args[..path.len()].iter().copied())
                    .collect::<Vec<_>>()
                    .join(" ");
                let head =
                    format!("{who}: invalid value '{bad}' for '--{long} <{value}>': expected ");
                let tail = format!(", got '{bad}' (see --help)");
                match parse_strs(&args) {
                    Parsed::Usage(m)
                        if m.starts_with(&head) && m.ends_with(&tail) && !m.contains('\n') =>
                    {
                        Ok(m)
                    }
                    Parsed::Usage(m) => Err(m),
                    other => Err(format!("{other:?}")),
                }
            };
        for (path, long, value) in &flags {
            for bad in ["inf", "NaN", "1e30", "-1", "garbage"] {
                if let Err(got) = refused(path, long, value, bad) {
                    panic!(
                        "{path:?} --{long} {bad}: expected a usage line as --stall-timeout's, got {got}"
                    );
                }
            }
            // A float's garbage is refused before its range is named; -1 is refused by the range.
            let named = refused(path, long, value, "-1").unwrap();
            let zero = refused(path, long, value, "0");
            if named.contains("from 0 to") {
                assert!(
                    zero.as_ref()
                        .is_err_and(|m| !m.contains("invalid value '0'")),
                    "{path:?} --{long}: its range starts at 0, yet 0 gave {zero:?}"
                );
            } else {
                assert!(
                    zero.is_ok(),
                    "{path:?} --{long} 0: expected refused as --stall-timeout 0 is, got {zero:?}"
                );
            }
        }
    }

    #[test]
    fn bad_numbers_are_usage_errors() {
        for args in [
            ["--stall-timeout", "0"],
            ["--timeout-scale", "-1"],
            ["--jobs", "0"],
            ["--seed", "x"],
        ] {
            assert!(matches!(parse_strs(&args), Parsed::Usage(_)), "{args:?}");
        }
    }
}
