"""A gRPC server that does no work: the floor under serve_latency.py's by-id figures.

    python benchmarks/canned_server.py RESPONSE.bin [--threads 16]

Serves parasal.v1.SaliencyService on 127.0.0.1 (a free port, printed as
``parasal: serving on HOST:PORT`` like the real server) and answers every
FindSimilarFailures with the serialized FindSimilarFailuresResponse in RESPONSE.bin, and
ListBundles with an empty list (the SDK's connect call). Same Python, same gRPC, same
thread pool as ``parasal serve``, so what the real server's by-id answers cost beyond this
one's is parasal's own work.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from parasal.v1 import saliency_pb2 as pb
from parasal.v1 import saliency_pb2_grpc as pb_grpc


class Canned(pb_grpc.SaliencyServiceServicer):
    def __init__(self, response: pb.FindSimilarFailuresResponse):
        self.response = response

    def ListBundles(self, request, context):
        return pb.ListBundlesResponse()

    def FindSimilarFailures(self, request, context):
        return self.response


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("response", type=Path)
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args(argv)
    response = pb.FindSimilarFailuresResponse.FromString(args.response.read_bytes())
    server = grpc.server(ThreadPoolExecutor(args.threads))
    pb_grpc.add_SaliencyServiceServicer_to_server(Canned(response), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"parasal: serving on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
