"""`compile --otlp`: Envoy sends each request's span to an OpenTelemetry collector over OTLP/gRPC.
The collector here is a gRPC server answering the OTLP trace service's Export method; each export
must carry the trace id of a request that went through the proxy (the caller's and one Envoy
started), as the span's 16 raw bytes."""

import time
from concurrent import futures
from dataclasses import replace

import grpc
import pytest

from policyc.backends.envoy import OTLP_CLUSTER, cluster
from policyc.nodes import UpstreamProtocol
from policyc.pipeline import load_and_check
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.request import RawRequest

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
POLICY = """
service app {
    hosts ["app.internal"]
    upstream "127.0.0.1:9"
    allow "all" when method == GET
}
"""
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Collector:
    """An OTLP trace receiver: remembers each ExportTraceServiceRequest's bytes and answers OK."""

    def __init__(self) -> None:
        self.exports: list[bytes] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler})])
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def _export(self, request: bytes, context) -> bytes:
        self.exports.append(request)
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(0)


@pytest.mark.envoy
def test_spans_reach_the_collector_with_the_logged_trace_ids(tmp_path):
    (tmp_path / "app.policy").write_text(POLICY)
    checked = load_and_check([str(tmp_path / "app.policy")]).checked
    with Collector() as collector:
        address = f"127.0.0.1:{collector.port}"
        otlp = cluster(OTLP_CLUSTER, address, protocol=UpstreamProtocol.HTTP2)
        with EnvoyUnderTest(tmp_path / "envoy", key_clusters=(otlp,)) as envoy:
            envoy.options = replace(envoy.options, otlp=address)
            envoy.load(checked, "rbac")
            traced = RawRequest("GET", "/", "app.internal", (("traceparent", f"00-{TRACE}-00f067aa0ba902b7-01"),))
            observed = envoy.send_all([traced, RawRequest("GET", "/", "app.internal")])
            deadline = time.monotonic() + 15  # Envoy exports every 5 s
            logged = [seen.log["trace_id"] for seen in observed]
            while time.monotonic() < deadline and not all(
                    any(bytes.fromhex(trace) in export for export in collector.exports) for trace in logged):
                time.sleep(0.1)
    assert logged[0] == TRACE and len(logged[1]) == 32
    for trace in logged:
        assert any(bytes.fromhex(trace) in export for export in collector.exports), f"no span of trace {trace}"
