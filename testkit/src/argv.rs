//! Random argument vectors against a binary (its command-line property test): the tokens every
//! binary's generator draws on, and one vector's run, timed and put in words the same way for
//! each, so a hang, a panic or an unexpected exit reads alike whichever binary it came from.

use std::ffi::OsString;
use std::fmt::Debug;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::process::describe_status;

/// Flags every binary here gives a meaning of its own (help, version) or none (`--` ends the
/// options, `-` is a plain argument): tokens for every generator, besides the binary's own.
pub const SHARED_FLAGS: &[&str] = &["--help", "-h", "--version", "-V", "--", "-"];

/// `values` as arguments, written as `Display` writes them (`-3`, `NaN`, `1e-7`).
pub fn written<S>(values: S) -> impl Strategy<Value = String>
where
    S: Strategy,
    S::Value: ToString,
{
    values.prop_map(|v| v.to_string())
}

/// A number as an argument: small, a port, any `i64`, `u64` or `f64` as written, a decimal with
/// three places, or one of `odd`: the forms a binary's parser is likely to get wrong (`nan`,
/// `1e400`, `0x10`, one past its largest value).
pub fn number(odd: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        written(0u32..=5),
        written(1u32..=65535),
        written(any::<i64>()),
        written(any::<u64>()),
        written(any::<f64>()),
        (0.0f64..100.0).prop_map(|n| format!("{n:.3}")),
        prop::sample::select(odd).prop_map(str::to_string),
    ]
}

/// `--flag=value`, for one of `flags` (those that take a value).
pub fn assignment(
    flags: &'static [&'static str],
    value: impl Strategy<Value = String>,
) -> impl Strategy<Value = OsString> {
    (prop::sample::select(flags), value).prop_map(|(f, v)| OsString::from(format!("{f}={v}")))
}

/// A long flag no binary here knows (or, rarely, one it does).
pub fn unknown_long() -> impl Strategy<Value = OsString> {
    "--[a-z][a-z-]{0,12}".prop_map(OsString::from)
}

/// One to three short flags run together.
pub fn unknown_short() -> impl Strategy<Value = OsString> {
    "-[a-zA-Z]{1,3}".prop_map(OsString::from)
}

/// Up to 8 characters of any kind but NUL, which no argument can hold.
pub fn any_text() -> impl Strategy<Value = OsString> {
    "[^\\x00]{0,8}".prop_map(OsString::from)
}

/// 1 to 7 bytes other than NUL, mostly not UTF-8.
pub fn raw_bytes() -> impl Strategy<Value = OsString> {
    prop::collection::vec(1u8..=255, 1..8).prop_map(OsString::from_vec)
}

/// How one vector's run ended and what it wrote.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Killed by [`run`] at its limit: it was still running then.
    pub killed: bool,
    /// The vector, the exit, the time taken, what the parser said and both streams, in one
    /// line: what a failure message starts from.
    pub context: String,
}

/// Runs `program` with `args` and no `RUST_LOG` (its log would be taken for its messages),
/// killed with SIGKILL if it outlives `limit`; `expected` is what the binary's own parser said
/// of `args`, named in the context.
pub fn run(
    program: &Path,
    args: &[OsString],
    limit: Duration,
    expected: &impl Debug,
) -> Result<Ran, String> {
    let started = Instant::now();
    let out = assert_cmd::Command::new(program)
        .args(args)
        .env_remove("RUST_LOG")
        .timeout(limit)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let context = format!(
        "{args:?}: {} after {:.2}s; parser said {expected:?}; stdout {stdout:?}; stderr {stderr:?}",
        describe_status(out.status),
        took.as_secs_f64()
    );
    Ok(Ran {
        status: out.status,
        stdout,
        stderr,
        // assert_cmd's clock starts a moment before ours, so the time we measure can fall a
        // hair short of the limit.
        killed: out.status.signal() == Some(9) && took >= limit.mul_f64(0.9),
        context,
    })
}
