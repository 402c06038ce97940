"""A gRPC client of the execution service in Python (grpcio, stubs generated
from proto/): the trading state, a limit order submitted (retried with the
same request id while the service still waits for market data, so it is one
order however often it is sent), read back, listed, cancelled, then positions
and PnL.

    python execution_client.py --addr 127.0.0.1:50061 --account upbit/demo \
        --symbol BTC-KRW --price 90000000 --qty 0.001
"""

import argparse
import sys
import time
import uuid

import grpc

import sluice_proto  # noqa: F401
from sluice.execution.v1 import execution_pb2 as pb
from sluice.execution.v1 import execution_pb2_grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:50061")
    ap.add_argument("--account", required=True, help="exchange/account, e.g. upbit/demo")
    ap.add_argument("--symbol", required=True, help="BASE-QUOTE, e.g. BTC-KRW")
    ap.add_argument("--price", required=True)
    ap.add_argument("--qty", required=True)
    ap.add_argument("--wait", type=float, default=30, help="seconds to wait for the service's market data")
    args = ap.parse_args()
    with grpc.insecure_channel(args.addr) as channel:
        api = execution_pb2_grpc.ExecutionStub(channel)
        state = api.GetTradingState(pb.GetTradingStateRequest(), timeout=10)
        print(f"trading state {pb.TradingState.Name(state.state)}")
        request = pb.SubmitOrderRequest(
            account=args.account, symbol=args.symbol, side=pb.SIDE_BUY, type=pb.ORDER_TYPE_LIMIT,
            time_in_force=pb.TIME_IN_FORCE_GTC, quantity=args.qty, price=args.price,
            request_id=f"example-{uuid.uuid4().hex[:12]}",
        )
        deadline = time.monotonic() + args.wait
        while True:
            try:
                order = api.SubmitOrder(request, timeout=10)
                break
            except grpc.RpcError as e:
                # Not decidable yet (no market data or trading rules since the
                # service started): the same request id makes a retry the same
                # order. Any other refusal (risk) is final.
                not_yet = "market data" in (e.details() or "") or "no trading rules" in (e.details() or "")
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION and not_yet and time.monotonic() < deadline:
                    print(f"not yet: {e.details()}")
                    time.sleep(1)
                    continue
                sys.exit(f"SubmitOrder: {e.code().name}: {e.details()}")
        cid = order.client_order_id
        print(f"submitted {cid}: {pb.OrderStatus.Name(order.status)}")
        got = api.GetOrder(pb.GetOrderRequest(client_order_id=cid), timeout=10)
        print(f"order {cid}: {pb.OrderStatus.Name(got.status)} {got.symbol} {got.quantity} @ {got.price}")
        listed = api.ListOrders(pb.ListOrdersRequest(account=args.account, open_only=True), timeout=10)
        print(f"open orders: {len(listed.orders)}, ours among them: {any(o.client_order_id == cid for o in listed.orders)}")
        if got.status in (pb.ORDER_STATUS_DENIED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_FILLED, pb.ORDER_STATUS_CANCELLED, pb.ORDER_STATUS_EXPIRED):
            print(f"{cid} is final; nothing to cancel")
        else:
            cancelled = api.CancelOrder(pb.CancelOrderRequest(client_order_id=cid), timeout=10)
            print(f"cancel {cid}: {pb.OrderStatus.Name(cancelled.status)}")
        for p in api.ListPositions(pb.ListPositionsRequest(account=args.account), timeout=10).positions:
            print(f"position {p.account} {p.symbol} {p.quantity}")
        for a in api.GetPnl(pb.GetPnlRequest(account=args.account), timeout=10).accounts:
            print(f"pnl {a.account} realized {a.realized}")


if __name__ == "__main__":
    main()
