//! A peer that resets (SO_LINGER 0 and close, no FIN first) while the other end keeps its side
//! open: the proxy passes the reset on as a reset, at once and with nothing written after it,
//! and keeps none of the pair's descriptors. Each runs splicing and copying (`NAME::splice`,
//! `NAME::copy`).

use std::io;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::both_modes;
use crate::support::{Mode, Proxy};
use testkit::check::assert_bytes;
use testkit::deadline::{scaled, with_deadline};
use testkit::pair::{Dest, Pair};
use testkit::pattern::pattern;
use testkit::peer::reset;

/// Which end resets.
#[derive(Debug, Clone, Copy)]
enum Resetter {
    Client,
    Server,
}

/// What the resetter sends first, read in full by the other end: enough to fill a buffer, so
/// that in splice mode the direction streams through a pipe when the reset comes.
const BEFORE_RESET: usize = 256 * 1024;

/// One pair: the other end sends a byte, the resetter reads it and sends [`BEFORE_RESET`]
/// bytes, the other end reads them all, and the resetter resets. The other end, which never
/// shut anything down, must then read ECONNRESET (not EOF, and no byte) within 5 s; once it
/// closes too, the proxy must have closed both of the pair's sockets. (Counted from while the
/// pair is open: a splicing proxy keeps spare pipes, two descriptors each, after a pair ends.)
async fn reset_is_passed_on_as_a_reset(mode: Mode, resetter: Resetter) {
    let dest = Dest::bind().await;
    let mut proxy = Proxy::start_in(mode, dest.port(), &[]).await;
    let Pair { client, server } = Pair::open(proxy.port(), &dest).await;
    let (mut gone, mut other) = match resetter {
        Resetter::Client => (client, server),
        Resetter::Server => (server, client),
    };
    let name = format!("{resetter:?} resetting ({mode:?})");

    other.write_all(b"?").await.expect("the other end's byte");
    let mut byte = [0];
    with_deadline(
        scaled(5.0),
        "the resetter's byte",
        gone.read_exact(&mut byte),
    )
    .await
    .expect("read the other end's byte");
    let sent = pattern(12, 0, BEFORE_RESET);
    gone.write_all(&sent).await.expect("the resetter's bytes");
    let mut got = vec![0; BEFORE_RESET];
    let what = format!("{name}: the bytes before the reset");
    with_deadline(scaled(10.0), &what, other.read_exact(&mut got))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_bytes(&what, &sent, &got);
    let fds_open = proxy.usage().fds;

    reset(gone);
    let what = format!("{name}: the other end's read after the reset");
    let mut rest = [0; 64];
    let end = with_deadline(scaled(5.0), &what, other.read(&mut rest)).await;
    match end {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Ok(0) => panic!("{what}: expected the reset passed on as a reset, got EOF (a FIN)"),
        Ok(n) => panic!("{what}: expected a reset, got {n} more bytes"),
        Err(e) => panic!("{what}: expected ECONNRESET, got {e}"),
    }
    drop(other);

    let what = format!(
        "{name}: the proxy to close the pair's two sockets ({fds_open} descriptors with them)"
    );
    with_deadline(scaled(5.0), &what, async {
        // Polled: nothing tells a peer when the proxy closes its own descriptors.
        while proxy.usage().fds + 2 > fds_open {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    proxy.assert_running();
}

both_modes! {
    /// The destination resets while the client keeps its side open: the client sees a reset.
    async fn a_destination_reset_reaches_the_client_as_a_reset(mode: Mode) {
        reset_is_passed_on_as_a_reset(mode, Resetter::Server).await;
    }
}

both_modes! {
    /// The client resets while the destination keeps its side open: the destination sees a
    /// reset.
    async fn a_client_reset_reaches_the_destination_as_a_reset(mode: Mode) {
        reset_is_passed_on_as_a_reset(mode, Resetter::Client).await;
    }
}
