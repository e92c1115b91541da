//! The command line: usage and start-up errors, help and version, forwarding, signals.

use std::net::Ipv4Addr;
use std::time::Duration;

use assert_cmd::Command;
use tcpproxy::EXIT_DRAIN_CUT;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{LONG_OPTIONS, Proxy};
use testkit::deadline::{scaled, with_deadline};
use testkit::pair::{Dest, EchoServer, Pair, assert_eof, connect, round_trip};
use testkit::peer::{Pacing, free_port, read_to_end};
use testkit::process::describe_status;

fn tcpproxy() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("tcpproxy"));
    // The binary must end on its own; a run that would not is cut and fails the test.
    cmd.env_remove("RUST_LOG").timeout(scaled(20.0));
    cmd
}

/// Runs `tcpproxy args` and asserts: exit `code`, nothing on stdout, exactly one stderr line,
/// prefixed `tcpproxy: `, containing every one of `needles`.
#[track_caller]
fn assert_one_line_error(args: &[&str], code: i32, needles: &[&str]) {
    let out = tcpproxy().args(args).output().expect("run tcpproxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "`tcpproxy {}`: {}; stdout {:?}; stderr {:?}",
        args.join(" "),
        describe_status(out.status),
        String::from_utf8_lossy(&out.stdout),
        stderr
    );
    assert_eq!(out.status.code(), Some(code), "{context}");
    assert!(out.stdout.is_empty(), "stdout should be empty: {context}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {context}");
    assert!(lines[0].starts_with("tcpproxy: "), "{context}");
    for needle in needles {
        assert!(lines[0].contains(needle), "expected {needle:?}: {context}");
    }
}

#[test]
fn bad_ports_exit_2_naming_the_argument() {
    for (args, name) in [
        (["127.0.0.1", "80", "0"], "LISTEN_PORT"),
        (["127.0.0.1", "80", "65536"], "LISTEN_PORT"),
        (["127.0.0.1", "80", "eighty"], "LISTEN_PORT"),
        (["127.0.0.1", "80", "-1"], "LISTEN_PORT"),
        (["127.0.0.1", "0", "8080"], "DEST_PORT"),
        (["127.0.0.1", "65536", "8080"], "DEST_PORT"),
        (["127.0.0.1", "http", "8080"], "DEST_PORT"),
    ] {
        assert_one_line_error(&args, 2, &[name]);
    }
}

#[test]
fn missing_arguments_exit_2_naming_them() {
    assert_one_line_error(&[], 2, &["DEST_HOST", "DEST_PORT", "LISTEN_PORT"]);
    assert_one_line_error(&["127.0.0.1"], 2, &["DEST_PORT", "LISTEN_PORT"]);
    assert_one_line_error(&["127.0.0.1", "80"], 2, &["LISTEN_PORT"]);
}

#[test]
fn unknown_flag_and_extra_argument_exit_2_naming_them() {
    assert_one_line_error(
        &["127.0.0.1", "80", "8080", "--frobnicate"],
        2,
        &["--frobnicate"],
    );
    assert_one_line_error(&["127.0.0.1", "80", "8080", "9090"], 2, &["9090"]);
}

#[test]
fn bad_option_values_exit_2_naming_the_option() {
    for (flag, value) in [
        ("--stall-timeout", "0"),
        ("--stall-timeout", "-1"),
        ("--stall-timeout", "soon"),
        ("--stall-timeout", "nan"),
        ("--stall-timeout", "inf"),
        ("--connect-timeout", "0"),
        ("--connect-timeout", "-0.5"),
        ("--drain-timeout", "x"),
        ("--drain-timeout", "-2"),
        ("--buffer-size", "0"),
        ("--buffer-size", "-5"),
        ("--max-connections", "0"),
        ("--max-connections", "-1"),
        ("--bind", "not-an-ip"),
    ] {
        assert_one_line_error(&["127.0.0.1", "80", "8080", flag, value], 2, &[flag]);
    }
    assert_one_line_error(
        &["127.0.0.1", "80", "8080", "--stall-timeout"],
        2,
        &["--stall-timeout"],
    );
}

#[test]
fn help_exits_0_and_names_every_argument() {
    for flag in ["--help", "-h"] {
        let out = tcpproxy().arg(flag).output().expect("run tcpproxy");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`tcpproxy {flag}`: {}",
            describe_status(out.status)
        );
        assert!(out.stderr.is_empty(), "`tcpproxy {flag}` wrote to stderr");
        let positionals = ["Usage:", "DEST_HOST", "DEST_PORT", "LISTEN_PORT"];
        for name in positionals.iter().chain(LONG_OPTIONS) {
            assert!(
                stdout.contains(name),
                "`tcpproxy {flag}` lacks {name:?}:\n{stdout}"
            );
        }
    }
}

#[test]
fn help_gives_every_exit_status_and_the_log_lines() {
    let statuses = [
        (0, "once every open pair had closed"),
        (tcpproxy::EXIT_START, "cannot start"),
        (tcpproxy::EXIT_USAGE, "usage error"),
        (EXIT_DRAIN_CUT, "drain was cut short"),
    ];
    for flag in ["--help", "-h"] {
        let out = tcpproxy().arg(flag).output().expect("run tcpproxy");
        let stdout = String::from_utf8_lossy(&out.stdout);
        for (code, meaning) in statuses {
            let line = format!("\n  {code}  ");
            let at = stdout
                .find(&line)
                .unwrap_or_else(|| panic!("`tcpproxy {flag}` lacks exit status {code}:\n{stdout}"));
            assert!(
                stdout[at..]
                    .lines()
                    .nth(1)
                    .is_some_and(|l| l.contains(meaning)),
                "`tcpproxy {flag}`: exit status {code} is not {meaning:?}:\n{stdout}"
            );
        }
    }
    let out = tcpproxy().arg("--help").output().expect("run tcpproxy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "listening on",
        "pair closed frontend=",
        "active=",
        "read_error=",
    ] {
        assert!(
            stdout.contains(needle),
            "--help lacks {needle:?}:\n{stdout}"
        );
    }
    for reason in tcpproxy::pair::Reason::ALL {
        assert!(
            stdout.contains(&format!("\n  {reason} ")),
            "--help lacks the reason {reason}:\n{stdout}"
        );
    }
}

#[test]
fn version_prints_name_and_version() {
    tcpproxy()
        .arg("--version")
        .assert()
        .success()
        .stdout(format!("tcpproxy {}\n", env!("CARGO_PKG_VERSION")))
        .stderr("");
}

#[test]
fn unresolvable_host_exits_1_with_one_line() {
    let port = free_port().expect("a free port on 127.0.0.1").to_string();
    assert_one_line_error(
        &["nosuch.invalid", "80", &port, "--bind", "127.0.0.1"],
        1,
        &["nosuch.invalid"],
    );
}

#[test]
fn listen_port_in_use_exits_1_with_one_line() {
    let holder = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    let port = holder.local_addr().expect("local_addr").port().to_string();
    assert_one_line_error(
        &["127.0.0.1", "9", &port, "--bind", "127.0.0.1"],
        1,
        &[&port, "in use"],
    );
    // The listening line comes only once the port is bound: a failed bind prints none.
    assert_one_line_error(
        &["127.0.0.1", "9", &port, "--bind", "127.0.0.1", "-v"],
        1,
        &[&port, "in use"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_bytes_both_ways_through_the_binary() {
    let echo = EchoServer::start().await;
    let proxy = Proxy::start(echo.port(), &[]).await;
    let mut client = connect(proxy.port()).await;
    round_trip(&mut client, 1, 1 << 20).await;
    round_trip(&mut client, 2, 1).await;
    client.shutdown().await.expect("shutdown");
    assert_eof(&mut client, "EOF after the client's half-close").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sigint_with_nothing_open_exit_0_promptly() {
    let echo = EchoServer::start().await;
    let exit = |signal: &'static str| {
        let port = echo.port();
        async move {
            // The default drain timeout is 30 s: exiting well within it means nothing was waited on.
            let mut proxy = Proxy::start(port, &[]).await;
            // A pair served and closed first: one that has ended is not open, nor cut.
            let mut client = connect(proxy.port()).await;
            round_trip(&mut client, 6, 100).await;
            client.shutdown().await.expect("shutdown");
            assert_eof(&mut client, "EOF before the signal").await;
            proxy.signal(signal);
            let status = proxy.wait_exit(scaled(3.0)).await;
            assert!(
                status.success(),
                "after SIG{signal}: {}",
                describe_status(status)
            );
            assert_eq!(proxy.stderr_lines_with("all pairs closed").len(), 1);
            assert!(proxy.stderr_lines_with("drain-cut").is_empty());
            assert!(proxy.stderr_lines_with("tcpproxy: ").is_empty());
        }
    };
    tokio::join!(exit("TERM"), exit("INT"));
}

/// Reads to the end and asserts the connection was reset, not closed cleanly.
async fn assert_reset(conn: &mut TcpStream, what: &str) {
    let (_, end) = with_deadline(
        scaled(5.0),
        what,
        read_to_end(conn, &[Pacing::EAGER], usize::MAX),
    )
    .await;
    match end {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a reset, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_resets_the_pairs_still_open_at_the_drain_timeout_logs_them_and_exits_3() {
    const DRAIN: Duration = Duration::from_secs(1);
    const PAIRS: usize = 2;
    let dest = Dest::bind().await;
    let mut proxy = Proxy::start(dest.port(), &["--drain-timeout", "1"]).await;
    let mut pairs = Vec::new();
    for _ in 0..PAIRS {
        pairs.push(Pair::open(proxy.port(), &dest).await);
    }

    let signalled = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(DRAIN + scaled(10.0)).await;
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(i32::from(EXIT_DRAIN_CUT)),
        "after SIGTERM with pairs open past the drain timeout: {}",
        describe_status(status)
    );
    // The pairs are idle and never end by themselves: only the drain timeout lets the proxy go.
    assert!(
        took >= DRAIN - Duration::from_millis(100),
        "exited {took:?} after SIGTERM, before the {DRAIN:?} drain timeout, with pairs open"
    );
    for (i, Pair { client, server }) in pairs.iter_mut().enumerate() {
        assert_reset(client, &format!("pair {i}'s client after the cut")).await;
        assert_reset(server, &format!("pair {i}'s server after the cut")).await;
    }
    let cut = proxy.stderr_lines_with("reason=drain-cut");
    assert_eq!(cut.len(), PAIRS, "a close line per cut pair: {cut:#?}");
    let summary = proxy.stderr_lines_with("tcpproxy: ");
    assert_eq!(
        summary,
        [format!(
            "tcpproxy: drain timeout (1.0s): reset {PAIRS} pairs still open"
        )]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_resets_the_open_pairs_at_once_and_exits_3() {
    let dest = Dest::bind().await;
    let mut proxy = Proxy::start(dest.port(), &["--drain-timeout", "600"]).await;
    let Pair {
        mut client,
        mut server,
    } = Pair::open(proxy.port(), &dest).await;

    proxy.signal("TERM");
    // The event: the first signal was taken and the drain began.
    proxy
        .wait_stderr("stopping: no new clients", scaled(5.0))
        .await;
    proxy.signal("INT");
    let status = proxy.wait_exit(scaled(10.0)).await;
    assert_eq!(
        status.code(),
        Some(i32::from(EXIT_DRAIN_CUT)),
        "after a second signal with a pair open: {}",
        describe_status(status)
    );
    assert_reset(&mut client, "the client after the second signal").await;
    assert_reset(&mut server, "the server after the second signal").await;
    assert_eq!(proxy.stderr_lines_with("reason=drain-cut").len(), 1);
    assert_eq!(
        proxy.stderr_lines_with("tcpproxy: "),
        ["tcpproxy: second signal: reset 1 pair still open"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_keeps_open_pairs_working_and_exits_when_the_last_closes() {
    let echo = EchoServer::start().await;
    let mut proxy = Proxy::start(echo.port(), &["--drain-timeout", "60"]).await;
    let mut client = connect(proxy.port()).await;
    round_trip(&mut client, 4, 1000).await;

    proxy.signal("TERM");
    // The proxy logs that it stops once it has closed its listener: connections are refused.
    proxy
        .wait_stderr("stopping: no new clients", scaled(5.0))
        .await;
    let refused = with_deadline(
        scaled(5.0),
        "a connection after SIGTERM",
        TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port())),
    )
    .await;
    assert!(refused.is_err(), "the listener accepted after SIGTERM");
    proxy.assert_running();
    round_trip(&mut client, 5, 64 * 1024).await;

    client.shutdown().await.expect("shutdown");
    let status = proxy.wait_exit(scaled(5.0)).await;
    assert!(
        status.success(),
        "after SIGTERM: {}",
        describe_status(status)
    );
    assert!(proxy.stderr_lines_with("drain-cut").is_empty());
}
