//! What the collector says to each exchange: subscribe and resubscribe requests,
//! keep-alives, and which of the dispatcher's budgets each costs. Pure.

use std::time::Duration;

use serde_json::json;
use sluice_domain::Exchange;

use crate::config::{Channel, FeedConfig};

/// The dispatcher budget group a new connection takes a token from.
pub const CONNECT_GROUP: &str = "ws-connect";

/// The group each message we send takes a token from, if the exchange limits them.
pub fn message_group(exchange: Exchange) -> Option<&'static str> {
    match exchange {
        Exchange::Upbit | Exchange::Binance => Some("ws-message"),
        Exchange::Okx => Some("ws-subscribe"),
        Exchange::Bybit => None,
    }
}

/// Whether the exchange answers every subscribe request (Upbit answers none).
pub fn acknowledges(exchange: Exchange) -> bool {
    exchange != Exchange::Upbit
}

/// Our keep-alive: what to send and how often. Binance pings us instead (the
/// WebSocket library answers its pings).
pub fn keepalive(exchange: Exchange) -> Option<(Duration, &'static str)> {
    match exchange {
        // Upbit closes after 120 s of silence either way.
        Exchange::Upbit => Some((Duration::from_secs(60), "PING")),
        Exchange::Bybit => Some((Duration::from_secs(20), r#"{"op":"ping"}"#)),
        // OKX wants a ping before 30 s pass without data.
        Exchange::Okx => Some((Duration::from_secs(20), "ping")),
        Exchange::Binance => None,
    }
}

fn bybit_topic(ch: Channel, native: &str) -> String {
    match ch {
        Channel::Trade => format!("publicTrade.{native}"),
        Channel::Ticker => format!("tickers.{native}"),
        Channel::Book => format!("orderbook.50.{native}"),
        Channel::Candle => format!("kline.1.{native}"),
    }
}

fn binance_stream(ch: Channel, native: &str) -> String {
    let s = native.to_ascii_lowercase();
    match ch {
        Channel::Trade => format!("{s}@trade"),
        Channel::Ticker => format!("{s}@ticker"),
        Channel::Book => format!("{s}@depth@100ms"),
        Channel::Candle => format!("{s}@kline_1m"),
    }
}

fn okx_channel(ch: Channel) -> Option<&'static str> {
    match ch {
        Channel::Trade => Some("trades"),
        Channel::Ticker => Some("tickers"),
        Channel::Book => Some("books"),
        Channel::Candle => None,
    }
}

/// The requests that subscribe one connection to `natives`, within each
/// exchange's per-request limits.
pub fn subscribe(feed: &FeedConfig, natives: &[String]) -> Vec<String> {
    let chans = &feed.channels;
    match feed.exchange {
        Exchange::Upbit => {
            let mut parts = vec![json!({ "ticket": uuid::Uuid::new_v4().to_string() })];
            for ch in chans {
                let ty = match ch {
                    Channel::Trade => "trade",
                    Channel::Ticker => "ticker",
                    Channel::Book => "orderbook",
                    Channel::Candle => "candle.1m",
                };
                parts.push(json!({ "type": ty, "codes": natives }));
            }
            parts.push(json!({ "format": feed.format.as_deref().unwrap_or("DEFAULT") }));
            vec![serde_json::Value::Array(parts).to_string()]
        }
        Exchange::Bybit => {
            let topics: Vec<String> = natives.iter().flat_map(|n| chans.iter().map(move |c| bybit_topic(*c, n))).collect();
            // Spot takes at most 10 topics a request.
            topics.chunks(10).map(|c| json!({ "op": "subscribe", "args": c }).to_string()).collect()
        }
        Exchange::Binance => {
            let streams: Vec<String> = natives.iter().flat_map(|n| chans.iter().map(move |c| binance_stream(*c, n))).collect();
            streams.chunks(200).enumerate().map(|(i, c)| json!({ "method": "SUBSCRIBE", "params": c, "id": i + 1 }).to_string()).collect()
        }
        Exchange::Okx => {
            let args: Vec<serde_json::Value> = natives
                .iter()
                .flat_map(|n| chans.iter().filter_map(move |c| okx_channel(*c).map(|ch| json!({ "channel": ch, "instId": n }))))
                .collect();
            args.chunks(50).map(|c| json!({ "op": "subscribe", "args": c }).to_string()).collect()
        }
    }
}

/// Requests that bring a fresh snapshot of one book (Bybit, OKX): leave and join again.
pub fn resubscribe_book(exchange: Exchange, native: &str) -> Vec<String> {
    match exchange {
        Exchange::Bybit => {
            let t = bybit_topic(Channel::Book, native);
            vec![json!({ "op": "unsubscribe", "args": [t] }).to_string(), json!({ "op": "subscribe", "args": [t] }).to_string()]
        }
        Exchange::Okx => {
            let a = json!([{ "channel": "books", "instId": native }]);
            vec![json!({ "op": "unsubscribe", "args": a }).to_string(), json!({ "op": "subscribe", "args": a }).to_string()]
        }
        Exchange::Upbit | Exchange::Binance => Vec::new(),
    }
}

/// The request that subscribes a private stream to all of the account's orders,
/// fills and balances (sent after the login, on Bybit).
pub fn private_subscribe(exchange: Exchange) -> Option<String> {
    match exchange {
        // No codes: every market's orders. myAsset takes none.
        Exchange::Upbit => Some(
            json!([{ "ticket": uuid::Uuid::new_v4().to_string() }, { "type": "myOrder" }, { "type": "myAsset" }, { "format": "DEFAULT" }])
                .to_string(),
        ),
        Exchange::Bybit => Some(json!({ "op": "subscribe", "args": ["order", "execution", "wallet"] }).to_string()),
        Exchange::Binance | Exchange::Okx => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(exchange: Exchange, n: usize) -> (FeedConfig, Vec<String>) {
        let f = FeedConfig {
            exchange,
            market: Default::default(),
            url: "ws://x".into(),
            symbols: Vec::new(),
            channels: vec![Channel::Trade, Channel::Ticker, Channel::Book, Channel::Candle],
            symbols_per_connection: 10,
            format: Some("SIMPLE".into()),
            max_connection_age_ms: None,
        };
        (f, (0..n).map(|i| format!("S{i}USDT")).collect())
    }

    #[test]
    fn bybit_requests_hold_at_most_ten_topics() {
        let (f, n) = feed(Exchange::Bybit, 3);
        let reqs = subscribe(&f, &n);
        assert_eq!(reqs.len(), 2, "12 topics in 10 + 2");
        let v: serde_json::Value = serde_json::from_str(&reqs[0]).unwrap();
        assert_eq!(v["args"].as_array().unwrap().len(), 10);
    }

    #[test]
    fn upbit_is_one_request_with_ticket_types_and_format() {
        let (f, n) = feed(Exchange::Upbit, 2);
        let reqs = subscribe(&f, &n);
        assert_eq!(reqs.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&reqs[0]).unwrap();
        assert!(v[0]["ticket"].is_string());
        assert_eq!(v[3]["type"], "orderbook");
        assert_eq!(v[5]["format"], "SIMPLE");
    }

    #[test]
    fn okx_has_no_candles_on_the_public_endpoint_and_binance_lowercases() {
        let (f, n) = feed(Exchange::Okx, 1);
        let v: serde_json::Value = serde_json::from_str(&subscribe(&f, &n)[0]).unwrap();
        assert_eq!(v["args"].as_array().unwrap().len(), 3);
        let (f, n) = feed(Exchange::Binance, 1);
        assert!(subscribe(&f, &n)[0].contains("s0usdt@depth@100ms"));
    }
}
