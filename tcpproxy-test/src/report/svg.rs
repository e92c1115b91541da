//! A phase's timeline drawn as inline SVG: a lane per connection leg (and one for the proxy),
//! each direction's bytes over time as a line scaled to the lane, markers for half-close, EOF,
//! reset and close, shaded windows where the proxy held bytes it could not write, thin bars for
//! the kernel's socket queues read during a held tail, dashed deadlines, and the moment the
//! verdict was decided. Every mark carries its words (a label or a
//! `<title>`), and shape tells the markers apart, so it reads without colour and on paper.

use maud::{Markup, html};

use crate::timeline::{End, Event, Kind, Lane, Timeline};

const WIDTH: f64 = 960.0;
/// Left margin: the lane names.
const LABELS: f64 = 90.0;
/// Right margin: room for the labels of marks at the very end.
const RIGHT: f64 = 70.0;
const LANE: f64 = 26.0;
const AXIS: f64 = 26.0;
/// At most this many lanes are drawn; the rest are named in a line under the drawing.
pub const MAX_LANES: usize = 40;

/// The drawing, or None for a timeline with no events.
pub fn timeline(t: &Timeline) -> Option<Markup> {
    if t.events.is_empty() {
        return None;
    }
    let all = t.lanes();
    let lanes = &all[..all.len().min(MAX_LANES)];
    let end = t.end_ms().max(1.0);
    let x = |ms: f64| LABELS + (ms / end).clamp(0.0, 1.0) * (WIDTH - LABELS - RIGHT);
    let height = AXIS + LANE * lanes.len() as f64 + 8.0;
    let row = |lane: Lane| lanes.iter().position(|l| *l == lane);
    let top = |i: usize| AXIS + LANE * i as f64;
    let queued = most_queued(t);
    let verdict_at = t.events.iter().find_map(|e| match &e.kind {
        Kind::Verdict { verdict } => Some((e.at_ms, verdict.clone())),
        _ => None,
    });
    Some(html! {
        svg class="timeline" viewBox=(format!("0 0 {WIDTH} {height}")) width=(WIDTH) height=(height)
            role="img" aria-label="timeline of the phase's connections" {
            // The time axis: five ticks.
            @for k in 0..=4 {
                @let ms = end * k as f64 / 4.0;
                line class="tick" x1=(x(ms)) x2=(x(ms)) y1=(AXIS - 6.0) y2=(height) {}
                text class="axis" x=(x(ms)) y=(AXIS - 10.0) text-anchor="middle" { (seconds(ms)) }
            }
            @for (i, lane) in lanes.iter().enumerate() {
                g class="lane" data-lane=(lane.to_string()) {
                    text class="name" x="4" y=(top(i) + LANE * 0.65) { (lane.to_string()) }
                    line class="base" x1=(LABELS) x2=(WIDTH - RIGHT) y1=(top(i) + LANE - 4.0) y2=(top(i) + LANE - 4.0) {}
                    @for (wrote, path) in byte_paths(t, *lane, &x, top(i)) {
                        polyline class=(if wrote { "wrote" } else { "read" }) points=(path) {
                            title { (if wrote { "bytes written by this leg" } else { "bytes read by this leg" }) }
                        }
                    }
                }
            }
            @for e in &t.events {
                @if let Some(i) = row(e.lane) {
                    (marker(e, x(e.at_ms), top(i), &x, queued))
                }
            }
            @if let Some((at, verdict)) = verdict_at {
                line class="verdict" x1=(x(at)) x2=(x(at)) y1=(AXIS - 4.0) y2=(height) {
                    title { "verdict decided at " (seconds(at)) ": " (verdict) }
                }
            }
        }
        @if all.len() > lanes.len() {
            p class="note" { "Drawn: the first " (MAX_LANES) " of " (all.len()) " lanes; the JSON report has every event." }
        }
        @if t.dropped > 0 {
            p class="note" { (t.dropped) " later events were not recorded (at most " (crate::timeline::MAX_EVENTS) " per phase)." }
        }
    })
}

/// The mark of one event on its lane (top at `y`); `queued` is the timeline's largest queue
/// reading, which a queue's bar is scaled to.
fn marker(e: &Event, x: f64, y: f64, at: &impl Fn(f64) -> f64, queued: u64) -> Markup {
    let mid = y + LANE / 2.0;
    let when = seconds(e.at_ms);
    html! {
        @match &e.kind {
            Kind::Start => {
                rect class="start" x=(x - 3.0) y=(mid - 3.0) width="6" height="6" { title { "proxy started at " (when) } }
            }
            Kind::Ready { pid } => {
                circle class="ready" cx=(x) cy=(mid) r="4" { title { "proxy (pid " (pid) ") listening at " (when) } }
                text class="label" x=(x + 6.0) y=(mid + 4.0) { "ready" }
            }
            Kind::Exit { status } => {
                path class="exit" d=(cross(x, mid)) { title { "proxy " (status) " at " (when) } }
                text class="label" x=(x + 6.0) y=(mid + 4.0) { "exit: " (status) }
            }
            Kind::Stderr { bytes } => {
                text class="label" x=(x - 4.0) y=(mid + 4.0) text-anchor="end" { "stderr " (bytes) " B" }
            }
            Kind::Connect => {
                path class="connect" d=(format!("M{x} {} l0 14", mid - 7.0)) { title { "connected at " (when) } }
            }
            Kind::Wrote { .. } | Kind::Read { .. } => {}
            Kind::HalfClose => {
                path class="fin" d=(format!("M{} {} l6 6 l-6 6 z", x, mid - 6.0)) { title { "half-close (FIN) sent at " (when) } }
                text class="label" x=(x + 7.0) y=(mid - 2.0) { "FIN" }
            }
            Kind::Eof => {
                path class="eof" d=(format!("M{} {} l-6 6 l6 6 z", x, mid - 6.0)) { title { "EOF read at " (when) } }
                text class="label" x=(x + 2.0) y=(mid + 11.0) { "EOF" }
            }
            Kind::Reset { error } => {
                path class="reset" d=(cross(x, mid)) { title { (error) " at " (when) } }
                text class="label" x=(x + 6.0) y=(mid + 4.0) { "RST" }
            }
            Kind::Close => {
                rect class="close" x=(x - 4.0) y=(mid - 4.0) width="8" height="8" { title { "closed at " (when) } }
            }
            Kind::Held { until_ms } => {
                rect class="held" x=(x) y=(y + 2.0) width=((at(*until_ms) - x).max(1.0)) height=(LANE - 6.0) {
                    title { "the proxy held bytes toward this leg from " (when) " to " (seconds(*until_ms)) }
                }
            }
            Kind::Queues { end, send, recv } => {
                // Half a lane at most, so a leg's two sockets share it: the harness's socket
                // rises from the base, the proxy's hangs from the top. Every reading shows, an
                // empty queue as a 1 px stub.
                @let h = (((send + recv) as f64 / queued as f64) * (LANE / 2.0 - 3.0)).max(1.0);
                @let top = match end { End::Harness => y + LANE - 4.0 - h, End::Proxy => y + 2.0 };
                rect class=(format!("queues {}", if *end == End::Harness { "harness" } else { "proxy" }))
                    x=(x - 0.75) y=(top) width="1.5" height=(h) {
                    title { (end) ": " (send) " B to send, " (recv) " B received unread, at " (when) }
                }
            }
            Kind::Deadline { what, due_ms } => {
                line class="deadline" x1=(at(*due_ms)) x2=(at(*due_ms)) y1=(y) y2=(y + LANE) {
                    title { "deadline: " (what) ", armed at " (when) ", due at " (seconds(*due_ms)) }
                }
            }
            Kind::Verdict { .. } => {}
        }
    }
}

/// The largest total (sent and received) of any queue reading, at least 1.
fn most_queued(t: &Timeline) -> u64 {
    t.events
        .iter()
        .filter_map(|e| match e.kind {
            Kind::Queues { send, recv, .. } => Some(send + recv),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        .max(1)
}

/// An X of 8 px centred on (x, y).
fn cross(x: f64, y: f64) -> String {
    format!(
        "M{} {} l8 8 M{} {} l-8 8",
        x - 4.0,
        y - 4.0,
        x + 4.0,
        y - 4.0
    )
}

/// The lane's byte counts as step lines, written and read apart, each scaled so its largest
/// count reaches the top of the lane: the shape shows when bytes moved, the events' titles and
/// the JSON the counts.
fn byte_paths(t: &Timeline, lane: Lane, x: &impl Fn(f64) -> f64, top: f64) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for wrote in [true, false] {
        let points: Vec<(f64, u64)> = t
            .events
            .iter()
            .filter(|e| e.lane == lane)
            .filter_map(|e| match e.kind {
                Kind::Wrote { total } if wrote => Some((e.at_ms, total)),
                Kind::Read { total } if !wrote => Some((e.at_ms, total)),
                _ => None,
            })
            .collect();
        let Some(max) = points.iter().map(|p| p.1).max().filter(|m| *m > 0) else {
            continue;
        };
        let base = top + LANE - 4.0;
        let y = |n: u64| base - (n as f64 / max as f64) * (LANE - 8.0);
        let start = t
            .events
            .iter()
            .find(|e| e.lane == lane && e.kind == Kind::Connect)
            .map_or(points[0].0, |e| e.at_ms);
        let mut path = format!("{:.1},{:.1}", x(start), base);
        let mut last = 0;
        for (at, n) in points {
            path.push_str(&format!(
                " {:.1},{:.1} {:.1},{:.1}",
                x(at),
                y(last),
                x(at),
                y(n)
            ));
            last = n;
        }
        out.push((wrote, path));
    }
    out
}

/// `1.234 s`.
fn seconds(ms: f64) -> String {
    format!("{:.3} s", ms / 1000.0)
}
