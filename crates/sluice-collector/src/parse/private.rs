//! Private-stream frames: Upbit `myOrder`/`myAsset` (DEFAULT or SIMPLE keys, single
//! or list frames) and Bybit v5 `order`/`execution`/`wallet`, into
//! `sluice.account.v1` messages, plus the control answers a login needs (login
//! accepted or refused, subscribe ack, pong). Pure: `source` is left for the caller.
//!
//! Upbit sends one `myOrder` per change: `wait`/`watch` (resting), `trade` (one
//! execution: `price` and `volume` are the execution's), `done`, `cancel`. A
//! `trade` becomes a [`Fill`] and an [`OrderUpdate`] whose price and quantity are
//! left empty (the message carries the execution's, not the order's).

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Number;
use sluice_domain::{Exchange, Symbol};
use sluice_proto::account::v1::{Balance, BalanceUpdate, Fill, OrderStatus, OrderUpdate, Side};

use crate::event::{ParseError, dec, shape};

/// One account event and the exchange's time of it.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountMsg {
    Order(OrderUpdate),
    Fill(Fill),
    Balance(BalanceUpdate),
}

/// What a private frame was.
#[derive(Debug, Clone, PartialEq)]
pub enum PrivateParsed {
    /// Events, each with the exchange's time in ms and the market ("spot", "linear").
    Data(Vec<(u64, &'static str, AccountMsg)>),
    /// The login message was accepted (Bybit).
    LoggedIn,
    /// The exchange refused our credentials; its words.
    LoginRefused(String),
    Ack,
    /// The exchange refused a request; its words.
    Rejected(String),
    Pong,
    Ignored,
}

/// Parses one private frame of `exchange` (Upbit or Bybit).
pub fn parse(exchange: Exchange, text: &str) -> Result<PrivateParsed, ParseError> {
    match exchange {
        Exchange::Upbit => upbit(text),
        Exchange::Bybit => bybit(text),
        other => Err(ParseError::Unknown { exchange: other.as_str(), what: "private stream (only Upbit and Bybit have one here)".into() }),
    }
}

fn canonical(exchange: Exchange, native: &str) -> String {
    // An unknown symbol keeps its native name: an accepted event is never dropped.
    Symbol::from_native(exchange, native).map(|s| s.to_string()).unwrap_or_default()
}

/// A decimal as the proto writes it: normalized, empty for none.
fn dtext(d: Option<Decimal>) -> String {
    d.map(|d| d.normalize().to_string()).unwrap_or_default()
}

// ---- Upbit ----

const UP: &str = "upbit";

#[derive(Deserialize)]
struct UpAsset<'a> {
    #[serde(alias = "cu")]
    currency: &'a str,
    #[serde(alias = "b")]
    balance: Number,
    #[serde(alias = "l")]
    locked: Number,
}

#[derive(Deserialize)]
struct UpMsg<'a> {
    #[serde(rename = "type", alias = "ty")]
    kind: &'a str,
    #[serde(alias = "tms", default)]
    timestamp: u64,
    // myOrder
    #[serde(alias = "cd", default)]
    code: Option<&'a str>,
    #[serde(alias = "uid", default)]
    uuid: Option<&'a str>,
    #[serde(alias = "ab", default)]
    ask_bid: Option<&'a str>,
    #[serde(alias = "ot", default)]
    order_type: Option<&'a str>,
    #[serde(alias = "s", default)]
    state: Option<&'a str>,
    #[serde(alias = "tuid", default)]
    trade_uuid: Option<&'a str>,
    #[serde(alias = "p", default)]
    price: Option<Number>,
    #[serde(alias = "ap", default)]
    avg_price: Option<Number>,
    #[serde(alias = "v", default)]
    volume: Option<Number>,
    #[serde(alias = "rv", default)]
    remaining_volume: Option<Number>,
    #[serde(alias = "ev", default)]
    executed_volume: Option<Number>,
    #[serde(alias = "pf", default)]
    paid_fee: Option<Number>,
    #[serde(alias = "tf", default)]
    trade_fee: Option<Number>,
    #[serde(alias = "im", default)]
    is_maker: Option<bool>,
    #[serde(alias = "id", default)]
    identifier: Option<&'a str>,
    #[serde(alias = "ttms", default)]
    trade_timestamp: Option<u64>,
    // myAsset
    #[serde(alias = "ast", default)]
    assets: Option<Vec<UpAsset<'a>>>,
}

#[derive(Deserialize)]
struct UpError {
    name: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct UpStatus {
    #[serde(default)]
    error: Option<UpError>,
    #[serde(default)]
    status: Option<String>,
}

fn up_num(field: &'static str, n: &Option<Number>) -> Result<Option<Decimal>, ParseError> {
    n.as_ref().map(|n| dec(UP, field, n.as_str())).transpose()
}

fn need<'a>(field: &'static str, v: Option<&'a str>) -> Result<&'a str, ParseError> {
    v.ok_or_else(|| ParseError::Shape { exchange: UP, reason: format!("{field} is missing") })
}

fn upbit(text: &str) -> Result<PrivateParsed, ParseError> {
    let t = text.trim_start();
    if t.starts_with('[') {
        let list: Vec<UpMsg> = serde_json::from_str(t).map_err(|e| shape(UP, e))?;
        let mut out = Vec::new();
        for m in &list {
            out.extend(up_msg(m)?);
        }
        return Ok(PrivateParsed::Data(out));
    }
    if t.contains("\"error\"") || t.contains("\"status\"") {
        let s: UpStatus = serde_json::from_str(t).map_err(|e| shape(UP, e))?;
        return Ok(match (s.error, s.status) {
            (Some(e), _) if e.name == "INVALID_AUTH" => PrivateParsed::LoginRefused(format!("{}: {}", e.name, e.message)),
            (Some(e), _) => PrivateParsed::Rejected(format!("{}: {}", e.name, e.message)),
            (None, Some(_)) => PrivateParsed::Pong,
            (None, None) => PrivateParsed::Ignored,
        });
    }
    let m: UpMsg = serde_json::from_str(t).map_err(|e| shape(UP, e))?;
    Ok(PrivateParsed::Data(up_msg(&m)?))
}

fn up_msg(m: &UpMsg<'_>) -> Result<Vec<(u64, &'static str, AccountMsg)>, ParseError> {
    let ts = m.timestamp;
    match m.kind {
        "myAsset" => {
            let balances = m
                .assets
                .as_ref()
                .ok_or_else(|| ParseError::Shape { exchange: UP, reason: "assets is missing".into() })?
                .iter()
                .map(|a| {
                    Ok(Balance {
                        asset: a.currency.to_owned(),
                        free: dtext(Some(dec(UP, "balance", a.balance.as_str())?)),
                        locked: dtext(Some(dec(UP, "locked", a.locked.as_str())?)),
                    })
                })
                .collect::<Result<Vec<_>, ParseError>>()?;
            Ok(vec![(ts, "spot", AccountMsg::Balance(BalanceUpdate { source: None, balances }))])
        }
        "myOrder" => {
            let native = need("code", m.code)?;
            let side = match need("ask_bid", m.ask_bid)? {
                "BID" => Side::Buy,
                "ASK" => Side::Sell,
                other => return Err(ParseError::Shape { exchange: UP, reason: format!("ask_bid '{other}' is neither BID nor ASK") }),
            };
            let state = need("state", m.state)?;
            let price = up_num("price", &m.price)?;
            let volume = up_num("volume", &m.volume)?;
            let executed = up_num("executed_volume", &m.executed_volume)?.unwrap_or_default();
            let remaining = up_num("remaining_volume", &m.remaining_volume)?.unwrap_or_default();
            let avg = up_num("avg_price", &m.avg_price)?.filter(|_| !executed.is_zero());
            let status = match state {
                "wait" | "watch" if executed.is_zero() => OrderStatus::Open,
                "wait" | "watch" => OrderStatus::PartiallyFilled,
                "trade" if remaining.is_zero() => OrderStatus::Filled,
                "trade" => OrderStatus::PartiallyFilled,
                "done" => OrderStatus::Filled,
                "cancel" => OrderStatus::Canceled,
                other => return Err(ParseError::Shape { exchange: UP, reason: format!("unknown order state '{other}'") }),
            };
            let trade = state == "trade";
            let order = OrderUpdate {
                source: None,
                symbol: canonical(Exchange::Upbit, native),
                native: native.to_owned(),
                order_id: need("uuid", m.uuid)?.to_owned(),
                client_order_id: m.identifier.unwrap_or_default().to_owned(),
                side: side as i32,
                order_type: m.order_type.unwrap_or_default().to_owned(),
                status: status as i32,
                exchange_status: state.to_owned(),
                price: if trade { String::new() } else { dtext(price) },
                qty: if trade { String::new() } else { dtext(volume) },
                filled_qty: dtext(Some(executed)),
                avg_price: dtext(avg),
                fee: dtext(up_num("paid_fee", &m.paid_fee)?),
            };
            let mut out = Vec::new();
            if trade {
                let fill = Fill {
                    source: None,
                    symbol: order.symbol.clone(),
                    native: order.native.clone(),
                    trade_id: need("trade_uuid", m.trade_uuid)?.to_owned(),
                    order_id: order.order_id.clone(),
                    client_order_id: order.client_order_id.clone(),
                    side: side as i32,
                    price: dtext(Some(price.ok_or_else(|| ParseError::Shape { exchange: UP, reason: "a trade without a price".into() })?)),
                    qty: dtext(Some(volume.ok_or_else(|| ParseError::Shape { exchange: UP, reason: "a trade without a volume".into() })?)),
                    fee: dtext(up_num("trade_fee", &m.trade_fee)?),
                    fee_asset: String::new(),
                    maker: m.is_maker.unwrap_or(false),
                };
                out.push((m.trade_timestamp.unwrap_or(ts), "spot", AccountMsg::Fill(fill)));
            }
            out.push((ts, "spot", AccountMsg::Order(order)));
            Ok(out)
        }
        other => Err(ParseError::Unknown { exchange: UP, what: format!("type '{other}' on the private stream") }),
    }
}

// ---- Bybit ----

const BY: &str = "bybit";

#[derive(Deserialize)]
struct ByControl<'a> {
    op: &'a str,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    ret_msg: String,
}

#[derive(Deserialize)]
struct ByData<T> {
    #[serde(rename = "creationTime", default)]
    creation: u64,
    data: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ByOrder<'a> {
    #[serde(default)]
    category: &'a str,
    symbol: &'a str,
    order_id: &'a str,
    #[serde(default)]
    order_link_id: &'a str,
    side: &'a str,
    #[serde(default)]
    order_type: &'a str,
    #[serde(default)]
    price: &'a str,
    #[serde(default)]
    qty: &'a str,
    order_status: &'a str,
    #[serde(default)]
    avg_price: &'a str,
    #[serde(default)]
    cum_exec_qty: &'a str,
    #[serde(default)]
    cum_exec_fee: &'a str,
    #[serde(default)]
    updated_time: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ByExec<'a> {
    #[serde(default)]
    category: &'a str,
    symbol: &'a str,
    exec_id: &'a str,
    exec_price: &'a str,
    exec_qty: &'a str,
    #[serde(default)]
    exec_fee: &'a str,
    #[serde(default)]
    fee_currency: &'a str,
    #[serde(default)]
    exec_type: &'a str,
    #[serde(default)]
    is_maker: bool,
    order_id: &'a str,
    #[serde(default)]
    order_link_id: &'a str,
    side: &'a str,
    #[serde(default)]
    exec_time: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ByCoin<'a> {
    coin: &'a str,
    wallet_balance: &'a str,
    #[serde(default)]
    locked: &'a str,
}

#[derive(Deserialize)]
struct ByWallet<'a> {
    #[serde(borrow)]
    coin: Vec<ByCoin<'a>>,
}

/// A Bybit decimal field; an empty string is none.
fn by_dec(field: &'static str, s: &str) -> Result<Option<Decimal>, ParseError> {
    if s.is_empty() { Ok(None) } else { dec(BY, field, s).map(Some) }
}

fn by_side(s: &str) -> Result<Side, ParseError> {
    match s {
        "Buy" => Ok(Side::Buy),
        "Sell" => Ok(Side::Sell),
        other => Err(ParseError::Shape { exchange: BY, reason: format!("side '{other}' is neither Buy nor Sell") }),
    }
}

fn market(category: &str) -> &'static str {
    match category {
        "linear" => "linear",
        "inverse" => "inverse",
        "option" => "option",
        _ => "spot",
    }
}

fn ms(s: &str, fallback: u64) -> u64 {
    s.parse().unwrap_or(fallback)
}

fn bybit(text: &str) -> Result<PrivateParsed, ParseError> {
    let topic = crate::event::peek(text, r#""topic":""#);
    let Some(topic) = topic else {
        let c: ByControl = serde_json::from_str(text).map_err(|e| shape(BY, e))?;
        return Ok(match (c.op, c.success) {
            ("pong" | "ping", _) => PrivateParsed::Pong,
            ("auth", Some(true)) => PrivateParsed::LoggedIn,
            ("auth", _) => PrivateParsed::LoginRefused(c.ret_msg),
            (_, Some(true)) => PrivateParsed::Ack,
            (_, Some(false)) => PrivateParsed::Rejected(c.ret_msg),
            _ => PrivateParsed::Ignored,
        });
    };
    // Topics may carry a category ("order.spot").
    let mut out = Vec::new();
    match topic.split('.').next().unwrap_or("") {
        "order" => {
            let d: ByData<ByOrder> = serde_json::from_str(text).map_err(|e| shape(BY, e))?;
            for o in &d.data {
                let filled = by_dec("cumExecQty", o.cum_exec_qty)?.unwrap_or_default();
                let status = match o.order_status {
                    "New" | "Untriggered" | "Triggered" | "Created" => OrderStatus::Open,
                    "PartiallyFilled" => OrderStatus::PartiallyFilled,
                    "Filled" => OrderStatus::Filled,
                    "Cancelled" | "PartiallyFilledCanceled" | "Deactivated" => OrderStatus::Canceled,
                    "Rejected" => OrderStatus::Rejected,
                    other => return Err(ParseError::Shape { exchange: BY, reason: format!("unknown orderStatus '{other}'") }),
                };
                let side = by_side(o.side)?;
                let u = OrderUpdate {
                    source: None,
                    symbol: canonical(Exchange::Bybit, o.symbol),
                    native: o.symbol.to_owned(),
                    order_id: o.order_id.to_owned(),
                    client_order_id: o.order_link_id.to_owned(),
                    side: side as i32,
                    order_type: o.order_type.to_owned(),
                    status: status as i32,
                    exchange_status: o.order_status.to_owned(),
                    // Market orders carry price "0".
                    price: dtext(by_dec("price", o.price)?.filter(|p| !p.is_zero())),
                    qty: dtext(by_dec("qty", o.qty)?),
                    filled_qty: dtext(Some(filled)),
                    avg_price: dtext(by_dec("avgPrice", o.avg_price)?.filter(|_| !filled.is_zero())),
                    fee: dtext(by_dec("cumExecFee", o.cum_exec_fee)?),
                };
                out.push((ms(o.updated_time, d.creation), market(o.category), AccountMsg::Order(u)));
            }
        }
        "execution" => {
            let d: ByData<ByExec> = serde_json::from_str(text).map_err(|e| shape(BY, e))?;
            // Funding and settlement are not trades.
            for e in d.data.iter().filter(|e| !matches!(e.exec_type, "Funding" | "Settle")) {
                let f = Fill {
                    source: None,
                    symbol: canonical(Exchange::Bybit, e.symbol),
                    native: e.symbol.to_owned(),
                    trade_id: e.exec_id.to_owned(),
                    order_id: e.order_id.to_owned(),
                    client_order_id: e.order_link_id.to_owned(),
                    side: by_side(e.side)? as i32,
                    price: dtext(Some(dec(BY, "execPrice", e.exec_price)?)),
                    qty: dtext(Some(dec(BY, "execQty", e.exec_qty)?)),
                    fee: dtext(by_dec("execFee", e.exec_fee)?),
                    fee_asset: e.fee_currency.to_owned(),
                    maker: e.is_maker,
                };
                out.push((ms(e.exec_time, d.creation), market(e.category), AccountMsg::Fill(f)));
            }
        }
        "wallet" => {
            let d: ByData<ByWallet> = serde_json::from_str(text).map_err(|e| shape(BY, e))?;
            for w in &d.data {
                let balances = w
                    .coin
                    .iter()
                    .map(|c| {
                        let total = dec(BY, "walletBalance", c.wallet_balance)?;
                        let locked = by_dec("locked", c.locked)?.unwrap_or_default();
                        Ok(Balance { asset: c.coin.to_owned(), free: dtext(Some(total - locked)), locked: dtext(Some(locked)) })
                    })
                    .collect::<Result<Vec<_>, ParseError>>()?;
                out.push((d.creation, "spot", AccountMsg::Balance(BalanceUpdate { source: None, balances })));
            }
        }
        other => return Err(ParseError::Unknown { exchange: BY, what: format!("private topic '{other}'") }),
    }
    Ok(PrivateParsed::Data(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(p: PrivateParsed) -> Vec<(u64, &'static str, AccountMsg)> {
        match p {
            PrivateParsed::Data(d) => d,
            other => panic!("not data: {other:?}"),
        }
    }

    #[test]
    fn upbit_trade_is_a_fill_and_an_order_update_in_both_formats() {
        let default = r#"{"type":"myOrder","code":"KRW-BTC","uuid":"u-1","ask_bid":"BID","order_type":"limit","state":"trade",
            "trade_uuid":"t-9","price":95000000.5,"avg_price":95000000.5,"volume":0.001,"remaining_volume":0.002,
            "executed_volume":0.001,"trades_count":1,"paid_fee":47.5,"trade_fee":47.5,"is_maker":true,"identifier":"c-1",
            "trade_timestamp":1700000000123,"order_timestamp":1700000000000,"timestamp":1700000000124,"stream_type":"REALTIME"}"#;
        let simple = r#"{"ty":"myOrder","cd":"KRW-BTC","uid":"u-1","ab":"BID","ot":"limit","s":"trade","tuid":"t-9",
            "p":95000000.5,"ap":95000000.5,"v":0.001,"rv":0.002,"ev":0.001,"tc":1,"pf":47.5,"tf":47.5,"im":true,"id":"c-1",
            "ttms":1700000000123,"otms":1700000000000,"tms":1700000000124,"st":"REALTIME"}"#;
        for text in [default, simple] {
            let d = data(parse(Exchange::Upbit, text).unwrap());
            assert_eq!(d.len(), 2, "{text}");
            let (ts, mkt, AccountMsg::Fill(f)) = &d[0] else { panic!("{:?}", d[0]) };
            assert_eq!((*ts, *mkt), (1_700_000_000_123, "spot"));
            assert_eq!(
                (f.symbol.as_str(), f.trade_id.as_str(), f.price.as_str(), f.qty.as_str()),
                ("BTC/KRW", "t-9", "95000000.5", "0.001")
            );
            assert_eq!((f.fee.as_str(), f.maker, f.client_order_id.as_str(), f.side), ("47.5", true, "c-1", Side::Buy as i32));
            let AccountMsg::Order(o) = &d[1].2 else { panic!() };
            assert_eq!(o.status, OrderStatus::PartiallyFilled as i32);
            assert_eq!((o.filled_qty.as_str(), o.price.as_str(), o.qty.as_str()), ("0.001", "", ""));
        }
    }

    #[test]
    fn upbit_states_assets_lists_and_refusals() {
        let wait = r#"[{"ty":"myOrder","cd":"KRW-ETH","uid":"u-2","ab":"ASK","ot":"limit","s":"wait","p":4000000,"v":1.5,
            "rv":1.5,"ev":0,"ap":0,"tms":5},{"ty":"myOrder","cd":"KRW-ETH","uid":"u-2","ab":"ASK","ot":"limit","s":"cancel",
            "p":4000000,"v":1.5,"rv":0,"ev":0,"ap":0,"tms":6}]"#;
        let d = data(parse(Exchange::Upbit, wait).unwrap());
        let statuses: Vec<i32> = d.iter().map(|(_, _, m)| if let AccountMsg::Order(o) = m { o.status } else { 0 }).collect();
        assert_eq!(statuses, vec![OrderStatus::Open as i32, OrderStatus::Canceled as i32]);
        let AccountMsg::Order(o) = &d[0].2 else { panic!() };
        assert_eq!((o.side, o.price.as_str(), o.qty.as_str(), o.avg_price.as_str()), (Side::Sell as i32, "4000000", "1.5", ""));

        let asset = r#"{"ty":"myAsset","astuid":"a","ast":[{"cu":"KRW","b":1000000.25,"l":5000},{"cu":"BTC","b":0.5,"l":0}],"asttms":7,"tms":7,"st":"REALTIME"}"#;
        let d = data(parse(Exchange::Upbit, asset).unwrap());
        let AccountMsg::Balance(b) = &d[0].2 else { panic!() };
        assert_eq!(
            (b.balances[0].asset.as_str(), b.balances[0].free.as_str(), b.balances[0].locked.as_str()),
            ("KRW", "1000000.25", "5000")
        );

        let refused = r#"{"error":{"name":"INVALID_AUTH","message":"bad jwt"}}"#;
        assert_eq!(parse(Exchange::Upbit, refused).unwrap(), PrivateParsed::LoginRefused("INVALID_AUTH: bad jwt".into()));
        assert_eq!(parse(Exchange::Upbit, r#"{"status":"UP"}"#).unwrap(), PrivateParsed::Pong);
        let bad = r#"{"type":"myOrder","code":"KRW-BTC","uuid":"x","ask_bid":"BID","state":"trade","price":"not-a-price","volume":1,"timestamp":1}"#;
        assert!(parse(Exchange::Upbit, bad).is_err());
        let e = parse(Exchange::Upbit, r#"{"ty":"myOrder","cd":"KRW-BTC","uid":"x","ab":"BID","s":"lost","tms":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown order state 'lost'"), "{e}");
    }

    #[test]
    fn bybit_control_order_execution_and_wallet() {
        assert_eq!(parse(Exchange::Bybit, r#"{"success":true,"ret_msg":"","op":"auth","conn_id":"c"}"#).unwrap(), PrivateParsed::LoggedIn);
        assert_eq!(
            parse(Exchange::Bybit, r#"{"success":false,"ret_msg":"Request expired","op":"auth","conn_id":"c"}"#).unwrap(),
            PrivateParsed::LoginRefused("Request expired".into())
        );
        assert_eq!(parse(Exchange::Bybit, r#"{"success":true,"ret_msg":"","op":"subscribe","conn_id":"c"}"#).unwrap(), PrivateParsed::Ack);
        assert_eq!(parse(Exchange::Bybit, r#"{"req_id":"","op":"pong","args":["1"],"conn_id":"c"}"#).unwrap(), PrivateParsed::Pong);

        let order = r#"{"id":"1","topic":"order","creationTime":10,"data":[{"category":"linear","symbol":"BTCUSDT","orderId":"o-1",
            "orderLinkId":"","side":"Sell","orderType":"Market","price":"0","qty":"0.01","orderStatus":"Filled","avgPrice":"65000.5",
            "cumExecQty":"0.01","cumExecValue":"650.005","cumExecFee":"0.39","leavesQty":"0","createdTime":"9","updatedTime":"11"}]}"#;
        let d = data(parse(Exchange::Bybit, order).unwrap());
        let (ts, mkt, AccountMsg::Order(o)) = &d[0] else { panic!() };
        assert_eq!((*ts, *mkt, o.symbol.as_str(), o.status), (11, "linear", "BTC/USDT", OrderStatus::Filled as i32));
        assert_eq!((o.price.as_str(), o.avg_price.as_str(), o.fee.as_str(), o.side), ("", "65000.5", "0.39", Side::Sell as i32));

        let exec = r#"{"id":"2","topic":"execution","creationTime":10,"data":[{"category":"spot","symbol":"ETHUSDT","execId":"e-1",
            "execPrice":"3000.1","execQty":"0.5","execFee":"0.001","feeCurrency":"ETH","execType":"Trade","isMaker":false,
            "orderId":"o-2","orderLinkId":"c-2","side":"Buy","execTime":"12"},{"category":"linear","symbol":"ETHUSDT","execId":"f",
            "execPrice":"3000","execQty":"0","execType":"Funding","orderId":"","side":"Buy","execTime":"13"}]}"#;
        let d = data(parse(Exchange::Bybit, exec).unwrap());
        assert_eq!(d.len(), 1, "funding is not a fill");
        let AccountMsg::Fill(f) = &d[0].2 else { panic!() };
        assert_eq!((f.price.as_str(), f.qty.as_str(), f.fee_asset.as_str(), f.client_order_id.as_str()), ("3000.1", "0.5", "ETH", "c-2"));

        let wallet = r#"{"id":"3","topic":"wallet","creationTime":14,"data":[{"accountType":"UNIFIED","coin":[
            {"coin":"USDT","walletBalance":"1000.5","locked":"100"}]}]}"#;
        let d = data(parse(Exchange::Bybit, wallet).unwrap());
        let AccountMsg::Balance(b) = &d[0].2 else { panic!() };
        assert_eq!((b.balances[0].free.as_str(), b.balances[0].locked.as_str()), ("900.5", "100"));

        let bad = r#"{"id":"x","topic":"execution","creationTime":1,"data":[{"symbol":"BTCUSDT","execId":"1","execPrice":"not-a-price","execQty":"1","orderId":"1","side":"Buy"}]}"#;
        let e = parse(Exchange::Bybit, bad).unwrap_err();
        assert!(e.to_string().contains("'not-a-price' in execPrice"), "{e}");
    }
}
