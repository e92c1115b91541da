//! `tcpproxy-test fuzz`: random read/write schedules through the proxy under test and the
//! reference proxy side by side. (Being written; see issue 5.)

use std::ffi::OsString;
use std::process::ExitCode;

pub fn main_with_args(_args: Vec<OsString>) -> ExitCode {
    eprintln!("tcpproxy-test fuzz: not available yet");
    ExitCode::from(crate::EXIT_HARNESS)
}
