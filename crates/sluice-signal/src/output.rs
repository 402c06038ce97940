//! The model's answer: a JSON schema it is asked to follow, the repair of common
//! breakage (code fences, prose around the object, trailing commas, smart
//! quotes), and validation into a [`Verdict`]. A prose answer is never read for
//! keywords: it either parses into the schema or it is an error that names what
//! is wrong, which the caller sends back once as a re-ask.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sluice_proto::signal::v1 as pb;

/// The schema's name in `response_format`.
pub const SCHEMA_NAME: &str = "trading_signal";

/// The JSON schema of an answer (OpenAI structured outputs: strict, every field
/// required, no extra fields).
pub fn schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["action", "confidence", "horizon", "rationale", "key_levels"],
        "properties": {
            "action": { "type": "string", "enum": ["BUY", "SELL", "HOLD"] },
            "confidence": { "type": "number", "minimum": 0, "maximum": 1 },
            "horizon": { "type": "string", "description": "how far ahead, e.g. 15m, 1h, 4h" },
            "rationale": { "type": "string", "description": "at most three sentences" },
            "key_levels": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["kind", "price"],
                    "properties": {
                        "kind": { "type": "string", "enum": ["support", "resistance", "stop", "target"] },
                        "price": { "type": "string", "description": "a decimal number" }
                    }
                }
            }
        }
    })
}

/// A valid answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: pb::Action,
    pub confidence: f64,
    pub horizon: String,
    pub rationale: String,
    pub key_levels: Vec<pb::KeyLevel>,
    /// The text needed repair before it parsed.
    pub repaired: bool,
}

/// Why an answer is not valid; its message goes back to the model in a re-ask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    #[error("the answer is not a JSON object: {0}")]
    NotJson(String),
    #[error("field {field}: {problem}")]
    Field { field: &'static str, problem: String },
}

fn field(field: &'static str, problem: impl Into<String>) -> OutputError {
    OutputError::Field { field, problem: problem.into() }
}

/// The JSON object in `text`, mended: code fences and prose around it dropped,
/// typographic quotes straightened, trailing commas removed (outside strings),
/// raw line breaks and tabs inside strings escaped.
pub fn repair(text: &str) -> Option<String> {
    let t = text.replace(['\u{201c}', '\u{201d}'], "\"");
    let start = t.find('{')?;
    let end = t.rfind('}')?;
    if end < start {
        return None;
    }
    let body = &t[start..=end];
    let mut out = String::with_capacity(body.len());
    let mut in_str = false;
    let mut escaped = false;
    let chars: Vec<char> = body.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if in_str {
            // A raw line break or tab inside a string (models write them) is
            // not JSON; escaped, it is.
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                _ => out.push(c),
            }
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        // A comma whose next non-space character closes the object or array.
        if c == ',' && chars[i + 1..].iter().find(|c| !c.is_whitespace()).is_some_and(|n| *n == '}' || *n == ']') {
            continue;
        }
        out.push(c);
    }
    Some(out)
}

/// Parses and validates an answer, repairing it first when it does not parse as is.
pub fn parse(text: &str) -> Result<Verdict, OutputError> {
    let (v, repaired) = match serde_json::from_str::<Value>(text.trim()) {
        Ok(v @ Value::Object(_)) => (v, false),
        _ => {
            let fixed = repair(text).ok_or_else(|| OutputError::NotJson("no {...} object in it".into()))?;
            let v = serde_json::from_str::<Value>(&fixed).map_err(|e| OutputError::NotJson(e.to_string()))?;
            (v, true)
        }
    };
    let mut verdict = validate(&v)?;
    verdict.repaired = repaired;
    Ok(verdict)
}

fn validate(v: &Value) -> Result<Verdict, OutputError> {
    let obj = v.as_object().ok_or_else(|| OutputError::NotJson("the top level is not an object".into()))?;
    let action = match obj.get("action").and_then(Value::as_str).map(|s| s.trim().to_ascii_uppercase()) {
        Some(a) if a == "BUY" => pb::Action::Buy,
        Some(a) if a == "SELL" => pb::Action::Sell,
        Some(a) if a == "HOLD" => pb::Action::Hold,
        Some(a) => return Err(field("action", format!("'{a}' is not BUY, SELL or HOLD"))),
        None => return Err(field("action", "missing or not a string")),
    };
    let confidence = match obj.get("confidence") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| field("confidence", "missing or not a number"))?;
    if !(0.0..=1.0).contains(&confidence) {
        return Err(field("confidence", format!("{confidence} is outside 0..1")));
    }
    let horizon = obj.get("horizon").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if horizon.is_empty() {
        return Err(field("horizon", "missing or empty"));
    }
    let rationale = obj.get("rationale").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if rationale.is_empty() {
        return Err(field("rationale", "missing or empty"));
    }
    let mut key_levels = Vec::new();
    for (i, l) in obj.get("key_levels").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let kind = l.get("kind").and_then(Value::as_str).unwrap_or_default();
        if !matches!(kind, "support" | "resistance" | "stop" | "target") {
            return Err(field("key_levels", format!("item {i}: kind '{kind}' is not support, resistance, stop or target")));
        }
        let price = match l.get("price") {
            Some(Value::String(s)) => s.trim().parse::<Decimal>().ok(),
            Some(Value::Number(n)) => n.as_str().parse::<Decimal>().ok(),
            _ => None,
        }
        .filter(|p| *p > Decimal::ZERO)
        .ok_or_else(|| field("key_levels", format!("item {i}: price is not a positive decimal")))?;
        key_levels.push(pb::KeyLevel { kind: kind.to_owned(), price: price.normalize().to_string() });
    }
    Ok(Verdict {
        action,
        confidence,
        horizon: horizon.to_owned(),
        rationale: rationale.chars().take(1_000).collect(),
        key_levels,
        repaired: false,
    })
}

#[cfg(test)]
// Confidences parsed or rounded from the same decimal text are the same f64.
#[allow(clippy::float_cmp)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"action":"BUY","confidence":0.72,"horizon":"1h","rationale":"Momentum, bids heavy.","key_levels":[{"kind":"support","price":"64000.5"}]}"#;

    #[test]
    fn a_valid_answer_parses_exactly() {
        let v = parse(GOOD).unwrap();
        assert_eq!((v.action, v.confidence, v.horizon.as_str(), v.repaired), (pb::Action::Buy, 0.72, "1h", false));
        assert_eq!(v.key_levels, [pb::KeyLevel { kind: "support".into(), price: "64000.5".into() }]);
    }

    #[test]
    fn fences_prose_trailing_commas_and_smart_quotes_are_repaired() {
        let broken = "Here is my analysis:\n```json\n{\"action\": \"sell\", \"confidence\": 0.4, \"horizon\": \"4h\",\n \"rationale\": \"Lower highs, a, b}\", \"key_levels\": [{\"kind\": \"stop\", \"price\": 3600,},],}\n```\nGood luck!";
        let v = parse(broken).unwrap();
        assert_eq!((v.action, v.repaired, v.rationale.as_str()), (pb::Action::Sell, true, "Lower highs, a, b}"));
        assert_eq!(v.key_levels[0].price, "3600");
        let smart = "{\u{201c}action\u{201d}: \u{201c}HOLD\u{201d}, \u{201c}confidence\u{201d}: 0, \u{201c}horizon\u{201d}: \u{201c}1h\u{201d}, \u{201c}rationale\u{201d}: \u{201c}flat\u{201d}, \u{201c}key_levels\u{201d}: []}";
        assert_eq!(parse(smart).unwrap().action, pb::Action::Hold);
        let raw_break =
            "{\"action\": \"HOLD\", \"confidence\": 0.1, \"horizon\": \"1h\", \"rationale\": \"flat\n\tbook\", \"key_levels\": []}";
        assert_eq!(parse(raw_break).unwrap().rationale, "flat\n\tbook");
    }

    #[test]
    fn invalid_answers_name_the_problem() {
        let cases = [
            ("The market looks bullish, very bullish indeed.", "not a JSON object"),
            (r#"{"action":"LONG","confidence":0.5,"horizon":"1h","rationale":"x","key_levels":[]}"#, "field action: 'LONG' is not BUY"),
            (
                r#"{"action":"BUY","confidence":1.5,"horizon":"1h","rationale":"x","key_levels":[]}"#,
                "field confidence: 1.5 is outside 0..1",
            ),
            (r#"{"action":"BUY","confidence":0.5,"rationale":"x","key_levels":[]}"#, "field horizon: missing"),
            (
                r#"{"action":"BUY","confidence":0.5,"horizon":"1h","rationale":"x","key_levels":[{"kind":"moon","price":"1"}]}"#,
                "item 0: kind 'moon'",
            ),
            (
                r#"{"action":"BUY","confidence":0.5,"horizon":"1h","rationale":"x","key_levels":[{"kind":"stop","price":"-1"}]}"#,
                "not a positive decimal",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_schema_requires_every_field() {
        let s = schema();
        assert_eq!(s["required"].as_array().unwrap().len(), s["properties"].as_object().unwrap().len());
        assert_eq!(s["additionalProperties"], false);
    }
}
