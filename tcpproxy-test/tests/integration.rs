//! The harness's one integration-test binary: it runs `tcpproxy-test` as a user would, against
//! the reference proxy, against broken fixtures, and with bad invocations.

mod browser;
mod cli_fuzz;
mod docs;
mod formats;
mod fuzz;
mod grade;
mod invocation;
mod matrix;
mod reference;
mod sandbox;
mod scheduler_examples;
mod self_check;
mod support;
