//! Binance spot, pure: the trading rules of a symbol from `GET
//! /api/v3/exchangeInfo?symbol=` (`PRICE_FILTER.tickSize`, `LOT_SIZE.stepSize`,
//! `minQty` and `maxQty`, `NOTIONAL.minNotional`, or the older `MIN_NOTIONAL`).
//! Live orders on Binance are not placed by this build (paper mode trades it).

use serde::Deserialize;
use sluice_domain::Exchange;
use sluice_proto::dispatcher::v1::{CallRequest, Priority};

use super::{Answer, call, decimal, enc};
use crate::instrument::Rules;

pub fn rules(native: &str) -> Vec<CallRequest> {
    vec![call(Exchange::Binance, "", "GET", "/api/v3/exchangeInfo", format!("symbol={}", enc(native)), Vec::new(), Priority::Backfill)]
}

pub fn read_rules(answers: &[Answer<'_>], native: &str) -> Result<Rules, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Filter {
        filter_type: String,
        #[serde(default)]
        tick_size: Option<String>,
        #[serde(default)]
        step_size: Option<String>,
        #[serde(default)]
        min_qty: Option<String>,
        #[serde(default)]
        max_qty: Option<String>,
        #[serde(default)]
        min_notional: Option<String>,
    }
    #[derive(Deserialize)]
    struct Symbol {
        symbol: String,
        filters: Vec<Filter>,
    }
    #[derive(Deserialize)]
    struct Info {
        symbols: Vec<Symbol>,
    }
    let &[(status, body)] = answers else { return Err("binance rules: expected 1 answer".into()) };
    if !(200..300).contains(&status) {
        return Err(format!("binance {status}: {}", String::from_utf8_lossy(body).chars().take(200).collect::<String>()));
    }
    let info: Info = serde_json::from_slice(body).map_err(|e| format!("binance exchangeInfo: {e}"))?;
    let s = info.symbols.into_iter().find(|s| s.symbol == native).ok_or_else(|| format!("binance lists no symbol {native}"))?;
    let find = |t: &str| s.filters.iter().find(|f| f.filter_type == t);
    let need = |v: Option<&String>, what: &str| v.ok_or_else(|| format!("binance {native}: no {what}")).and_then(|v| decimal(what, v));
    let price = find("PRICE_FILTER").ok_or_else(|| format!("binance {native}: no PRICE_FILTER"))?;
    let lot = find("LOT_SIZE").ok_or_else(|| format!("binance {native}: no LOT_SIZE"))?;
    let notional = find("NOTIONAL").or_else(|| find("MIN_NOTIONAL")).and_then(|f| f.min_notional.as_ref());
    let max = match lot.max_qty.as_ref() {
        Some(m) => Some(decimal("maxQty", m)?),
        None => None,
    };
    Ok(Rules {
        tick: need(price.tick_size.as_ref(), "tickSize")?.normalize(),
        lot: need(lot.step_size.as_ref(), "stepSize")?.normalize(),
        min_qty: need(lot.min_qty.as_ref(), "minQty")?.normalize(),
        max_qty: max.map(|m| m.normalize()),
        min_notional: notional.map(|n| decimal("minNotional", n)).transpose()?.unwrap_or_default().normalize(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_rules() {
        let body: &[u8] = br#"{"timezone":"UTC","symbols":[{"symbol":"BTCUSDT","filters":[
            {"filterType":"PRICE_FILTER","minPrice":"0.01000000","maxPrice":"1000000.00000000","tickSize":"0.01000000"},
            {"filterType":"LOT_SIZE","minQty":"0.00001000","maxQty":"9000.00000000","stepSize":"0.00001000"},
            {"filterType":"NOTIONAL","minNotional":"5.00000000","applyMinToMarket":true}]}]}"#;
        let r = read_rules(&[(200, body)], "BTCUSDT").unwrap();
        let d = |s: &str| s.parse::<sluice_domain::Decimal>().unwrap();
        assert_eq!((r.tick, r.lot, r.min_qty, r.max_qty, r.min_notional), (d("0.01"), d("0.00001"), d("0.00001"), Some(d("9000")), d("5")));
        assert!(read_rules(&[(400, br#"{"code":-1121,"msg":"Invalid symbol."}"#)], "NOPE").unwrap_err().contains("-1121"));
        assert!(
            read_rules(&[(200, br#"{"symbols":[{"symbol":"BTCUSDT","filters":[]}]}"#)], "BTCUSDT").unwrap_err().contains("PRICE_FILTER")
        );
    }
}
