//! Many pairs at once: a proxy built on select() with FD_SETSIZE, or one that caps its pairs,
//! stops serving long before a real server load.

use std::ops::RangeInclusive;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::context::{Ctx, Unpaired, unless_closed_first};
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::backlog;
use crate::deadline::within;
use crate::peer::{self, Pacing};
use crate::traced::Traced;

/// glibc's FD_SETSIZE: select() cannot watch a descriptor this large or larger.
const FD_SETSIZE: usize = 1024;
/// Descriptors a proxy holds besides its pairs' sockets: at least its listener, at most its
/// standard streams, listener, event loop's own and a runtime's worth more.
const RESERVED_FDS: RangeInclusive<usize> = 1..=64;

/// The pairs a select() proxy can hold before a new one needs a descriptor >= FD_SETSIZE, with
/// `per_pair` descriptors each (2: client and destination sockets; 1: a design whose pairs
/// hold one each in the selecting process).
fn fd_setsize_stop(per_pair: usize) -> RangeInclusive<usize> {
    (FD_SETSIZE - RESERVED_FDS.end()) / per_pair..=(FD_SETSIZE - RESERVED_FDS.start()) / per_pair
}

/// The hint for a proxy that stopped serving with `open` pairs open, when that is where a
/// select() design runs out of descriptors it can watch.
fn fd_setsize_hint(open: usize) -> Option<String> {
    [2, 1].into_iter().any(|per| fd_setsize_stop(per).contains(&open)).then(|| {
        format!(
            "the proxy stops at about {open} pairs: descriptors >= FD_SETSIZE ({FD_SETSIZE}) with select(); use poll/epoll"
        )
    })
}

/// How opening a pair failed.
enum Unopened {
    /// The client could not connect, or the proxy closed or reset it before connecting to the
    /// destination: what a full listen queue (or a proxy out of watchable descriptors) does.
    TurnedAway(Failure),
    Other(Failure),
}

/// A client and the destination connection the proxy made for it, watching the client while
/// waiting: a proxy that closes the client instead of connecting is reported as that at once,
/// not as a destination that never saw a connection.
async fn open_pair(ctx: &Ctx) -> Result<(Traced, Traced), Unopened> {
    let mut client = ctx.connect(None).await.map_err(Unopened::TurnedAway)?;
    let mut probe = [0u8; 1];
    match unless_closed_first(client.peek(&mut probe), || ctx.accept(), ctx.proxy_exited()).await {
        Ok(server) => Ok((client, server)),
        Err(Unpaired::Accept(f)) => Err(Unopened::Other(f)),
        Err(Unpaired::ClosedFirst(why)) => Err(Unopened::TurnedAway(Failure::new(why))),
    }
}

/// Opens `MANY_CONNECTIONS` pairs, all held open at once, then echoes a message on every one.
pub async fn many_connections(ctx: Arc<Ctx>) -> PhaseResult {
    let watch = backlog::Watch::start();
    let mut servers = JoinSet::new();
    let mut clients = Vec::with_capacity(MANY_CONNECTIONS);
    for i in 0..MANY_CONNECTIONS {
        let (client, server) = open_pair(&ctx).await.map_err(|unopened| {
            let (f, turned_away) = match unopened {
                Unopened::TurnedAway(f) => (f, true),
                Unopened::Other(f) => (f, false),
            };
            let f = Failure {
                summary: format!(
                    "connection {} of {MANY_CONNECTIONS} (with {i} open): {}",
                    i + 1,
                    f.summary
                ),
                ..f
            };
            if i == 10 {
                return f.hint("the proxy serves at most 10 pairs at once");
            }
            if let Some(hint) = fd_setsize_hint(i) {
                return f.hint(hint);
            }
            match watch.dropped() {
                Some(dropped) if turned_away && dropped > 0 => f.hint(backlog::hint(dropped)),
                _ => f,
            }
        })?;
        servers.spawn(async move {
            let _ = peer::echo(server, Pacing::EAGER).await;
        });
        clients.push(client);
    }
    let mut echoes = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let msg = ctx.payload(i as u64, ECHO_MESSAGE_LEN);
        let ctx = ctx.clone();
        echoes.spawn(async move {
            let r = super::echo::round_trip(
                &ctx,
                &mut client,
                &msg,
                &format!("a message on connection {} of {MANY_CONNECTIONS}", i + 1),
            )
            .await;
            (i, r, client)
        });
    }
    let limit = ctx.scaled(MANY_DEADLINE);
    let results = within(
        limit,
        format!("echoes on all {MANY_CONNECTIONS} connections"),
        echoes.join_all(),
    )
    .await?;
    let mut failures: Vec<(usize, Failure)> = results
        .into_iter()
        .filter_map(|(i, r, _)| r.err().map(|f| (i, f)))
        .collect();
    failures.sort_by_key(|(i, _)| *i);
    let count = failures.len();
    match failures.into_iter().next() {
        None => Ok(()),
        Some((first, f)) => {
            let f = f.detail(format!(
                "{count} of {MANY_CONNECTIONS} echoes failed, the first on connection {}",
                first + 1
            ));
            Err(match fd_setsize_hint(first) {
                Some(hint) => f.hint(hint),
                None => f,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_covers_where_a_select_proxy_stops() {
        // Two descriptors a pair, a few held besides: the fd-setsize fixture stops near 508.
        for open in [480, 505, 508, 510, 511] {
            let hint = fd_setsize_hint(open).unwrap_or_else(|| panic!("{open}"));
            assert!(
                hint.contains(&format!("stops at about {open} pairs"))
                    && hint.contains("FD_SETSIZE (1024)")
                    && hint.contains("poll/epoll"),
                "{hint}"
            );
        }
        // One descriptor a connection in the selecting process.
        for open in [960, 1000, 1020, 1023] {
            assert!(fd_setsize_hint(open).is_some(), "{open}");
        }
    }

    #[test]
    fn the_hint_stays_quiet_elsewhere() {
        // The old range (900..=1100) missed ~510 and fired on 1024-1100, where no select()
        // proxy stops.
        for open in [0, 10, 100, 479, 512, 700, 959, 1024, 1100, 1499] {
            assert_eq!(fd_setsize_hint(open), None, "{open}");
        }
    }
}
