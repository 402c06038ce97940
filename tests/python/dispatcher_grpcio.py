"""A foreign client of the dispatcher, as a user in another language writes one:
Python grpcio with stubs generated from proto/ by grpc_tools, and grpcio's own
reflection and health clients.

It lists the services through reflection (v1alpha, which grpcio-reflection's
descriptor database speaks) and resolves the Dispatcher's methods from the
served descriptors, checks health, calls the dispatcher through the generated
stubs, and sends what a careless client sends: a body over the limit, a message
over the decoder's limit, bytes that are not protobuf, a timeout above the
maximum and one that is not normalised. Each of those must be INVALID_ARGUMENT
with a message naming the problem.

Usage: dispatcher_grpcio.py --addr 127.0.0.1:50051 --proto proto/
Exits 0 when every check passed; prints each check.
"""

import argparse
import json
import os
import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

failures = []


def check(ok, what, detail=""):
    print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def expect_invalid(what, call, words):
    try:
        call()
    except grpc.RpcError as e:
        msg = e.details() or ""
        ok = e.code() == grpc.StatusCode.INVALID_ARGUMENT and all(w in msg for w in words)
        check(ok, what, f"{e.code()} {msg!r}")
        return
    check(False, what, "the call succeeded")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--proto", required=True)
    a = p.parse_args()
    # The examples' generator (examples/python/sluice_proto.py), on the proto/ named here.
    os.environ["SLUICE_PROTO"] = a.proto
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "python"))
    import sluice_proto  # noqa: F401
    from google.protobuf import duration_pb2
    from sluice.dispatcher.v1 import dispatcher_pb2 as pb
    from sluice.dispatcher.v1 import dispatcher_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(a.addr)
    grpc.channel_ready_future(channel).result(timeout=10)

    # Reflection: the services, and the Dispatcher's methods from its descriptors.
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    check({"sluice.dispatcher.v1.Dispatcher", "grpc.health.v1.Health"} <= services, "reflection lists the services", str(services))
    pool = descriptor_pool.DescriptorPool(db)
    svc = pool.FindServiceByName("sluice.dispatcher.v1.Dispatcher")
    methods = {m.name for m in svc.methods}
    want = {"Call", "Acquire", "MintStreamAuth", "GetBudgets", "WatchBudgets", "GetCluster"}
    check(want <= methods, "reflection describes the Dispatcher's methods", str(methods))
    call_input = svc.FindMethodByName("Call").input_type.full_name
    check(call_input == "sluice.dispatcher.v1.CallRequest", "Call takes a CallRequest", call_input)

    health = health_pb2_grpc.HealthStub(channel)
    h = health.Check(health_pb2.HealthCheckRequest(service="sluice.dispatcher.v1.Dispatcher"), timeout=5)
    check(h.status == health_pb2.HealthCheckResponse.SERVING, "health says SERVING", str(h.status))

    # A call through the generated stubs.
    stub = pb_grpc.DispatcherStub(channel)
    ticker = dict(exchange="upbit", method="GET", path="/v1/ticker", query="markets=KRW-BTC")
    r = stub.Call(pb.CallRequest(**ticker), timeout=10)
    body = json.loads(r.body) if r.status == 200 else None
    check(r.status == 200 and body and body[0]["market"] == "KRW-BTC", "Call returns the exchange's answer", f"{r.status} {r.body[:200]!r}")
    check(len(r.buckets) > 0 and r.HasField("queued"), "the answer says which budgets it charged and how long it queued")
    b = stub.GetBudgets(pb.GetBudgetsRequest(exchange="upbit"), timeout=5)
    check(any(x.group == "ticker" for x in b.buckets), "GetBudgets shows the ticker budget")

    # What a careless client sends.
    order = dict(exchange="upbit", method="POST", path="/v1/orders", account="demo")
    expect_invalid("a body over max_body_bytes", lambda: stub.Call(pb.CallRequest(**order, body=b"x" * (70 * 1024)), timeout=5), ["body", "limit"])
    expect_invalid(
        "a message over the decoder's limit", lambda: stub.Call(pb.CallRequest(**order, body=b"x" * (1 << 20)), timeout=5), ["large"]
    )
    raw = channel.unary_unary("/sluice.dispatcher.v1.Dispatcher/Call")
    expect_invalid("bytes that are not protobuf", lambda: raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=5), ["decode"])
    expect_invalid("a string field that is not UTF-8", lambda: raw(b"\x0a\x02\xff\xfe", timeout=5), ["decode"])
    expect_invalid(
        "a timeout above the maximum",
        lambda: stub.Call(pb.CallRequest(**ticker, timeout=duration_pb2.Duration(seconds=10**7)), timeout=5),
        ["timeout", "max_timeout_ms"],
    )
    expect_invalid(
        "a timeout that is not normalised",
        lambda: stub.Call(pb.CallRequest(**ticker, timeout=duration_pb2.Duration(seconds=1, nanos=-5)), timeout=5),
        ["timeout", "normalised"],
    )
    expect_invalid("an unknown exchange", lambda: stub.Call(pb.CallRequest(**{**ticker, "exchange": "kraken"}), timeout=5), ["kraken"])

    # Still serving after all that.
    r = stub.Call(pb.CallRequest(**ticker), timeout=10)
    check(r.status == 200, "still serving afterwards")
    if failures:
        sys.exit(f"{len(failures)} check(s) failed: {failures}")
    print("all checks passed")


if __name__ == "__main__":
    main()
