//! The bundled reference proxy as a program to run: this same executable with a hidden first
//! argument, so `cargo run -p tcpproxy-test` needs nothing else built.

use std::ffi::OsString;
use std::time::Duration;

use crate::harness::ProxyCommand;

/// The hidden first argument that makes this executable run the bundled reference proxy.
pub const REFERENCE_SUBCOMMAND: &str = "__reference-proxy";

/// The reference proxy, started with `stall` as its stall timeout.
pub fn command(stall: Duration) -> Result<ProxyCommand, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable to run the reference proxy: {e}"))?;
    Ok(ProxyCommand {
        program: exe,
        args: vec![
            REFERENCE_SUBCOMMAND.into(),
            "--stall-timeout".into(),
            seconds(stall).into(),
        ],
    })
}

/// `d` in seconds, exact to the nanosecond and no longer than it needs (`2`, `0.25`, `1.118`):
/// the stall timeout as the user typed it, where an f64's shortest form may add digits
/// (`1.1179999999999999`).
fn seconds(d: Duration) -> String {
    let text = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The reference proxy's own arguments when `args` (this program's, `args[0]` its name) ask
/// for it, as the proxy's command line wants them (its name first); None otherwise.
pub fn proxy_args(args: &[OsString]) -> Option<Vec<OsString>> {
    (args.get(1)? == REFERENCE_SUBCOMMAND).then(|| {
        std::iter::once(OsString::from("tcpproxy"))
            .chain(args[2..].iter().cloned())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_timeout_is_written_as_typed() {
        for typed in ["2", "120", "0.25", "1.118", "0.000000001"] {
            let d = Duration::from_secs_f64(typed.parse().unwrap());
            assert_eq!(seconds(d), typed);
        }
        assert_eq!(seconds(Duration::ZERO), "0");
    }

    #[test]
    fn only_the_hidden_argument_runs_the_reference() {
        let args = |words: &[&str]| words.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            proxy_args(&args(&[
                "tcpproxy-test",
                REFERENCE_SUBCOMMAND,
                "1",
                "2",
                "3"
            ])),
            Some(args(&["tcpproxy", "1", "2", "3"]))
        );
        assert_eq!(proxy_args(&args(&["tcpproxy-test", "./proxy"])), None);
        assert_eq!(proxy_args(&args(&["tcpproxy-test"])), None);
    }
}
