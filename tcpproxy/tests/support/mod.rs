//! Test support: the proxy as a child process, peers on 127.0.0.1, deadlines that name what they
//! waited for, and byte checks that name the first difference.
//!
//! Only this module spawns the proxy, and every wait in the tests goes through [`with_deadline`]
//! with a limit from [`scaled`], so one knob stretches them all on a slow machine:
//! `TCPPROXY_TEST_TIME_SCALE=3 cargo test -p tcpproxy`.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::io::{self, Read as _};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::Signal;
use testkit::check::assert_bytes;
use testkit::pattern::pattern;
use testkit::peer::{self, Pacing, read_to_end};
use testkit::process::{self, describe_status};
use testkit::procfs::{self, Usage};
use testkit::tail::Tail;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

/// The only address these tests use.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

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
/// How often the proxy is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(20);
/// Start attempts, each on a new port, when the chosen port turns out to be taken.
const START_ATTEMPTS: usize = 5;
/// The tail of the proxy's stderr kept for failure messages.
const STDERR_KEEP: usize = 64 * 1024;
/// A flood with no progress for this long is taken as stuck.
const STUCK_QUIET: f64 = 0.5;
/// More than this written toward a peer that never reads means the buffering is not bounded:
/// loopback's autotuned socket buffers hold tens of MB, the proxy's own buffer 64 KiB.
const UNBOUNDED: u64 = 256 << 20;

/// A write that failed because the far end is gone (RST, or EPIPE after one).
#[track_caller]
pub fn assert_aborted(what: &str, error: Option<io::Error>) {
    let error = error.unwrap_or_else(|| panic!("{what}: the flood ended without an error"));
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "{what}: expected ECONNRESET or EPIPE, got {error}"
    );
}

/// `secs` times `TCPPROXY_TEST_TIME_SCALE` (default 1): every deadline is made here.
pub fn scaled(secs: f64) -> Duration {
    static SCALE: OnceLock<f64> = OnceLock::new();
    let scale = *SCALE.get_or_init(|| {
        std::env::var("TCPPROXY_TEST_TIME_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0)
    });
    Duration::from_secs_f64(secs * scale)
}

/// Awaits `fut`, or panics naming `what` it waited for and for how long.
pub async fn with_deadline<F: Future>(limit: Duration, what: impl Display, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!(
            "timed out after {:.1}s waiting for {what}",
            limit.as_secs_f64()
        ),
    }
}

/// Awaits every task of `tasks`, all within `limit`; a task's panic goes on as it was, so the
/// failure reads as the task's own.
pub async fn join_all<T: 'static>(mut tasks: JoinSet<T>, limit: Duration, what: &str) -> Vec<T> {
    with_deadline(limit, what, async {
        let mut done = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            match joined.map_err(JoinError::try_into_panic) {
                Ok(out) => done.push(out),
                Err(Ok(panic)) => std::panic::resume_unwind(panic),
                Err(Err(e)) => panic!("{what}: a task ended without finishing: {e}"),
            }
        }
        done
    })
    .await
}

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
/// 127.0.0.1. Dropping it kills and reaps the process; if the test is panicking, the tail of the
/// proxy's stderr is printed with the failure.
pub struct Proxy {
    child: Child,
    port: u16,
    command: String,
    /// The last [`STDERR_KEEP`] bytes the proxy wrote to stderr.
    stderr: Arc<Mutex<Tail>>,
    /// Changes whenever stderr grows, and closes when the proxy's stderr does: what a wait for a
    /// log line awaits instead of polling.
    stderr_grew: watch::Receiver<u64>,
    /// Drains the stderr pipe, so a chatty proxy never blocks on it; ends when the proxy exits.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
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
        Proxy::start_limited(mode, dest_port, None, args).await
    }

    /// [`Proxy::start_in`] with its descriptor limit (RLIMIT_NOFILE) set to `nofile`, by a shell
    /// that runs `ulimit -n` and then execs the proxy, so the proxy keeps the shell's pid.
    pub async fn start_with_nofile(
        mode: Mode,
        dest_port: u16,
        nofile: u32,
        args: &[&str],
    ) -> Proxy {
        Proxy::start_limited(mode, dest_port, Some(nofile), args).await
    }

    async fn start_limited(
        mode: Mode,
        dest_port: u16,
        nofile: Option<u32>,
        args: &[&str],
    ) -> Proxy {
        let args: Vec<&str> = mode.args().iter().chain(args).copied().collect();
        let args = args.as_slice();
        let mut taken = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = peer::free_port().expect("a free port on 127.0.0.1");
            let mut proxy = Proxy::spawn(dest_port, port, nofile, args);
            match proxy.wait_ready().await {
                Ok(()) => return proxy,
                Err(why) if why.contains("in use") => taken.push(why),
                Err(why) => panic!("`{}` exited before accepting: {why}", proxy.command),
            }
        }
        panic!(
            "the proxy found its port taken {START_ATTEMPTS} times: {}",
            taken.join("; ")
        );
    }

    fn spawn(dest_port: u16, port: u16, nofile: Option<u32>, args: &[&str]) -> Proxy {
        let bin = assert_cmd::cargo::cargo_bin!("tcpproxy");
        let (dest_port, port) = (dest_port.to_string(), port.to_string());
        let mut all = vec![
            "127.0.0.1",
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
        let mut child = cmd
            .args(&all)
            // Its own group, so /proc readings of the group are the proxy's alone.
            .process_group(0)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{command}` ({}): {e}", bin.display()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Tail::new(STDERR_KEEP)));
        let tail = stderr.clone();
        let (grew, stderr_grew) = watch::channel(0);
        let stderr_reader = std::thread::spawn(move || {
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                tail.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(&chunk[..n]);
                grew.send_modify(|total| *total += n as u64);
            }
        });
        Proxy {
            child,
            port: port.parse().expect("a port number"),
            command,
            stderr,
            stderr_grew,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits for the line the proxy logs once it listens; `Err` (status and stderr) if the proxy
    /// exits first.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let needle = format!("listening on 127.0.0.1:{} (IPv4)", self.port);
        let what = format!("`{}` to log {needle:?}", self.command);
        with_deadline(scaled(READY_SECS), what, async {
            if self.next_stderr_with(&needle).await {
                return Ok(());
            }
            let status = self.child.wait().expect("wait for the proxy");
            Err(format!(
                "{}; stderr: {}",
                describe_status(status),
                self.stderr_tail().trim()
            ))
        })
        .await
    }

    /// Waits until stderr holds `needle` (true) or closes without it (false: the proxy exited).
    async fn next_stderr_with(&mut self, needle: &str) -> bool {
        loop {
            // Marked seen before the look, so output that lands after it wakes the wait.
            self.stderr_grew.borrow_and_update();
            if self.stderr_tail().contains(needle) {
                return true;
            }
            if self.stderr_grew.changed().await.is_err() {
                return self.stderr_tail().contains(needle);
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What `/proc` says about the proxy now: descriptors, resident memory, CPU time.
    #[track_caller]
    pub fn usage(&self) -> Usage {
        procfs::usage(self.pid() as i32)
            .unwrap_or_else(|| panic!("`{}`: no process left in its group", self.command))
    }

    /// Waits until the proxy's stderr contains `needle` (the tail kept, so a line logged once
    /// and then buried under [`STDERR_KEEP`] bytes of others is missed); panics if the proxy
    /// exits without logging it.
    pub async fn wait_stderr(&mut self, needle: &str, limit: Duration) {
        let what = format!("`{}` to log {needle:?}", self.command);
        if !with_deadline(limit, what, self.next_stderr_with(needle)).await {
            self.assert_running();
            panic!(
                "`{}` closed its stderr without logging {needle:?}",
                self.command
            );
        }
    }

    /// The lines of the proxy's stderr (the tail kept) that contain `needle`.
    pub fn stderr_lines_with(&mut self, needle: &str) -> Vec<String> {
        self.stderr_tail()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Sends a signal by name (`"TERM"`, `"INT"`) with kill(1), for lack of a signal API in std.
    pub fn signal(&self, name: &str) {
        let signal: Signal = format!("SIG{name}")
            .parse()
            .unwrap_or_else(|e| panic!("no signal SIG{name}: {e}"));
        process::signal_group(self.pid() as i32, signal);
    }

    /// Waits for the proxy to exit on its own.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let what = format!("`{}` to exit", self.command);
        with_deadline(limit, what, async {
            loop {
                if let Some(status) = self.child.try_wait().expect("try_wait on the proxy") {
                    return status;
                }
                tokio::time::sleep(EXIT_POLL).await;
            }
        })
        .await
    }

    /// Panics if the proxy has exited: a peer's misbehaviour must never end the proxy.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait on the proxy") {
            let stderr = self.stderr_tail();
            panic!(
                "`{}` exited unexpectedly: {}; stderr: {}",
                self.command,
                describe_status(status),
                stderr.trim()
            );
        }
    }

    /// What the proxy wrote to stderr so far (the tail), complete once it has exited.
    fn stderr_tail(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            // The pipe is at EOF once the proxy is gone: join to have every last line.
            if let Some(reader) = self.stderr_reader.take() {
                let _ = reader.join();
            }
        }
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).text()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        process::signal_group(self.pid() as i32, Signal::SIGKILL);
        let status = self.child.wait();
        if std::thread::panicking() {
            let status = status.map_or_else(|e| e.to_string(), describe_status);
            let stderr = self.stderr_tail();
            eprintln!(
                "--- `{}` ({status}); stderr tail:\n{stderr}---",
                self.command
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Peers

/// Tags are unique in this process; a connection that sends no tag (the readiness probe's pair)
/// is never handed out.
fn next_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x7463_7078_0000_0001);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A destination on 127.0.0.1:0 that hands each accepted connection to the test that asks for
/// its tag: the 8 bytes [`Pair::open`] sends first. Clones share the listener.
#[derive(Clone)]
pub struct Dest {
    port: u16,
    routes: Arc<Mutex<HashMap<u64, Route>>>,
    _acceptor: Arc<AbortOnDrop>,
}

enum Route {
    /// The connection came before the test asked for it.
    Arrived(TcpStream),
    /// The test asked first.
    Awaited(oneshot::Sender<TcpStream>),
}

impl Dest {
    pub async fn bind() -> Dest {
        Dest::bind_inner(None)
    }

    /// Accepted connections are slow receivers (see [`peer::listen`]).
    pub async fn bind_with_rcvbuf(bytes: u32) -> Dest {
        Dest::bind_inner(Some(bytes))
    }

    fn bind_inner(rcvbuf: Option<u32>) -> Dest {
        let listener = peer::listen(rcvbuf).expect("bind a destination on 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let table = routes.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let table = table.clone();
                tokio::spawn(async move {
                    let mut tag = [0; 8];
                    let read = tokio::time::timeout(scaled(30.0), conn.read_exact(&mut tag));
                    if let Ok(Ok(_)) = read.await {
                        route(&table, u64::from_le_bytes(tag), conn);
                    }
                });
            }
        });
        Dest {
            port,
            routes,
            _acceptor: Arc::new(AbortOnDrop(acceptor)),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server end of the pair whose client sent `tag`.
    pub async fn take(&self, tag: u64) -> TcpStream {
        let waiting = {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            match routes.remove(&tag) {
                Some(Route::Arrived(conn)) => return conn,
                Some(Route::Awaited(_)) => panic!("tag {tag:#x} taken twice"),
                None => {
                    let (tx, rx) = oneshot::channel();
                    routes.insert(tag, Route::Awaited(tx));
                    rx
                }
            }
        };
        let what = format!(
            "the proxy to connect to the destination on port {} for tag {tag:#x}",
            self.port
        );
        with_deadline(scaled(10.0), what, waiting)
            .await
            .expect("the destination's acceptor is alive while the Dest is")
    }
}

fn route(table: &Mutex<HashMap<u64, Route>>, tag: u64, conn: TcpStream) {
    let mut routes = table.lock().unwrap_or_else(|e| e.into_inner());
    match routes.remove(&tag) {
        Some(Route::Awaited(tx)) => {
            let _ = tx.send(conn);
        }
        Some(Route::Arrived(_)) | None => {
            routes.insert(tag, Route::Arrived(conn));
        }
    }
}

/// A spawned task that ends when its owner is dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Echoes every connection until EOF, then shuts down its write half.
pub struct EchoServer {
    port: u16,
    _acceptor: AbortOnDrop,
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        EchoServer::start_on(0).expect("bind an echo server on 127.0.0.1:0")
    }

    /// On a given port, which may be taken by now.
    pub fn start_on(port: u16) -> io::Result<EchoServer> {
        let listener = peer::listen_on(port, None)?;
        let port = listener.local_addr()?.port();
        let acceptor = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(peer::echo(conn, Pacing::EAGER));
            }
        });
        Ok(EchoServer {
            port,
            _acceptor: AbortOnDrop(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A client connection to 127.0.0.1:`port`.
pub async fn connect(port: u16) -> TcpStream {
    connect_inner(port, None).await
}

/// With `rcvbuf`, a slow receiver (see [`peer::connect`]).
async fn connect_inner(port: u16, rcvbuf: Option<u32>) -> TcpStream {
    let what = format!("connect to 127.0.0.1:{port}");
    with_deadline(scaled(5.0), &what, peer::connect(port, rcvbuf))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Both ends of one proxied connection: the client's, and the destination's for it.
pub struct Pair {
    pub client: TcpStream,
    pub server: TcpStream,
}

impl Pair {
    /// Connects to the proxy on `proxy_port` and takes the matching connection from `dest`.
    pub async fn open(proxy_port: u16, dest: &Dest) -> Pair {
        Pair::open_inner(proxy_port, dest, None).await
    }

    pub async fn open_with_client_rcvbuf(proxy_port: u16, dest: &Dest, bytes: u32) -> Pair {
        Pair::open_inner(proxy_port, dest, Some(bytes)).await
    }

    async fn open_inner(proxy_port: u16, dest: &Dest, rcvbuf: Option<u32>) -> Pair {
        let tag = next_tag();
        let mut client = connect_inner(proxy_port, rcvbuf).await;
        client
            .write_all(&tag.to_le_bytes())
            .await
            .unwrap_or_else(|e| panic!("send tag {tag:#x} to the proxy on {proxy_port}: {e}"));
        let server = dest.take(tag).await;
        Pair { client, server }
    }
}

// ---------------------------------------------------------------------------------------------
// Data

/// Writes `len` bytes of [`pattern`] `seed` and reads them back (the far end echoes), checking
/// every byte.
pub async fn round_trip(conn: &mut TcpStream, seed: u64, len: usize) {
    let sent = pattern(seed, 0, len);
    let mut got = vec![0; len];
    let (mut r, mut w) = conn.split();
    let what = format!("a {len}-byte echo (seed {seed})");
    let (wrote, read) = with_deadline(scaled(10.0), &what, async {
        tokio::join!(w.write_all(&sent), r.read_exact(&mut got))
    })
    .await;
    wrote.unwrap_or_else(|e| panic!("{what}: write failed: {e}"));
    read.unwrap_or_else(|e| panic!("{what}: read failed: {e}"));
    assert_bytes(&what, &sent, &got);
}

/// Reads to the end and asserts it was a clean EOF with nothing before it.
pub async fn assert_eof(conn: &mut TcpStream, what: &str) {
    let (got, end) = with_deadline(
        scaled(5.0),
        what,
        read_to_end(conn, &[Pacing::EAGER], usize::MAX),
    )
    .await;
    assert!(
        got.is_empty() && end.is_ok(),
        "{what}: expected EOF, got {} bytes then {end:?}",
        got.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Floods

/// How far a [`Flood`] has got.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub written: u64,
    /// When the last write that moved a byte returned (or when the flood began).
    pub at: Instant,
}

/// Writes [`pattern`] `seed` into a connection as fast as it takes it, until stopped or a write
/// fails, so a test can watch the writes block and later check every byte that went out.
pub struct Flood {
    progress: watch::Receiver<Progress>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<FloodEnd>,
}

/// How a flood ended.
pub struct FloodEnd {
    /// The connection, back for the test to shut down or read.
    pub conn: TcpStream,
    pub written: u64,
    /// `None` when stopped.
    pub error: Option<io::Error>,
    /// When the last successful write returned.
    pub last_progress: Instant,
    /// When the flood ended.
    pub at: Instant,
}

impl Flood {
    pub fn start(mut conn: TcpStream, seed: u64) -> Flood {
        const CHUNK: usize = 64 * 1024;
        let (tx, progress) = watch::channel(Progress {
            written: 0,
            at: Instant::now(),
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut now = *tx.borrow();
            loop {
                let chunk = pattern(seed, now.written, CHUNK);
                // A TcpStream write is cancel-safe: a stop loses no byte that went out.
                let error = tokio::select! {
                    biased;
                    _ = &mut stopped => None,
                    w = conn.write(&chunk) => match w {
                        Ok(0) => Some(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            now = Progress { written: now.written + n as u64, at: Instant::now() };
                            let _ = tx.send(now);
                            continue;
                        }
                        Err(e) => Some(e),
                    },
                };
                return FloodEnd {
                    conn,
                    written: now.written,
                    error,
                    last_progress: now.at,
                    at: Instant::now(),
                };
            }
        });
        Flood {
            progress,
            stop,
            task,
        }
    }

    /// Waits until no write has moved a byte for [`STUCK_QUIET`] and returns the progress then.
    /// Panics if the flood ends first, or if it writes so much that nothing can be bounding it.
    pub async fn wait_stuck(&mut self, what: &str) -> Progress {
        let quiet = scaled(STUCK_QUIET);
        let limit = scaled(30.0);
        with_deadline(limit, format!("{what} to block"), async {
            loop {
                let now = *self.progress.borrow_and_update();
                assert!(
                    now.written <= UNBOUNDED,
                    "{what}: wrote {} MiB toward a peer that never reads; buffering is unbounded",
                    now.written >> 20
                );
                let left = quiet.saturating_sub(now.at.elapsed());
                if left.is_zero() {
                    return now;
                }
                if let Ok(Err(_)) = tokio::time::timeout(left, self.progress.changed()).await {
                    panic!("{what}: the flood ended after {} bytes", now.written);
                }
            }
        })
        .await
    }

    /// Stops writing and returns the connection.
    pub async fn stop(self) -> FloodEnd {
        let _ = self.stop.send(());
        with_deadline(scaled(5.0), "a flood to stop", self.task)
            .await
            .expect("the flood task does not panic")
    }

    /// Waits for a write to fail.
    pub async fn wait_failure(self, limit: Duration, what: &str) -> FloodEnd {
        let end = with_deadline(limit, what, self.task)
            .await
            .expect("the flood task does not panic");
        drop(self.stop);
        end
    }
}
