//! How the property tests here run: as many cases as `PROPTEST_CASES` asks (a soak asks for
//! more), shrinking bounded in time so a failure is reported within the test's budget, and each
//! failing case kept in a regressions file beside its test's source, replayed on every run.

use proptest::test_runner::{Config, FileFailurePersistence};

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
