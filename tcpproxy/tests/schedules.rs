//! Random schedules of writes, pauses, paced reads and shutdowns, both ways through one pair:
//! every byte arrives in order, then EOF.
//!
//! A failing schedule's seed is saved in `schedules.proptest-regressions` beside this file (commit
//! it) and replayed first on every run. `PROPTEST_CASES=500` runs more cases.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support::{Mode, Proxy};
use testkit::check::check_bytes;
use testkit::deadline::{scaled, with_deadline};
use testkit::pair::{Dest, Pair};
use testkit::pattern::pattern;
use testkit::peer::{Pacing, read_to_end};

/// Cases per run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 16;
/// Shrinking replays cases over real sockets; past this it reports the smallest found so far.
const MAX_SHRINK_MS: u32 = 20_000;

/// One write: a pause, then `len` bytes.
#[derive(Debug, Clone)]
struct Write {
    pause_ms: u64,
    len: usize,
}

/// One read: a pause, then at most `chunk` bytes. A side's reads cycle until EOF.
#[derive(Debug, Clone)]
struct Read {
    pause_ms: u64,
    chunk: usize,
}

#[derive(Debug, Clone)]
struct Side {
    writes: Vec<Write>,
    reads: Vec<Read>,
}

/// Who shuts down first. A side that waits writes its first `writes_before` writes, waits for
/// the other side's EOF, then writes the rest over the half-closed pair.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Each side shuts down after its last write, whenever that comes.
    Both,
    ClientFirst {
        server_writes_before: usize,
    },
    ServerFirst {
        client_writes_before: usize,
    },
}

#[derive(Debug, Clone)]
struct Schedule {
    /// The tight setup: a 1021-byte proxy buffer and small receive buffers on both ends, so the
    /// proxy's writes come back short; otherwise every default.
    tight: bool,
    /// Splicing or copying: the schedule must come out the same.
    mode: Mode,
    client: Side,
    server: Side,
    ending: Ending,
    seed: u64,
}

fn write() -> impl Strategy<Value = Write> {
    let len = prop_oneof![
        1usize..=64,
        65usize..=4096,
        4097usize..=65536,
        65537usize..=262_144
    ];
    (0u64..=50, len).prop_map(|(pause_ms, len)| Write { pause_ms, len })
}

/// Tiny reads never pause and big ones rarely do, so a case stays well under a second.
fn read() -> impl Strategy<Value = Read> {
    prop_oneof![
        (1usize..=64).prop_map(|chunk| Read { pause_ms: 0, chunk }),
        (
            4096usize..=65536,
            prop_oneof![3 => Just(0u64), 1 => 1u64..=3]
        )
            .prop_map(|(chunk, pause_ms)| Read { pause_ms, chunk }),
    ]
}

fn side() -> impl Strategy<Value = Side> {
    (
        prop::collection::vec(write(), 0..=5),
        prop::collection::vec(read(), 1..=4),
    )
        .prop_map(|(writes, reads)| Side { writes, reads })
}

fn schedule() -> impl Strategy<Value = Schedule> {
    let ending = prop_oneof![
        Just(Ending::Both),
        (0usize..=5).prop_map(|k| Ending::ClientFirst {
            server_writes_before: k
        }),
        (0usize..=5).prop_map(|k| Ending::ServerFirst {
            client_writes_before: k
        }),
    ];
    let mode = prop_oneof![Just(Mode::Splice), Just(Mode::Copy)];
    (any::<bool>(), mode, side(), side(), ending, any::<u64>()).prop_map(
        |(tight, mode, client, server, ending, seed)| Schedule {
            tight,
            mode,
            client,
            server,
            ending,
            seed,
        },
    )
}

/// A proxy and its destination, shared by every case of one setup.
struct Setup {
    dest: Dest,
    proxy: Proxy,
    client_rcvbuf: Option<u32>,
}

impl Setup {
    async fn plain(mode: Mode) -> Setup {
        let dest = Dest::bind().await;
        let proxy = Proxy::start_in(mode, dest.port(), &[]).await;
        Setup {
            dest,
            proxy,
            client_rcvbuf: None,
        }
    }

    async fn tight(mode: Mode) -> Setup {
        const RCVBUF: u32 = 16 * 1024;
        let dest = Dest::bind_with_rcvbuf(RCVBUF).await;
        let proxy = Proxy::start_in(mode, dest.port(), &["--buffer-size", "1021"]).await;
        Setup {
            dest,
            proxy,
            client_rcvbuf: Some(RCVBUF),
        }
    }

    async fn open(&self) -> Pair {
        match self.client_rcvbuf {
            Some(bytes) => {
                Pair::open_with_client_rcvbuf(self.proxy.port(), &self.dest, bytes).await
            }
            None => Pair::open(self.proxy.port(), &self.dest).await,
        }
    }
}

/// Runs one side: its reads until EOF, and beside them its writes, then its shutdown (after the
/// other side's EOF when `wait_after` says so). Returns what it read.
async fn run_side(
    name: &str,
    conn: TcpStream,
    side: &Side,
    sent: &[u8],
    wait_after: Option<usize>,
) -> Result<Vec<u8>, String> {
    let (mut r, mut w) = conn.into_split();
    let (peer_eof, mut seen_eof) = oneshot::channel::<()>();
    let pacing: Vec<Pacing> = side
        .reads
        .iter()
        .map(|r| Pacing {
            chunk: r.chunk,
            pause: Duration::from_millis(r.pause_ms),
        })
        .collect();
    let reading = async {
        let (got, end) = read_to_end(&mut r, &pacing, usize::MAX).await;
        let _ = peer_eof.send(());
        end.map(|()| got)
            .map_err(|e| format!("{name} read failed: {e}"))
    };
    let writing = async {
        let mut at = 0;
        for (i, write) in side.writes.iter().enumerate() {
            if wait_after == Some(i) {
                let _ = (&mut seen_eof).await;
            }
            tokio::time::sleep(Duration::from_millis(write.pause_ms)).await;
            w.write_all(&sent[at..at + write.len])
                .await
                .map_err(|e| format!("{name} write #{i} at offset {at} failed: {e}"))?;
            at += write.len;
        }
        if wait_after == Some(side.writes.len()) {
            let _ = seen_eof.await;
        }
        w.shutdown()
            .await
            .map_err(|e| format!("{name} shutdown failed: {e}"))
    };
    let (got, wrote) = tokio::join!(reading, writing);
    wrote?;
    got
}

async fn run_case(setup: &Setup, s: &Schedule) -> Result<(), String> {
    let total = |side: &Side| side.writes.iter().map(|w| w.len).sum::<usize>();
    let up = pattern(s.seed, 0, total(&s.client));
    let down = pattern(!s.seed, 0, total(&s.server));
    let (client_wait, server_wait) = match s.ending {
        Ending::Both => (None, None),
        Ending::ClientFirst {
            server_writes_before: k,
        } => (None, Some(k.min(s.server.writes.len()))),
        Ending::ServerFirst {
            client_writes_before: k,
        } => (Some(k.min(s.client.writes.len())), None),
    };
    let pair = setup.open().await;
    let (client_got, server_got) = with_deadline(scaled(30.0), "a schedule to finish", async {
        tokio::join!(
            run_side("client", pair.client, &s.client, &up, client_wait),
            run_side("server", pair.server, &s.server, &down, server_wait),
        )
    })
    .await;
    check_bytes("client->server", &up, &server_got?)?;
    check_bytes("server->client", &down, &client_got?)
}

#[test]
fn random_schedules_deliver_every_byte_in_order_then_eof() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (plain_splice, tight_splice, plain_copy, tight_copy) = rt.block_on(async {
        tokio::join!(
            Setup::plain(Mode::Splice),
            Setup::tight(Mode::Splice),
            Setup::plain(Mode::Copy),
            Setup::tight(Mode::Copy),
        )
    });
    let config = testkit::property::config(CASES, MAX_SHRINK_MS, file!());
    let mut runner = TestRunner::new(config);
    let result = runner.run(&schedule(), |s| {
        let setup = match (s.tight, s.mode) {
            (false, Mode::Splice) => &plain_splice,
            (true, Mode::Splice) => &tight_splice,
            (false, Mode::Copy) => &plain_copy,
            (true, Mode::Copy) => &tight_copy,
        };
        rt.block_on(run_case(setup, &s))
            .map_err(TestCaseError::fail)
    });
    testkit::property::assert_held(
        result,
        "schedule",
        file!(),
        "cargo test -p tcpproxy --test integration schedules",
    );
}
