//! The HTML report: one self-contained file (styles inline, no script, nothing fetched from any
//! host) that opens from file://. A summary of verdicts, then per phase what it does (its
//! section of docs/phases.md), what was expected and what was observed, the hint, the details,
//! the proxy's stderr tail, and its timeline ([`super::svg`]). Verdicts are words and shapes,
//! never colour alone, so the page reads in grey and on paper.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::model::RunReport;
use super::svg;
use super::text::inconclusive_note;
use crate::phase::{Outcome, Verdict};

/// What each phase does, from the one place it is written.
const PHASES_DOC: &str = include_str!("../../../docs/phases.md");

const STYLE: &str = r#"
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1000px; padding: 0 1em; color: #111; }
h1 { font-size: 1.4em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin: 0; }
table.summary { border-collapse: collapse; margin: 1em 0; width: 100%; }
table.summary td, table.summary th { border-bottom: 1px solid #ccc; padding: .25em .5em; text-align: left; }
.verdict { font-weight: 600; white-space: nowrap; }
.verdict.passed { color: #1a6e1a; } .verdict.failed { color: #b00020; }
.verdict.warning { color: #8a5a00; } .verdict.skipped, .verdict.inconclusive { color: #555; }
section.phase { border: 1px solid #bbb; border-left-width: 6px; border-radius: 4px; margin: 1.2em 0; padding: .8em 1em; page-break-inside: avoid; }
section.phase.failed { border-left-style: double; } section.phase.warning { border-left-style: dashed; }
section.phase.passed { border-left-style: solid; } section.phase.skipped, section.phase.inconclusive { border-left-style: dotted; }
.about { color: #333; font-size: .93em; }
dl.observed dt { font-weight: 600; } dl.observed dd { margin: 0 0 .4em 1em; }
pre { background: #f4f4f4; padding: .5em; overflow-x: auto; font-size: .85em; white-space: pre-wrap; }
.note { font-size: .85em; color: #444; }
svg.timeline { display: block; max-width: 100%; height: auto; margin: .6em 0; font: 11px system-ui, sans-serif; }
svg .tick { stroke: #ddd; } svg .base { stroke: #999; } svg .axis, svg .name, svg .label { fill: #222; }
svg .wrote { fill: none; stroke: #1f5fbf; stroke-width: 1.5; } svg .read { fill: none; stroke: #2c8a2c; stroke-width: 1.5; stroke-dasharray: 4 2; }
svg .fin { fill: #fff; stroke: #000; } svg .eof { fill: #000; }
svg .reset, svg .exit { stroke: #b00020; stroke-width: 2.5; fill: none; }
svg .close, svg .start { fill: #555; } svg .ready { fill: #fff; stroke: #000; }
svg .connect { stroke: #000; stroke-width: 2; }
svg .queues { fill: #333; }
svg .held { fill: #f0a000; fill-opacity: .25; stroke: #a06000; stroke-dasharray: 2 2; }
svg .deadline { stroke: #b00020; stroke-dasharray: 6 3; }
svg .verdict { stroke: #000; stroke-width: 2; stroke-dasharray: 1 3; }
.legend span { margin-right: 1.2em; white-space: nowrap; }
@media print { section.phase { border-color: #000; } a { color: inherit; } }
"#;

pub fn render(run: &RunReport) -> String {
    page(run, None).into_string()
}

pub fn render_error(run: &RunReport, error: &str) -> String {
    page(run, Some(error)).into_string()
}

fn page(run: &RunReport, error: Option<&str>) -> Markup {
    let title = format!("tcpproxy-test: {}", run.proxy);
    document(
        &title,
        STYLE,
        html! {
                    h1 { (title) }
                    p class="note" {
                        "seed " (run.seed) ", stall timeout " (run.stall_timeout.as_secs_f64()) " s, timeout scale " (run.timeout_scale)
                        @if let Some(net) = run.sandbox { ", " (net.to_string()) }
                    }
                    @if let Some(e) = error {
                        p class="verdict failed" { "✗ error: " (e) }
                    }
                    p {
                        strong { (run.count(Verdict::Passed)) " passed" } ", "
                        strong { (run.count(Verdict::Failed)) " failed" }
                        @for v in [Verdict::Warning, Verdict::Skipped, Verdict::Inconclusive] {
                            @if run.count(v) > 0 { ", " (run.count(v)) " " (v) }
                        }
                    }
                    @if let Some(note) = inconclusive_note(run) { p class="note" { (note) } }
                    @if !run.outcomes.is_empty() {
                        table class="summary" {
                            thead { tr { th { "phase" } th { "id" } th { "verdict" } th { "time" } } }
                            tbody {
                                @for o in run.outcomes {
                                    tr {
                                        td { a href=(format!("#{}", anchor(o.id))) { (o.name) } }
                                        td { code { (o.id) } }
                                        td { (badge(o.verdict)) }
                                        td { (format!("{:.2} s", o.elapsed.as_secs_f64())) }
                                    }
                                }
                            }
                        }
                        p class="legend note" {
                            "In the timelines: " span { "━ bytes written" } span { "┅ bytes read" }
                            span { "▷ FIN sent" } span { "◀ EOF read" } span { "✕ reset or exit" }
                            span { "■ closed" } span { "▨ proxy holding bytes" }
                            span { "╻ socket queue (rising: the harness's socket; hanging: the proxy's)" }
                            span { "┆ deadline" } span { "⋮ verdict" }
                        }
                    }
                    @for o in run.outcomes { (phase(o)) }
        },
    )
}

/// A whole page: `<head>` with its title and inline `style`, then `body`. Shared by the run's
/// report, a fuzz failure's and class.html, so each is one self-contained file alike.
pub fn document(title: &str, style: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(style)) }
            }
            body { (body) }
        }
    }
}

fn phase(o: &Outcome) -> Markup {
    let (expected, observed) = o
        .failure
        .as_ref()
        .map(|f| split_expectation(&f.summary))
        .unwrap_or_default();
    html! {
        section class=(format!("phase {}", o.verdict)) id=(anchor(o.id)) data-phase=(o.id) data-verdict=(o.verdict.to_string()) {
            h2 { (badge(o.verdict)) " " (o.name) " " small { code { (o.id) } } }
            @if let Some(about) = about(o.id) { div class="about" { @for para in about { p { (para) } } } }
            @if let Some(f) = &o.failure {
                dl class="observed" {
                    @if let Some(e) = expected { dt { "Expected" } dd { (e) } }
                    dt { "Observed" } dd { (observed.unwrap_or(&f.summary)) }
                    @if let Some(h) = &f.hint { dt { "Hint" } dd { (h) } }
                }
                @if !f.details.is_empty() { pre class="details" { (f.details.join("\n")) } }
            }
            @if o.failure.is_none() && !o.notes.is_empty() { pre class="details" { (o.notes.join("\n")) } }
            @if let Some(exit) = &o.proxy_exit { p { "The proxy " (exit) "." } }
            @if let Some(tail) = &o.stderr_tail { p class="note" { "The proxy's stderr (its end):" } pre class="stderr" { (tail) } }
            @if let Some(drawing) = svg::timeline(&o.timeline) { (drawing) }
            @else { p class="note" { "No timeline was recorded for this phase." } }
        }
    }
}

/// One run drawn on a fuzz failure's page: what ran, how it was judged, and its timeline.
pub struct FuzzRun<'a> {
    pub label: &'a str,
    pub verdict: String,
    pub timeline: &'a crate::timeline::Timeline,
}

/// The page for a fuzz failure: the minimal failing schedule, the violation, and the schedule
/// run once more through the proxy under test beside the reference proxy, each as a timeline.
pub fn fuzz_page(
    proxy: &str,
    schedule: &str,
    summary: &str,
    hint: Option<&str>,
    details: &[String],
    runs: &[FuzzRun],
) -> String {
    let title = format!("tcpproxy-test fuzz: {proxy}");
    document(
        &title,
        STYLE,
        html! {
                    h1 { (title) }
                    section class="phase failed" data-phase="fuzz" {
                        h2 { (badge(Verdict::Failed)) " the minimal failing schedule" }
                        pre class="schedule" { (schedule) }
                        dl class="observed" {
                            dt { "Observed" } dd { (summary) }
                            @if let Some(h) = hint { dt { "Hint" } dd { (h) } }
                        }
                        @if !details.is_empty() { pre class="details" { (details.join("\n")) } }
                    }
                    @for run in runs {
                        section class="phase" data-phase=(run.label) {
                            h2 { (run.label) ": " (run.verdict) }
                            @if let Some(drawing) = svg::timeline(run.timeline) { (drawing) }
                            @else { p class="note" { "Nothing was recorded for this run." } }
                        }
                    }
        },
    )
    .into_string()
}

/// A verdict as a shape and its word.
fn badge(v: Verdict) -> Markup {
    let shape = match v {
        Verdict::Passed => "✓",
        Verdict::Failed => "✗",
        Verdict::Warning => "⚠",
        Verdict::Skipped => "–",
        Verdict::Inconclusive => "?",
    };
    html! { span class=(format!("verdict {v}")) { (shape) " " (v) } }
}

/// `expected X, but Y` as (X, Y); a summary in another form is all observation.
fn split_expectation(summary: &str) -> (Option<&str>, Option<&str>) {
    match summary
        .strip_prefix("expected ")
        .and_then(|rest| rest.split_once(", but "))
    {
        Some((expected, observed)) => (Some(expected), Some(observed)),
        None => (None, Some(summary)),
    }
}

/// The id as an HTML anchor.
fn anchor(id: &str) -> String {
    format!("phase-{}", id.replace('/', "-"))
}

/// The paragraphs of the phase's section in docs/phases.md (`## ID — Name`, or `## ID, ID2 — ...`
/// for phases described together), with the Markdown's code marks taken out.
fn about(id: &str) -> Option<Vec<String>> {
    let mut sections = PHASES_DOC.split("\n## ").skip(1);
    let section = sections.find(|s| {
        s.split_once(" — ")
            .is_some_and(|(ids, _)| ids.split(", ").any(|i| i.trim() == id))
    })?;
    let body = section.split_once('\n')?.1;
    Some(
        body.trim()
            .split("\n\n")
            .map(|p| {
                p.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .replace('`', "")
            })
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn every_phase_of_the_suite_has_its_words_from_docs_phases() {
        for p in crate::phase::all() {
            let about = about(p.id).unwrap_or_else(|| panic!("no section for {}", p.id));
            assert!(!about.is_empty(), "{}", p.id);
        }
    }

    #[test]
    fn a_failure_reads_as_expected_and_observed_and_the_page_fetches_nothing() {
        let html = fixtures::rendered(render);
        assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..40]);
        assert!(html.contains("<dt>Expected</dt><dd>a 1-byte reply before EOF</dd>"));
        assert!(html.contains("the client saw EOF after 1.0s with nothing read"));
        assert!(html.contains("✗ failed"));
        // Escaped, not markup: the stderr tail holds `<&"'>`.
        assert!(
            html.contains("segfault at &lt;&amp;&quot;'&gt;"),
            "stderr not escaped"
        );
        for fetch in ["src=", "href=\"http", "url(", "@import", "<script", "<link"] {
            assert!(
                !html.contains(fetch),
                "the page would fetch something: {fetch}"
            );
        }
    }

    #[test]
    fn split_expectation_keeps_a_summary_without_one_whole() {
        assert_eq!(
            split_expectation("expected 5 bytes, but got 4"),
            (Some("5 bytes"), Some("got 4"))
        );
        assert_eq!(
            split_expectation("the proxy died"),
            (None, Some("the proxy died"))
        );
    }
}
