"""Python code for sluice's wire types, generated from proto/ (the single
source of truth) by grpcio-tools at import time, into a temporary folder
that is then importable: `import sluice_proto` and then, for example,
`from sluice.md.v1 import md_pb2`. A user's project would run the same
protoc once and keep the output instead.
"""

import os
import sys
import tempfile

import grpc_tools
from grpc_tools import protoc

PROTO = os.environ.get("SLUICE_PROTO") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")


def generate(proto_dir=PROTO, out=None):
    """Python messages and gRPC stubs for every .proto under proto_dir; returns the folder."""
    out = out or tempfile.mkdtemp(prefix="sluice-proto-")
    files = sorted(os.path.relpath(os.path.join(d, f), proto_dir) for d, _, fs in os.walk(proto_dir) for f in fs if f.endswith(".proto"))
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.exit(f"grpc_tools.protoc could not compile {proto_dir}")
    if out not in sys.path:
        sys.path.insert(0, out)
    return out


generate()
