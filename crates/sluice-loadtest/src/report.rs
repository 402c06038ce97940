//! A run's report, and the ways it is written out: a terminal table, JSON (the
//! whole report) and CSV (a row per level). The chart is in [`crate::svg`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::LevelReport;
use crate::threshold::Breach;

/// Everything a run measured, with what it was asked.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// What was loaded, in words.
    pub target: String,
    pub url: String,
    /// `"closed"` or `"open"`.
    pub mode: &'static str,
    /// Open loop: the arrival rate, requests/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub requests_per_client: u64,
    pub warmup_per_client: u64,
    pub timeout_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level_time_s: Option<f64>,
    pub levels: Vec<LevelReport>,
    pub thresholds: Vec<String>,
    pub breaches: Vec<Breach>,
    pub passed: bool,
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn breakdown(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(";")
}

impl RunReport {
    /// The terminal table, with a line under it per level that failed anything.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s, latency from each request's intended start"),
            None => "closed loop".to_owned(),
        };
        let _ = writeln!(
            s,
            "{}\n{mode}; {} requests per client on average (one pool per level) after {} warm-up each; timeout {} ms",
            self.target, self.requests_per_client, self.warmup_per_client, self.timeout_ms
        );
        let _ = writeln!(
            s,
            "{:>6} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "conc", "total", "ok", "failed", "err%", "req/s", "avg ms", "p50 ms", "p95 ms", "p99 ms", "min ms", "max ms", "time s"
        );
        for l in &self.levels {
            let lat = l.latency_ms.as_ref();
            let _ = writeln!(
                s,
                "{:>6} {:>8} {:>8} {:>7} {:>7.2} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.2}",
                l.concurrency,
                l.total,
                l.succeeded,
                l.failed,
                l.error_rate * 100.0,
                l.rps,
                opt(lat.map(|l| l.avg)),
                opt(lat.map(|l| l.p50)),
                opt(lat.map(|l| l.p95)),
                opt(lat.map(|l| l.p99)),
                opt(lat.map(|l| l.min)),
                opt(lat.map(|l| l.max)),
                l.duration_s
            );
        }
        for l in &self.levels {
            let mut notes = Vec::new();
            let failed: Vec<String> = l.failed_statuses.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            let errors: Vec<String> = l.errors.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            if !failed.is_empty() {
                notes.push(format!("answers {}", failed.join(", ")));
            }
            if !errors.is_empty() {
                notes.push(format!("no answer {}", errors.join(", ")));
            }
            if let Some(late) = l.late_starts.filter(|n| *n > 0) {
                notes.push(format!("{late} late starts (every connection busy when due)"));
            }
            if let (Some(m), Some(r)) = (l.messages, l.messages_per_s) {
                notes.push(format!("{m} messages after the first ({r:.1}/s)"));
            }
            if !notes.is_empty() {
                let _ = writeln!(s, "  c={}: {}", l.concurrency, notes.join("; "));
            }
        }
        if !self.thresholds.is_empty() {
            if self.breaches.is_empty() {
                let _ = writeln!(s, "thresholds met: {}", self.thresholds.join(", "));
            }
            for b in &self.breaches {
                let _ = writeln!(s, "THRESHOLD {b}");
            }
        }
        s
    }

    /// One CSV row per level, with a header.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "concurrency,rate,total,succeeded,failed,error_rate,rps,avg_ms,p50_ms,p95_ms,p99_ms,min_ms,max_ms,duration_s,late_starts,messages,messages_per_s,statuses,errors\n",
        );
        let num = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v}"));
        let int = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        for l in &self.levels {
            let lat = l.latency_ms.as_ref();
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                l.concurrency,
                num(l.rate),
                l.total,
                l.succeeded,
                l.failed,
                l.error_rate,
                l.rps,
                num(lat.map(|l| l.avg)),
                num(lat.map(|l| l.p50)),
                num(lat.map(|l| l.p95)),
                num(lat.map(|l| l.p99)),
                num(lat.map(|l| l.min)),
                num(lat.map(|l| l.max)),
                l.duration_s,
                int(l.late_starts),
                int(l.messages),
                num(l.messages_per_s),
                csv_field(&breakdown(&l.statuses)),
                csv_field(&breakdown(&l.errors)),
            );
        }
        s
    }

    /// The whole report as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report of numbers and strings always serializes")
    }
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) { format!("\"{}\"", v.replace('"', "\"\"")) } else { v.to_owned() }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::stats::{Answer, ErrorKind, Latencies, LevelKind, Outcome, Tally};
    use std::time::Duration;

    pub(crate) fn sample() -> RunReport {
        let mut levels = Vec::new();
        for (c, ms) in [(10usize, 2u64), (50, 5), (100, 20)] {
            let lat = Latencies::new(2);
            let mut t = Tally::default();
            for i in 0..100 {
                let status = if i < 97 { 200 } else { 429 };
                t.add(Outcome::Answer(Answer::Http(status)), Duration::from_millis(ms + i % 3), &lat, i as usize);
            }
            t.add(Outcome::Error(ErrorKind::Timeout), Duration::ZERO, &lat, 0);
            levels.push(LevelReport::new(c, LevelKind::default(), &t, &lat.merged(), Duration::from_secs(1)));
        }
        RunReport {
            target: "HTTP GET http://127.0.0.1:1/".into(),
            url: "http://127.0.0.1:1/".into(),
            mode: "closed",
            rate: None,
            requests_per_client: 100,
            warmup_per_client: 1,
            timeout_ms: 30_000.0,
            level_time_s: None,
            levels,
            thresholds: vec!["p99<500ms".into()],
            breaches: vec![],
            passed: true,
        }
    }

    #[test]
    fn the_table_has_a_row_per_level_and_names_the_failures() {
        let t = sample().table();
        assert!(t.lines().filter(|l| l.trim_start().starts_with(['1', '5'])).count() >= 3, "{t}");
        assert!(t.contains("c=10: answers 429 x3; no answer timeout x1"), "{t}");
        assert!(t.contains("thresholds met: p99<500ms"), "{t}");
    }

    #[test]
    fn csv_rows_match_the_header() {
        let c = sample().csv();
        let widths: Vec<usize> = c.lines().map(|l| l.split(',').count()).collect();
        assert_eq!(widths.len(), 4);
        assert!(widths.iter().all(|w| *w == widths[0]), "{c}");
        assert!(c.lines().nth(1).unwrap().ends_with("200=97;429=3,timeout=1"), "{c}");
    }

    #[test]
    fn json_carries_every_level() {
        let v: serde_json::Value = serde_json::from_str(&sample().json()).unwrap();
        assert_eq!(v["levels"].as_array().unwrap().len(), 3);
        assert_eq!(v["levels"][0]["statuses"]["429"], 3);
        assert_eq!(v["levels"][2]["concurrency"], 100);
        assert!(v["levels"][0]["latency_ms"]["p99"].as_f64().unwrap() >= 2.0);
    }
}
