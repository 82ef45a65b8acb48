"""`compile --otlp`: Envoy sends each request's span to an OpenTelemetry collector over OTLP/gRPC.
The collector is a receiver built from the OTLP protocol package (`opentelemetry-proto`, in the
`test` extra): every span it decodes must carry the trace id its request's access-log line names,
the caller's and one Envoy started alike."""

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

trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
trace_service_grpc = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc")

POLICY = """
service app {
    hosts ["app.internal"]
    upstream "127.0.0.1:9"
    allow "all" when method == GET
}
"""
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Collector(trace_service_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps the trace id (hex) of every span exported to it."""

    def __init__(self) -> None:
        self.traces: list[str] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def Export(self, request, context):  # noqa: N802  (the service's method name)
        self.traces += [span.trace_id.hex() for resource in request.resource_spans
                        for scope in resource.scope_spans for span in scope.spans]
        return trace_service.ExportTraceServiceResponse()

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
            while time.monotonic() < deadline and not set(logged) <= set(collector.traces):
                time.sleep(0.1)
    assert logged[0] == TRACE and len(logged[1]) == 32
    assert set(logged) <= set(collector.traces), f"spans of {collector.traces}, requests of {logged}"
