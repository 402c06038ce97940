"""ccxt against the simulator, as a user points it at an exchange. REST:
load markets, ticker, order book, trades, candles, balance, then a limit
order created, fetched, listed among the open ones and cancelled, and a wrong
secret refused as ccxt's AuthenticationError. WebSocket (ccxt.pro): three
updates each of watch_ticker, watch_trades and watch_order_book (whose own
sequence checks must pass). Every step is checked; the script prints "all
checks passed" only when all held.

    python ccxt_sim.py --upbit URL --bybit URL --binance URL --okx URL [--keys FILE] [--no-watch]

--keys names other credentials (JSON: exchange -> ccxt's apiKey, secret,
password), e.g. sluice exchange keys when the URLs are the dispatcher's
exchange-compatible face; --no-watch leaves out the WebSocket part (the face
serves REST only). face_clients.py imports run() for the same checks.
"""

import argparse
import asyncio
import json
import re
import sys

import ccxt
import ccxt.pro as ccxtpro

CREDS = {
    "upbit": dict(apiKey="sim-upbit-access-key", secret="sim-upbit-secret-key"),
    "bybit": dict(apiKey="sim-bybit-api-key", secret="sim-bybit-secret"),
    "binance": dict(apiKey="sim-binance-api-key", secret="sim-binance-secret"),
    "okx": dict(apiKey="sim-okx-api-key", secret="sim-okx-secret", password="sim-okx-passphrase"),
}
# What each simulated account starts with (config/sim.toml).
BALANCE = {
    "upbit": {"KRW": 100_000_000, "BTC": 2, "ETH": 20},
    "bybit": {"USDT": 100_000, "BTC": 2, "ETH": 20, "SOL": 200},
    "binance": {"USDT": 100_000, "BTC": 2, "ETH": 20, "SOL": 200},
    "okx": {"USDT": 100_000, "BTC": 2, "ETH": 20, "SOL": 200},
}


def local(v, base):
    """Every API URL of the exchange, REST and WebSocket, moved to the
    simulator (paths kept)."""
    if isinstance(v, dict):
        return {k: local(x, base) for k, x in v.items()}
    if isinstance(v, str):
        v = re.sub(r"^https?://[^/]+", base, v)
        return re.sub(r"^wss?://[^/]+", base.replace("http://", "ws://"), v)
    return v


def client(name, base, creds=None, options=None, **over):
    ex = getattr(ccxt, name)(dict(creds or CREDS[name], enableRateLimit=True, **over))
    for k, v in (options or {}).items():
        ex.options[k] = v
    ex.urls["api"] = local(ex.urls["api"], base)
    return ex


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(name, base, creds=None, watch_ws=True, options=None):
    ex = client(name, base, creds, options)
    sym = "BTC/KRW" if name == "upbit" else "BTC/USDT"
    markets = ex.load_markets()
    check(sym in markets and markets[sym]["active"] is not False, f"{sym} in markets: {list(markets)}")
    check(markets[sym]["precision"]["price"] is not None, f"{sym} has a price precision")
    t = ex.fetch_ticker(sym)
    check(t["last"] and t["last"] > 0, f"ticker last: {t}")
    book = ex.fetch_order_book(sym)
    bids, asks = book["bids"], book["asks"]
    check(bids and asks and bids[0][0] < asks[0][0], "book: best bid below best ask")
    check(all(bids[i][0] > bids[i + 1][0] for i in range(len(bids) - 1)), "bids high to low")
    trades = ex.fetch_trades(sym)
    check(isinstance(trades, list) and all(x["price"] > 0 for x in trades), "trades")
    candles = ex.fetch_ohlcv(sym, "1m", limit=5)
    check(len(candles) == 5 and all(c[2] >= c[3] for c in candles), f"5 candles, high >= low: {candles}")
    total = ex.fetch_balance()["total"]
    held = {k: v for k, v in total.items() if v}
    check(held == BALANCE[name], f"balance {held} != {BALANCE[name]}")

    # A limit buy 10 % under the bid rests; found, listed, cancelled.
    price = float(ex.price_to_precision(sym, bids[0][0] * 0.9))
    if name == "upbit":
        price = float(int(price // 1000 * 1000))
    order = ex.create_order(sym, "limit", "buy", 0.001, price)
    oid = order["id"]
    check(oid, f"an order id: {order}")
    got = ex.fetch_order(oid, sym, {"acknowledged": True}) if name == "bybit" else ex.fetch_order(oid, sym)
    check(got["id"] == oid and got["status"] == "open" and got["price"] == price, f"fetched: {got}")
    opened = ex.fetch_open_orders(sym)
    check(oid in [o["id"] for o in opened], f"{oid} among the open orders: {opened}")
    ex.cancel_order(oid, sym)
    gone = ex.fetch_open_orders(sym)
    check(oid not in [o["id"] for o in gone], "cancelled: no longer open")
    if name != "upbit":  # ccxt's upbit has no fetch_my_trades
        check(isinstance(ex.fetch_my_trades(sym), list), "my trades")

    # A wrong secret: the exchange's own auth error, which ccxt maps.
    bad = client(name, base, creds, options, secret="not-the-secret")
    bad.markets = ex.markets
    bad.markets_by_id = ex.markets_by_id
    bad.currencies = ex.currencies
    try:
        bad.fetch_balance()
        raise AssertionError("a wrong secret was accepted")
    except ccxt.AuthenticationError:
        pass
    if watch_ws:
        asyncio.run(watch(name, base, sym))
    print(f"{name}: ok ({len(markets)} markets, order {oid})")


async def watch(name, base, sym):
    ex = getattr(ccxtpro, name)({"enableRateLimit": True})
    ex.urls["api"] = local(ex.urls["api"], base)
    try:
        await ex.load_markets()
        for what, f in [("ticker", ex.watch_ticker), ("trades", ex.watch_trades), ("order book", ex.watch_order_book)]:
            for _ in range(3):
                got = await asyncio.wait_for(f(sym), 15)
            if what == "ticker":
                check(got["symbol"] == sym and got["last"] and got["last"] > 0, f"watched ticker: {got}")
            elif what == "trades":
                check(got and all(t["symbol"] == sym and t["price"] > 0 for t in got), f"watched trades: {got}")
            else:
                check(got["bids"] and got["asks"] and got["bids"][0][0] < got["asks"][0][0], "watched book: bid below ask")
    finally:
        await ex.close()


def main():
    ap = argparse.ArgumentParser()
    for name in CREDS:
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--keys", help="JSON file: exchange -> credentials (default: the simulator's own)")
    ap.add_argument("--no-watch", action="store_true", help="REST only")
    args = ap.parse_args()
    keys = json.load(open(args.keys)) if args.keys else {}
    failed = []
    for name in CREDS:
        try:
            run(name, getattr(args, name), keys.get(name), watch_ws=not args.no_watch)
        except Exception as e:  # noqa: BLE001 - every exchange is tried, each failure named
            failed.append(f"{name}: {type(e).__name__}: {e}")
    if failed:
        print("\n".join(failed))
        sys.exit(1)
    print(f"ccxt {ccxt.__version__}: all checks passed")


if __name__ == "__main__":
    main()
