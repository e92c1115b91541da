//! The operator's log (`-v`): the line saying the proxy listens, and the close line of each pair,
//! its fields in their documented order, optional fields only when they apply.

use crate::support::{EchoServer, Proxy};

#[tokio::test(flavor = "multi_thread")]
async fn the_listening_line_names_the_bound_address_the_destination_and_the_stall_timeout() {
    let echo = EchoServer::start().await;
    let mut proxy = Proxy::start(echo.port(), &["--stall-timeout", "2.5"]).await;
    let lines = proxy.stderr_lines_with("listening on");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let expected = format!(
        " INFO listening on 127.0.0.1:{} (IPv4), forwarding to 127.0.0.1:{}, stall timeout 2.5s",
        proxy.port(),
        echo.port()
    );
    assert!(
        lines[0].ends_with(&expected),
        "{:?}\nlacks {expected:?}",
        lines[0]
    );
}
