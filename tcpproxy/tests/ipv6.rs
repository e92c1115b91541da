//! An IPv6 destination: DEST_HOST `::1` is resolved as an IPv6 address and connected to over
//! IPv6, as bookingcom/nanotube #65 and rinetd #7 asked of proxies that resolved IPv4 only.

use std::io;
use std::net::{Ipv6Addr, SocketAddr};

use tokio::io::AsyncWriteExt as _;

use crate::both_modes;
use crate::support::Proxy;
use testkit::deadline::{scaled, with_deadline};
use testkit::pair::{assert_eof, connect, round_trip};
use testkit::peer::{Pacing, echo, listen_at};

/// ::1 is missing (EADDRNOTAVAIL), or IPv6 is not in the kernel at all (EAFNOSUPPORT).
fn no_ipv6_loopback(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT)
}

both_modes! {
    async fn a_destination_given_as_ipv6_loopback_is_reached_over_ipv6(mode: Mode) {
        let at = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
        let listener = match listen_at(at, None) {
            Ok(l) => l,
            // A host (or network namespace) without ::1 cannot run this test at all.
            Err(e) if no_ipv6_loopback(&e) => {
                eprintln!("skipped: this host has no ::1 to listen on: {e}");
                return;
            }
            Err(e) => panic!("listen on [::1]:0: {e}"),
        };
        let port = listener.local_addr().expect("local_addr").port();
        let proxy = Proxy::start_to(mode, Ipv6Addr::LOCALHOST.into(), port, &[]).await;

        let mut client = connect(proxy.port()).await;
        let what = format!("the proxy to connect to the destination on [::1]:{port}");
        let (server, from) = with_deadline(scaled(5.0), &what, listener.accept())
            .await
            .unwrap_or_else(|e| panic!("{what}: accept failed: {e}"));
        assert_eq!(from.ip(), Ipv6Addr::LOCALHOST, "the proxy's destination socket");
        tokio::spawn(echo(server, Pacing::EAGER));
        round_trip(&mut client, 6, 4096).await;
        client
            .shutdown()
            .await
            .expect("shutdown the client's write half");
        assert_eof(&mut client, "EOF after the echo through [::1]").await;
    }
}
