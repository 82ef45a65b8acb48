"""A real gRPC upstream and a real gRPC client (grpcio), for the gRPC tiers.

`GrpcUpstream` serves every method with generic handlers (no generated code): unary, or a
bidirectional stream when the method's name says so (`streaming`), echoing what it is sent; with
`health_service` and `reflection_service` the real health-checking and reflection services
answer their own methods (reflection under both `v1alpha` and `v1`: the messages are the same);
without `echo`, only the handlers a test adds to `server` answer. It records every call that
reaches it, metadata included.

`grpc_call(port, request, tls)` makes a `RawRequest` a gRPC call through the proxy: its target is
the method, its host the `:authority`, its headers the metadata. It returns what the client read,
in the harness's terms (`replay.Client`).
"""

from __future__ import annotations

import re
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from policyc.semantics.request import RawRequest
from tests.property.strategies import GRPC_TRANSPORT

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# How grpcio reports an HTTP answer that is not a gRPC one.
_HTTP_STATUS = re.compile(r"Received http2 header with status: (\d+)")


def streaming(path: str) -> bool:
    """Whether a method streams, by its name (both ends agree on it, as a .proto file would say)."""
    return path.rsplit("/", 1)[-1].startswith(("List", "Watch", "Stream"))


@dataclass(frozen=True)
class Call:
    method: str  # the :path the upstream received
    metadata: tuple[tuple[str, str], ...]


class _Recorder(grpc.ServerInterceptor):
    def __init__(self, received: list[Call]):
        self.received = received

    def intercept_service(self, continuation, details):
        self.received.append(Call(details.method, tuple((m.key, m.value) for m in details.invocation_metadata)))
        return continuation(details)


class _Echo(grpc.GenericRpcHandler):
    def service(self, details):
        if streaming(details.method):
            return grpc.stream_stream_rpc_method_handler(lambda messages, context: iter(list(messages)))
        return grpc.unary_unary_rpc_method_handler(lambda message, context: message)


class GrpcUpstream:
    """`with GrpcUpstream() as upstream:` serves on `upstream.address` (h2c) until the block ends."""

    def __init__(self, health_service: bool = False, reflection_service: bool = False, echo: bool = True):
        self.received: list[Call] = []
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(8), interceptors=[_Recorder(self.received)])
        services = []
        if health_service:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
            services.append("grpc.health.v1.Health")
        if reflection_service:
            names = [*services, reflection.SERVICE_NAME, REFLECTION_V1]
            servicer = reflection.ReflectionServicer(names)
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, self.server)
            self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(REFLECTION_V1, {
                "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                    servicer.ServerReflectionInfo,
                    reflection_pb2.ServerReflectionRequest.FromString,
                    reflection_pb2.ServerReflectionResponse.SerializeToString)})])
        if echo:
            self.server.add_generic_rpc_handlers([_Echo()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> GrpcUpstream:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(None)


def channel(port: int, authority: str | None) -> grpc.Channel:
    """A fresh connection to the proxy: a kept one would go on with the policy it started under."""
    options = [("grpc.default_authority", authority)] if authority is not None else []
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=options)


def metadata_of(request: RawRequest) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in request.headers if name.lower() not in GRPC_TRANSPORT]


def grpc_call(port: int, request: RawRequest, tls: bool = False) -> tuple[int, int | None]:
    """Calls `request.target` with grpcio; the HTTP status and the grpc-status the client read
    (None for OK). An answer that is not gRPC at all comes back as its HTTP status."""
    assert not tls, "the gRPC tiers run in the clear"
    with channel(port, request.host) as ch:
        try:
            if streaming(request.target):
                call = ch.stream_stream(request.target)
                list(call(iter([b"a", b"b"]), metadata=metadata_of(request), timeout=10))
            else:
                ch.unary_unary(request.target)(b"a", metadata=metadata_of(request), timeout=10)
        except grpc.RpcError as error:
            http = _HTTP_STATUS.search(error.details() or "")
            if http is not None:
                return int(http.group(1)), None
            return 200, error.code().value[0]
    return 200, None
