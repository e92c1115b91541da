// No unsafe here: the library does the work, and it forbids unsafe code itself.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    tcpproxy_test::main_with_args(std::env::args_os().collect())
}
