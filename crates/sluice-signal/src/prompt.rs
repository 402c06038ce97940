//! The questions put to the models, versioned: the system message states the job
//! and the answer's schema (for models without `json_schema` it is the only place
//! the schema is given); the user message carries the features as JSON numbers
//! written exactly, never raw streams.

use serde_json::{Value, json};
use sluice_proto::signal::v1 as pb;

use crate::gateway::ChatMessage;

/// Goes on every signal, so a change of wording can be told apart in the results.
pub const VERSION: &str = "v1";

const SYSTEM: &str = "You are a cautious crypto trading analyst. You get numeric features of one \
market. Decide BUY, SELL or HOLD for the given horizon and say how confident you are (0 to 1). \
Prefer HOLD when the numbers do not clearly point one way. Answer with one JSON object only, no \
prose, following this JSON schema exactly:";

fn features_json(f: &pb::Features) -> Value {
    let returns: serde_json::Map<String, Value> =
        f.returns.iter().filter(|r| !r.value.is_empty()).map(|r| (r.horizon.clone(), json!(r.value))).collect();
    json!({
        "last_price": f.last_price, "returns": returns, "volatility_1m": f.volatility, "spread_bp": f.spread_bp,
        "volume": f.volume, "book_imbalance": f.book_imbalance, "to_window_high": f.to_high, "to_window_low": f.to_low,
        "trades": f.trades, "window_s": f.window.as_ref().map_or(0, |w| w.seconds),
    })
}

/// The routine (and confirmation) question about `symbol` on `venue`.
pub fn analysis(venue: &str, symbol: &str, f: &pb::Features, sentiment: Option<&str>) -> Vec<ChatMessage> {
    let mut user =
        format!("Market: {symbol} on {venue}.\nFeatures (returns and distances are fractions, 0.01 = 1 %):\n{}", features_json(f));
    if let Some(s) = sentiment {
        user.push_str(&format!("\nNews sentiment from another analyst: {s}"));
    }
    vec![
        ChatMessage { role: "system", content: format!("{SYSTEM}\n{}", crate::output::schema()) },
        ChatMessage { role: "user", content: user },
    ]
}

/// The sentiment question about recent headlines of `symbol`'s base asset.
pub fn sentiment(symbol: &str, headlines: &[String]) -> Vec<ChatMessage> {
    let list: String = headlines.iter().map(|h| format!("- {h}\n")).collect();
    vec![
        ChatMessage {
            role: "system",
            content: format!(
                "You rate how recent news bears on a crypto market. BUY means the news is bullish, SELL bearish, HOLD \
                 neutral; confidence is how strongly. Answer with one JSON object only, following this JSON schema:\n{}",
                crate::output::schema()
            ),
        },
        ChatMessage { role: "user", content: format!("Market: {symbol}.\nHeadlines, newest first:\n{list}") },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_sees_features_and_the_schema_not_raw_data() {
        let f = pb::Features {
            last_price: "65000.5".into(),
            returns: vec![
                pb::HorizonReturn { horizon: "5m".into(), value: "0.0012".into() },
                pb::HorizonReturn { horizon: "1h".into(), value: String::new() },
            ],
            ..Default::default()
        };
        let m = analysis("binance", "BTC/USDT", &f, Some("bullish, 0.6"));
        assert!(m[0].content.contains("\"enum\":[\"BUY\",\"SELL\",\"HOLD\"]"), "{}", m[0].content);
        assert!(m[1].content.contains(r#""returns":{"5m":"0.0012"}"#), "{}", m[1].content);
        assert!(m[1].content.contains("\"last_price\":\"65000.5\"") && m[1].content.contains("bullish, 0.6"));
        let s = sentiment("BTC/USDT", &["ETF approved".into()]);
        assert!(s[1].content.contains("- ETF approved"));
    }
}
