//! Test support for the reference proxy: its command line, its forwarding modes, and starting it
//! on a free port, awaited by the line it logs once it listens. The rest (the process, peers,
//! deadlines, floods, byte checks) is testkit's, shared with the harness; every wait takes its
//! limit from `testkit::deadline::scaled`, so one knob stretches them all on a slow machine:
//! `TCPPROXY_TEST_TIME_SCALE=3 cargo test -p tcpproxy`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::{Deref, DerefMut};

use testkit::deadline::{scaled, with_deadline};
use testkit::peer::{self, PortTry};
use testkit::process::describe_status;
use testkit::test_process::TestProcess;
use tokio::process::Command;

/// Every long option of the proxy, as `--help` lists them.
pub const LONG_OPTIONS: &[&str] = &[
    "--stall-timeout",
    "--buffer-size",
    "--bind",
    "--connect-timeout",
    "--max-connections",
    "--drain-timeout",
    "--no-splice",
    "--verbose",
];

/// How long the proxy may take to say it is listening.
const READY_SECS: f64 = 5.0;
/// Start attempts, each on a new port, when the chosen port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// The tail of the proxy's stderr kept for failure messages.
const STDERR_KEEP: usize = 64 * 1024;
/// DEST_HOST unless a test names another.
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------------
// Forwarding modes

/// How the proxy moves bytes. The contract is the same for both, so contract tests run in each
/// (see [`both_modes!`](crate::both_modes)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The default: `splice(2)` through a pipe per direction (copying on systems without it).
    Splice,
    /// `--no-splice`: copying through a user-space buffer.
    Copy,
}

impl Mode {
    /// The proxy arguments that select this mode.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Splice => &[],
            Mode::Copy => &["--no-splice"],
        }
    }
}

/// Defines `async fn NAME(mode: Mode) { ... }` as two tests, `NAME::splice` and `NAME::copy`, as
/// ripgrep's `rgtest!` reruns a case under each regex engine. The body sees its parent module's
/// items.
#[macro_export]
macro_rules! both_modes {
    ($(#[doc = $doc:literal])* async fn $name:ident($mode:ident: Mode) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($mode: $crate::support::Mode) $body

            #[tokio::test(flavor = "multi_thread")]
            async fn splice() {
                run($crate::support::Mode::Splice).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn copy() {
                run($crate::support::Mode::Copy).await;
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The proxy

/// The `tcpproxy` binary running as a child, listening on 127.0.0.1 and forwarding to a port on
/// 127.0.0.1: a [`TestProcess`] (which it derefs to: waits, signals, `/proc` readings, stderr),
/// plus the port it listens on. Dropping it kills and reaps it; if the test is panicking, the
/// tail of the proxy's stderr is printed with the failure.
pub struct Proxy {
    process: TestProcess,
    port: u16,
}

impl Proxy {
    /// Starts the proxy forwarding to 127.0.0.1:`dest_port`, with `-v` and `args`, and returns
    /// once it has logged that it listens, which it does once its port accepts connections. No
    /// probe connection is made, so every pair the proxy logs is one a test opened.
    pub async fn start(dest_port: u16, args: &[&str]) -> Proxy {
        Proxy::start_in(Mode::Splice, dest_port, args).await
    }

    /// [`Proxy::start`] forwarding in `mode`.
    pub async fn start_in(mode: Mode, dest_port: u16, args: &[&str]) -> Proxy {
        Proxy::start_limited(mode, LOCALHOST, dest_port, None, args).await
    }

    /// [`Proxy::start_in`] with `dest_host` as DEST_HOST (`::1`, say) instead of 127.0.0.1.
    pub async fn start_to(mode: Mode, dest_host: IpAddr, dest_port: u16, args: &[&str]) -> Proxy {
        Proxy::start_limited(mode, dest_host, dest_port, None, args).await
    }

    /// [`Proxy::start_in`] with its descriptor limit (RLIMIT_NOFILE) set to `nofile`, by a shell
    /// that runs `ulimit -n` and then execs the proxy, so the proxy keeps the shell's pid.
    pub async fn start_with_nofile(
        mode: Mode,
        dest_port: u16,
        nofile: u32,
        args: &[&str],
    ) -> Proxy {
        Proxy::start_limited(mode, LOCALHOST, dest_port, Some(nofile), args).await
    }

    async fn start_limited(
        mode: Mode,
        dest_host: IpAddr,
        dest_port: u16,
        nofile: Option<u32>,
        args: &[&str],
    ) -> Proxy {
        let args: Vec<&str> = mode.args().iter().chain(args).copied().collect();
        let args = &args;
        let no_port = |e: io::Error| -> String { panic!("no free port on 127.0.0.1: {e}") };
        let started = peer::on_free_port(START_ATTEMPTS, no_port, |port| async move {
            let mut proxy = Proxy::spawn(dest_host, dest_port, port, nofile, args);
            match proxy.wait_ready().await {
                Ok(()) => PortTry::Started(proxy),
                Err(why) if peer::says_port_taken(&why) => PortTry::Taken(why),
                Err(why) => panic!("`{}` exited before accepting: {why}", proxy.command()),
            }
        })
        .await;
        started.unwrap_or_else(|why| {
            panic!("the proxy found its port taken {START_ATTEMPTS} times; the last time: {why}")
        })
    }

    fn spawn(
        dest_host: IpAddr,
        dest_port: u16,
        port: u16,
        nofile: Option<u32>,
        args: &[&str],
    ) -> Proxy {
        let bin = assert_cmd::cargo::cargo_bin!("tcpproxy");
        let dest_host = dest_host.to_string();
        let (dest_port, port) = (dest_port.to_string(), port.to_string());
        let mut all = vec![
            dest_host.as_str(),
            dest_port.as_str(),
            port.as_str(),
            "--bind",
            "127.0.0.1",
            "-v",
        ];
        all.extend_from_slice(args);
        let mut command = format!("tcpproxy {}", all.join(" "));
        let mut cmd = match nofile {
            None => Command::new(bin),
            Some(n) => {
                command = format!("ulimit -n {n}; {command}");
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        cmd.args(&all).env_remove("RUST_LOG");
        Proxy {
            process: TestProcess::spawn(cmd, command, STDERR_KEEP),
            port: port.parse().expect("a port number"),
        }
    }

    /// Waits for the line the proxy logs once it listens; `Err` (status and stderr) if the proxy
    /// exits first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let needle = format!("listening on 127.0.0.1:{} (IPv4)", self.port);
        let what = format!("`{}` to log {needle:?}", self.command());
        with_deadline(scaled(READY_SECS), what, async {
            if self.stderr_contains(&needle).await {
                return Ok(());
            }
            let status = self.wait_exit(scaled(READY_SECS)).await;
            let stderr = self.stderr_tail();
            Err(format!(
                "{}; stderr: {}",
                describe_status(status),
                stderr.trim()
            ))
        })
        .await
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Deref for Proxy {
    type Target = TestProcess;

    fn deref(&self) -> &TestProcess {
        &self.process
    }
}

impl DerefMut for Proxy {
    fn deref_mut(&mut self) -> &mut TestProcess {
        &mut self.process
    }
}
