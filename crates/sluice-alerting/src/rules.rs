//! Alert rules as configuration: what a rule reads (`last`, `increase`, `ratio`
//! `of`, `age`, `zscore`: see [`crate::series`]), when it holds (`above` or
//! `below`), for how long before it fires (`for`), and what it says (severity,
//! labels, a summary with the series' labels and value filled in).
//!
//! Reading a file names every problem it has, each with its line, so
//! `sluice config check` can list them all at once instead of one per run.
//! The shipped rules (`config/alerts.toml`) carry seed 001's thresholds.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::matcher::{Labels, Selector};
use crate::series::Expr;

/// The rules sluice ships with.
pub const SHIPPED: &str = include_str!("../../../config/alerts.toml");

/// How bad an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// When a rule's value makes it hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
}

impl Condition {
    pub fn holds(self, v: f64) -> bool {
        match self {
            Condition::Above(t) => v > t,
            Condition::Below(t) => v < t,
        }
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub expr: Expr,
    pub condition: Condition,
    pub for_ms: i64,
    /// How long it stays firing after the condition stops holding, so a value
    /// that flaps around the threshold does not resolve and fire again.
    pub keep_firing_ms: i64,
    pub severity: Severity,
    pub labels: Labels,
    pub summary: String,
    pub description: String,
    /// Its line in the file, for messages.
    pub line: usize,
}

/// One problem in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// Every problem found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(f, "{}: {n} problem{}", self.source_name, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "\n  line {}: {}", p.line, p.message)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    last: Option<String>,
    increase: Option<String>,
    ratio: Option<String>,
    of: Option<String>,
    age: Option<String>,
    zscore: Option<String>,
    over: Option<String>,
    history: Option<String>,
    min_samples: Option<usize>,
    min_of: Option<f64>,
    by: Option<Vec<String>>,
    above: Option<f64>,
    below: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    keep_firing_for: Option<String>,
    severity: Severity,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    summary: String,
    #[serde(default)]
    description: String,
}

/// `250ms`, `5s`, `2m`, `1h` (or a sum, `1m30s`) into milliseconds: the shared
/// parser, in the unit rules keep their times in.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let d = sluice_service::duration::parse(s).map_err(|e| e.to_string())?;
    i64::try_from(d.as_millis()).map_err(|_| format!("{s:?} is not a duration this long can hold"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads and checks a rules file; `source_name` names it in errors.
pub fn parse(text: &str, source_name: &str) -> Result<Vec<Rule>, RulesError> {
    let fail = |problems| RulesError { source_name: source_name.to_owned(), problems };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        fail(vec![Problem { line, message: e.message().trim().to_owned() }])
    })?;
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    let mut names = BTreeMap::new();
    for spanned in raw.rule {
        let line = line_of(text, spanned.span().start);
        let r = spanned.into_inner();
        let mut say = |m: String| problems.push(Problem { line, message: format!("rule {:?}: {m}", r.name) });
        if let Some(first) = names.insert(r.name.clone(), line) {
            say(format!("the name is used twice (first on line {first})"));
        }
        if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            say("a name holds only letters, digits and _".into());
        }
        match compile(&r, line) {
            Ok(rule) => rules.push(rule),
            Err(errs) => errs.into_iter().for_each(&mut say),
        }
    }
    if problems.is_empty() { Ok(rules) } else { Err(fail(problems)) }
}

fn compile(r: &RawRule, line: usize) -> Result<Rule, Vec<String>> {
    let mut errs = Vec::new();
    let mut sel = |field: &str, v: &Option<String>| -> Option<Selector> {
        v.as_ref().and_then(|s| Selector::parse(s).map_err(|e| errs.push(format!("{field}: {e}"))).ok())
    };
    let kinds = [("last", &r.last), ("increase", &r.increase), ("ratio", &r.ratio), ("age", &r.age), ("zscore", &r.zscore)];
    let given: Vec<&str> = kinds.iter().filter(|(_, v)| v.is_some()).map(|(k, _)| *k).collect();
    let parsed: Vec<Option<Selector>> = kinds.iter().map(|(k, v)| sel(k, v)).collect();
    let of = sel("of", &r.of);
    let mut dur = |field: &str, v: &Option<String>, default: i64| -> i64 {
        match v {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                errs.push(format!("{field}: {e}"));
                default
            }),
        }
    };
    let over_ms = dur("over", &r.over, 60_000);
    let history_ms = dur("history", &r.history, 600_000);
    let for_ms = dur("for", &r.for_, 0);
    let keep_firing_ms = dur("keep_firing_for", &r.keep_firing_for, 0);
    if given.len() != 1 {
        errs.push(format!("says what it reads with exactly one of last, increase, ratio, age or zscore (found {})", given.len()));
    }
    if r.ratio.is_some() != r.of.is_some() {
        errs.push("ratio and of go together (ratio = numerator selector, of = denominator selector)".into());
    }
    if r.over.is_some() && r.increase.is_none() && r.ratio.is_none() {
        errs.push("over applies to increase and ratio only".into());
    }
    if r.min_of.is_some() && r.ratio.is_none() {
        errs.push("min_of applies to ratio only".into());
    }
    if (r.history.is_some() || r.min_samples.is_some()) && r.zscore.is_none() {
        errs.push("history and min_samples apply to zscore only".into());
    }
    if r.by.is_some() && (r.age.is_some() || r.zscore.is_some()) {
        errs.push("by does not apply to age or zscore".into());
    }
    if over_ms <= 0 || history_ms <= 0 {
        errs.push("over and history must be positive".into());
    }
    let condition = match (r.above, r.below) {
        (Some(a), None) if a.is_finite() => Some(Condition::Above(a)),
        (None, Some(b)) if b.is_finite() => Some(Condition::Below(b)),
        _ => {
            errs.push("needs exactly one finite threshold: above or below".into());
            None
        }
    };
    if r.summary.trim().is_empty() {
        errs.push("needs a summary".into());
    }
    for text in [&r.summary, &r.description] {
        if let Err(e) = check_template(text) {
            errs.push(e);
        }
    }
    for k in r.labels.keys() {
        if k == "alertname" || k == "severity" {
            errs.push(format!("label {k:?} is set by sluice itself"));
        } else if crate::matcher::Matcher::new(k, crate::matcher::Op::Equal, "").is_err() {
            errs.push(format!("label name {k:?} is not a valid name"));
        }
    }
    let by = r.by.clone().unwrap_or_default();
    let expr = match (given.first().copied(), parsed.into_iter().flatten().next(), of) {
        (Some("last"), Some(sel), _) => Some(Expr::Last { sel, by: r.by.clone() }),
        (Some("increase"), Some(sel), _) => Some(Expr::Increase { sel, over_ms, by }),
        (Some("ratio"), Some(num), Some(den)) => Some(Expr::Ratio { num, den, over_ms, by, min_den: r.min_of.unwrap_or(0.0) }),
        (Some("age"), Some(sel), _) => Some(Expr::Age { sel }),
        (Some("zscore"), Some(sel), _) => Some(Expr::ZScore { sel, history_ms, min_samples: r.min_samples.unwrap_or(10) }),
        _ => None,
    };
    match (errs.is_empty(), expr, condition) {
        (true, Some(expr), Some(condition)) => Ok(Rule {
            name: r.name.clone(),
            expr,
            condition,
            for_ms,
            keep_firing_ms,
            severity: r.severity,
            labels: r.labels.clone(),
            summary: r.summary.clone(),
            description: r.description.clone(),
            line,
        }),
        _ => {
            if errs.is_empty() {
                errs.push("cannot be compiled".into());
            }
            Err(errs)
        }
    }
}

fn check_template(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed {{{{ in {text:?}"))?;
        let name = after[..end].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{{{{{name}}}}} in {text:?} is not a label name or value, value_pct, value_ms"));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// Fills `{{label}}`, `{{value}}`, `{{value_pct}}` and `{{value_ms}}`; an
/// unknown label reads as empty, as in Alertmanager's templates.
pub fn render(template: &str, labels: &Labels, value: f64) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let name = after[..end].trim();
        match name {
            "value" => out.push_str(&short(value)),
            "value_pct" => out.push_str(&format!("{} %", short(value * 100.0))),
            "value_ms" => out.push_str(&format!("{} ms", short(value * 1000.0))),
            l => out.push_str(labels.get(l).map(String::as_str).unwrap_or("")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// A number as a person reads it: at most four significant digits, no
/// trailing zeros.
fn short(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let digits = if v.abs() >= 1000.0 {
        0
    } else if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 10.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_are_valid() {
        let rules = parse(SHIPPED, "config/alerts.toml").unwrap();
        for name in [
            "ExchangeErrorRate",
            "ExchangeLatencyHigh",
            "RateLimitUsageHigh",
            "ExchangeSuccessRateLow",
            "ProbeFailing",
            "StaleData",
            "HeartbeatMissing",
            "LatencyAnomaly",
        ] {
            assert!(rules.iter().any(|r| r.name == name), "{name} missing");
        }
    }

    #[test]
    fn every_problem_is_named_with_its_line() {
        let text = r#"
[[rule]]
name = "A"
ratio = 'x_total{status=~"("}'
above = 1
severity = "critical"
summary = "s"

[[rule]]
name = "A"
last = "y"
above = 1
below = 2
for = "5 parsecs"
severity = "warning"
summary = "{{ bad-name }}"
"#;
        let e = parse(text, "bad.toml").unwrap_err();
        let lines: Vec<usize> = e.problems.iter().map(|p| p.line).collect();
        assert!(lines.iter().all(|&l| l == 2 || l == 9), "{e}");
        let msg = e.to_string();
        for want in [
            "bad regular expression",
            "ratio and of go together",
            "used twice (first on line 2)",
            "exactly one finite threshold",
            "not a duration",
            "bad-name",
        ] {
            assert!(msg.contains(want), "{want} not in {msg}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_fields_have_a_line() {
        let e = parse("[[rule]]\nname = \"A\"\nlast = \"x\"\nabove = 1\nseverity = \"loud\"\nsummary = \"s\"\n", "f").unwrap_err();
        assert_eq!(e.problems[0].line, 5, "{e}");
        let e = parse("[[rule]]\nname = \"A\"\nthreshold = 3\n", "f").unwrap_err();
        assert!(e.to_string().contains("threshold"), "{e}");
        let e = parse("[[rule]\n", "f").unwrap_err();
        assert_eq!(e.problems[0].line, 1);
    }

    #[test]
    fn durations_and_templates() {
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert!(parse_duration("5").is_err() && parse_duration("s").is_err() && parse_duration("").is_err());
        let l: Labels = [("exchange".to_owned(), "upbit".to_owned())].into();
        assert_eq!(
            render("{{exchange}}: {{value_pct}} failed ({{ value }}, {{value_ms}}) {{none}}.", &l, 0.0612),
            "upbit: 6.12 % failed (0.061, 61.2 ms) ."
        );
        assert_eq!(short(2345.6), "2346");
    }
}
