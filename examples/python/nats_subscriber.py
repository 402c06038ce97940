"""A NATS subscriber in Python (nats-py) that decodes what sluice publishes,
with the classes generated from proto/: market data (md.>), signals
(signal.>), the execution service's orders, fills and positions (exec.>) and
alerts (alert.>). One line per message.

    python nats_subscriber.py --nats nats://127.0.0.1:4222 [--count 4] [--timeout 30]

Stops after --count messages (0: never) or --timeout seconds without one.
"""

import argparse
import asyncio
import sys

import nats

import sluice_proto  # noqa: F401  (generates and imports the wire types)
from sluice.alert.v1 import alert_pb2
from sluice.execution.v1 import execution_pb2
from sluice.md.v1 import md_pb2
from sluice.signal.v1 import signal_pb2

# md.<venue>.<kind>.<BASE-QUOTE>
MD = {"trade": md_pb2.Trade, "ticker": md_pb2.Ticker, "book": md_pb2.BookTop, "depth": md_pb2.BookDepth, "candle": md_pb2.Candle}
# exec.<exchange>.<account>.<kind>
EXEC = {"order": execution_pb2.Order, "fill": execution_pb2.ExecFill, "position": execution_pb2.Position, "denial": execution_pb2.Denial}


def describe(subject, data):
    parts = subject.split(".")
    if parts[0] == "md" and len(parts) == 4 and parts[2] in MD:
        m = MD[parts[2]].FromString(data)
        if parts[2] == "trade":
            return f"trade {m.source.exchange} {m.source.symbol} {m.qty} @ {m.price}"
        if parts[2] == "ticker":
            return f"ticker {m.source.exchange} {m.source.symbol} last {m.last}"
        return f"{parts[2]} {m.source.exchange} {m.source.symbol}"
    if parts[0] == "signal":
        s = signal_pb2.Signal.FromString(data)
        return f"signal {s.venue} {s.symbol} {signal_pb2.Action.Name(s.action)} confidence {s.confidence:.2f} ({s.model})"
    if parts[0] == "exec" and len(parts) == 4 and parts[3] in EXEC:
        m = EXEC[parts[3]].FromString(data)
        if parts[3] == "order":
            return f"order {m.client_order_id} {m.account} {m.symbol} {execution_pb2.OrderStatus.Name(m.status)} filled {m.filled_quantity or '0'}/{m.quantity}"
        return f"{parts[3]} {parts[1]}/{parts[2]}"
    if parts[0] == "alert":
        a = alert_pb2.Alert.FromString(data)
        return f"alert {a.name} {alert_pb2.AlertState.Name(a.state)} {alert_pb2.Severity.Name(a.severity)}: {a.annotations.get('summary', '')}"
    return None


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nats", default="nats://127.0.0.1:4222")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()
    nc = await nats.connect(args.nats)
    seen = asyncio.Queue()

    async def on_message(msg):
        line = describe(msg.subject, msg.data)
        if line:
            await seen.put(f"{msg.subject}: {line}")

    for subject in ("md.>", "signal.>", "exec.>", "alert.>"):
        await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    print("subscribed", flush=True)
    n = 0
    try:
        while args.count == 0 or n < args.count:
            print(await asyncio.wait_for(seen.get(), args.timeout), flush=True)
            n += 1
    except asyncio.TimeoutError:
        print(f"no message for {args.timeout} s", file=sys.stderr)
        sys.exit(1)
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
