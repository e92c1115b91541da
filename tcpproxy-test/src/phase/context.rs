//! What a phase's scenario works with.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rand::{RngCore as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use super::pairing;
use super::params;
use super::verdict::Failure;
use crate::deadline::{Timing, within};
use crate::harness::{Proxy, ProxyCommand};
use crate::peer;
use crate::timeline::{Kind, Lane, Recorder};
use crate::traced::Traced;

/// A client connected to the proxy that has sent its tag: connection number `k`.
struct Dialled {
    stream: TcpStream,
    tag: pairing::Tag,
    k: u32,
}

/// Why a client has no destination connection, from [`unless_closed_first`].
pub(super) enum Unpaired<E> {
    /// The proxy closed or reset the client first: the failure's summary.
    ClosedFirst(String),
    /// The accept itself failed or ran out of time.
    Accept(E),
}

/// The destination connection `accept` awaits, unless the proxy ends the client first (which
/// `peek`, a one-byte peek of it, sees) or exits (`exited` resolves, saying how): then no
/// connection will come for it. Bytes the proxy sent the client instead are left for the
/// scenario to judge, and the wait starts again.
///
/// The exit is watched as well as the client because a client can outlive a proxy that died:
/// one whose handshake the kernel completed as the proxy's descriptors were being closed, which
/// no reset reached (the listener went last), waited out the whole deadline (docs/reliability.md).
pub(super) async fn unless_closed_first<T, E, F>(
    peek: impl Future<Output = std::io::Result<usize>>,
    accept: impl Fn() -> F,
    exited: impl Future<Output = String>,
) -> Result<T, Unpaired<E>>
where
    F: Future<Output = Result<T, E>>,
{
    let closed = tokio::select! {
        biased;
        server = accept() => return server.map_err(Unpaired::Accept),
        closed = peek => Ok(closed),
        how = exited => Err(how),
    };
    let how = match closed {
        Ok(Ok(n)) if n > 0 => return accept().await.map_err(Unpaired::Accept),
        Ok(Ok(_)) => "it closed the client connection (EOF) without connecting".to_string(),
        Ok(Err(e)) => format!("the client connection failed first ({e})"),
        Err(how) => format!("the proxy exited first ({how})"),
    };
    Err(Unpaired::ClosedFirst(format!(
        "expected the proxy to connect to the destination server, but {how}"
    )))
}

/// What a phase's scenario works with: its own destination server, its own proxy, deadlines.
pub struct Ctx {
    pub timing: Timing,
    /// The destination server's listener, on `dest_port`; `None` while a scenario has closed it.
    pub(super) dest: Mutex<Option<TcpListener>>,
    /// Sorts the destination's connections to their clients by the tag each client sends first.
    pub(super) router: pairing::Router,
    /// The destination's port while it is closed: held, so it is there to listen on again.
    pub(super) reserved: Mutex<Option<peer::Reserved>>,
    pub(super) dest_port: u16,
    pub(super) server_rcvbuf: Option<u32>,
    pub(super) proxy_port: u16,
    /// The proxy's process group, for the /proc readings.
    pub(super) proxy_pgid: i32,
    pub(super) seed: u64,
    /// Held so the run can ask whether the proxy died during the phase.
    pub(super) proxy: Mutex<Proxy>,
    /// How the proxy was started, for a failure's replay command.
    pub(super) cmd: ProxyCommand,
    /// What happened in the phase, for the reports' timelines.
    pub timeline: Recorder,
    /// The connection number (its legs' lanes) of each client this phase tagged.
    pub(super) lanes: std::sync::Mutex<HashMap<pairing::Tag, u32>>,
    /// Facts a passed phase reports beside its verdict (how a reset was passed on).
    pub(super) notes: std::sync::Mutex<Vec<String>>,
}

impl Ctx {
    /// A fact the reports show with the phase's verdict, passed or not.
    pub fn note(&self, line: String) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// A harness deadline, scaled.
    pub fn scaled(&self, base: Duration) -> Duration {
        self.timing.scaled(base)
    }

    pub fn proxy_pgid(&self) -> i32 {
        self.proxy_pgid
    }

    /// A client connection through the proxy, which has sent its tag (see [`pairing`]).
    pub async fn connect(&self, rcvbuf: Option<u32>) -> Result<Traced, Failure> {
        Ok(self.connect_tagged(rcvbuf).await?.0)
    }

    /// As [`Ctx::connect`], for a client the proxy may reset as soon as it accepts it (its
    /// destination refused): None when the connect itself saw that reset. Linux reports a reset
    /// that lands between the handshake and the connect's completion as the connect's error
    /// (ECONNRESET), which is the proxy closing the client, not failing to accept it.
    pub async fn connect_unless_reset(&self) -> Result<Option<Traced>, Failure> {
        match self.dial(None).await? {
            Ok(d) => Ok(Some(self.client_leg(d).0)),
            Err(e) if peer::is_reset(&e) => Ok(None),
            Err(e) => Err(self.connect_failed(e)),
        }
    }

    /// As [`Ctx::connect`], with the tag its destination connection will carry.
    pub(super) async fn connect_tagged(
        &self,
        rcvbuf: Option<u32>,
    ) -> Result<(Traced, pairing::Tag), Failure> {
        let d = self
            .dial(rcvbuf)
            .await?
            .map_err(|e| self.connect_failed(e))?;
        Ok(self.client_leg(d))
    }

    /// A client connection to the proxy that has sent its tag, or the connect's own error; Err
    /// only when the connect outlived its deadline. The connection gets its number, and its
    /// client leg's connect is noted; the tag is the harness's plumbing, so it is written
    /// before the leg's bytes are counted.
    async fn dial(&self, rcvbuf: Option<u32>) -> Result<std::io::Result<Dialled>, Failure> {
        let limit = self.scaled(params::ECHO_DEADLINE);
        let what = format!("a connection to the proxy on 127.0.0.1:{}", self.proxy_port);
        let mut s = match within(limit, what, peer::connect(self.proxy_port, rcvbuf)).await? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let tag = self.router.next_tag();
        let k = self.timeline.opened();
        self.timeline.note(Lane::Client(k), Kind::Connect);
        self.lanes_by_tag().insert(tag, k);
        // Twelve bytes go into an empty send buffer at once; a write that fails means the proxy
        // already closed the client, which the scenario's own reads and writes will report.
        let _ = s.write_all(&tag.bytes()).await;
        Ok(Ok(Dialled { stream: s, tag, k }))
    }

    fn connect_failed(&self, e: std::io::Error) -> Failure {
        Failure::new(format!(
            "expected a connection to the proxy on 127.0.0.1:{}, but connect failed: {e}",
            self.proxy_port
        ))
    }

    fn lanes_by_tag(&self) -> std::sync::MutexGuard<'_, HashMap<pairing::Tag, u32>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client_leg(&self, d: Dialled) -> (Traced, pairing::Tag) {
        let leg = Traced::new(d.stream, self.timeline.clone(), Lane::Client(d.k));
        (leg, d.tag)
    }

    /// Notes the connect of the server leg of `tag`'s connection: the lane of its client, or a
    /// connection of its own for a client the scenario tagged itself, untraced.
    fn server_connected(&self, tag: pairing::Tag) -> Lane {
        let known = self.lanes_by_tag().get(&tag).copied();
        let lane = Lane::Server(known.unwrap_or_else(|| self.timeline.opened()));
        self.timeline.note(lane, Kind::Connect);
        lane
    }

    fn server_leg(&self, s: TcpStream, tag: pairing::Tag) -> Traced {
        let lane = self.server_connected(tag);
        Traced::new(s, self.timeline.clone(), lane)
    }

    /// A destination connection the proxy made for a client of this phase, whichever client: for
    /// servers that treat every connection alike.
    pub async fn accept(&self) -> Result<Traced, Failure> {
        let limit = self.scaled(params::ECHO_DEADLINE);
        let (s, tag) = self
            .awaited(limit, self.router.accept_any(&self.dest))
            .await?;
        Ok(self.server_leg(s, tag))
    }

    /// The destination connection the proxy made for the client tagged `tag`, awaited for as
    /// long as the caller waits.
    pub(super) async fn accept_for(&self, tag: pairing::Tag) -> Result<Traced, String> {
        let s = self.router.accept_for(&self.dest, tag).await?;
        Ok(self.server_leg(s, tag))
    }

    async fn awaited<T>(
        &self,
        limit: Duration,
        accepting: impl Future<Output = Result<T, String>>,
    ) -> Result<T, Failure> {
        match within(
            limit,
            "the proxy to connect to the destination server",
            accepting,
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(Failure::new(e)),
            Err(expired) => Err(Failure::from(expired).details(self.router.strays())),
        }
    }

    /// Stops the destination server listening, so the proxy's next connect is refused, while
    /// keeping its port reserved for [`Ctx::reopen_destination`]. Failing that is the harness's
    /// fault, not the proxy's.
    pub async fn close_destination(&self) -> Result<(), Failure> {
        let Some(listener) = self.dest.lock().await.take() else {
            return Err(Failure::harness(
                "the harness's scenario closed its destination twice",
            ));
        };
        let reserved = peer::reserve(listener, self.server_rcvbuf).map_err(|e| {
            Failure::harness(format!(
                "the harness could not keep 127.0.0.1:{} reserved while its destination refused: {e}",
                self.dest_port
            ))
        })?;
        *self.reserved.lock().await = Some(reserved);
        Ok(())
    }

    /// Listens again on the destination's reserved port (the proxy still points there). Failing
    /// is the harness's fault, not the proxy's.
    pub async fn reopen_destination(&self) -> Result<(), Failure> {
        let Some(reserved) = self.reserved.lock().await.take() else {
            return Err(Failure::harness(
                "the harness's scenario reopened a destination it had not closed",
            ));
        };
        let l = reserved.listen().map_err(|e| {
            Failure::harness(format!(
                "the harness could not listen again on 127.0.0.1:{}: {e}",
                self.dest_port
            ))
        })?;
        *self.dest.lock().await = Some(l);
        Ok(())
    }

    /// A client connection and the destination-side connection the proxy made for it.
    pub async fn pair(&self, client_rcvbuf: Option<u32>) -> Result<(Traced, Traced), Failure> {
        let (client, server, lane) = self.dial_pair(client_rcvbuf).await?;
        let (client, _) = self.client_leg(client);
        Ok((client, Traced::new(server, self.timeline.clone(), lane)))
    }

    /// As [`Ctx::pair`], the sockets bare: for a driver that notes its legs' events itself (the
    /// fuzz model's, [`crate::fuzz::timeline`]). The connects are noted here all the same.
    pub(super) async fn pair_untraced(
        &self,
        client_rcvbuf: Option<u32>,
    ) -> Result<(TcpStream, TcpStream), Failure> {
        let (client, server, _) = self.dial_pair(client_rcvbuf).await?;
        Ok((client.stream, server))
    }

    /// A dialled client, the destination connection the proxy made for it, and that
    /// connection's server lane, its connect noted.
    async fn dial_pair(
        &self,
        client_rcvbuf: Option<u32>,
    ) -> Result<(Dialled, TcpStream, Lane), Failure> {
        let client = self
            .dial(client_rcvbuf)
            .await?
            .map_err(|e| self.connect_failed(e))?;
        let limit = self.scaled(params::ECHO_DEADLINE);
        let server = self
            .awaited(limit, self.destination_or_closed(&client))
            .await?;
        let lane = self.server_connected(client.tag);
        Ok((client, server, lane))
    }

    /// The destination connection the proxy made for `client`, or why none will come: the
    /// proxy closed the client first (it died, or turned the client away). Without this a
    /// crashed proxy cost every phase the whole deadline, and a graded class's crashing
    /// submission half a minute.
    async fn destination_or_closed(&self, client: &Dialled) -> Result<TcpStream, String> {
        let accept = || self.router.accept_for(&self.dest, client.tag);
        let mut probe = [0u8; 1];
        match unless_closed_first(client.stream.peek(&mut probe), accept, self.proxy_exited()).await
        {
            Ok(server) => Ok(server),
            Err(Unpaired::Accept(e)) => Err(e),
            Err(Unpaired::ClosedFirst(why)) => {
                // A destination connection made just before the close may still be reading its
                // tag.
                match tokio::time::timeout(self.scaled(params::TAG_GRACE), accept()).await {
                    Ok(Ok(server)) => Ok(server),
                    _ => Err(why),
                }
            }
        }
    }

    /// Resolves once the proxy has exited, saying how; never, if its exit cannot be awaited.
    /// Holds the proxy for the wait, which only the phase's end needs besides.
    pub(super) async fn proxy_exited(&self) -> String {
        match self.proxy.lock().await.wait().await {
            Ok(status) => testkit::process::describe_status(status),
            Err(_) => std::future::pending().await,
        }
    }

    /// `len` bytes of the seeded payload stream numbered `stream`.
    pub fn payload(&self, stream: u64, len: usize) -> Vec<u8> {
        let mut rng = ChaCha20Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        let mut v = vec![0; len];
        rng.fill_bytes(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};

    use super::*;

    type Accepted = Result<u8, String>;

    fn how<T>(r: Result<T, Unpaired<String>>) -> String {
        match r {
            Err(Unpaired::ClosedFirst(why)) => why,
            Err(Unpaired::Accept(e)) => format!("accept: {e}"),
            Ok(_) => "paired".to_string(),
        }
    }

    #[tokio::test]
    async fn a_proxy_that_exits_ends_the_wait_with_how() {
        let r = unless_closed_first(
            pending(),
            pending::<Accepted>,
            ready("exit status 1".to_string()),
        )
        .await;
        assert_eq!(
            how(r),
            "expected the proxy to connect to the destination server, but the proxy exited first (exit status 1)"
        );
    }

    #[tokio::test]
    async fn a_connection_already_made_wins_over_the_close_and_the_exit() {
        let r = unless_closed_first(
            ready(Ok(0)),
            || ready(Accepted::Ok(7)),
            ready("exit status 1".to_string()),
        )
        .await;
        assert_eq!(how(r), "paired");
        let r = unless_closed_first(ready(Ok(0)), pending::<Accepted>, pending::<String>()).await;
        assert!(how(r).ends_with("closed the client connection (EOF) without connecting"));
    }
}
