"""A tiny in-process gRPC server over raw-bytes methods, for interceptor tests."""

import contextlib
from concurrent import futures

import grpc
import pytest


@contextlib.contextmanager
def bytes_server(methods: dict, interceptors=(), service="test.Svc"):
    """methods: name -> behaviour(request_bytes, context) (unary) or a generator function
    (server streaming, name ending in 'Stream'). Yields a channel to it."""
    handlers = {}
    for name, fn in methods.items():
        make = grpc.unary_stream_rpc_method_handler if name.endswith("Stream") else grpc.unary_unary_rpc_method_handler
        handlers[name] = make(fn)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=list(interceptors))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop(None)


@pytest.fixture
def make_bytes_server():
    return bytes_server
