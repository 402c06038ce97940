//! The sweep as a chart: p50, p95 and p99 latency (left axis) and throughput
//! (right axis) against concurrency, one point per level, as a standalone SVG
//! any browser or document shows. Latency goes on a log scale when it spans more
//! than two decades, as it does once a server saturates.

use std::fmt::Write as _;

use crate::report::RunReport;

const W: f64 = 760.0;
const H: f64 = 430.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 680.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 360.0;

/// A 1, 2 or 5 times a power of ten at or above `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|c| *c >= v * (1.0 - 1e-12)).unwrap_or(10.0 * p)
}

/// A vertical axis: maps a value to a y coordinate, and its ticks.
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn linear(max: f64) -> Axis {
        Axis { log: false, lo: 0.0, hi: nice(max * 1.05) }
    }

    fn for_latency(min: f64, max: f64) -> Axis {
        if min > 0.0 && max / min > 100.0 {
            Axis { log: true, lo: 10f64.powf(min.log10().floor()), hi: 10f64.powf(max.log10().ceil()) }
        } else {
            Axis::linear(max)
        }
    }

    fn y(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        BOTTOM - f.clamp(0.0, 1.0) * (BOTTOM - TOP)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.log10().round() as i32, self.hi.log10().round() as i32);
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            let step = nice(self.hi / 5.0);
            (0..).map(|i| f64::from(i) * step).take_while(|v| *v <= self.hi * (1.0 + 1e-9)).collect()
        }
    }
}

fn label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else if v >= 1.0 || v == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.3}").trim_end_matches('0').to_owned()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The chart of `report`'s levels.
pub fn chart(report: &RunReport) -> String {
    let levels = &report.levels;
    let n = levels.len().max(1);
    let x = |i: usize| if n == 1 { (LEFT + RIGHT) / 2.0 } else { LEFT + (RIGHT - LEFT) * i as f64 / (n - 1) as f64 };
    let lat: Vec<_> = levels.iter().filter_map(|l| l.latency_ms.as_ref()).collect();
    let lat_min = lat.iter().map(|l| l.p50).fold(f64::INFINITY, f64::min);
    let lat_max = lat.iter().map(|l| l.p99).fold(0.0, f64::max);
    let ly = Axis::for_latency(lat_min, lat_max);
    let ry = Axis::linear(levels.iter().map(|l| l.rps).fold(0.0, f64::max));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        W / 2.0,
        escape(&report.target)
    );
    let mode = match report.rate {
        Some(r) => format!("open loop at {r} req/s"),
        None => format!("closed loop, {} requests per client", report.requests_per_client),
    };
    let _ = writeln!(s, r##"<text x="{}" y="40" text-anchor="middle" fill="#555">{}</text>"##, W / 2.0, escape(&mode));
    // Grid and the latency axis.
    for t in ly.ticks() {
        let y = ly.y(t);
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{RIGHT}" y2="{y:.1}" stroke="#e5e5e5"/>"##);
        let _ = writeln!(s, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, label(t));
    }
    for t in ry.ticks() {
        let _ = writeln!(s, r##"<text x="{}" y="{:.1}" fill="#2a7f2a">{}</text>"##, RIGHT + 6.0, ry.y(t) + 4.0, label(t));
    }
    let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" stroke="#333"/>"##);
    let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}" stroke="#333"/>"##);
    let _ = writeln!(s, r##"<line x1="{RIGHT}" y1="{TOP}" x2="{RIGHT}" y2="{BOTTOM}" stroke="#333"/>"##);
    for (i, l) in levels.iter().enumerate() {
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x(i), BOTTOM + 18.0, l.concurrency);
    }
    let scale = if ly.log { "latency, ms (log)" } else { "latency, ms" };
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">concurrency (clients)</text>"#, (LEFT + RIGHT) / 2.0, BOTTOM + 36.0);
    let _ = writeln!(s, r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{scale}</text>"#, (TOP + BOTTOM) / 2.0);
    let _ = writeln!(
        s,
        r##"<text transform="translate({} {:.1}) rotate(90)" text-anchor="middle" fill="#2a7f2a">requests/s</text>"##,
        W - 16.0,
        (TOP + BOTTOM) / 2.0
    );

    let mut series = |name: &str, colour: &str, dash: &str, points: Vec<(f64, f64)>, legend: usize| {
        if !points.is_empty() {
            let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#, path.join(" "));
            for (x, y) in &points {
                let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#);
            }
        }
        let lx = LEFT + 10.0 + 120.0 * legend as f64;
        let ly = H - 14.0;
        let _ = writeln!(s, r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>"#, lx + 24.0);
        let _ = writeln!(s, r#"<text x="{}" y="{}">{name}</text>"#, lx + 30.0, ly + 4.0);
    };
    let pick = |f: fn(&crate::stats::Latency) -> f64| -> Vec<(f64, f64)> {
        levels.iter().enumerate().filter_map(|(i, l)| l.latency_ms.as_ref().map(|m| (x(i), ly.y(f(m))))).collect()
    };
    series("p50", "#1f6fd1", "", pick(|m| m.p50), 0);
    series("p95", "#e08a00", "", pick(|m| m.p95), 1);
    series("p99", "#c62828", "", pick(|m| m.p99), 2);
    let rps: Vec<(f64, f64)> = levels.iter().enumerate().map(|(i, l)| (x(i), ry.y(l.rps))).collect();
    series("requests/s", "#2a7f2a", r#" stroke-dasharray="6 4""#, rps, 3);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers() {
        for (v, want) in [(0.7, 1.0), (1.0, 1.0), (3.2, 5.0), (730.0, 1000.0), (120.0, 200.0)] {
            assert!((nice(v) - want).abs() < 1e-9, "nice({v}) = {}", nice(v));
        }
    }

    #[test]
    fn latency_goes_logarithmic_past_two_decades() {
        assert!(!Axis::for_latency(1.0, 80.0).log);
        let a = Axis::for_latency(0.2, 900.0);
        assert!(a.log);
        assert_eq!(a.ticks(), vec![0.1, 1.0, 10.0, 100.0, 1000.0]);
        assert!((a.y(0.1) - BOTTOM).abs() < 1e-9 && (a.y(1000.0) - TOP).abs() < 1e-9);
    }

    #[test]
    fn the_chart_has_a_point_per_level_and_series() {
        let r = crate::report::tests::sample();
        let svg = chart(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Three levels, four series.
        assert_eq!(svg.matches("<circle").count(), 12, "{svg}");
        for name in ["p50", "p95", "p99", "requests/s", "concurrency"] {
            assert!(svg.contains(name), "{name}");
        }
    }
}
