//! Durations as people write them in configs and on command lines: `500ms`,
//! `30s`, `1.5s`, `250us`, `2m`, `1h`, `1d`, or a sum such as `1m30s`. One
//! parser for every service and the command line.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a duration: write a number and a unit, as in 500ms, 30s, 2m, 1m30s or 250us")]
pub struct BadDuration(pub String);

/// Reads a sum of `<number><unit>` terms, the unit one of `ns`, `us` (`µs`),
/// `ms`, `s`, `m`, `h`, `d`; the number may have a fraction. Spaces are ignored.
pub fn parse(text: &str) -> Result<Duration, BadDuration> {
    let bad = || BadDuration(text.to_owned());
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let mut rest = t.as_str();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..split].parse().map_err(|_| bad())?;
        rest = &rest[split..];
        let units = [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86_400.0)];
        // Longest first where one unit begins another ("ms" before "m").
        let (unit, seconds) = units.iter().filter(|(u, _)| rest.starts_with(u)).max_by_key(|(u, _)| u.len()).ok_or_else(bad)?;
        rest = &rest[unit.len()..];
        let term = Duration::try_from_secs_f64(value * seconds).map_err(|_| bad())?;
        total = total.checked_add(term).ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_spellings_and_sums() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse(" 10 ms"), Ok(Duration::from_millis(10)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "30", "ms", "s", "1e3s", "-5s", "5 parsecs", "1..2s", "5m3"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("p").unwrap_err().to_string().contains("not a duration"));
    }
}
