"""`compile --otlp`: Envoy sends each request's span, and its access-log record, to an
OpenTelemetry collector over OTLP/gRPC. The collector is a receiver built from the OTLP protocol
package (`opentelemetry-proto`, in the `test` extra): every span it decodes must carry the trace
id its request's access-log line names, the caller's and one Envoy started alike, and every log
record the same fields as the file log, with that trace id."""

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
logs_service = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2")
logs_service_grpc = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc")

POLICY = """
service app {
    hosts ["app.internal"]
    upstream "127.0.0.1:9"
    allow "all" when method == GET
}
"""
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class Traces(trace_service_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.traces: list[str] = []

    def Export(self, request, context):  # noqa: N802  (the service's method name)
        self.traces += [span.trace_id.hex() for resource in request.resource_spans
                        for scope in resource.scope_spans for span in scope.spans]
        return trace_service.ExportTraceServiceResponse()


class Logs(logs_service_grpc.LogsServiceServicer):
    def __init__(self) -> None:
        self.records: list = []

    def Export(self, request, context):  # noqa: N802
        self.records += [record for resource in request.resource_logs
                         for scope in resource.scope_logs for record in scope.log_records]
        return logs_service.ExportLogsServiceResponse()


class Collector:
    """An OTLP receiver of traces and logs on one port."""

    def __init__(self) -> None:
        self.spans, self.logs = Traces(), Logs()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_grpc.add_TraceServiceServicer_to_server(self.spans, self.server)
        logs_service_grpc.add_LogsServiceServicer_to_server(self.logs, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def complete(self, traces: list[str]) -> bool:
        return set(traces) <= set(self.spans.traces) and len(self.logs.records) >= len(traces)

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(0)


def attributes(record) -> dict:
    return {kv.key: kv.value for kv in record.attributes}


@pytest.mark.envoy
def test_spans_and_log_records_reach_the_collector_with_the_logged_trace_ids(tmp_path):
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
            while time.monotonic() < deadline and not collector.complete(logged):
                time.sleep(0.1)
    assert logged[0] == TRACE and len(logged[1]) == 32
    assert set(logged) <= set(collector.spans.traces), f"spans of {collector.spans.traces}, requests of {logged}"
    records = collector.logs.records
    assert [record.trace_id.hex() for record in records] == logged
    for record, seen in zip(records, observed, strict=True):
        fields = attributes(record)
        assert set(fields) == set(seen.log)
        assert fields["trace_id"].string_value == seen.log["trace_id"]
        assert fields["request_id"].string_value == seen.log["request_id"]
        assert fields["path"].string_value == "/" and fields["service"].string_value == "app"
