//! Keeps a descriptor's close from racing a fork in another thread.
//!
//! A child forked (or cloned by posix_spawn) holds a copy of every descriptor of the process
//! until it execs, when the close-on-exec ones go. A socket closed in one thread while another
//! thread's child sits between fork and exec is therefore not closed yet: a listener goes on
//! completing handshakes for a few milliseconds, and the connections it took are reset when the
//! child execs. A destination that was meant to refuse then answers, and a proxy that dies on a
//! refused connect passes the phase about refusals (docs/reliability.md has the incident).
//!
//! So every spawn of the harness runs under [`forking`], which many threads may hold at once, and
//! a close that must take effect at once runs under [`closing`], which waits until no spawn is
//! under way, and lets none start meanwhile. That narrows the window without closing it: a spawn
//! returns once the child's exec has begun, shortly before the kernel closes its close-on-exec
//! copies (in 1 of 37 runs of the unit test, one of 3000 reserved ports still answered a
//! connect). So a listener that must refuse is also shut down first ([`close_listener`]):
//! shutdown(2) acts on the socket, not on one descriptor of it.

use std::io;
use std::os::fd::AsFd;
use std::sync::{PoisonError, RwLock};

static FENCE: RwLock<()> = RwLock::new(());

/// Runs `spawn`, which forks or spawns a child and returns once that child has exec'd or exited
/// (as `Command::spawn` does), so that no [`closing`] runs while the child holds copies of this
/// process's descriptors.
pub fn forking<T>(spawn: impl FnOnce() -> T) -> T {
    // A panic while holding the fence leaves nothing half-done to protect: go on.
    let _held = FENCE.read().unwrap_or_else(PoisonError::into_inner);
    spawn()
}

/// Runs `close` while no spawn of this process is under way.
pub fn closing<T>(close: impl FnOnce() -> T) -> T {
    let _held = FENCE.write().unwrap_or_else(PoisonError::into_inner);
    close()
}

/// Closes `listener` so that it refuses from now on: shut down first, which acts on the socket
/// and so on any copy a forked child still holds, then closed under [`closing`].
pub fn close_listener<L: AsFd>(listener: L) -> io::Result<()> {
    socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Read)?;
    closing(|| drop(listener));
    Ok(())
}
