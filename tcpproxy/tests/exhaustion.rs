//! Out of descriptors by exactly one or none: the proxy's count is walked up pair by pair to
//! its limit, so the next client meets one shortage or the other for certain. With one
//! descriptor left, accept(2) takes it and the destination's socket cannot be made: the client
//! is closed and the proxy serves on. With none, accept(2) fails with EMFILE: the proxy pauses
//! accepting without spinning and takes the client once a descriptor frees up.

use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::both_modes;
use crate::support::{Mode, Proxy};
use testkit::deadline::{scaled, with_deadline};
use testkit::pair::{EchoServer, connect, round_trip};
use testkit::procfs;

/// Small enough to walk up to in a few dozen pairs; the two tried differ by one, so one of them
/// leaves the count one short of the limit and the other exactly at it.
const LIMITS: [u32; 2] = [40, 41];
/// Echoed on each pair: small, so it is copied and takes no pipe.
const MSG: usize = 16;

/// Where the walk stopped: the proxy `short` descriptors below its limit, with `pairs` open.
struct Walked {
    proxy: Proxy,
    pairs: Vec<TcpStream>,
    limit: u32,
}

/// The process listening on `port` (the proxy: the test's own listeners are elsewhere).
fn pid_listening_on(port: u16) -> i32 {
    procfs::processes()
        .into_iter()
        .map(|p| p.pid)
        .find(|&pid| procfs::listening_ports(&procfs::socket_inodes_of([pid])).contains(&port))
        .unwrap_or_else(|| panic!("no process listens on 127.0.0.1:{port}"))
}

/// The descriptor numbers `pid` may still open under `limit`. The kernel hands out the lowest
/// free number and refuses one at or above the limit, so a descriptor inherited above it (the
/// build's jobserver pipe, say) takes no room: counting them all would be off.
fn free_below(pid: i32, limit: u32) -> usize {
    let below = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the proxy's /proc/PID/fd")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&fd| fd < limit)
        .count();
    limit as usize - below
}

/// Starts the proxy with each of [`LIMITS`] in turn and opens pairs (each echoing once, so its
/// descriptors are in place) until at most one descriptor is left; returns the first that
/// stops with exactly `short` left.
async fn walk_to(mode: Mode, dest_port: u16, short: usize) -> Walked {
    let mut seen = Vec::new();
    for limit in LIMITS {
        let proxy = Proxy::start_with_nofile(mode, dest_port, limit, &[]).await;
        let pid = pid_listening_on(proxy.port());
        let mut pairs = Vec::new();
        let mut free = free_below(pid, limit);
        while free > 1 {
            let mut client = connect(proxy.port()).await;
            round_trip(&mut client, pairs.len() as u64, MSG).await;
            pairs.push(client);
            free = free_below(pid, limit);
        }
        if free == short {
            return Walked {
                proxy,
                pairs,
                limit,
            };
        }
        seen.push(format!(
            "{free} of {limit} left after {} pairs",
            pairs.len()
        ));
    }
    panic!("no limit left the proxy exactly {short} descriptor(s): {seen:?}")
}

/// Whether `client` was closed (EOF or a reset) within the deadline, rather than served.
async fn closed(client: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let read = with_deadline(
        scaled(10.0),
        "the proxy to close the client it had no descriptor for",
        client.read(&mut byte),
    )
    .await;
    matches!(read, Ok(0)) || read.is_err_and(|e| testkit::peer::is_reset(&e))
}

/// Waits until the closed pair has let go of its descriptors, so the next client finds them.
async fn fds_at_most(pid: i32, limit: u32, free: usize) {
    let what = format!("the proxy to have {free} of its {limit} descriptors free");
    with_deadline(scaled(10.0), what, async {
        while free_below(pid, limit) < free {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

both_modes! {
    /// One descriptor left: accept(2) takes it, socket(2) for the destination fails with
    /// EMFILE, and the client is closed at once; the proxy neither exits nor stops serving.
    async fn a_client_whose_destination_socket_cannot_be_made_is_closed_and_serving_goes_on(mode: Mode) {
        let echo_server = EchoServer::start().await;
        let Walked { mut proxy, mut pairs, limit } = walk_to(mode, echo_server.port(), 1).await;

        let mut turned = connect(proxy.port()).await;
        assert!(
            closed(&mut turned).await,
            "the client accepted into the last of {limit} descriptors was not closed"
        );
        proxy.wait_stderr("reason=connect-fail", scaled(10.0)).await;
        proxy.assert_running();
        assert!(
            proxy.stderr_tail().contains("Too many open files"),
            "the failed connect should name EMFILE:\n{}",
            proxy.stderr_tail()
        );

        // The pairs it had still work, and a new one is served once one of them leaves.
        let mut last = pairs.pop().expect("at least one pair");
        round_trip(&mut last, 1000, MSG).await;
        drop(last);
        fds_at_most(pid_listening_on(proxy.port()), limit, 3).await;
        let mut again = connect(proxy.port()).await;
        round_trip(&mut again, 2000, MSG).await;
        proxy.assert_running();
    }
}

both_modes! {
    /// No descriptor left: accept(2) fails with EMFILE, and the proxy pauses accepting instead
    /// of retrying at once (the client it cannot take keeps the listener readable), then serves
    /// the waiting client once a pair closes.
    async fn accept_out_of_descriptors_pauses_without_spinning_and_serves_the_client_after(mode: Mode) {
        /// Spinning is about time: the proxy is watched this long while the client waits.
        const WATCH: Duration = Duration::from_secs(1);

        let echo_server = EchoServer::start().await;
        let Walked { mut proxy, mut pairs, limit } = walk_to(mode, echo_server.port(), 0).await;

        let mut waiting = connect(proxy.port()).await;
        proxy.wait_stderr("accept: Too many open files", scaled(10.0)).await;
        let (began, cpu) = (Instant::now(), proxy.usage().cpu);
        tokio::time::sleep(WATCH).await;
        let (wall, used) = (began.elapsed(), proxy.usage().cpu - cpu);
        assert!(
            used.as_secs_f64() < 0.5 * wall.as_secs_f64(),
            "out of descriptors ({limit}), the proxy used {:.2}s of CPU in {:.2}s: it spins on EMFILE",
            used.as_secs_f64(),
            wall.as_secs_f64()
        );
        proxy.assert_running();

        drop(pairs.pop().expect("at least one pair"));
        round_trip(&mut waiting, 3000, MSG).await;
        proxy.assert_running();
    }
}
