//! Small writes: a request written in two pieces, the second once the first has reached the
//! destination, reaches it as fast as the first piece did, not after the destination's delayed
//! ACK (40 ms). The proxy's second write follows one not yet acknowledged, so without
//! TCP_NODELAY Nagle's algorithm holds it back until that ACK comes (NVIDIA/OpenShell #2219).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::both_modes;
use crate::support::Proxy;
use testkit::deadline::{scaled, with_deadline};
use testkit::pair::{Dest, Pair};

const ROUNDS: usize = 30;
const PIECE: &[u8] = b"GET / HTTP/1.1\r\n";

/// Writes `PIECE` at the client and returns how long it took to be read whole at the server.
async fn piece_through(client: &mut TcpStream, server: &mut TcpStream, what: &str) -> Duration {
    let began = Instant::now();
    let mut got = [0; PIECE.len()];
    with_deadline(scaled(10.0), what, async {
        client.write_all(PIECE).await.expect("write a piece");
        server
            .read_exact(&mut got)
            .await
            .expect("the piece at the server");
    })
    .await;
    assert_eq!(got, PIECE, "{what}");
    began.elapsed()
}

both_modes! {
    async fn the_second_of_two_small_writes_is_not_held_back_by_nagle(mode: Mode) {
        let dest = Dest::bind().await;
        let proxy = Proxy::start_in(mode, dest.port(), &[]).await;
        let Pair { mut client, mut server } = Pair::open(proxy.port(), &dest).await;
        // The test's own ends send at once, so only the proxy's sockets can wait on Nagle.
        server.set_nodelay(true).expect("TCP_NODELAY on the server end");
        let mut extra = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            let first = piece_through(&mut client, &mut server, &format!("round {round}'s first piece")).await;
            let second = piece_through(&mut client, &mut server, &format!("round {round}'s second piece")).await;
            server.write_all(b"!").await.expect("write the answer");
            with_deadline(scaled(10.0), format!("round {round}'s answer"), client.read_exact(&mut [0]))
                .await
                .expect("the answer at the client");
            extra.push(second.as_secs_f64() - first.as_secs_f64());
        }
        extra.sort_by(f64::total_cmp);
        let median = Duration::from_secs_f64(extra[ROUNDS / 2].max(0.0));
        // Nagle's wait is the delayed ACK, 40 ms at least on Linux, and falls on the second piece
        // alone; a loaded host slows either piece as often.
        let limit = scaled(0.020);
        assert!(
            median < limit,
            "expected the second piece to take no more than {limit:?} longer than the first (median of {ROUNDS} rounds), got {median:?} (each round's extra, sorted, s: {extra:?}): the proxy's sockets wait on Nagle's algorithm (no TCP_NODELAY?)"
        );
    }
}
