use std::process::ExitCode;

fn main() -> ExitCode {
    tcpproxy_test::main_with_args(std::env::args_os().collect())
}
