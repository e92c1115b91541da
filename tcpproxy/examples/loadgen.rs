//! Load generator for `ci/bench`: an echo server, round-trip latency, connection rate, and a
//! crowd of idle pairs, all on 127.0.0.1. Every mode stops by itself (a time or count bound), so
//! a benchmark that loses track of it leaves nothing running for long.
//!
//! ```text
//! loadgen echo --port P [--once BYTES] [--exit-after SECS]
//! loadgen rtt  --port P --size BYTES --secs S        # prints: p50_us=.. p99_us=.. n=..
//! loadgen cps  --port P --secs S [--threads N]       # against `echo --once 16`; prints cps=.. ok=.. errors=..
//! loadgen idle --port P --pairs N [--hold-secs S]    # prints: ready N, then holds them
//! ```
//!
//! The clients use blocking sockets on plain threads: the least machinery between the clock and
//! the socket, so the figures measure the path through the proxy, not this program.

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Round trips run before timing starts (connection set-up, caches, the proxy's pool).
const WARMUP: usize = 500;
/// The most round trips recorded in one run, so a very fast path cannot grow the sample without
/// bound.
const MAX_SAMPLES: usize = 2_000_000;
/// Bytes each connect-echo-close connection sends and expects back.
const CPS_ECHO: usize = 16;
/// A connect or read that takes longer than this counts as an error, never a hang.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(about = "Load generator for ci/bench (127.0.0.1 only)")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Echo every connection until EOF, then close; exits after --exit-after seconds.
    Echo {
        #[arg(long)]
        port: u16,
        /// Echo only the first BYTES bytes, then close first (for `cps`).
        #[arg(long)]
        once: Option<usize>,
        #[arg(long, default_value_t = 3600)]
        exit_after: u64,
    },
    /// One connection, `size`-byte ping-pongs for `secs`; prints the 50th and 99th percentiles.
    Rtt {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        secs: f64,
    },
    /// `threads` loops of connect, echo 16 bytes, EOF from the server, close, for `secs`;
    /// prints connections per second. The server (`echo --once 16`) closes first, so the
    /// TIME_WAIT states stay on its side and the clients' ephemeral ports are free at once: a
    /// benchmark of several proxies in a row does not run out of them.
    Cps {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Opens `pairs` connections, echoes one byte on each, prints `ready N` and holds them until
    /// killed or until `hold-secs` pass.
    Idle {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        pairs: usize,
        #[arg(long, default_value_t = 120)]
        hold_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().mode {
        Mode::Echo {
            port,
            once,
            exit_after,
        } => echo(port, once, Duration::from_secs(exit_after)),
        Mode::Rtt { port, size, secs } => rtt(port, size, Duration::from_secs_f64(secs)),
        Mode::Cps {
            port,
            secs,
            threads,
        } => cps(port, Duration::from_secs_f64(secs), threads),
        Mode::Idle {
            port,
            pairs,
            hold_secs,
        } => idle(port, pairs, Duration::from_secs(hold_secs)),
    }
}

/// One tokio thread: epoll and no thread hand-offs, so the server adds as little as it can to
/// each round trip and holds thousands of idle connections cheaply.
fn echo(port: u16, once: Option<usize>, exit_after: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((LOCALHOST, port)).await?;
        let serve = async {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                let _ = conn.set_nodelay(true);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    match once {
                        Some(n) => {
                            let mut buf = vec![0; n];
                            if conn.read_exact(&mut buf).await.is_ok() {
                                let _ = conn.write_all(&buf).await;
                            }
                        }
                        None => {
                            let (mut r, mut w) = conn.split();
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                        }
                    }
                });
            }
        };
        // The server never ends on its own otherwise; the bound keeps a lost one from lingering.
        let _ = tokio::time::timeout(exit_after, serve).await;
        Ok(())
    })
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let conn = TcpStream::connect_timeout(&SocketAddr::from((LOCALHOST, port)), IO_TIMEOUT)?;
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

fn ping(conn: &mut TcpStream, out: &[u8], back: &mut [u8]) -> io::Result<()> {
    conn.write_all(out)?;
    conn.read_exact(back)
}

fn rtt(port: u16, size: usize, secs: Duration) -> anyhow::Result<()> {
    let mut conn = connect(port)?;
    let out = vec![0x5a; size];
    let mut back = vec![0; size];
    for _ in 0..WARMUP {
        ping(&mut conn, &out, &mut back)?;
    }
    let mut samples = Vec::with_capacity(1 << 16);
    let end = Instant::now() + secs;
    while samples.len() < MAX_SAMPLES {
        let start = Instant::now();
        ping(&mut conn, &out, &mut back)?;
        let now = Instant::now();
        samples.push(now - start);
        if now >= end {
            break;
        }
    }
    anyhow::ensure!(back == out, "the echo came back altered");
    samples.sort_unstable();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 * p) as usize).min(samples.len() - 1);
        samples[i].as_secs_f64() * 1e6
    };
    println!(
        "p50_us={:.1} p99_us={:.1} n={}",
        pct(0.50),
        pct(0.99),
        samples.len()
    );
    Ok(())
}

fn connect_echo_close(port: u16) -> io::Result<()> {
    let mut conn = connect(port)?;
    let out = [0x63; CPS_ECHO];
    let mut back = [0; CPS_ECHO];
    ping(&mut conn, &out, &mut back)?;
    if back != out {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    // The server closes first; the client closes once it has seen that.
    match conn.read(&mut back)? {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes after the echo",
        )),
    }
}

fn cps(port: u16, secs: Duration, threads: usize) -> anyhow::Result<()> {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (ok, errors, start) = (ok.clone(), errors.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let end = Instant::now() + secs;
                while Instant::now() < end {
                    match connect_echo_close(port) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    for w in workers {
        let _ = w.join();
    }
    let elapsed = began.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "cps={:.0} ok={ok} errors={}",
        ok as f64 / elapsed,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

fn idle(port: u16, pairs: usize, hold: Duration) -> anyhow::Result<()> {
    const OPENERS: usize = 8;
    let deadline = Instant::now() + hold;
    let openers: Vec<_> = (0..OPENERS)
        .map(|k| {
            let n = pairs / OPENERS + usize::from(k < pairs % OPENERS);
            std::thread::spawn(move || -> io::Result<Vec<TcpStream>> {
                let mut held = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut conn = connect(port)?;
                    // One byte each way: the pair is whole, and the proxy has lent and taken
                    // back a buffer for it, as a real pair that has gone quiet would have.
                    ping(&mut conn, &[1], &mut [0])?;
                    held.push(conn);
                }
                Ok(held)
            })
        })
        .collect();
    let mut held = Vec::with_capacity(pairs);
    for o in openers {
        let conns = o
            .join()
            .map_err(|_| anyhow::anyhow!("an opener panicked"))??;
        held.extend(conns);
    }
    println!("ready {}", held.len());
    io::stdout().flush()?;
    // Held until the benchmark, done measuring, ends this process, or until the bound passes.
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    drop(held);
    Ok(())
}
