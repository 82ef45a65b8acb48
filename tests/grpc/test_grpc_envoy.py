"""gRPC through the compiled Envoy, with a real grpcio client and a real grpcio upstream, for
`lua`, `auto` and `rbac`: the gRPC case file's calls (unary and streaming, tokens and metadata)
get the interpreter's grpc-status and rule; health checking and both versions of server
reflection answer through the proxy as the policy says; a denial names its rule in the log, and
`policyc audit` reads it back with its grpc-status."""

import json
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from policyc.backends import expressible_part
from policyc.cases.casefile import build_request, load_case_file
from policyc.nodes import UpstreamProtocol
from policyc.ops.audit import read_events
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.generate import grpc_near_misses
from policyc.proof.replay import EnvoyUnderTest
from policyc.proof.verify import with_made_up_keys
from policyc.semantics.grpc import GRPC_CONTENT_TYPE
from tests import CASE_KEYS
from tests.grpc.support import REFLECTION_V1, GrpcUpstream, channel, grpc_call

pytestmark = pytest.mark.envoy

FOLDER = Path(__file__).parents[1] / "cases" / "grpc"
TARGETS = ("lua", "auto", "rbac")


@pytest.fixture(scope="module")
def corpus():
    case_files = [load_case_file(str(p)) for p in sorted(FOLDER.glob("*.cases.yaml"))]
    checked, keys = with_made_up_keys(load_and_check([str(FOLDER)], allowed_roots=[CASE_KEYS]).checked, case_files)
    return checked, keys, [case for f in case_files for case in f.cases]


def _envoy(tmp_path_factory, upstream: GrpcUpstream) -> EnvoyUnderTest:
    return EnvoyUnderTest(tmp_path_factory.mktemp("envoy"), upstream=upstream,
                          upstream_protocol=UpstreamProtocol.HTTP2)


@pytest.fixture(scope="module")
def echo_envoy(tmp_path_factory):
    with _envoy(tmp_path_factory, GrpcUpstream()) as envoy:
        yield envoy


@pytest.fixture(scope="module")
def services_envoy(tmp_path_factory):
    """An upstream with the real health-checking and reflection services."""
    upstream = GrpcUpstream(health_service=True, reflection_service=True)
    upstream.health.set("", health_pb2.HealthCheckResponse.SERVING)
    with _envoy(tmp_path_factory, upstream) as envoy:
        yield envoy


def _grpcio_can_send(request: dict) -> bool:
    """A case grpcio can make: a POST of the gRPC content-type to a named host, one line per header."""
    headers = request.get("headers", {})
    return (request.get("method") == "POST" and "host" in request and headers.get("content-type") == GRPC_CONTENT_TYPE
            and not any(isinstance(v, list) for v in headers.values()))


@pytest.mark.parametrize("target", TARGETS)
def test_case_file_calls_decide_alike_through_grpcio(echo_envoy, corpus, target):
    checked, keys, cases = corpus
    now = time.time()
    cases = [case for case in cases if _grpcio_can_send(case.request)]
    requests = [build_request(case.request, checked, keys, now) for case in cases]
    policies = expressible_part(checked, target)
    echo_envoy.load(policies, target)
    comparisons = compare(policies, echo_envoy.send_all(requests, client=grpc_call), now, {})
    failures = [f"{case.name}\n{c.report()}" for case, c in zip(cases, comparisons, strict=True) if c.differences]
    assert not failures, "\n".join(failures)
    assert len(cases) > 30 and {c.expected.grpc_status for c in comparisons} == {None, 7, 12, 13, 16}
    streamed = [c for c in comparisons if "/List" in c.observed.request.target]
    assert {c.expected.status for c in streamed} == {200, 403}


def _token(corpus, expires_in: int = 600, **claims) -> list[tuple[str, str]]:
    """The metadata of a token of the corpus's issuer with these claims."""
    checked, keys, _ = corpus
    token = {"issuer": "idp", "claims": claims, "expires_in": expires_in}
    request = build_request({"method": "POST", "path": "/", "token": token}, checked, keys, time.time())
    return [(name.lower(), value) for name, value in request.headers]


def _list_services(port: int, service: str, metadata) -> list[str]:
    with channel(port, "shop.test") as ch:
        call = ch.stream_stream(f"/{service}/ServerReflectionInfo",
                                reflection_pb2.ServerReflectionRequest.SerializeToString,
                                reflection_pb2.ServerReflectionResponse.FromString)
        [answer] = call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata,
                        timeout=10)
        return [s.name for s in answer.list_services_response.service]


def _last_log_entry(envoy: EnvoyUnderTest) -> dict:
    return envoy.log_entries(1)[0]


@pytest.mark.parametrize("target", TARGETS)
def test_health_checking_and_reflection_through_the_proxy(services_envoy, corpus, target):
    checked = corpus[0]
    envoy = services_envoy
    envoy.load(expressible_part(checked, target), target)
    with channel(envoy.port, "shop.test") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        assert _last_log_entry(envoy)["lua" if target == "lua" else "rbac"]
        watch = stub.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        _last_log_entry(envoy)
    admin, dev = _token(corpus, sub="u1", role="admin"), _token(corpus, sub="u1", role="dev")
    for service in (reflection.SERVICE_NAME, REFLECTION_V1):
        assert "grpc.health.v1.Health" in _list_services(envoy.port, service, admin)
        _last_log_entry(envoy)
        for metadata in ([], dev):
            with pytest.raises(grpc.RpcError) as refused:
                _list_services(envoy.port, service, metadata)
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
            entry = _last_log_entry(envoy)
            [event], _ = read_events([json.dumps(entry)])
            assert (event.status, event.grpc_status, event.verdict, event.rule) == (200, 7, "denied", "no-reflection")


@pytest.mark.parametrize("target", TARGETS)
def test_token_failures_are_unauthenticated_with_the_proxy_s_reason(echo_envoy, corpus, target):
    checked = corpus[0]
    echo_envoy.load(expressible_part(checked, target), target)
    for metadata, message in ((_token(corpus, sub="u1", aud="elsewhere"), "Audiences in Jwt are not allowed"),
                              (_token(corpus, -600, sub="u1"), "Jwt is expired")):
        with channel(echo_envoy.port, "shop.test") as ch, pytest.raises(grpc.RpcError) as refused:
            ch.unary_unary("/shop.v1.Orders/Get")(b"a", metadata=metadata, timeout=10)
        assert (refused.value.code(), refused.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, message)
        entry = _last_log_entry(echo_envoy)
        details = "jwt_authn_access_denied{" + message.replace(" ", "_") + "}"
        assert (entry["status"], entry["grpc_status"], entry["details"]) == (200, 16, details)


@pytest.mark.parametrize("target", TARGETS)
def test_no_spelling_that_passes_a_method_deny_reaches_the_method(tmp_path_factory, target):
    """Behind `allow everything`, a deny on one method: a grpcio server with that method answers
    every spelling the proxy lets through with UNIMPLEMENTED, never with the method."""
    folder = tmp_path_factory.mktemp("policy")
    (folder / "p.policy").write_text(
        'service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1" http2\n'
        '    deny "no-delete" when grpc method "shop.v1.Orders/Delete"\n'
        '    allow public "everything" when path prefix "/"\n}\n')
    checked = load_and_check([str(folder)]).checked
    upstream = GrpcUpstream(echo=False)
    upstream.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("shop.v1.Orders", {
        name: grpc.unary_unary_rpc_method_handler(lambda message, context, name=name: name.encode())
        for name in ("Delete", "Get")})])
    spellings = [*grpc_near_misses("/shop.v1.Orders/Delete"), "/shop.v1.Orders/Delete%3Bx", "/shop.v1.Orders/%44elete",
                 "/shop.v1.Orders/./Delete", "/shop.v1.Orders/Delete\\", "/SHOP.V1.ORDERS/DELETE"]
    with _envoy(tmp_path_factory, upstream) as envoy:
        envoy.load(checked, target)
        with channel(envoy.port, "s.test") as ch:
            assert ch.unary_unary("/shop.v1.Orders/Get")(b"", timeout=10) == b"Get"
            for spelling in spellings:
                with pytest.raises(grpc.RpcError) as refused:
                    ch.unary_unary(spelling)(b"", timeout=10)
                assert refused.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED,
                                                grpc.StatusCode.INTERNAL), spelling
        reached = {call.method for call in upstream.received}
        assert "/shop.v1.Orders/Delete" not in reached and len(reached) > 5  # the rest were the server's to refuse
