//! IPv6 destination: the proxy is given `::1` as DEST_HOST and must reach the destination there.
//! A proxy that resolves for IPv4 only (gethostbyname(3), an AF_INET socket, inet_addr) cannot;
//! the lab only ever gives 127.0.0.1, so that is a warning, not a failure (bookingcom/nanotube
//! #65, rinetd #7).

use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use tokio::io::AsyncReadExt as _;
use tokio::task::JoinSet;

use super::context::Ctx;
use super::params::*;
use super::verdict::{Failure, PhaseResult};
use crate::harness::Launch;

/// The proxy started with `::1` as DEST_HOST; the destination server listens on [::1].
pub const LAUNCH: Launch = Launch {
    dest_host: IpAddr::V6(Ipv6Addr::LOCALHOST),
    ..Launch::LAB
};

const HINT: &str = "the proxy resolves DEST_HOST for IPv4 only (gethostbyname, an AF_INET socket, inet_addr/inet_aton), so `::1` and IPv6-only names fail; getaddrinfo with AF_UNSPEC, and a socket of each address's own family, reach both";

/// Said of a proxy that neither connected to [::1] nor closed the client.
const HELD_HINT: &str = "if the proxy reaches 127.0.0.1 in the other phases, it cannot reach `::1` (IPv4-only resolution: gethostbyname, inet_addr/inet_aton) and then leaves the client hanging instead of closing it";

/// Said of a proxy that did not start at all with `::1` as DEST_HOST: the phase fails, since a
/// proxy that exits is no warning, but the cause is likely the same.
pub const START_HINT: &str = "if the proxy starts in the other phases, it cannot take `::1` as DEST_HOST: it resolves for IPv4 only (gethostbyname, inet_addr/inet_aton); getaddrinfo with AF_UNSPEC takes both";

/// Why the phase cannot run here, when listening on `host` failed for want of IPv6 loopback:
/// no ::1 on `lo` (EADDRNOTAVAIL), or no IPv6 in the kernel (EAFNOSUPPORT).
pub fn unavailable(host: IpAddr, e: &io::Error) -> Option<Failure> {
    let absent =
        e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(libc::EAFNOSUPPORT);
    (host.is_ipv6() && absent).then(|| {
        Failure::skipped(format!(
            "needs IPv6 loopback for a destination on [{host}], but this host has none: {e}"
        ))
    })
}

/// One client; the proxy must connect to [::1] for it, and its message must come back. A proxy
/// that closes the client without connecting cannot reach IPv6 addresses: a warning. One that
/// holds the client without connecting, or reaches [::1] and then garbles the echo, fails: that
/// is no resolver's doing, and a proxy that hangs a client whose destination it cannot reach
/// is what the refused destination's phase fails too.
pub async fn destination(ctx: Arc<Ctx>) -> PhaseResult {
    let mut client = ctx.connect(None).await?;
    let at = format!("[::1]:{}", ctx.dest_port);
    // Whichever comes first: the proxy's connection to [::1], or the client closed by a proxy
    // that could not make one (it resolved nothing, or refused its own address family).
    let mut nothing = [0; 1];
    let server = tokio::select! {
        s = ctx.accept() => s.map_err(|f| f.hint(HELD_HINT))?,
        r = client.read(&mut nothing) => {
            let how = match r {
                Ok(0) => "EOF".to_string(),
                Ok(n) => format!("{n} bytes from nowhere"),
                Err(e) => e.to_string(),
            };
            return Err(Failure::warning(format!(
                "expected the proxy to connect to the destination on {at}, but it ended the client's connection ({how}) without connecting"
            ))
            .hint(HINT));
        }
    };
    let mut servers = JoinSet::new();
    servers.spawn(async move {
        let _ = crate::peer::echo(server, crate::peer::Pacing::EAGER).await;
    });
    let msg = ctx.payload(0, IPV6_ECHO);
    super::echo::round_trip(&ctx, &mut client, &msg, &format!("a message to {at}")).await
}
