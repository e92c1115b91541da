//! A destination slow to accept: its accept queue is full, so the kernel drops the proxy's SYNs
//! and its connects hang for seconds of TCP's retransmissions. A proxy that connects with a
//! blocking connect() on its event loop freezes every other pair meanwhile.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::context::Ctx;
use super::pairing::Tag;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::check;
use crate::deadline::within;
use crate::peer::{self, Pacing};
use crate::procfs;
use crate::traced::Traced;

/// /proc/net/tcp's state number for SYN-SENT.
const SYN_SENT: u8 = 0x02;

const ABORT_ON_OVERFLOW: &str = "/proc/sys/net/ipv4/tcp_abort_on_overflow";

/// An established pair echoes a small message every `SLOW_CONNECT_EVERY`. The destination's
/// accept queue is then filled (its backlog shrunk to `SLOW_CONNECT_BACKLOG`, and the harness's
/// own connects queued in it) so the kernel drops the SYNs of the connects the proxy makes for
/// `SLOW_CONNECT_CLIENTS` new clients. For `SLOW_CONNECT_SPAN` each round trip on the
/// established pair must take under `SLOW_CONNECT_RTT`; then the destination accepts again and
/// every waiting client must be served (an echo) or closed within `SLOW_CONNECT_SERVED_WITHIN`.
///
/// Whether a full queue drops SYNs is the kernel's choice, so it is checked, not assumed:
/// with `tcp_abort_on_overflow` set the kernel resets instead and the phase is skipped, and the
/// harness's last connect to the full queue must sit in SYN-SENT before any client comes.
pub async fn slow_destination_connect(ctx: Arc<Ctx>) -> PhaseResult {
    kernel_drops_syns_at_a_full_queue()?;
    let (mut client, server) = ctx.pair(None).await?;
    let mut servers = JoinSet::new();
    servers.spawn(async move {
        let _ = peer::echo(server, Pacing::EAGER).await;
    });
    let mut pings = Pings::default();
    // The baseline trip, before anything hangs: the usual echo deadline, not the tight one.
    pings
        .once(
            &ctx,
            &mut client,
            "before the destination stopped accepting",
            ECHO_DEADLINE,
        )
        .await?;

    let full = FullQueue::fill(&ctx).await?;
    let mut waiting = Vec::with_capacity(SLOW_CONNECT_CLIENTS);
    for _ in 0..SLOW_CONNECT_CLIENTS {
        // Its destination connection is awaited later, once the destination accepts again. A
        // failed tag write means the proxy closed the client already, which is allowed here
        // (its connect may have given up) and which the wait for its end will see.
        waiting.push(ctx.connect_tagged(None).await?);
    }
    let hung = Instant::now();
    let mut seen_hanging = false;
    while hung.elapsed() < SLOW_CONNECT_SPAN {
        let began = Instant::now();
        seen_hanging = seen_hanging || proxy_connect_hangs(&ctx);
        if let Err(f) = pings
            .once(
                &ctx,
                &mut client,
                "while the proxy's connects hung",
                SLOW_CONNECT_RTT,
            )
            .await
        {
            let into = hung.elapsed().as_secs_f64();
            let f = f.detail(format!(
                "{into:.1}s after {SLOW_CONNECT_CLIENTS} new clients came while the destination's accept queue was full"
            ));
            return Err(if seen_hanging || proxy_connect_hangs(&ctx) {
                f.detail("meanwhile the proxy's connect to the destination sat in SYN-SENT (its SYNs dropped by the full queue)")
                    .hint("the proxy froze its other pairs while its connect to the destination hung: a blocking connect() on its event loop (connect non-blocking and wait for writability, or connect off the loop)")
            } else {
                f
            });
        }
        // The pace of the pings is the scenario's: a small message every so often.
        tokio::time::sleep_until(began + SLOW_CONNECT_EVERY).await;
    }
    tracing::debug!(
        seen_hanging,
        pings = pings.count,
        slowest_ms = pings.slowest.as_secs_f64() * 1000.0,
        "the established pair's round trips while the destination's queue was full"
    );

    full.release(&ctx).await?;
    // The established pair's part is done: a proxy serving one pair at a time may take the next.
    drop(client);
    let limit = ctx.scaled(SLOW_CONNECT_SERVED_WITHIN);
    let mut each = JoinSet::new();
    for (n, (client, tag)) in waiting.into_iter().enumerate() {
        let ctx = ctx.clone();
        each.spawn(async move { served_or_closed(&ctx, client, tag, n + 1).await });
    }
    let ends = within(
        limit,
        format!(
            "the {SLOW_CONNECT_CLIENTS} clients that waited on the destination to be served or closed once it accepted again"
        ),
        each.join_all(),
    )
    .await
    .map_err(|e| {
        Failure::from(e)
            .details(ctx.router.strays())
            .hint("the proxy neither served nor closed clients whose connect to the destination was slow: it gave up on them silently, or stopped accepting")
    })?;
    ends.into_iter().collect()
}

/// Skips the phase where a full accept queue resets connects instead of dropping their SYNs.
fn kernel_drops_syns_at_a_full_queue() -> PhaseResult {
    let value = std::fs::read_to_string(ABORT_ON_OVERFLOW).map_err(|e| {
        Failure::skipped(format!(
            "needs {ABORT_ON_OVERFLOW} to tell whether a full accept queue drops SYNs: {e}"
        ))
    })?;
    match value.trim() {
        "0" => Ok(()),
        v => Err(Failure::skipped(format!(
            "net.ipv4.tcp_abort_on_overflow is {v} here: a full accept queue resets connects instead of dropping their SYNs, so no connect hangs"
        ))),
    }
}

/// The established pair's round trips.
#[derive(Default)]
struct Pings {
    count: usize,
    slowest: std::time::Duration,
}

impl Pings {
    /// One small message echoed within `limit` (scaled).
    async fn once(
        &mut self,
        ctx: &Ctx,
        client: &mut Traced,
        when: &str,
        limit: std::time::Duration,
    ) -> PhaseResult {
        self.count += 1;
        let n = self.count;
        let msg = ctx.payload(n as u64, SLOW_CONNECT_MESSAGE);
        let limit = ctx.scaled(limit);
        let began = Instant::now();
        let mut got = vec![0; msg.len()];
        let trip = async {
            client.write_all(&msg).await?;
            client.read_exact(&mut got).await.map(|_| ())
        };
        let label = format!("round trip {n} on the established pair {when}");
        match within(limit, label.clone(), trip).await? {
            Ok(()) => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "expected the echo of {label}, but: {e}"
                )));
            }
        }
        if let Some(m) = check::compare(&msg, &got) {
            return Err(
                Failure::new(format!("echo of {label} differs: {}", m.summary()))
                    .details(m.details()),
            );
        }
        self.slowest = self.slowest.max(began.elapsed());
        Ok(())
    }
}

/// Whether one of the proxy's sockets sits in SYN-SENT toward the destination: its SYN was
/// dropped and it waits for the retransmission.
fn proxy_connect_hangs(ctx: &Ctx) -> bool {
    let mine = procfs::socket_inodes(ctx.proxy_pgid());
    procfs::tcp_tables().iter().any(|t| {
        procfs::tcp_rows(t).any(|r| {
            r.state == SYN_SENT && r.ends.remote == ctx.dest_port && mine.contains(&r.inode)
        })
    })
}

/// The destination's listener with its accept queue full of the harness's own connections.
struct FullQueue {
    /// Connected and queued, never accepted: they keep the queue full.
    fillers: Vec<TcpStream>,
}

impl FullQueue {
    /// Shrinks the destination's backlog and connects to it until a connect hangs with its SYN
    /// dropped, seen in SYN-SENT: then the proxy's connects hang too.
    async fn fill(ctx: &Ctx) -> Result<FullQueue, Failure> {
        {
            let guard = ctx.dest.lock().await;
            let Some(listener) = guard.as_ref() else {
                return Err(Failure::harness(
                    "the harness's destination was closed before its queue was filled",
                ));
            };
            // Linux takes listen(2) again on a listening socket as a new backlog.
            socket2::SockRef::from(listener)
                .listen(SLOW_CONNECT_BACKLOG)
                .map_err(|e| {
                    Failure::harness(format!(
                        "the harness could not shrink its destination's backlog: {e}"
                    ))
                })?;
        }
        let dest = SocketAddr::from((Ipv4Addr::LOCALHOST, ctx.dest_port));
        let mut fillers = Vec::new();
        for _ in 0..SLOW_CONNECT_FILL_MOST {
            let socket = bound_socket().map_err(|e| {
                Failure::harness(format!("the harness could not make a socket: {e}"))
            })?;
            let local = socket
                .local_addr()
                .map_err(|e| Failure::harness(e.to_string()))?;
            let connecting = socket.connect(dest);
            tokio::pin!(connecting);
            let probe = tokio::select! {
                c = &mut connecting => Some(c),
                () = tokio::time::sleep(SLOW_CONNECT_PROBE) => None,
            };
            let connected = match probe {
                Some(c) => c,
                None if state_of(local.port(), ctx.dest_port) == Some(SYN_SENT) => {
                    return Ok(FullQueue { fillers });
                }
                // Answered, but this task was late to notice.
                None => (&mut connecting).await,
            };
            let s = connected.map_err(|e| {
                Failure::harness(format!(
                    "the harness could not connect to its own destination {dest}: {e}"
                ))
            })?;
            fillers.push(s);
        }
        Err(Failure::skipped(format!(
            "the destination's listener, its backlog shrunk to {SLOW_CONNECT_BACKLOG}, queued {SLOW_CONNECT_FILL_MOST} connections without dropping a SYN: this kernel does not make connects to a full accept queue hang"
        )))
    }

    /// The destination accepts again: the fillers, first in its queue, are taken and closed, and
    /// the backlog is back to the harness's usual, so the proxy's next SYN retransmission gets in.
    async fn release(self, ctx: &Ctx) -> PhaseResult {
        let limit = ctx.scaled(ECHO_DEADLINE);
        let guard = ctx.dest.lock().await;
        let Some(listener) = guard.as_ref() else {
            return Err(Failure::harness(
                "the harness's destination was closed while its queue was full",
            ));
        };
        for _ in &self.fillers {
            let accepted = within(
                limit,
                "the harness's own queued connection",
                listener.accept(),
            )
            .await
            .map_err(|e| Failure::harness(Failure::from(e).summary))?;
            accepted.map_err(|e| {
                Failure::harness(format!("the harness's destination could not accept: {e}"))
            })?;
        }
        socket2::SockRef::from(listener)
            .listen(SLOW_CONNECT_USUAL_BACKLOG)
            .map_err(|e| {
                Failure::harness(format!(
                    "the harness could not restore its destination's backlog: {e}"
                ))
            })
    }
}

/// A socket bound to an ephemeral port of 127.0.0.1, so its port is known while it connects.
fn bound_socket() -> std::io::Result<TcpSocket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(socket)
}

/// The TCP state of the socket from `local` to `remote` (ports on loopback).
fn state_of(local: u16, remote: u16) -> Option<u8> {
    procfs::tcp_rows_of(&[procfs::Ends { local, remote }])[0].map(|r| r.state)
}

/// A client that waited on the destination: once the destination accepts again, either its
/// destination connection arrives and a message is echoed, or the proxy closes it.
async fn served_or_closed(ctx: &Ctx, mut client: Traced, tag: Tag, n: usize) -> PhaseResult {
    let mut probe = [0u8; 1];
    let server = tokio::select! {
        s = ctx.accept_for(tag) => s.map_err(Failure::new)?,
        closed = client.peek(&mut probe) => return match closed {
            Ok(0) => Ok(()),
            Err(e) if peer::is_reset(&e) => Ok(()),
            Ok(_) => Err(Failure::new(format!(
                "waiting client {n}: expected it to be served or closed, but it received bytes the destination never sent"
            ))),
            Err(e) => Err(Failure::new(format!(
                "waiting client {n}: expected it to be served or closed, but its read failed: {e}"
            ))),
        },
    };
    tokio::spawn(async move {
        let _ = peer::echo(server, Pacing::EAGER).await;
    });
    super::echo::round_trip(
        ctx,
        &mut client,
        &ctx.payload(1000 + n as u64, SLOW_CONNECT_MESSAGE),
        &format!("a message on waiting client {n} once the destination accepted again"),
    )
    .await
}
