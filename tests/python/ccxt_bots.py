"""Many ccxt bots on one exchange account at once, as Hummingbot or Freqtrade
users run them: each process loads markets, then reads its balance and open
orders in a loop for a fixed time. Every answer is counted by HTTP status (an
exchange 429, a ban, or sluice's own refusal, told by its x-sluice-refused
header), with the HTTP latency of each accepted call (ccxt's own limiter's
sleep left out) and, through the dispatcher, the time it waited for budget
(x-sluice-queued-ms) and the dispatcher's own part (x-sluice-own-ms: all but
that wait and the exchange's round trip). Prints one JSON object.

    python ccxt_bots.py --exchange upbit --base URL [--keys FILE]
        [--processes 8] [--seconds 60] [--no-limiter]

Used by the dispatcher's face test (through the dispatcher, limiter off: no
429 may reach a bot) and by `sluice bench bots` (direct against through).
"""

import argparse
import json
import multiprocessing as mp
import sys
import time

import ccxt

from ccxt_sim import CREDS, local

# The simulator's own keys and the URL rewrite, as the ccxt checks use them.
SIM_KEYS = CREDS
SYMBOL = {"upbit": "BTC/KRW"}


def bot(exchange, base, creds, limiter, until, out):
    cls = getattr(ccxt, exchange)

    class Counted(cls):
        """Remembers each answer's HTTP status (ccxt maps some 429 bodies to
        generic errors, so the status is the honest count)."""

        def handle_errors(self, code, reason, url, method, headers, body, response, request_headers, request_body):
            self.status = code
            return super().handle_errors(code, reason, url, method, headers, body, response, request_headers, request_body)

        def fetch(self, url, method="GET", headers=None, body=None):
            # The HTTP exchange alone: ccxt's own limiter sleeps before this.
            t0 = time.perf_counter()
            try:
                return super().fetch(url, method, headers, body)
            finally:
                self.http_ms = (time.perf_counter() - t0) * 1e3

    ex = Counted(dict(creds, enableRateLimit=limiter))
    ex.urls["api"] = local(ex.urls["api"], base)
    if exchange == "binance":
        ex.options["fetchMarkets"] = {"types": ["spot"]}
    counts = {"calls": 0, "ok": 0, "http_429": 0, "http_418": 0, "sluice_refused": 0, "other": 0}
    lat, queued, overhead, errors = [], [], [], []
    for attempt in range(20):
        try:
            ex.load_markets()
            break
        except ccxt.BaseError as e:
            if attempt == 19:
                out.put({"counts": counts, "lat": lat, "queued": queued, "overhead": overhead, "errors": [f"load_markets: {e}"[:300]]})
                return
            time.sleep(0.5)
    sym = SYMBOL.get(exchange, "BTC/USDT")
    calls = [lambda: ex.fetch_balance(), lambda: ex.fetch_open_orders(sym)]
    i = 0
    while time.monotonic() < until:
        ex.status = None
        try:
            calls[i % 2]()
            counts["ok"] += 1
            lat.append(ex.http_ms)
        except ccxt.BaseError as e:
            headers = ex.last_response_headers or {}
            if headers.get("x-sluice-refused"):
                counts["sluice_refused"] += 1
            elif ex.status == 429:
                counts["http_429"] += 1
            elif ex.status == 418 or (ex.status == 403 and exchange == "bybit"):
                counts["http_418"] += 1
            else:
                counts["other"] += 1
                if len(errors) < 5:
                    errors.append(f"{type(e).__name__}: {e}"[:300])
        headers = ex.last_response_headers or {}
        q, own = headers.get("x-sluice-queued-ms"), headers.get("x-sluice-own-ms")
        if q is not None and own is not None and ex.status == 200:
            queued.append(float(q))
            overhead.append(float(own))
        counts["calls"] += 1
        i += 1
    out.put({"counts": counts, "lat": lat, "queued": queued, "overhead": overhead, "errors": errors})


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exchange", default="upbit", choices=sorted(SIM_KEYS))
    ap.add_argument("--base", required=True)
    ap.add_argument("--keys", help="JSON file with apiKey, secret (password) for this exchange")
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--no-limiter", action="store_true", help="ccxt's own rate limiter off")
    args = ap.parse_args()
    creds = json.load(open(args.keys)) if args.keys else SIM_KEYS[args.exchange]
    until = time.monotonic() + args.seconds
    out = mp.Queue()
    procs = [mp.Process(target=bot, args=(args.exchange, args.base, creds, not args.no_limiter, until, out)) for _ in range(args.processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    total = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    lat = [x for r in results for x in r["lat"]]
    queued = [x for r in results for x in r["queued"]]
    overhead = [x for r in results for x in r["overhead"]]
    report = dict(
        total,
        processes=args.processes,
        seconds=args.seconds,
        limiter=not args.no_limiter,
        ok_per_s=round(total["ok"] / args.seconds, 2),
        p50_ms=pct(lat, 50),
        p99_ms=pct(lat, 99),
        queued_p50_ms=pct(queued, 50),
        queued_p99_ms=pct(queued, 99),
        overhead_p50_ms=pct(overhead, 50),
        overhead_p99_ms=pct(overhead, 99),
        errors=[e for r in results for e in r["errors"]][:10],
    )
    print(json.dumps(report))
    sys.exit(0 if total["calls"] > 0 else 1)


if __name__ == "__main__":
    main()
