//! Request parameters as an exchange sees them: the query string, plus the fields of
//! a JSON object body or a form body. Route costs and group templates read them.

use percent_encoding::percent_decode_str;

/// Why parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("query has invalid percent-encoding or UTF-8 near '{0}'")]
    BadQuery(String),
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    #[error("body must be a JSON object (or an array of objects, for batch endpoints), got {0}")]
    NotObject(&'static str),
    #[error("body is not valid UTF-8 form data")]
    BadForm,
}

/// Decoded name/value pairs, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub fn form_decode(s: &str) -> Result<String, ParamError> {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().map(|c| c.into_owned()).map_err(|_| ParamError::BadQuery(s.chars().take(40).collect()))
}

/// Splits and decodes a query string (without the `?`).
pub fn parse_query(q: &str) -> Result<Vec<(String, String)>, ParamError> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((form_decode(k)?, form_decode(v)?))
        })
        .collect()
}

impl Params {
    pub fn from_query(q: &str) -> Result<Self, ParamError> {
        Ok(Params { pairs: parse_query(q)? })
    }

    /// Adds the top-level fields of a JSON object body (strings as they are, other
    /// values as their JSON text). An array of objects (OKX's batch endpoints,
    /// which ccxt uses for single orders too) adds each object's fields in turn.
    pub fn add_json_body(&mut self, body: &[u8]) -> Result<(), ParamError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| ParamError::BadJson(e.to_string()))?;
        let objects = match v {
            serde_json::Value::Object(map) => vec![map],
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    serde_json::Value::Object(map) => Ok(map),
                    other => Err(ParamError::NotObject(match json_kind(&other) {
                        "an array" => "an array holding an array",
                        _ => "an array holding something other than objects",
                    })),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(ParamError::NotObject(json_kind(&other))),
        };
        for (k, v) in objects.into_iter().flatten() {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            self.pairs.push((k, text));
        }
        Ok(())
    }

    /// Adds the fields of a form-encoded body.
    pub fn add_form_body(&mut self, body: &[u8]) -> Result<(), ParamError> {
        let s = std::str::from_utf8(body).map_err(|_| ParamError::BadForm)?;
        self.pairs.extend(parse_query(s.trim())?);
        Ok(())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

pub(crate) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_query_json_and_form() {
        let mut p = Params::from_query("market=KRW-BTC&count=10&states%5B%5D=wait&name=a+b").unwrap();
        assert_eq!(p.get("market"), Some("KRW-BTC"));
        assert_eq!(p.get("states[]"), Some("wait"));
        assert_eq!(p.get("name"), Some("a b"));
        p.add_json_body(br#"{"category":"spot","qty":"0.1","reduceOnly":false}"#).unwrap();
        assert_eq!(p.get("category"), Some("spot"));
        assert_eq!(p.get("reduceOnly"), Some("false"));
        p.add_form_body(b"symbol=BTCUSDT&side=BUY").unwrap();
        assert_eq!(p.get("side"), Some("BUY"));
    }

    #[test]
    fn malformed_input_is_named() {
        assert_eq!(Params::from_query("a=%FF").unwrap_err(), ParamError::BadQuery("%FF".into()), "not UTF-8");
        let mut p = Params::default();
        assert!(matches!(p.add_json_body(b"{not json"), Err(ParamError::BadJson(_))));
        assert_eq!(p.add_json_body(b"[1,2]"), Err(ParamError::NotObject("an array holding something other than objects")));
        assert_eq!(p.add_json_body(b"\"x\""), Err(ParamError::NotObject("a string")));
        let mut batch = Params::default();
        batch.add_json_body(br#"[{"instId":"BTC-USDT","sz":"1"},{"instId":"ETH-USDT"}]"#).unwrap();
        assert_eq!(batch.get("instId"), Some("BTC-USDT"), "a batch's fields, first object first");
        assert_eq!(batch.iter().filter(|(k, _)| *k == "instId").count(), 2);
        assert!(p.add_json_body(b"  ").is_ok());
    }
}
