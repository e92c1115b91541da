//! One copy of what the reference proxy's tests and the conformance harness both need to drive
//! and judge a proxy on Linux loopback, so that each name here means one thing on both sides.

// Every syscall needed has a safe wrapper in nix, socket2 or tokio.
#![forbid(unsafe_code)]

#[cfg(feature = "argv")]
pub mod argv;
pub mod check;
pub mod deadline;
pub mod flood;
pub mod fork_fence;
pub mod group;
pub mod pair;
pub mod pattern;
pub mod peer;
pub mod process;
pub mod procfs;
pub mod property;
pub mod tail;
pub mod test_process;
