//! A proxy the fuzzer drives: one long-lived instance (spawned by the harness) in front of a
//! destination server the fuzzer owns, started again if it dies.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::deadline::within;
use crate::harness::{Launch, Proxy, ProxyCommand, StartFailure};
use crate::peer::{self, SMALL_RCVBUF};
use crate::phase::pairing::{TAG_LEN, Tag};
use testkit::process::describe_status;

/// Why a target could not be brought up.
#[derive(Debug)]
pub enum TargetError {
    /// The proxy exited or never listened.
    Proxy(String),
    /// The harness itself failed (no port, no listener).
    Harness(String),
}

/// A proxy and its destination server.
pub struct Target {
    /// `PROXY` or `the reference proxy`: how reports name it.
    pub name: &'static str,
    cmd: ProxyCommand,
    ready_within: Duration,
    /// Held from a client's connect until the destination accepted the proxy's connection for
    /// it, so the connection accepted is that client's: pairs are matched by opening them one
    /// at a time. Every destination socket is a slow receiver (small SO_RCVBUF and MSS, set on
    /// the listener before `listen`), so the proxy's writes towards it come back short.
    dest: Arc<Mutex<TcpListener>>,
    pub dest_port: u16,
    proxy: Arc<Mutex<Proxy>>,
}

/// The two ends of one connection through the proxy, and the ports that name it there.
pub struct Pair {
    pub client: TcpStream,
    pub server: TcpStream,
    /// The client's own port: the remote port of the proxy's accepted socket.
    pub client_port: u16,
    /// The port the proxy connected from: the local port of its socket to the destination.
    pub proxy_out_port: u16,
}

impl Target {
    pub async fn start(
        name: &'static str,
        cmd: ProxyCommand,
        ready_within: Duration,
    ) -> Result<Target, TargetError> {
        let dest = peer::listen(Some(SMALL_RCVBUF))
            .map_err(|e| TargetError::Harness(format!("cannot listen on 127.0.0.1: {e}")))?;
        let dest_port = dest
            .local_addr()
            .map_err(|e| TargetError::Harness(e.to_string()))?
            .port();
        let proxy = spawn(&cmd, dest_port, ready_within).await?;
        Ok(Target {
            name,
            cmd,
            ready_within,
            dest: Arc::new(Mutex::new(dest)),
            dest_port,
            proxy: Arc::new(Mutex::new(proxy)),
        })
    }

    /// Starts the proxy again if it has died; a no-op while it runs.
    pub async fn ensure_running(&self) -> Result<(), TargetError> {
        let mut proxy = self.proxy.lock().await;
        if proxy.exit_status().is_some() {
            proxy.stop().await;
            *proxy = spawn(&self.cmd, self.dest_port, self.ready_within).await?;
        }
        Ok(())
    }

    /// How the proxy ended, if it has (checked without waiting), with its last words.
    pub async fn died(&self) -> Option<(String, Vec<String>)> {
        let mut proxy = self.proxy.lock().await;
        let status = proxy.exit_status()?;
        proxy.await_output().await;
        Some((describe_status(status), proxy.stderr_details()))
    }

    pub async fn listen_port(&self) -> u16 {
        self.proxy.lock().await.listen_port
    }

    pub async fn pgid(&self) -> i32 {
        self.proxy.lock().await.pid()
    }

    /// `./proxy args (pid 42, listening on 127.0.0.1:4000, destination 127.0.0.1:4001)`, and
    /// the tail of its stderr if it wrote any.
    pub async fn describe(&self) -> Vec<String> {
        let proxy = self.proxy.lock().await;
        let mut lines = vec![format!(
            "{}: {} (pid {}, listening on 127.0.0.1:{}, destination 127.0.0.1:{})",
            self.name,
            self.cmd,
            proxy.pid(),
            proxy.listen_port,
            self.dest_port
        )];
        lines.extend(proxy.stderr_details());
        lines
    }

    /// Opens one connection through the proxy: the client connects (a slow receiver when
    /// `small_client_rcvbuf`), and the destination accepts the connection the proxy makes for it.
    pub async fn open(&self, small_client_rcvbuf: bool, limit: Duration) -> Result<Pair, String> {
        let (dest, dest_port, proxy) = (self.dest.clone(), self.dest_port, self.proxy.clone());
        let port = self.listen_port().await;
        // In a task of its own: a caller cancelled between the connect and the accept (when a
        // failure ends the cases still running) must not leave the proxy's connection queued,
        // where the next client would be paired with it.
        tokio::spawn(async move {
            let dest = dest.lock().await;
            // Connections queued by an earlier accept that gave up belong to no client.
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, dest.accept()).await {}
            let rcvbuf = small_client_rcvbuf.then_some(SMALL_RCVBUF);
            let what = format!("a connection to the proxy on 127.0.0.1:{port}");
            let mut client = within(limit, what.clone(), peer::connect(port, rcvbuf))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("expected {what}, but connect failed: {e}"))?;
            // The client speaks first with a tag, so a proxy that connects only once the client
            // sends is served, and a stray connection (a start-up probe) is told apart.
            let tag = Tag::first();
            let _ = client.write_all(&tag.bytes()).await;
            let what = format!(
                "the proxy to connect to the destination 127.0.0.1:{dest_port} for a client it accepted"
            );
            let tagged = async {
                loop {
                    let (mut s, from) = dest.accept().await?;
                    let mut b = [0; TAG_LEN];
                    if s.read_exact(&mut b).await.is_ok() && b == tag.bytes() {
                        return Ok::<_, std::io::Error>((s, from));
                    }
                }
            };
            // A proxy that dies at accept would otherwise cost the whole wait.
            let (server, from) = tokio::select! {
                accepted = within(limit, what.clone(), tagged) => accepted
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("expected {what}, but accept failed: {e}"))?,
                status = exited(&proxy) => return Err(format!(
                    "expected {what}, but the proxy exited first ({})",
                    describe_status(status)
                )),
            };
            let client_port = client
                .local_addr()
                .map_err(|e| format!("the client's socket has no address: {e}"))?
                .port();
            Ok(Pair {
                client,
                server,
                client_port,
                proxy_out_port: from.port(),
            })
        })
        .await
        .map_err(|e| format!("opening a connection crashed: {e}"))?
    }

    pub async fn stop(&self) {
        self.proxy.lock().await.stop().await;
    }
}

/// Returns once the proxy has exited.
async fn exited(proxy: &Mutex<Proxy>) -> std::process::ExitStatus {
    loop {
        if let Some(status) = proxy.lock().await.exit_status() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn spawn(
    cmd: &ProxyCommand,
    dest_port: u16,
    ready_within: Duration,
) -> Result<Proxy, TargetError> {
    match Proxy::start(cmd, Launch::LAB, dest_port, ready_within).await {
        Ok(p) => Ok(p),
        Err(StartFailure::Harness(msg)) => Err(TargetError::Harness(msg)),
        Err(StartFailure::Proxy {
            summary, details, ..
        }) => {
            let mut msg = summary;
            for d in details {
                msg.push_str("\n    ");
                msg.push_str(&d);
            }
            Err(TargetError::Proxy(msg))
        }
    }
}
