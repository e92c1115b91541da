use std::process::ExitCode;

fn main() -> ExitCode {
    tcpproxy::main_with_args(std::env::args_os())
}
