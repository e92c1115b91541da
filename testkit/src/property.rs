//! How the property tests here run: as many cases as `PROPTEST_CASES` asks (a soak asks for
//! more), shrinking bounded in time so a failure is reported within the test's budget, and each
//! failing case kept in a regressions file beside its test's source, replayed on every run.

use std::fmt::Debug;

use proptest::test_runner::{Config, FileFailurePersistence, TestError};

/// A runner's configuration: `default_cases` unless `PROPTEST_CASES` says otherwise, shrinking
/// for at most `max_shrink_ms`, regressions kept beside `source_file` (pass `file!()`).
pub fn config(default_cases: u32, max_shrink_ms: u32, source_file: &'static str) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        max_shrink_time: max_shrink_ms,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(source_file),
        ..Config::default()
    }
}

/// Ends a property test run with [`config`]: nothing when every case held; else a panic naming
/// why, the smallest failing `what` (a vector, a schedule), the regressions file beside
/// `source_file` that now holds its seed, and `replay`, the command that runs it first again.
#[track_caller]
pub fn assert_held<T: Debug>(
    result: Result<(), TestError<T>>,
    what: &str,
    source_file: &str,
    replay: &str,
) {
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!(
            "{why}\nsmallest failing {what}: {input:#?}\nIts seed is saved in {}; replay with \
             `{replay}`",
            regressions_file(source_file)
        ),
        Err(TestError::Abort(why)) => panic!("proptest gave up: {why}"),
    }
}

/// Where [`config`]'s runner keeps the seeds of the failures of the test in `source_file`.
fn regressions_file(source_file: &str) -> String {
    let stem = source_file.strip_suffix(".rs").unwrap_or(source_file);
    format!("{stem}.proptest-regressions")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regressions_sit_beside_the_source() {
        assert_eq!(
            regressions_file("tcpproxy/tests/cli_fuzz.rs"),
            "tcpproxy/tests/cli_fuzz.proptest-regressions"
        );
    }
}
