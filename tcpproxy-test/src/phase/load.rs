//! Many pairs at once: a proxy built on select() with FD_SETSIZE, or one that caps its pairs,
//! stops serving long before a real server load.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::params::*;
use super::{Ctx, Failure, PhaseResult};
use crate::deadline::within;
use crate::peer::{self, Pacing};

/// Opens `MANY_CONNECTIONS` pairs, all held open at once, then echoes a message on every one.
pub async fn many_connections(ctx: Arc<Ctx>) -> PhaseResult {
    let mut servers = JoinSet::new();
    let mut clients = Vec::with_capacity(MANY_CONNECTIONS);
    for i in 0..MANY_CONNECTIONS {
        let (client, server) = ctx.pair(None).await.map_err(|f| {
            let f = Failure {
                summary: format!(
                    "connection {} of {MANY_CONNECTIONS} (with {i} open): {}",
                    i + 1,
                    f.summary
                ),
                ..f
            };
            match i {
                10 => f.hint("the proxy serves at most 10 pairs at once"),
                900..=1100 => {
                    f.hint("the proxy stops near 1024 descriptors (a select()/FD_SETSIZE design)")
                }
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
            (r, client)
        });
    }
    let limit = ctx.scaled(MANY_DEADLINE);
    let results = within(
        limit,
        format!("echoes on all {MANY_CONNECTIONS} connections"),
        echoes.join_all(),
    )
    .await?;
    let failures: Vec<Failure> = results.into_iter().filter_map(|(r, _)| r.err()).collect();
    match failures.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(first),
    }
}
