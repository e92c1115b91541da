//! Printing results for people: one line per phase, in suite order, with indented details under
//! a failure, and the closing count.

use std::io::Write;

use super::model::RunReport;
use crate::phase::{Outcome, Verdict};
use crate::sandbox::Entered;

/// `NAME: passed`, or `NAME: failed: summary` followed by the hint and the detail lines.
pub fn write_outcome(out: &mut impl Write, o: &Outcome) -> std::io::Result<()> {
    write_outcome_styled(out, o, false)
}

/// As [`write_outcome`], with the verdict word coloured when `color` (a terminal, no NO_COLOR).
pub fn write_outcome_styled(out: &mut impl Write, o: &Outcome, color: bool) -> std::io::Result<()> {
    let verdict = if color {
        let code = match o.verdict {
            Verdict::Passed => "32",
            Verdict::Failed => "1;31",
            Verdict::Warning => "33",
            Verdict::Skipped => "2",
            Verdict::Inconclusive => "35",
        };
        format!("\x1b[{code}m{}\x1b[0m", o.verdict)
    } else {
        o.verdict.to_string()
    };
    match &o.failure {
        None => writeln!(out, "{}: {verdict}", o.name),
        Some(f) => {
            writeln!(out, "{}: {verdict}: {}", o.name, f.summary)?;
            if let Some(h) = &f.hint {
                writeln!(out, "    hint: {h}")?;
            }
            for d in &f.details {
                writeln!(out, "    {d}")?;
            }
            writeln!(
                out,
                "    phase {} took {:.1}s",
                o.id,
                o.elapsed.as_secs_f64()
            )
        }
    }
}

/// The whole report: the network line, a line per phase, and the closing count.
pub fn render(run: &RunReport) -> String {
    let mut out = Vec::new();
    if let Some(entered) = run.sandbox {
        let _ = write_sandbox(&mut out, entered);
    }
    if let Some(c) = run.confinement {
        let _ = writeln!(out, "(confinement: {c})");
    }
    for o in run.outcomes {
        let _ = write_outcome(&mut out, o);
    }
    let mut s = String::from_utf8_lossy(&out).into_owned();
    s.push_str(&summary(run.outcomes));
    s.push('\n');
    s
}

/// The report's first line: the network the proxies ran in and, when impaired, its profile
/// (`crate::sandbox`), in words that cannot be read as a phase's line.
pub fn write_sandbox(out: &mut impl Write, entered: &Entered) -> std::io::Result<()> {
    writeln!(out, "(sandbox: {entered})")
}

/// `10 passed, 0 failed`, then `, 1 warning`, `, 1 skipped` and `, 1 inconclusive` when there
/// are any.
pub fn summary(outcomes: &[Outcome]) -> String {
    let count = |v| outcomes.iter().filter(|o| o.verdict == v).count();
    let mut s = format!(
        "{} passed, {} failed",
        count(Verdict::Passed),
        count(Verdict::Failed)
    );
    match count(Verdict::Warning) {
        0 => {}
        1 => s.push_str(", 1 warning"),
        n => s.push_str(&format!(", {n} warnings")),
    }
    if count(Verdict::Skipped) > 0 {
        s.push_str(&format!(", {} skipped", count(Verdict::Skipped)));
    }
    if count(Verdict::Inconclusive) > 0 {
        s.push_str(&format!(", {} inconclusive", count(Verdict::Inconclusive)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::{Format, fixtures, render};

    #[test]
    fn snapshot() {
        let got = fixtures::rendered(|run| render(run, Format::Human));
        let want = "Single echo connection: passed
One-way shutdown: failed: expected a 1-byte reply before EOF, but the client saw EOF after 1.0s with nothing read
    hint: the proxy closed both sides on the first EOF
    seed: 7
    phase shutdown/one-way took 1.9s
CPU while idle: warning: expected at most 10% of a core, but it used 99%
    phase resources/idle-cpu took 3.1s
Descriptor leaks: skipped: needs Linux /proc
    phase resources/fd-leak took 0.0s
1 passed, 1 failed, 1 warning, 1 skipped
";
        assert_eq!(got, want, "\n--- got ---\n{got}");
    }

    #[test]
    fn a_run_that_had_a_network_names_it_first() {
        use crate::network::Profile;
        use crate::sandbox::{Entered, Network};
        static OFF: std::sync::LazyLock<Entered> = std::sync::LazyLock::new(|| Entered {
            network: Network::Host("--sandbox off".into()),
            profile: Profile::Ideal,
        });
        let outcomes = fixtures::outcomes();
        let run = super::super::RunReport {
            sandbox: Some(&OFF),
            ..fixtures::run(&outcomes[..1])
        };
        assert_eq!(
            render(&run, Format::Human),
            "(sandbox: host network: --sandbox off)\nSingle echo connection: passed\n1 passed, 0 failed\n"
        );
        static LOSSY: Entered = Entered {
            network: Network::Namespace,
            profile: Profile::Lossy,
        };
        let run = super::super::RunReport {
            sandbox: Some(&LOSSY),
            ..fixtures::run(&outcomes[..1])
        };
        assert_eq!(
            render(&run, Format::Human).lines().next().unwrap(),
            format!(
                "(sandbox: network namespace; network lossy: {}% of TCP packets carrying data on lo dropped at random (nftables); deadlines stretched x{})",
                crate::network::LOSS_PERCENT,
                Profile::Lossy.stretch()
            )
        );
    }

    #[test]
    fn a_run_names_its_confinement_after_its_network() {
        use crate::confine::{Account, Applied, Confinement};
        static CONFINED: std::sync::LazyLock<Confinement> =
            std::sync::LazyLock::new(|| Confinement {
                user: Some(Account {
                    name: "nobody".into(),
                    uid: 65534,
                    gid: 65534,
                }),
                root: true,
                tasks: (
                    4096,
                    Applied::Rlimit("RLIMIT_NPROC, for all proxies of the run together"),
                ),
                memory_mib: (1024, Applied::Not("no memory cgroup".into())),
                file_size_mib: 64,
                cpu_secs: 900,
            });
        let outcomes = fixtures::outcomes();
        let run = super::super::RunReport {
            confinement: Some(&CONFINED),
            ..fixtures::run(&outcomes[..1])
        };
        assert_eq!(
            render(&run, Format::Human),
            "(confinement: user nobody (65534), a fresh temporary directory, a cleaned environment; limits: tasks 4096 (RLIMIT_NPROC, for all proxies of the run together), memory 1024 MiB NOT APPLIED: no memory cgroup, file size 64 MiB, CPU 900 s, core dumps off)\nSingle echo connection: passed\n1 passed, 0 failed\n"
        );
    }

    #[test]
    fn colour_wraps_only_the_verdict_word() {
        let outcomes = fixtures::outcomes();
        let mut out = Vec::new();
        super::write_outcome_styled(&mut out, &outcomes[0], true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Single echo connection: \x1b[32mpassed\x1b[0m\n"
        );
    }

    #[test]
    fn the_summary_omits_zero_warnings_and_skips() {
        let outcomes = fixtures::outcomes();
        assert_eq!(super::summary(&outcomes[..1]), "1 passed, 0 failed");
        assert_eq!(
            super::summary(&outcomes[..3]),
            "1 passed, 1 failed, 1 warning"
        );
    }
}
