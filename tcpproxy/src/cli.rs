//! The command line: every flag, its default and its check, turned into a validated [`Config`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::flag_value;
use crate::pair::Reason;

/// Abort a pair once one direction has held data it could not write for this long (the lab's 10 s).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes held per direction in memory.
pub const BUFFER_SIZE: usize = 64 * 1024;
/// The most bytes a streaming direction holds in its pipe when splicing: Linux's pipe-max-size,
/// the most an unprivileged process may ask for. Against 64 KiB pipes one stream's CPU per GB
/// was 0.86 (client->server) and 0.80 (server->client) as much, its throughput 1.08 and 1.14
/// times (docs/benchmarks.md, "One runtime per CPU, then larger pipes").
pub const PIPE_SIZE: usize = 1024 * 1024;
/// How long one new pair may spend resolving and connecting to the destination.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pairs open at once; past it the proxy stops accepting and the kernel backlog holds the rest.
pub const MAX_CONNECTIONS: usize = 10_000;
/// After SIGTERM/SIGINT, how long open pairs may take to finish before the proxy exits.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Splice streaming directions unless `--no-splice`: only Linux has splice(2).
pub const SPLICE: bool = cfg!(target_os = "linux");

/// The largest `--buffer-size` accepted: far beyond any sensible value, small enough that a typo
/// cannot make ten thousand pairs ask for terabytes.
const MAX_BUFFER_SIZE: usize = 64 * 1024 * 1024;
/// tokio's semaphore holds at most usize::MAX >> 3 permits.
const MAX_CONNECTIONS_LIMIT: usize = 1 << 30;

#[derive(Debug, Parser)]
#[command(
    name = "tcpproxy",
    version,
    about = "Forward every TCP connection accepted on LISTEN_PORT to DEST_HOST:DEST_PORT",
    long_about = "Forward every TCP connection accepted on LISTEN_PORT to DEST_HOST:DEST_PORT.\n\n\
        Each direction holds at most --buffer-size bytes (a streaming direction that splices, at \
        most --pipe-size). A pair is aborted (with RST) when one \
        direction has buffered data and none of it could be written for --stall-timeout seconds, \
        or when a write fails. An EOF is forwarded as a half-close once buffered data is written; \
        a pair closes when both directions have ended. Idle pairs are never closed.\n\n\
        On SIGTERM/SIGINT the proxy stops accepting and lets open pairs finish for up to \
        --drain-timeout seconds; pairs still open then, or at a second signal, are reset.",
    after_help = after_help(),
    after_long_help = after_long_help()
)]
struct Args {
    /// Host name or address to forward to; resolved at start and again for every new client.
    #[arg(value_name = "DEST_HOST")]
    dest_host: String,

    /// Port to forward to (1-65535).
    #[arg(value_name = "DEST_PORT", value_parser = flag_value::port, allow_negative_numbers = true)]
    dest_port: u16,

    /// Port to accept clients on (1-65535).
    #[arg(value_name = "LISTEN_PORT", value_parser = flag_value::port, allow_negative_numbers = true)]
    listen_port: u16,

    /// Seconds a direction may hold data without writing any of it before the pair is aborted
    /// (fractions allowed).
    #[arg(long, value_name = "SECS", default_value_t = STALL_TIMEOUT.as_secs_f64(), value_parser = |s: &str| flag_value::seconds(s, flag_value::YEAR_SECS), allow_negative_numbers = true)]
    stall_timeout: f64,

    /// Most bytes held per direction in memory.
    #[arg(long, value_name = "BYTES", default_value_t = BUFFER_SIZE, value_parser = |s: &str| flag_value::count(s, "bytes", MAX_BUFFER_SIZE), allow_negative_numbers = true)]
    buffer_size: usize,

    /// Most bytes a streaming direction holds in its pipe when splicing (the kernel may grant
    /// less: /proc/sys/fs/pipe-max-size and pipe-user-pages-soft).
    #[arg(long, value_name = "BYTES", default_value_t = PIPE_SIZE, value_parser = |s: &str| flag_value::count(s, "bytes", MAX_BUFFER_SIZE), allow_negative_numbers = true)]
    pipe_size: usize,

    /// Address to listen on [default: all interfaces, IPv4 and IPv6 where the host has IPv6].
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,

    /// Seconds allowed to resolve and connect to the destination for each client.
    #[arg(long, value_name = "SECS", default_value_t = CONNECT_TIMEOUT.as_secs_f64(), value_parser = |s: &str| flag_value::seconds(s, flag_value::YEAR_SECS), allow_negative_numbers = true)]
    connect_timeout: f64,

    /// Pairs open at once; beyond it the proxy stops accepting until one closes.
    #[arg(long, value_name = "N", default_value_t = MAX_CONNECTIONS, value_parser = |s: &str| flag_value::count(s, "connections", MAX_CONNECTIONS_LIMIT), allow_negative_numbers = true)]
    max_connections: usize,

    /// Seconds open pairs may take to finish after SIGTERM/SIGINT; those still open then are
    /// reset, as they are at once by a second signal.
    #[arg(long, value_name = "SECS", default_value_t = DRAIN_TIMEOUT.as_secs_f64(), value_parser = |s: &str| flag_value::seconds(s, flag_value::YEAR_SECS), allow_negative_numbers = true)]
    drain_timeout: f64,

    /// Never splice: copy every byte through a user-space buffer. By default (Linux only) a
    /// direction whose bytes arrive faster than one read takes them moves them with splice(2)
    /// through a pipe; small exchanges are copied either way.
    #[arg(long)]
    no_splice: bool,

    /// Log a line once listening and one per closed pair (-v; see below), or more (-vv).
    /// RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// The exit statuses, for `-h` and `--help`.
fn exit_statuses() -> String {
    format!(
        "Exit status:\n  \
         0  stopped by SIGTERM/SIGINT once every open pair had closed\n  \
         {start}  cannot start (DEST_HOST does not resolve, LISTEN_PORT in use)\n  \
         {usage}  usage error\n  \
         {cut}  stopped by SIGTERM/SIGINT, but the drain was cut short: the pairs still open at\n     \
         --drain-timeout or at a second signal were reset (stderr says how many)",
        start = crate::EXIT_START,
        usage = crate::EXIT_USAGE,
        cut = crate::EXIT_DRAIN_CUT,
    )
}

fn after_help() -> String {
    format!("{}\n\nSee --help for the log lines.", exit_statuses())
}

/// The log lines and exit statuses, for `--help`; the reasons come from [`Reason::ALL`], so the
/// list cannot drift from what the proxy logs.
fn after_long_help() -> String {
    let mut reasons = String::new();
    for r in Reason::ALL {
        let _ = writeln!(reasons, "  {:<14}{}", r.as_str(), r.meaning());
    }
    format!(
        "Log (stderr; -v, or RUST_LOG=info):\n\
         Once the port accepts, one line such as\n  \
         listening on [::]:3000 (IPv4 and IPv6), forwarding to www.example.org:80, stall timeout 10s\n\
         Then one line per closed pair, after HAProxy's tcplog, key=value in this order:\n  \
         pair closed frontend=ADDR:PORT client=ADDR:PORT dest=ADDR:PORT reason=REASON\n    \
         connect_ms=MS total_ms=MS up=BYTES down=BYTES active=N\n    \
         [dir=up|down] [error=\"...\"] [read_error=\"...\"]\n\
         frontend   the proxy's address the client reached\n\
         dest       the destination's address; DEST_HOST:DEST_PORT when no connection was made\n\
         connect_ms from accept to the destination's connection (-1: never connected)\n\
         total_ms   from accept to close\n\
         up, down   bytes written to the destination, and to the client\n\
         active     pairs open as this one closed, itself included\n\
         dir        the direction that aborted (up: client->server), with stall and write-error\n\
         error      what failed, with stall, write-error and connect-fail\n\
         read_error only when a read failed: the side (client or server) and the error\n\
         REASON is one of:\n\
         {reasons}\n\
         {}",
        exit_statuses()
    )
}

/// Everything the proxy needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub dest_host: String,
    pub dest_port: u16,
    pub listen_port: u16,
    pub stall_timeout: Duration,
    pub buffer_size: usize,
    pub pipe_size: usize,
    pub bind: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub drain_timeout: Duration,
    /// Forward streaming directions with splice(2) through a pipe (Linux); otherwise copy.
    pub splice: bool,
    pub verbose: u8,
}

impl Config {
    /// A config with every default, for tests and embedding.
    pub fn new(dest_host: impl Into<String>, dest_port: u16, listen_port: u16) -> Config {
        Config {
            dest_host: dest_host.into(),
            dest_port,
            listen_port,
            stall_timeout: STALL_TIMEOUT,
            buffer_size: BUFFER_SIZE,
            pipe_size: PIPE_SIZE,
            bind: None,
            connect_timeout: CONNECT_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            drain_timeout: DRAIN_TIMEOUT,
            splice: SPLICE,
            verbose: 0,
        }
    }
}

/// What parsing the command line gave: a config to run, or text to print and an exit code.
#[derive(Debug)]
pub enum Parsed {
    Run(Config),
    /// `--help` or `--version`: print to stdout, exit 0.
    Info(String),
    /// A usage error: one line for stderr, exit 2.
    Usage(String),
}

pub fn parse(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Parsed {
    config_from(args).map_or_else(Parsed::from, Parsed::Run)
}

/// [`parse`] as a result: the config to run, or what to print instead.
pub fn config_from(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Config, NotRun> {
    let a = try_parse::<Args, _, _>(args)?;
    Ok(Config {
        dest_host: a.dest_host,
        dest_port: a.dest_port,
        listen_port: a.listen_port,
        stall_timeout: Duration::from_secs_f64(a.stall_timeout),
        buffer_size: a.buffer_size,
        pipe_size: a.pipe_size,
        bind: a.bind,
        connect_timeout: Duration::from_secs_f64(a.connect_timeout),
        max_connections: a.max_connections,
        drain_timeout: Duration::from_secs_f64(a.drain_timeout),
        splice: SPLICE && !a.no_splice,
        verbose: a.verbose,
    })
}

/// Why a command line did not give a run: text for stdout and exit 0 (`--help`, `--version`),
/// or one line for stderr and exit 2. Every binary's parser starts with [`try_parse`].
#[derive(Debug)]
pub enum NotRun {
    Info(String),
    Usage(String),
}

impl NotRun {
    /// Ends `program` as its command line asked: the text on stdout and exit 0, or the usage
    /// error as one line on stderr and exit 2. Shared with `fixtures`, whose flags fail the same
    /// way.
    pub fn exit(self, program: &str) -> ExitCode {
        match self {
            NotRun::Info(text) => {
                // A closed pipe (`--help | head`) is not an error worth a message.
                let _ = std::io::stdout().write_all(text.as_bytes());
                ExitCode::SUCCESS
            }
            NotRun::Usage(msg) => {
                eprintln!("{program}: {msg}");
                ExitCode::from(crate::EXIT_USAGE)
            }
        }
    }
}

impl From<NotRun> for Parsed {
    fn from(n: NotRun) -> Parsed {
        match n {
            NotRun::Info(t) => Parsed::Info(t),
            NotRun::Usage(m) => Parsed::Usage(m),
        }
    }
}

/// Parses `words` (the first names the command, as usage lines show it) into `A`.
pub fn try_parse<A, I, T>(words: I) -> Result<A, NotRun>
where
    A: Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    A::try_parse_from(words).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            NotRun::Info(e.render().to_string())
        }
        _ => NotRun::Usage(one_line(&e)),
    })
}

/// A clap error as the one line users asked for (clap's own span several: usage, a tip).
/// Shared with `tcpproxy-test`, whose flags fail the same way.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // clap names the missing arguments on the indented lines below the first; other errors'
    // indented lines are tips, which stay out.
    if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
        let names: Vec<&str> = lines
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .collect();
        return format!("{first} {} (see --help)", names.join(" "));
    }
    format!("{first} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Config {
        match parse(std::iter::once("tcpproxy").chain(args.iter().copied())) {
            Parsed::Run(c) => c,
            other => panic!("expected a config from {args:?}, got {other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        match parse(std::iter::once("tcpproxy").chain(args.iter().copied())) {
            Parsed::Usage(m) => m,
            other => panic!("expected a usage error from {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn lab_form_uses_every_default() {
        let c = run(&["www.example.org", "80", "3000"]);
        assert_eq!(c.dest_host, "www.example.org");
        assert_eq!((c.dest_port, c.listen_port), (80, 3000));
        assert_eq!(c.stall_timeout, STALL_TIMEOUT);
        assert_eq!(c.buffer_size, BUFFER_SIZE);
        assert_eq!(c.connect_timeout, CONNECT_TIMEOUT);
        assert_eq!(c.max_connections, MAX_CONNECTIONS);
        assert_eq!(c.drain_timeout, DRAIN_TIMEOUT);
        assert_eq!(c.bind, None);
        assert_eq!(c.splice, SPLICE);
    }

    #[test]
    fn no_splice_turns_splicing_off() {
        assert!(!run(&["h", "1", "2", "--no-splice"]).splice);
    }

    #[test]
    fn stall_timeout_takes_fractions() {
        let c = run(&["h", "1", "2", "--stall-timeout", "0.5"]);
        assert_eq!(c.stall_timeout, Duration::from_millis(500));
    }

    #[test]
    fn options_may_come_first() {
        let c = run(&["--buffer-size", "1024", "--bind", "::1", "h", "1", "2"]);
        assert_eq!(c.buffer_size, 1024);
        assert_eq!(c.bind, Some("::1".parse().unwrap()));
    }

    #[test]
    fn bad_ports_name_the_argument_on_one_line() {
        for bad in ["0", "65536", "http", "-1", "99999999999999999999"] {
            let m = usage(&["h", "80", bad]);
            assert!(m.contains("LISTEN_PORT"), "{m}");
            assert!(!m.contains('\n'), "{m}");
        }
        assert!(usage(&["h", "0", "80"]).contains("DEST_PORT"));
    }

    #[test]
    fn bad_option_values_are_usage_errors() {
        usage(&["h", "1", "2", "--stall-timeout", "0"]);
        assert!(usage(&["h", "1", "2", "--stall-timeout", "-3"]).contains("--stall-timeout"));
        usage(&["h", "1", "2", "--stall-timeout", "nan"]);
        usage(&["h", "1", "2", "--buffer-size", "0"]);
        usage(&["h", "1", "2", "--max-connections", "0"]);
        usage(&["h", "1", "2", "--bind", "not-an-ip"]);
        usage(&["h", "1", "2", "--frobnicate"]);
        usage(&["h", "1"]);
        usage(&["h", "1", "2", "3"]);
    }

    #[test]
    fn missing_arguments_are_named() {
        let m = usage(&["h", "1"]);
        assert!(
            m.contains("<LISTEN_PORT>") && !m.contains("<DEST_PORT>"),
            "{m}"
        );
        assert!(usage(&[]).contains("<DEST_HOST> <DEST_PORT> <LISTEN_PORT>"));
    }

    #[test]
    fn help_and_version_are_info() {
        for flag in ["--help", "--version"] {
            assert!(matches!(parse(["tcpproxy", flag]), Parsed::Info(_)));
        }
    }
}
