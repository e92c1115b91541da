//! The operator's log (`-v`): the line saying the proxy listens, and the close line of each pair,
//! its fields in their documented order, optional fields only when they apply.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::Proxy;
use testkit::deadline::{scaled, with_deadline};
use testkit::pair::{Dest, EchoServer, Pair, assert_eof, connect, round_trip};
use testkit::peer::{free_port, reset};

/// The fields of every close line, in order.
const FIELDS: [&str; 9] = [
    "frontend",
    "client",
    "dest",
    "reason",
    "connect_ms",
    "total_ms",
    "up",
    "down",
    "active",
];

/// A close line's fields in order, quoted values unquoted.
struct Fields(Vec<(String, String)>);

impl Fields {
    #[track_caller]
    fn parse(line: &str) -> Fields {
        let (_, rest) = line
            .split_once("pair closed ")
            .unwrap_or_else(|| panic!("not a close line: {line}"));
        let mut fields = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.next_if_eq(&' ').is_some() {}
            if chars.peek().is_none() {
                return Fields(fields);
            }
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            let mut value = String::new();
            if chars.next_if_eq(&'"').is_some() {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|&c| c != ' ') {
                    value.push(c);
                }
            }
            fields.push((key, value));
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[track_caller]
    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.0))
    }

    #[track_caller]
    fn number(&self, key: &str) -> f64 {
        let v = self.get(key);
        v.parse()
            .unwrap_or_else(|e| panic!("{key}={v} is not a number: {e}"))
    }
}

/// Waits for the proxy's only close line and parses it.
async fn the_close_line(proxy: &mut Proxy) -> (String, Fields) {
    proxy.wait_stderr("pair closed", scaled(5.0)).await;
    let lines = proxy.stderr_lines_with("pair closed");
    assert_eq!(lines.len(), 1, "one pair, one close line: {lines:#?}");
    let fields = Fields::parse(&lines[0]);
    (lines[0].clone(), fields)
}

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

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_close_logs_every_field_in_order_and_no_read_error() {
    const LEN: usize = 1000;
    let echo = EchoServer::start().await;
    let mut proxy = Proxy::start(echo.port(), &[]).await;
    let mut client = connect(proxy.port()).await;
    let client_addr = client.local_addr().expect("local_addr");
    round_trip(&mut client, 11, LEN).await;
    client.shutdown().await.expect("shutdown");
    assert_eof(&mut client, "EOF after the client's half-close").await;

    let (line, f) = the_close_line(&mut proxy).await;
    assert_eq!(f.keys(), FIELDS, "{line}");
    assert!(!line.contains("None"), "{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert_eq!(f.get("frontend"), format!("127.0.0.1:{}", proxy.port()));
    assert_eq!(f.get("client"), client_addr.to_string());
    assert_eq!(f.get("dest"), format!("127.0.0.1:{}", echo.port()));
    assert_eq!(f.get("reason"), "eof");
    let (connect_ms, total_ms) = (f.number("connect_ms"), f.number("total_ms"));
    assert!(
        (0.0..=total_ms).contains(&connect_ms),
        "connect_ms={connect_ms} total_ms={total_ms}"
    );
    assert_eq!(f.number("up"), LEN as f64);
    assert_eq!(f.number("down"), LEN as f64);
    assert_eq!(f.get("active"), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_read_is_the_reason_and_is_named_with_its_side() {
    let dest = Dest::bind().await;
    let mut proxy = Proxy::start(dest.port(), &[]).await;
    let Pair {
        mut client,
        mut server,
    } = Pair::open(proxy.port(), &dest).await;
    client.shutdown().await.expect("shutdown");
    // The client's EOF reached the destination: the client->server direction is over.
    let mut rest = Vec::new();
    with_deadline(
        scaled(5.0),
        "the client's EOF at the destination",
        server.read_to_end(&mut rest),
    )
    .await
    .expect("read to EOF at the destination");
    assert!(rest.is_empty(), "{} stray bytes", rest.len());
    // The proxy's read from the destination fails with a reset, which it passes on as one.
    reset(server);
    let mut rest = [0; 1];
    let what = "the destination's reset at the client";
    let end = with_deadline(scaled(5.0), what, client.read(&mut rest)).await;
    assert!(
        matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{what}: {end:?}"
    );

    let (line, f) = the_close_line(&mut proxy).await;
    let mut keys = FIELDS.to_vec();
    keys.push("read_error");
    assert_eq!(f.keys(), keys, "{line}");
    assert_eq!(f.get("reason"), "read-error");
    let read_error = f.get("read_error");
    assert!(
        read_error.starts_with("server: ") && read_error.contains("reset"),
        "{line}"
    );
    // The 8-byte tag went up; nothing came down.
    assert_eq!((f.number("up"), f.number("down")), (8.0, 0.0), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_destination_is_logged_without_a_connect_time() {
    // Nothing listens there: the port was free a moment ago, and a race that lost it to another
    // listener would show as a reason other than connect-fail.
    let dest_port = free_port().expect("a free port on 127.0.0.1");
    let mut proxy = Proxy::start(dest_port, &[]).await;
    let mut client = connect(proxy.port()).await;
    let (got, _) = with_deadline(scaled(15.0), "the unserved client to be closed", async {
        let mut got = Vec::new();
        let end = client.read_to_end(&mut got).await;
        (got, end)
    })
    .await;
    assert!(got.is_empty(), "{} bytes from nowhere", got.len());

    let (line, f) = the_close_line(&mut proxy).await;
    let mut keys = FIELDS.to_vec();
    keys.push("error");
    assert_eq!(f.keys(), keys, "{line}");
    assert!(line.contains(" ERROR "), "{line}");
    assert_eq!(f.get("reason"), "connect-fail");
    assert_eq!(f.get("dest"), format!("127.0.0.1:{dest_port}"));
    assert_eq!(f.get("connect_ms"), "-1");
    assert!(f.get("error").contains("refused"), "{line}");
    assert_eq!((f.get("up"), f.get("down")), ("0", "0"));
}

/// README's example close line has the fields a real one has, in order, and README names every
/// reason word the log uses.
#[test]
fn readme_shows_the_close_line_and_reasons_the_proxy_logs() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let example = readme
        .lines()
        .find(|l| l.starts_with("pair closed "))
        .expect("README shows a close line");
    assert_eq!(Fields::parse(example).keys(), FIELDS, "{example}");
    for reason in tcpproxy::pair::Reason::ALL {
        assert!(
            readme.contains(&format!("`{}`", reason.as_str())),
            "README does not name the reason {:?}",
            reason.as_str()
        );
    }
}
