//! Label matchers, as in Alertmanager and PromQL: `name="v"`, `name!="v"`,
//! `name=~"re"`, `name!~"re"`, the expressions anchored at both ends. Used by
//! metric selectors in rules, silences, inhibition and routes.
//!
//! A missing label matches as the empty string, so `team!="x"` matches an
//! alert without a `team` and `team=""` means "has no team".

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// The labels of a series or an alert, ordered so they print and hash stably.
pub type Labels = BTreeMap<String, String>;

/// How a matcher compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One `name op "value"` condition.
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
    re: Option<Regex>,
}

/// Why a matcher or selector could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("label name {0:?} is not a valid name (letters, digits and _, not starting with a digit)")]
    BadName(String),
    #[error("bad regular expression {value:?}: {reason}")]
    BadRegex { value: String, reason: String },
    #[error("cannot read {text:?}: {reason}")]
    Syntax { text: String, reason: &'static str },
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_') && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

impl Matcher {
    pub fn new(name: &str, op: Op, value: &str) -> Result<Matcher, MatcherError> {
        if !valid_name(name) {
            return Err(MatcherError::BadName(name.to_owned()));
        }
        let re = match op {
            Op::Regex | Op::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| MatcherError::BadRegex { value: value.to_owned(), reason: e.to_string() })?,
            ),
            _ => None,
        };
        Ok(Matcher { name: name.to_owned(), op, value: value.to_owned(), re })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.re) {
            (Op::Equal, _) => v == self.value,
            (Op::NotEqual, _) => v != self.value,
            (Op::Regex, Some(re)) => re.is_match(v),
            (Op::NotRegex, Some(re)) => !re.is_match(v),
            // `new` always compiles the expression of a regex matcher.
            (Op::Regex | Op::NotRegex, None) => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Regex => "=~",
            Op::NotRegex => "!~",
        };
        write!(f, "{}{}{:?}", self.name, op, self.value)
    }
}

/// True when every matcher matches.
pub fn all_match(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// A metric selector: `name{a="x",b=~"y|z"}` or just `name`.
#[derive(Clone, Debug)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, MatcherError> {
        let text = text.trim();
        let syntax = |reason| MatcherError::Syntax { text: text.to_owned(), reason };
        let (metric, rest) = match text.find('{') {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        let metric = metric.trim();
        if !valid_name(metric) {
            return Err(syntax("a selector starts with a metric name"));
        }
        let matchers = match rest {
            None => Vec::new(),
            Some(body) => {
                let body = body.trim_end().strip_suffix('}').ok_or_else(|| syntax("missing closing }"))?;
                parse_matchers(body)?
            }
        };
        Ok(Selector { metric: metric.to_owned(), matchers })
    }

    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        name == self.metric && all_match(&self.matchers, labels)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.metric)?;
        if !self.matchers.is_empty() {
            let m: Vec<String> = self.matchers.iter().map(ToString::to_string).collect();
            write!(f, "{{{}}}", m.join(","))?;
        }
        Ok(())
    }
}

/// `a="x", b!~"y"` (the inside of braces) into matchers.
pub fn parse_matchers(body: &str) -> Result<Vec<Matcher>, MatcherError> {
    let syntax = |reason| MatcherError::Syntax { text: body.to_owned(), reason };
    let mut out = Vec::new();
    let mut s = body.trim();
    while !s.is_empty() {
        let op_at = s.find(['=', '!']).ok_or_else(|| syntax("expected name=\"value\""))?;
        let name = s[..op_at].trim();
        let rest = &s[op_at..];
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (Op::Regex, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (Op::NotRegex, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (Op::NotEqual, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (Op::Equal, r)
        } else {
            return Err(syntax("expected =, !=, =~ or !~"));
        };
        let rest = rest.trim_start().strip_prefix('"').ok_or_else(|| syntax("a value is in double quotes"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().ok_or_else(|| syntax("unterminated string"))?;
            match c {
                '\\' => value.push(chars.next().ok_or_else(|| syntax("unterminated string"))?.1),
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push(Matcher::new(name, op, &value)?);
        s = rest[end + 1..].trim_start();
        s = match s.strip_prefix(',') {
            Some(r) => r.trim_start(),
            None if s.is_empty() => s,
            None => return Err(syntax("matchers are separated by commas")),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn each_operator_and_missing_labels() {
        let l = labels(&[("exchange", "upbit"), ("status", "5xx")]);
        let sel = Selector::parse(r#"m{exchange="upbit", status=~"5xx|transport", team!="x", group!~"ord.*"}"#).unwrap();
        assert!(sel.matches("m", &l));
        assert!(!sel.matches("other", &l));
        assert!(!Selector::parse(r#"m{status=~"5"}"#).unwrap().matches("m", &l), "anchored");
        assert!(Selector::parse(r#"m{team=""}"#).unwrap().matches("m", &l), "missing is empty");
        assert_eq!(Selector::parse("m").unwrap().matchers.len(), 0);
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(Selector::parse("m{a=~\"(\"}"), Err(MatcherError::BadRegex { .. })));
        assert!(matches!(Selector::parse("m{a=\"x\""), Err(MatcherError::Syntax { reason: "missing closing }", .. })));
        assert!(matches!(Selector::parse("m{a=x}"), Err(MatcherError::Syntax { .. })));
        assert!(matches!(Selector::parse("9m"), Err(MatcherError::Syntax { .. })));
        assert!(matches!(parse_matchers(r#"1a="x""#), Err(MatcherError::BadName(_))));
        assert!(matches!(parse_matchers(r#"a="x" b="y""#), Err(MatcherError::Syntax { .. })));
        assert_eq!(parse_matchers(r#"a="q\"x", b!="y""#).unwrap()[0].value, "q\"x");
    }
}
