//! TAP version 13: `ok`/`not ok` per phase, a YAML block under failures, `# SKIP` for skipped
//! phases. TAP has no warning; a warning is `ok` with its message as a diagnostic.

use std::fmt::Write as _;

use super::model::RunReport;
use super::text::message_and_details;
use crate::phase::Verdict;

pub fn render(run: &RunReport) -> String {
    let mut s = String::from("TAP version 13\n");
    let _ = writeln!(s, "1..{}", run.outcomes.len());
    for (i, o) in run.outcomes.iter().enumerate() {
        let n = i + 1;
        let (message, details) = message_and_details(o);
        match o.verdict {
            Verdict::Passed => {
                let _ = writeln!(s, "ok {n} - {} # {}", o.name, o.id);
            }
            Verdict::Skipped => {
                let _ = writeln!(s, "ok {n} - {} # SKIP {message}", o.name);
            }
            Verdict::Warning => {
                let _ = writeln!(s, "ok {n} - {} # {}", o.name, o.id);
                let _ = writeln!(s, "# warning: {message}");
            }
            // Not `ok`: a harness that prints no grade must not read as a pass.
            Verdict::Failed | Verdict::Inconclusive => {
                let word = if o.verdict == Verdict::Inconclusive {
                    "inconclusive: "
                } else {
                    ""
                };
                let _ = writeln!(s, "not ok {n} - {} # {word}{}", o.name, o.id);
                s.push_str("  ---\n");
                let _ = writeln!(s, "  message: {}", yaml_string(&message));
                let _ = writeln!(s, "  duration_ms: {}", o.elapsed.as_millis());
                if let Some(e) = &o.proxy_exit {
                    let _ = writeln!(s, "  proxy_exit: {}", yaml_string(e));
                }
                if !details.is_empty() {
                    s.push_str("  details:\n");
                    for d in &details {
                        let _ = writeln!(s, "    - {}", yaml_string(d));
                    }
                }
                s.push_str("  ...\n");
            }
        }
    }
    s
}

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn snapshot() {
        let got = fixtures::rendered(render);
        let want = "TAP version 13
1..4
ok 1 - Single echo connection # echo/single
not ok 2 - One-way shutdown # shutdown/one-way
  ---
  message: \"expected a 1-byte reply before EOF, but the client saw EOF after 1.0s with nothing read\"
  duration_ms: 1900
  proxy_exit: \"killed by signal SIGSEGV\"
  details:
    - \"hint: the proxy closed both sides on the first EOF\"
    - \"seed: 7\"
  ...
ok 3 - CPU while idle # resources/idle-cpu
# warning: expected at most 10% of a core, but it used 99%
ok 4 - Descriptor leaks # SKIP needs Linux /proc
";
        assert_eq!(got, want, "\n--- got ---\n{got}");
    }
}
