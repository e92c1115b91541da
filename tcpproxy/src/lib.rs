//! `tcpproxy`: forward TCP connections to a destination under the 6.824 proxy contract.
//!
//! 1. Many clients at once; no peer can hang the proxy or another pair by not reading or writing.
//! 2. Bounded buffering per direction; a direction that holds data and can write none of it for
//!    the stall timeout aborts its pair. Idle pairs are never closed.
//! 3. EOF on one side: write out what is buffered, then shut down the other side's write half.
//! 4. A pair closes after EOF both ways with everything flushed, or at once (RST) on a write error.

pub mod buffer;
pub mod cli;
pub mod fill;
pub mod flag_value;
pub mod hooks;
pub mod pair;
pub mod pool;
pub mod relay;
pub mod server;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod stall;

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::cli::Config;
use crate::hooks::{Hooks, Reference};
use crate::server::{Signals, Stopped};

/// Exit code for a usage error (bad argument, unknown flag).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the proxy cannot start (unresolvable host, port in use).
pub const EXIT_START: u8 = 1;
/// Exit code after SIGTERM/SIGINT when the drain was cut short (by the drain timeout or a second
/// signal) and pairs still open were reset: a service manager or script sees that connections
/// were lost, where a drain that finished in time exits 0.
pub const EXIT_DRAIN_CUT: u8 = 3;

/// Runs the proxy as its command line asks: the whole program behind `main`, shared with
/// `tcpproxy-test`, which runs the reference proxy from its own executable.
pub fn main_with_args(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ExitCode {
    let config = match cli::config_from(args) {
        Ok(c) => c,
        Err(not_run) => return not_run.exit("tcpproxy"),
    };
    init_logging(config.verbose);
    exit_code("tcpproxy", run(config))
}

/// How a run ends the process: 0 once drained, [`EXIT_DRAIN_CUT`] or [`EXIT_START`] with one
/// line on stderr that `who` begins. Shared with `fixtures`, whose proxies stop the same way.
pub fn exit_code(who: &str, stopped: anyhow::Result<Stopped>) -> ExitCode {
    match stopped {
        Ok(Stopped::Drained) => ExitCode::SUCCESS,
        Ok(Stopped::Cut(cut)) => {
            // Said whatever the log level, as every other failing exit is.
            eprintln!("{who}: {cut}");
            ExitCode::from(EXIT_DRAIN_CUT)
        }
        Err(e) => {
            eprintln!("{who}: {e:#}");
            ExitCode::from(EXIT_START)
        }
    }
}

/// Resolves the destination once (a typo should fail now, not at the first client), binds, and
/// serves until a signal.
pub fn run(config: Config) -> anyhow::Result<Stopped> {
    run_with(config, &Reference)
}

/// [`run`], departing from the contract where `hooks` say: the fixtures' broken proxies.
pub fn run_with<H: Hooks + ?Sized>(config: Config, hooks: &'static H) -> anyhow::Result<Stopped> {
    let runtime = if hooks.one_thread() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    // The server runs as a task, on a worker: run in block_on it would sit on this thread, outside
    // the workers, so that every accept woke a worker to take the new pair (a futex round trip
    // per connection) and every listener event woke this thread.
    let served = runtime.spawn(async move {
        let signals = if hooks.drains_on_signal() {
            Signals::new()?
        } else {
            Signals::unhandled()
        };
        let dest = (config.dest_host.as_str(), config.dest_port);
        let resolved = tokio::net::lookup_host(dest).await.map(|a| a.count());
        match resolved {
            Ok(n) if n > 0 => {}
            Ok(_) => anyhow::bail!(
                "cannot resolve destination host '{}': no addresses",
                config.dest_host
            ),
            Err(e) => anyhow::bail!(
                "cannot resolve destination host '{}': {e}",
                config.dest_host
            ),
        }
        if hooks.probe_at_start() {
            // Whether the destination is up does not matter to a probe that only looks.
            let _ = tokio::net::TcpStream::connect(dest).await;
        }
        let listener = server::bind(&config, hooks.listen_backlog())?;
        server::serve(config, listener, signals, hooks).await
    });
    let stopped = match runtime.block_on(served) {
        Ok(stopped) => stopped?,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => anyhow::bail!("the server task ended early: {e}"),
        },
    };
    // Only a pair that did not finish its cut in time is left to drop with the runtime.
    runtime.shutdown_background();
    Ok(stopped)
}

/// Logs go to stderr (stdout is for results); quiet by default, `-v` adds the listening line at
/// start and a line per closed pair.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "error",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .try_init();
}
