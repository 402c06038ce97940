"""A gRPC client of the dispatcher in Python (grpcio, stubs generated from
proto/): one exchange call through the dispatcher (Upbit's ticker, at market
data priority, with a deadline), the exchange's answer verbatim, and the
budgets it was counted against.

    python dispatcher_client.py --addr 127.0.0.1:50051 [--token-file FILE]
"""

import argparse
import json
import sys

import grpc

import sluice_proto  # noqa: F401
from google.protobuf import duration_pb2
from sluice.dispatcher.v1 import dispatcher_pb2, dispatcher_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:50051")
    ap.add_argument("--token-file", help="a bearer token, when the dispatcher names its clients")
    args = ap.parse_args()
    metadata = []
    if args.token_file:
        metadata.append(("authorization", "Bearer " + open(args.token_file).read().strip()))
    with grpc.insecure_channel(args.addr) as channel:
        api = dispatcher_pb2_grpc.DispatcherStub(channel)
        try:
            r = api.Call(
                dispatcher_pb2.CallRequest(
                    exchange="upbit",
                    method="GET",
                    path="/v1/ticker",
                    query="markets=KRW-BTC",
                    priority=dispatcher_pb2.PRIORITY_MARKET_DATA,
                    timeout=duration_pb2.Duration(seconds=5),
                ),
                metadata=metadata,
                timeout=10,
            )
        except grpc.RpcError as e:
            # The call got no answer from the exchange; the code says whether it was sent.
            sys.exit(f"Call: {e.code().name}: {e.details()}")
        ticker = json.loads(r.body)[0]
        queued_ms = r.queued.seconds * 1e3 + r.queued.nanos / 1e6
        print(f"upbit {ticker['market']} {ticker['trade_price']} (HTTP {r.status}, queued {queued_ms:.1f} ms, buckets {', '.join(r.buckets)})")
        budgets = api.GetBudgets(dispatcher_pb2.GetBudgetsRequest(exchange="upbit"), metadata=metadata, timeout=10)
        for b in budgets.buckets:
            for w in b.windows:
                print(f"budget {b.exchange} {b.scope}:{b.scope_key} {b.group}: {w.used}/{w.limit} per {w.period.seconds + w.period.nanos / 1e9:g} s")


if __name__ == "__main__":
    main()
