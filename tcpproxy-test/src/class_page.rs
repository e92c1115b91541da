//! class.html: the class at a glance, beside class.csv and class.json. A grid of submissions by
//! phases (sortable by any column, filterable by name or status), the scores' histogram, the
//! failure hints most submissions share, and a link to each submission's own report. One
//! self-contained file: styles and the small sorting script inline, nothing fetched.

use std::collections::BTreeMap;

use maud::{Markup, PreEscaped, html};

use crate::class_table::{Class, Row};
use crate::report::document;

/// At most this many hints are listed, the most common first.
const TOP_HINTS: usize = 15;

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em; color: #111; }
h1 { font-size: 1.35em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
table.grid { border-collapse: collapse; font-size: 12px; }
table.grid th, table.grid td { border: 1px solid #ccc; padding: 2px 4px; text-align: center; }
table.grid th { background: #f2f2f2; cursor: pointer; position: sticky; top: 0; }
table.grid th.phase { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; font-weight: 500; }
table.grid td.name { text-align: left; white-space: nowrap; }
td.passed { color: #1a6e1a; } td.failed { color: #b00020; font-weight: 700; background: #fbe9ec; }
td.warning { color: #8a5a00; background: #fff6e0; } td.skipped, td.inconclusive, td.none { color: #666; }
ol.hints li { margin-bottom: .3em; } .count { font-weight: 700; }
.note { color: #444; font-size: .9em; }
svg.histogram text { font: 11px system-ui, sans-serif; fill: #222; } svg.histogram rect { fill: #4a6fa5; }
input#filter { font: inherit; padding: 2px 6px; width: 20em; }
@media print { input#filter, .note.sort { display: none; } }
"#;

/// Sorts the grid by a clicked header (again: the other way) and hides rows the filter does not
/// match. Plain DOM calls only; the page works without it, unsorted and unfiltered.
const SCRIPT: &str = r#"
(function () {
  var table = document.querySelector("table.grid");
  var body = table.tBodies[0];
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var down = th.getAttribute("data-sorted") !== "up";
      table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("data-sorted"); });
      th.setAttribute("data-sorted", down ? "up" : "down");
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute("data-key"), y = b.cells[col].getAttribute("data-key");
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return down ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  document.getElementById("filter").addEventListener("input", function (e) {
    var q = e.target.value.toLowerCase();
    Array.prototype.forEach.call(body.rows, function (r) {
      r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
    });
  });
})();
"#;

/// The page for `class`.
pub fn render(class: &Class) -> String {
    let rows = &class.submissions;
    let graded = rows.iter().filter(|r| r.status == "graded").count();
    let title = format!("tcpproxy-test: class of {}", rows.len());
    document(&title, STYLE, html! {
                h1 { "Class of " (rows.len()) " submissions" }
                p class="note" {
                    (graded) " graded, " (rows.len() - graded) " not (error or inconclusive: see each status); "
                    (class.phases.len()) " phases; seed " (class.seed_text) ", stall timeout "
                    (class.stall_timeout_secs) " s, network " (class.network_profile())
                    @if !class.complete { "; the batch is not finished: rows are missing" }
                }
                h2 { "Scores" }
                (histogram(class))
                h2 { "The most common failures" }
                (common_hints(rows))
                h2 { "Every submission" }
                p class="note sort" {
                    label for="filter" { "Filter: " }
                    input id="filter" type="search" placeholder="name, status or verdict";
                    " Click a column's heading to sort by it."
                }
                (grid(class))
                script { (PreEscaped(SCRIPT)) }
    })
    .into_string()
}

/// How many submissions passed each number of phases, as bars.
fn histogram(class: &Class) -> Markup {
    let n = class.phases.len();
    let mut bins = vec![0usize; n + 1];
    for r in class.submissions.iter().filter(|r| r.status == "graded") {
        bins[r.counts.passed.min(n)] += 1;
    }
    let most = bins.iter().copied().max().unwrap_or(0).max(1);
    let (bar, gap, tall) = (22.0, 4.0, 120.0);
    let width = (n + 1) as f64 * (bar + gap) + 40.0;
    html! {
        svg class="histogram" viewBox=(format!("0 0 {width} {}", tall + 40.0)) width=(width) height=(tall + 40.0)
            role="img" aria-label="how many submissions passed each number of phases" {
            @for (passed, count) in bins.iter().enumerate() {
                @let h = tall * *count as f64 / most as f64;
                @let x = 20.0 + passed as f64 * (bar + gap);
                rect x=(x) y=(10.0 + tall - h) width=(bar) height=(h) {
                    title { (count) " submissions passed " (passed) " of " (n) }
                }
                @if *count > 0 { text x=(x + bar / 2.0) y=(6.0 + tall - h) text-anchor="middle" { (count) } }
                text x=(x + bar / 2.0) y=(tall + 26.0) text-anchor="middle" { (passed) }
            }
            text x="20" y=(tall + 39.0) { "phases passed" }
        }
    }
}

/// The hints most submissions got, each with how many and in which phases.
fn common_hints(rows: &[Row]) -> Markup {
    let mut by_hint: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for r in rows {
        let mut seen: Vec<&str> = Vec::new();
        for (phase, hint) in &r.hints {
            let entry = by_hint.entry(hint).or_default();
            if !seen.contains(&hint.as_str()) {
                entry.0 += 1;
                seen.push(hint);
            }
            if !entry.1.contains(&phase.as_str()) {
                entry.1.push(phase);
            }
        }
    }
    let mut hints: Vec<_> = by_hint.into_iter().collect();
    hints.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    html! {
        @if hints.is_empty() {
            p class="note" { "No submission failed a phase with a hint." }
        } @else {
            ol class="hints" {
                @for (hint, (count, phases)) in hints.iter().take(TOP_HINTS) {
                    li { span class="count" { (count) } " submission" @if *count != 1 { "s" } ": " (hint)
                        " " span class="note" { "(" (phases.join(", ")) ")" } }
                }
            }
            @if hints.len() > TOP_HINTS { p class="note" { (hints.len() - TOP_HINTS) " rarer hints are in the submissions' reports." } }
        }
    }
}

/// The grid: a row per submission, its status and counts, then a cell per phase.
fn grid(class: &Class) -> Markup {
    html! {
        table class="grid" {
            thead {
                tr {
                    th { "submission" } th { "status" } th { "passed" } th { "failed" }
                    @for id in &class.phases { th class="phase" title=(id) { (id) } }
                }
            }
            tbody {
                @for r in &class.submissions {
                    tr data-submission=(r.name) {
                        td class="name" data-key=(r.name) {
                            a href=(report_link(r)) { (r.name) }
                        }
                        td class="status" data-key=(r.status) { (short_status(&r.status)) }
                        td data-key=(r.counts.passed) { (r.counts.passed) }
                        td data-key=(r.counts.failed) { (r.counts.failed) }
                        @for id in &class.phases {
                            @let verdict = r.verdicts.iter().find(|(p, _)| p == id).map_or("none", |(_, v)| v.as_str());
                            td class=(verdict) data-key=(verdict) title=(format!("{}: {id}: {verdict}", r.name)) { (shape(verdict)) }
                        }
                    }
                }
            }
        }
    }
}

/// Where the row's own HTML report is, relative to class.html.
fn report_link(r: &Row) -> String {
    let dir = r.reports.as_deref().unwrap_or(&r.name);
    format!("{dir}/report.html")
}

/// `graded`, or the status's first words: the whole is in the cell's sort key and class.csv.
fn short_status(status: &str) -> String {
    let words: String = status.chars().take(60).collect();
    if words.len() < status.len() {
        format!("{words}…")
    } else {
        words
    }
}

/// A verdict as a shape (the cell's title and class carry the word).
fn shape(verdict: &str) -> &'static str {
    match verdict {
        "passed" => "✓",
        "failed" => "✗",
        "warning" => "⚠",
        "skipped" => "–",
        "inconclusive" => "?",
        _ => "·",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class_table::Counts;

    fn class(rows: Vec<Row>) -> Class {
        serde_json::from_value(serde_json::json!({
            "format": "tcpproxy-test-class", "version": 1, "seed": 7, "seed_text": "7",
            "stall_timeout_secs": 10.0, "phases": ["echo/single", "shutdown/one-way"],
            "complete": true, "submissions": []
        }))
        .map(|c: Class| Class {
            submissions: rows,
            ..c
        })
        .unwrap()
    }

    fn row(name: &str, verdicts: [&str; 2], hint: Option<&str>) -> Row {
        let mut r = Row::new(name, name, "graded");
        r.verdicts = ["echo/single", "shutdown/one-way"]
            .iter()
            .zip(verdicts)
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect();
        r.counts = Counts {
            passed: verdicts.iter().filter(|v| **v == "passed").count(),
            failed: verdicts.iter().filter(|v| **v == "failed").count(),
            ..Counts::default()
        };
        r.hints = hint
            .map(|h| vec![("shutdown/one-way".to_string(), h.to_string())])
            .unwrap_or_default();
        r
    }

    #[test]
    fn the_page_has_a_row_per_submission_the_common_hints_and_links_to_the_reports() {
        let html = render(&class(vec![
            row("alice", ["passed", "passed"], None),
            row(
                "bob",
                ["passed", "failed"],
                Some("closed both sides on the first EOF"),
            ),
            row(
                "carol<&>",
                ["passed", "failed"],
                Some("closed both sides on the first EOF"),
            ),
        ]));
        assert_eq!(html.matches("<tr data-submission=").count(), 3);
        assert!(html.contains(r#"<a href="bob/report.html">bob</a>"#));
        assert!(html.contains("carol&lt;&amp;&gt;"), "names are escaped");
        assert!(html.contains(
            r#"<span class="count">2</span> submissions: closed both sides on the first EOF"#
        ));
        for fetch in ["src=", "href=\"http", "url(", "@import", "<link"] {
            assert!(
                !html.contains(fetch),
                "the page would fetch something: {fetch}"
            );
        }
    }

    /// Issue 14: a class of 300 under 10 MB. Every submission fails a third of the suite's
    /// phases with a long hint of its own, more than a real class shows.
    #[test]
    fn a_class_of_300_stays_under_10_mb() {
        let phases: Vec<String> = crate::phase::all()
            .iter()
            .map(|p| p.id.to_string())
            .collect();
        let mut c = class(vec![]);
        c.phases = phases.clone();
        c.submissions = (0..300)
            .map(|k| {
                let mut r = Row::new(
                    format!("student-{k:03}"),
                    format!("submissions/student-{k:03}"),
                    "graded",
                );
                for (i, p) in phases.iter().enumerate() {
                    let failed = (i + k) % 3 == 0;
                    r.verdicts
                        .push((p.clone(), if failed { "failed" } else { "passed" }.into()));
                    if failed {
                        r.hints.push((
                            p.clone(),
                            format!(
                                "{} {}",
                                "the proxy did something wrong here;".repeat(5),
                                k % 40
                            ),
                        ));
                    }
                }
                r
            })
            .collect();
        let size = render(&c).len();
        assert!(size < 10 << 20, "class.html for 300 is {size} bytes");
    }
}
