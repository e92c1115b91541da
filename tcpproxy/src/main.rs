use std::process::ExitCode;

fn main() -> ExitCode {
    tcpproxy::main_with_args(std::env::args_os())
}

// Idle pairs cost a third less with it than with glibc's malloc: see tcpproxy/Cargo.toml.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
