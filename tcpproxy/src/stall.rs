//! The stall timer: when a direction holds bytes and the destination takes none of them for the
//! stall timeout, the pair is aborted.
//!
//! "Takes none" cannot be judged by our own writes alone. Linux reports a TCP socket writable
//! only once a third of its send buffer is free, and an autotuned send buffer is megabytes: a
//! destination that reads 32 KiB every 250 ms drains it steadily, yet the socket stays unwritable
//! for longer than 10 s and a timer reset only by writes aborts a pair that is making progress.
//! So while stalled the timer also samples the socket's send queue (`SIOCOUTQ`, bytes not yet
//! acknowledged): we write nothing meanwhile, so a shorter queue means the peer took bytes.

use std::future::Future as _;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::hooks::StallReset;

/// How often a stalled direction samples its send queue: a tenth of the timeout, so an abort
/// comes at most that much after the stall timeout has passed since the last progress.
fn sample_every(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// One direction's stall timer. Idle or flowing, it holds no timer and costs nothing per byte.
#[derive(Debug)]
pub struct Stall {
    timeout: Duration,
    /// With [`StallReset::OnProgress`], the destination acknowledging bytes already in the
    /// kernel's send queue counts as progress too; with [`StallReset::OnEmpty`] (a naive proxy's
    /// timer) nothing but the relay's [`Stall::reset`] does.
    reset: StallReset,
    /// When the bytes now held last saw progress; `None` while they move or none are held.
    since: Option<Instant>,
    /// The destination's send queue at the last sample, while stalled.
    queued: Option<u64>,
    /// When the send queue is next read, while stalled: a wake-up of the pair for the other
    /// direction's sake does not cost this one a system call.
    next_sample: Option<Instant>,
    /// Made on the first stall and reused, so an idle or flowing pair never allocates one.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    pub fn new(timeout: Duration, reset: StallReset) -> Stall {
        Stall {
            timeout,
            reset,
            since: None,
            queued: None,
            next_sample: None,
            timer: None,
        }
    }

    /// A write moved at least one byte, or nothing is held any more.
    pub fn reset(&mut self) {
        self.since = None;
        self.queued = None;
        self.next_sample = None;
    }

    /// Bytes are held and nothing moved this round. Ready with how long nothing moved once that
    /// reaches the timeout; otherwise the timer is armed to wake `cx`.
    pub fn poll_stalled(&mut self, cx: &mut Context<'_>, dst: &impl AsFd) -> Poll<Duration> {
        let now = Instant::now();
        let mut since = *self.since.get_or_insert(now);
        if self.reset == StallReset::OnProgress && self.next_sample.is_none_or(|t| now >= t) {
            let queued = send_queue(dst);
            if let (Some(before), Some(q)) = (self.queued, queued) {
                if q < before {
                    since = now;
                    self.since = Some(now);
                }
            }
            self.queued = queued.or(self.queued);
            // Without a reading (not Linux, or the call failed) only writes count.
            self.next_sample = self.queued.map(|_| now + sample_every(self.timeout));
        }
        if now >= since + self.timeout {
            return Poll::Ready(now - since);
        }
        let deadline = self
            .next_sample
            .map_or(since + self.timeout, |t| t.min(since + self.timeout));
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            // A sample is due (or the deadline passed): look again.
            Poll::Ready(()) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Bytes in `sock`'s send queue not yet acknowledged by the peer, where the OS can say.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn send_queue(sock: &impl AsFd) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    let mut queued: nix::libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int through the pointer, which points at a live c_int; the
    // descriptor is borrowed for the call, so it stays open.
    let r = unsafe {
        nix::libc::ioctl(
            sock.as_fd().as_raw_fd(),
            nix::libc::TIOCOUTQ,
            &mut queued as *mut nix::libc::c_int,
        )
    };
    (r == 0).then_some(u64::try_from(queued).unwrap_or(0))
}

#[cfg(not(target_os = "linux"))]
fn send_queue(_sock: &impl AsFd) -> Option<u64> {
    None
}
