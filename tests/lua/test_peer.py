"""Peer atoms in the emitted Lua script, in process: every atom on every kind of verified peer (and
on none) decides as the interpreter does, and a fault anywhere in the TLS connection API answers
403. The same atoms over real TLS connections: tests/differential/test_peer_differential.py.
"""

from __future__ import annotations

import pytest

from policyc.backends.lua import service_script
from policyc.credentials import certs as devcerts
from policyc.interpret.evaluator import Context, _rule_decision
from policyc.pipeline import load_and_check
from policyc.semantics.peer import Peer
from tests.lua.stand_in import SSL_FAULT_POINTS, Request, envoy_request, run_script, ssl_view

RULES = """
tls { cert file "server.pem" key file "server.key" }
trust mesh { ca file "ca.pem" }
service bots {
    hosts ["bots.internal"]
    upstream "127.0.0.1:9"
    deny "no-builder" when peer.uri == "spiffe://example.org/ns/ci/sa/builder" and path prefix "/admin"
    allow "bot" when peer.uri in ["spiffe://example.org/ns/ci/sa/deploy-bot", "x"]
    allow "ci" when peer.uri prefix "spiffe://example.org/ns/ci/" and path == "/status"
    allow "https" when peer.uri suffix "/agent"
    allow "dns" when peer.dns == "bot.example.org" or peer.dns suffix ".partner.test"
    allow "subject" when peer.subject == "CN=deploy-bot,O=CI" and path == "/subject"
    allow "trusted" when peer trusted mesh and path prefix "/trusted"
    allow "anyone-else" when not peer trusted and path == "/open"
}
"""

PEERS = [
    None,
    Peer(("spiffe://example.org/ns/ci/sa/deploy-bot",), ("bot.example.org",), "CN=deploy-bot,O=CI", "mesh"),
    Peer(("spiffe://example.org/ns/ci/sa/builder", "https://agents.example.org/agent"), (), "CN=builder", "mesh"),
    Peer((), ("a.partner.test", "*.example.org"), "CN=wild", "mesh"),
    Peer((), (), "CN=deploy-bot,O=CI", "mesh"),
    Peer(("spiffe://example.org/ns/ci/sa/deploy-bot2",), ("BOT.example.org",), "", "mesh"),
]
PATHS = ["/", "/status", "/subject", "/trusted/x", "/open", "/admin/x"]


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    root = tmp_path_factory.mktemp("peer")
    ca = devcerts.make_ca("mesh")
    server = devcerts.issue(ca, "proxy.test", dns=["proxy.test"], server=True)
    (root / "ca.pem").write_text(ca.cert_pem)
    (root / "server.pem").write_text(server.cert_pem)
    (root / "server.key").write_text(server.key_pem)
    (root / "bots.policy").write_text(RULES)
    pipeline = load_and_check([str(root / "bots.policy")])
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    return pipeline.checked


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("path", PATHS)
def test_peer_atoms_decide_in_lua_as_in_the_interpreter(checked, peer, path):
    service = checked.services["bots"]
    expected = _rule_decision(checked, service, Context("GET", path, {}, "127.0.0.1", None, peer))
    outcome = run_script(service_script(checked, service), envoy_request("GET", path, peer=peer))
    assert outcome.error is None and not outcome.logs, (outcome.error, outcome.logs)
    assert (outcome.decision, outcome.rule) == (expected.reason, expected.rule)
    assert outcome.status == (None if expected.status == 200 else 403)


def test_a_plain_connection_and_an_unvalidated_certificate_have_no_peer(checked):
    script = service_script(checked, checked.services["bots"])
    request = envoy_request("GET", "/open")
    unvalidated = dict(ssl_view(PEERS[1]), validated=False)
    for ssl in (None, unvalidated):
        outcome = run_script(script, Request(request.headers, request.peer, ssl=ssl))
        assert (outcome.status, outcome.decision, outcome.rule) == (None, "allow", "anyone-else")


@pytest.mark.parametrize("fault", SSL_FAULT_POINTS)
def test_a_fault_in_the_tls_api_answers_403(checked, fault):
    request = envoy_request("GET", "/status")
    outcome = run_script(service_script(checked, checked.services["bots"]),
                         Request(request.headers, request.peer, faults=frozenset([fault]), ssl=ssl_view(PEERS[1])))
    assert (outcome.status, outcome.decision, outcome.error) == (403, "error", None)
    assert f"injected fault in {fault}" in outcome.logs[0][1]


@pytest.mark.parametrize("field", ["uri", "dns"])
def test_a_san_that_is_not_a_string_answers_403(checked, field):
    request = envoy_request("GET", "/status")
    ssl = dict(ssl_view(PEERS[1]), **{field: [7]})
    outcome = run_script(service_script(checked, checked.services["bots"]), Request(request.headers, request.peer,
                                                                                    ssl=ssl))
    assert (outcome.status, outcome.decision) == (403, "error")
