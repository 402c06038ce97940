"""pybit (Bybit v5) and python-binance against the simulator, pointed at it
as a user points them at the exchange: market data, the wallet or account,
a limit order placed, listed, fetched and cancelled by its client id, a test
order (python-binance), and a wrong secret refused with the exchange's own
error. Prints "all checks passed" only when every check held.

    python pybit_binance_sim.py --bybit URL --binance URL [--keys FILE]

--keys names other credentials (JSON: exchange -> apiKey, secret), e.g.
sluice exchange keys when the URLs are the dispatcher's exchange-compatible
face. face_clients.py imports pybit() and python_binance().
"""

import argparse
import json
import sys

from binance.client import Client
from binance.exceptions import BinanceAPIException
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from ccxt_sim import CREDS, check


# The simulator's own keys (config/sim.toml), as the ccxt checks use them.
SIM_KEYS = {name: CREDS[name] for name in ("bybit", "binance")}


def pybit(base, creds=None):
    creds = creds or SIM_KEYS["bybit"]

    def session(secret):
        s = HTTP(testnet=False, api_key=creds["apiKey"], api_secret=secret)
        s.endpoint = base
        return s

    s = session(creds["secret"])
    inst = s.get_instruments_info(category="spot", symbol="BTCUSDT")["result"]["list"][0]
    check(inst["priceFilter"]["tickSize"] and inst["lotSizeFilter"]["basePrecision"], f"instrument rules: {inst}")
    check(float(s.get_tickers(category="spot", symbol="BTCUSDT")["result"]["list"][0]["lastPrice"]) > 0, "ticker")
    book = s.get_orderbook(category="spot", symbol="BTCUSDT", limit=50)["result"]
    check(float(book["b"][0][0]) < float(book["a"][0][0]), "book")
    check(len(s.get_kline(category="spot", symbol="BTCUSDT", interval="1", limit=5)["result"]["list"]) == 5, "klines")
    wallet = s.get_wallet_balance(accountType="UNIFIED")["result"]["list"][0]
    check(float(wallet["totalEquity"]) > 100_000 and float(wallet["totalAvailableBalance"]) > 0, f"wallet totals: {wallet}")
    bid = float(book["b"][0][0])
    placed = s.place_order(category="spot", symbol="BTCUSDT", side="Buy", orderType="Limit", qty="0.001",
                           price=f"{bid * 0.9:.1f}", orderLinkId="pybit-1")["result"]
    check(placed["orderId"].isdigit(), f"a numeric spot order id: {placed}")
    opened = s.get_open_orders(category="spot", symbol="BTCUSDT")["result"]["list"]
    check(any(o["orderLinkId"] == "pybit-1" for o in opened), f"open: {opened}")
    s.cancel_order(category="spot", symbol="BTCUSDT", orderLinkId="pybit-1")
    hist = s.get_order_history(category="spot", symbol="BTCUSDT", orderLinkId="pybit-1")["result"]["list"]
    check(hist and hist[0]["orderStatus"] == "Cancelled", f"history: {hist}")
    try:
        session("not-the-secret").get_wallet_balance(accountType="UNIFIED")
        raise AssertionError("pybit: a wrong secret was accepted")
    except InvalidRequestError as e:
        check(e.status_code == 10004, f"Bybit's sign error 10004: {e}")
    print("pybit: ok")


def python_binance(base, creds=None):
    creds = creds or SIM_KEYS["binance"]

    def client(secret):
        c = Client(creds["apiKey"], secret, ping=False)
        c.API_URL = base.rstrip("/") + "/api"
        return c

    c = client(creds["secret"])
    c.ping()
    info = c.get_symbol_info("BTCUSDT")
    kinds = {f["filterType"] for f in info["filters"]}
    check({"PRICE_FILTER", "LOT_SIZE", "NOTIONAL"} <= kinds, f"filters: {kinds}")
    check("LIMIT" in info["orderTypes"], "order types")
    bid = float(c.get_order_book(symbol="BTCUSDT", limit=5)["bids"][0][0])
    check(len(c.get_aggregate_trades(symbol="BTCUSDT", limit=5)) <= 5, "aggregate trades")
    check(len(c.get_klines(symbol="BTCUSDT", interval="1m", limit=5)) == 5, "klines")
    free = {b["asset"]: float(b["free"]) for b in c.get_account()["balances"] if float(b["free"])}
    check(free == {"BTC": 2, "ETH": 20, "SOL": 200, "USDT": 100_000}, f"balances: {free}")
    price = f"{bid * 0.9:.1f}"
    c.create_test_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001", price=price)
    check(not c.get_open_orders(symbol="BTCUSDT"), "a test order is not placed")
    c.order_limit_buy(symbol="BTCUSDT", quantity="0.001", price=price, newClientOrderId="pbn-1")
    check(c.get_order(symbol="BTCUSDT", origClientOrderId="pbn-1")["status"] == "NEW", "placed")
    check(len(c.get_open_orders(symbol="BTCUSDT")) == 1, "open")
    check(c.cancel_order(symbol="BTCUSDT", origClientOrderId="pbn-1")["status"] == "CANCELED", "cancelled")
    try:
        c.order_limit_buy(symbol="BTCUSDT", quantity="0.00001", price=price)
        raise AssertionError("an order under the lot size was accepted")
    except BinanceAPIException as e:
        check(e.code < 0, f"Binance's own error code: {e}")
    try:
        client("not-the-secret").get_account()
        raise AssertionError("python-binance: a wrong secret was accepted")
    except BinanceAPIException as e:
        check(e.code == -1022, f"Binance's signature error -1022: {e}")
    print("python-binance: ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bybit", required=True)
    ap.add_argument("--binance", required=True)
    ap.add_argument("--keys", help="JSON file: exchange -> credentials (default: the simulator's own)")
    args = ap.parse_args()
    keys = json.load(open(args.keys)) if args.keys else {}
    failed = []
    for name, f, ex, base in [("pybit", pybit, "bybit", args.bybit), ("python-binance", python_binance, "binance", args.binance)]:
        try:
            f(base, keys.get(ex))
        except Exception as e:  # noqa: BLE001 - both are tried, each failure named
            failed.append(f"{name}: {type(e).__name__}: {e}")
    if failed:
        print("\n".join(failed))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
