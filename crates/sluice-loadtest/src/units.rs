//! Durations as people write them on a command line (`30s`, `500ms`, `1.5s`,
//! `250us`, `2m`), for timeouts, level bounds and latency thresholds.

use std::time::Duration;

/// A duration that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a duration: write a number and a unit, as in 500ms, 30s, 2m or 250us")]
pub struct BadDuration(pub String);

/// Reads `<number><unit>`, the unit one of `ns`, `us`, `ms`, `s`, `m`, `h`.
pub fn parse_duration(text: &str) -> Result<Duration, BadDuration> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| BadDuration(text.to_owned()))?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| BadDuration(text.to_owned()))?;
    let seconds_per = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(BadDuration(text.to_owned())),
    };
    Duration::try_from_secs_f64(value * seconds_per).map_err(|_| BadDuration(text.to_owned()))
}

/// Milliseconds with three decimals: how every latency is shown.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_spellings() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 10 ms"), Ok(Duration::from_millis(10)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "30", "ms", "1e3s", "-5s", "5 parsecs", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shows_milliseconds_to_the_microsecond() {
        assert!((ms(Duration::from_nanos(1_234_567)) - 1.235).abs() < 1e-9);
    }
}
