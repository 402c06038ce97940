"""ccxt, pybit and python-binance through the dispatcher's exchange-compatible
REST face, each changed only in its base URL and its key (a sluice exchange
key in place of the exchange's): the same checks as against the simulator
(ccxt_sim.run, pybit_binance_sim), then a market-data-only client refused an
order with the exchange's own permission error, and sluice's own answers.
Prints "all checks passed" only when every check held.

    python face_clients.py --face URL --keys FILE --md-keys FILE

URL is the face's shared address (each exchange under /upbit, /bybit, ...);
the key files map exchange -> apiKey, secret (password).
"""

import argparse
import json
import sys

import ccxt
import requests

import ccxt_sim
import pybit_binance_sim
from ccxt_sim import check

# Binance futures live on other hosts (fapi, dapi) that the dispatcher does not
# serve: ccxt loads spot markets only (docs/EXISTING-BOTS.md).
OPTIONS = {"binance": {"fetchMarkets": {"types": ["spot"]}}}
# The exchange's own permission error, as ccxt raises it (Binance says -2015
# for keys without a permission, which ccxt reads as an authentication error;
# ccxt leaves OKX's 50120 unmapped).
PERMISSION = {
    "upbit": ccxt.PermissionDenied,
    "bybit": ccxt.PermissionDenied,
    "binance": ccxt.AuthenticationError,
    "okx": ccxt.ExchangeError,
}


def market_data_only(name, base, creds):
    ex = ccxt_sim.client(name, base, creds, OPTIONS.get(name))
    sym = "BTC/KRW" if name == "upbit" else "BTC/USDT"
    ex.load_markets()
    check(ex.fetch_ticker(sym)["last"] > 0, "a market-data client reads the market")
    bid = ex.fetch_order_book(sym)["bids"][0][0]
    price = float(int(bid * 0.9 // 1000 * 1000)) if name == "upbit" else float(ex.price_to_precision(sym, bid * 0.9))
    try:
        ex.create_order(sym, "limit", "buy", 0.001, price)
        raise AssertionError("a market-data-only client placed an order")
    except PERMISSION[name] as e:
        check("sluice:" in str(e), f"the refusal says why: {e}")


def sluice_answers(face):
    # An unknown exchange, a route the exchange does not have, and a private
    # endpoint without a signature (the exchange's own auth error).
    r = requests.get(f"{face}/kraken/0/public/Time", timeout=10)
    check(r.status_code == 404 and r.json()["sluice"]["error"] == "unknown_exchange", f"unknown exchange: {r.text}")
    r = requests.get(f"{face}/binance/fapi/v1/exchangeInfo", timeout=10)
    check(r.status_code == 400 and "/fapi/v1/exchangeInfo" in r.json()["sluice"]["message"], f"futures host: {r.text}")
    r = requests.get(f"{face}/upbit/v1/accounts", timeout=10)
    check(r.status_code == 401 and r.json()["error"]["name"] == "jwt_verification", f"unsigned private call: {r.text}")
    r = requests.get(f"{face}/bybit/v5/market/time", timeout=10)
    check(r.status_code == 200 and r.json()["retCode"] == 0, f"public, unsigned: {r.text}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--face", required=True)
    ap.add_argument("--keys", required=True)
    ap.add_argument("--md-keys", required=True)
    args = ap.parse_args()
    face = args.face.rstrip("/")
    keys = json.load(open(args.keys))
    md = json.load(open(args.md_keys))
    steps = [(f"ccxt {n}", lambda n=n: ccxt_sim.run(n, f"{face}/{n}", keys[n], watch_ws=False, options=OPTIONS.get(n))) for n in keys]
    steps += [
        ("pybit", lambda: pybit_binance_sim.pybit(f"{face}/bybit", keys["bybit"])),
        ("python-binance", lambda: pybit_binance_sim.python_binance(f"{face}/binance", keys["binance"])),
    ]
    steps += [(f"market-data-only {n}", lambda n=n: market_data_only(n, f"{face}/{n}", md[n])) for n in md]
    steps.append(("sluice's own answers", lambda: sluice_answers(face)))
    failed = []
    for name, step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001 - every step is tried, each failure named
            failed.append(f"{name}: {type(e).__name__}: {e}")
    if failed:
        print("\n".join(failed))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
