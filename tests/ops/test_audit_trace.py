"""Trace context through a real Envoy: requests from people (tokens) and machines (client
certificates), with and without a W3C `traceparent`, on every target. Each request's trace id is
the caller's when it sent one and a fresh one when not; the same id is in its access-log line, in
`policyc audit`'s output and in the `traceparent` the upstream received, beside Envoy's request
id, the duration and the bytes."""

import json
import re
import time

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.credentials import certs as devcerts
from policyc.credentials import tokens as devtokens
from policyc.pipeline import load_and_check
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.headers import PAYLOAD_HEADER
from policyc.semantics.peer import ClientCertificate
from policyc.semantics.request import H2, RawRequest
from tests.native_target import native_search_path
from tests.ops.test_audit import CERTIFICATE_POLICY, KEYS

# Every GET allowed, so that people and machines alike reach the upstream; callers are still named
# by the token jwt_authn verified and the certificate the listener verified.
POLICY = CERTIFICATE_POLICY.replace('allow "machines" when peer trusted and not authenticated',
                                    'allow "reads" when method == GET')
TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
TRACEPARENT_FORMAT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$")


@pytest.fixture(scope="module")
def policies(tmp_path_factory):
    root = tmp_path_factory.mktemp("policies")
    mesh = devcerts.make_ca("mesh")
    server = devcerts.issue(mesh, "proxy.test", dns=["proxy.test"], server=True)
    for name, text in {"mesh.pem": mesh.cert_pem, "server.pem": server.cert_pem, "server.key": server.key_pem,
                       "idp.jwks.json": (KEYS / "idp.jwks.json").read_text(), "bots.policy": POLICY}.items():
        (root / name).write_text(text)
    bot = devcerts.issue(mesh, "builder", uris=["spiffe://example.org/ns/ci/sa/builder"])
    token = devtokens.mint({"iss": "https://idp.test", "sub": "user:default/alice", "exp": int(time.time()) + 600},
                           json.loads((KEYS / "idp.private.jwk.json").read_text()))
    return load_and_check([str(root)]).checked, ClientCertificate(bot.cert_pem, bot.key_pem), token


def requests(certificate, token) -> list[tuple[str, RawRequest]]:
    """(who, request): each caller with and without a trace, over HTTP/1.1 and HTTP/2."""
    human = (("authorization", f"Bearer {token}"),)
    traced = (("traceparent", TRACEPARENT),)
    return [
        ("human", RawRequest("GET", "/a", "bots.internal", human)),
        ("human", RawRequest("GET", "/b", "bots.internal", human + traced)),
        ("machine", RawRequest("GET", "/c", "bots.internal", certificate=certificate)),
        ("machine", RawRequest("GET", "/d", "bots.internal", traced, certificate=certificate)),
        ("machine", RawRequest("GET", "/e", "bots.internal", traced, certificate=certificate, protocol=H2)),
        ("anonymous", RawRequest("DELETE", "/f", "bots.internal", traced)),  # denied: traced all the same
    ]


@pytest.mark.envoy
@pytest.mark.parametrize("target", ["rbac", "lua", "native"])
def test_every_decision_carries_its_trace_to_the_log_the_audit_and_the_upstream(policies, target, tmp_path,
                                                                              request):
    checked, certificate, token = policies
    sent = requests(certificate, token)
    with native_search_path(request) as native, EnvoyUnderTest(tmp_path) as envoy:
        if target == "native" and not native:
            pytest.skip("the native filter's library cannot be built here")
        envoy.load(checked, target)
        observed = envoy.send_all([request for _, request in sent])
        received = list(envoy.upstream.received)
    events = json.loads(CliRunner().invoke(main, ["audit", str(tmp_path / "access.log"), "--format", "json"]
                                           ).stdout)["events"]
    assert [e["caller"] for e in events] == ["user:default/alice"] * 2 + ["spiffe://example.org/ns/ci/sa/builder"] * 3 \
        + ["anonymous"]
    assert [seen.reached_upstream for seen in observed] == [True] * 5 + [False]
    upstream_traces = iter(TRACEPARENT_FORMAT.match(dict(r.headers)["traceparent"]).group(1) for r in received)
    fresh = set()
    for (_, request), seen, event in zip(sent, observed, events, strict=True):
        logged = seen.log["trace_id"]
        assert TRACEPARENT_FORMAT.match(seen.log["traceparent"]).group(1) == logged
        assert event["trace_id"] == logged and event["request_id"] == seen.log["request_id"]
        assert re.fullmatch(r"[0-9a-f-]{36}", event["request_id"])
        if ("traceparent", TRACEPARENT) in request.headers:
            assert logged == TRACE
        else:
            fresh.add(logged)
        if seen.reached_upstream:
            assert next(upstream_traces) == logged
        assert isinstance(event["duration_ms"], int) and event["bytes_sent"] > 0
    assert len(fresh) == 2 and TRACE not in fresh  # a trace of its own for each untraced request
    # The token reaches the application; the payload jwt_authn forwards to the native filter does not.
    assert [dict(r.headers).get("authorization") is not None for r in received] == [True] * 2 + [False] * 3
    assert not [r for r in received if PAYLOAD_HEADER in dict(r.headers)]
