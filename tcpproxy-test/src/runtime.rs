//! The one runtime every subcommand (the suite, `fuzz`, `grade`) runs in, and what every exit
//! path does: Ctrl-C kills every proxy started, and on the way out every descendant left is
//! ended, so nothing a proxy forked outlives the harness, whichever subcommand ran it. Before
//! the runtime's threads exist, the process takes the network `--sandbox` asks for, impaired as
//! `--network` asks.

use std::future::Future;
use std::process::ExitCode;

use crate::exit_code::{EXIT_HARNESS, EXIT_INTERRUPTED};
use crate::harness;
use crate::sandbox::{self, Entered, Network};

/// Runs `work` in the network `sandbox` asks for, to completion or until Ctrl-C, then ends
/// every descendant. `name` starts every line this prints (`tcpproxy-test`, `tcpproxy-test
/// fuzz`, ...).
pub fn run(name: &str, sandbox: sandbox::Flag, work: impl Future<Output = u8>) -> ExitCode {
    run_noting(name, sandbox, work, || None)
}

/// As [`run`]; after an interrupt, `note` may add a line saying what was kept.
pub fn run_noting(
    name: &str,
    sandbox: sandbox::Flag,
    work: impl Future<Output = u8>,
    note: impl FnOnce() -> Option<String>,
) -> ExitCode {
    // Here, while this is the process's only thread (see `sandbox::enter`).
    match sandbox::enter(sandbox) {
        Ok(Entered {
            network: Network::Host(why),
            ..
        }) if sandbox.mode == sandbox::Mode::Auto => {
            eprintln!(
                "{name}: warning: running on the host's network, not in a network namespace of its own: {why} (--sandbox off says this is meant)"
            );
        }
        Ok(Entered { profile, .. }) if profile.is_impaired() => {
            // The scale itself is the caller's (its --timeout-scale times this).
            eprintln!(
                "{name}: --network {}: {}; every deadline stretched x{} (the proxy's stall timeout is not)",
                profile.name(),
                profile.describe(),
                profile.stretch()
            );
        }
        Ok(_) => {}
        Err(sandbox::Refused::Sandbox(why)) => {
            eprintln!("{name}: --sandbox {}: {why}", word(sandbox.mode));
            return ExitCode::from(EXIT_HARNESS);
        }
        Err(sandbox::Refused::Network(why)) => {
            eprintln!("{name}: --network {}: {why}", word(sandbox.network.profile));
            return ExitCode::from(EXIT_HARNESS);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_HARNESS);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            code = work => code,
            _ = tokio::signal::ctrl_c() => {
                harness::kill_all_groups();
                eprintln!("{name}: interrupted; every proxy started was killed");
                if let Some(line) = note() {
                    eprintln!("{name}: {line}");
                }
                EXIT_INTERRUPTED
            }
        }
    });
    // Tasks still running after an interrupt hold nothing worth waiting for.
    runtime.shutdown_background();
    let profile = sandbox.network.profile;
    if let Some(line) = crate::network::observed(profile) {
        eprintln!("{name}: --network {}: {line}", profile.name());
    }
    // Every proxy was stopped, but one that left its group and session may have left a process
    // that nothing else ties to it; as the subreaper, everything under us is ours to end.
    harness::kill_all_descendants();
    ExitCode::from(code)
}

/// A flag's value as typed.
fn word(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}
