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
            stall.as_secs_f64().to_string().into(),
        ],
    })
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
