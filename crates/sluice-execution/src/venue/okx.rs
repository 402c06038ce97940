//! OKX v5, pure: the trading rules of a spot instrument from `GET
//! /api/v5/public/instruments?instType=SPOT&instId=` (`tickSz`, `lotSz`, `minSz`,
//! `maxLmtSz`; OKX states no minimum value for spot). Live orders on OKX are not
//! placed by this build (paper mode trades it).

use serde::Deserialize;
use sluice_domain::{Decimal, Exchange};
use sluice_proto::dispatcher::v1::{CallRequest, Priority};

use super::{Answer, call, decimal, enc};
use crate::instrument::Rules;

pub fn rules(native: &str) -> Vec<CallRequest> {
    let q = format!("instType=SPOT&instId={}", enc(native));
    vec![call(Exchange::Okx, "", "GET", "/api/v5/public/instruments", q, Vec::new(), Priority::Backfill)]
}

pub fn read_rules(answers: &[Answer<'_>], native: &str) -> Result<Rules, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Instrument {
        inst_id: String,
        tick_sz: String,
        lot_sz: String,
        min_sz: String,
        #[serde(default)]
        max_lmt_sz: String,
    }
    #[derive(Deserialize)]
    struct Answer {
        code: String,
        #[serde(default)]
        msg: String,
        #[serde(default)]
        data: Vec<Instrument>,
    }
    let &[(status, body)] = answers else { return Err("okx rules: expected 1 answer".into()) };
    let a: Answer = serde_json::from_slice(body).map_err(|e| format!("okx instruments (HTTP {status}): {e}"))?;
    if a.code != "0" {
        return Err(format!("okx {}: {}", a.code, a.msg));
    }
    let i = a.data.into_iter().find(|i| i.inst_id == native).ok_or_else(|| format!("okx lists no instrument {native}"))?;
    Ok(Rules {
        tick: decimal("tickSz", &i.tick_sz)?,
        lot: decimal("lotSz", &i.lot_sz)?,
        min_qty: decimal("minSz", &i.min_sz)?,
        max_qty: if i.max_lmt_sz.is_empty() { None } else { Some(decimal("maxLmtSz", &i.max_lmt_sz)?) },
        min_notional: Decimal::ZERO,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instrument_becomes_rules() {
        let body: &[u8] = br#"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","tickSz":"0.1","lotSz":"0.00000001","minSz":"0.00001","maxLmtSz":"9999999999"}]}"#;
        let r = read_rules(&[(200, body)], "BTC-USDT").unwrap();
        assert_eq!((r.tick.to_string(), r.min_qty.to_string()), ("0.1".into(), "0.00001".into()));
        assert!(
            read_rules(&[(400, br#"{"code":"51000","msg":"Parameter instType error","data":[]}"#)], "BTC-USDT")
                .unwrap_err()
                .contains("51000")
        );
    }
}
