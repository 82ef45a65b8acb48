"""Peer atoms carry policy text too: hostile strings as `peer.uri`, `peer.dns` and `peer.subject`
values compile for every target, and a real Envoy decides requests over TLS with certificates
that hold exactly those SANs as the interpreter does (a near miss never matches)."""

from __future__ import annotations

import time

import pytest

from policyc.backends import expressible_part
from policyc.credentials import certs as devcerts
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.peer import ClientCertificate
from policyc.semantics.request import RawRequest
from policyc.syntax.printer import string

pytestmark = pytest.mark.envoy

# SANs are ASCII (IA5String): Lua and YAML specials, regex metacharacters, look-alike escapes.
HOSTILE = ['"', "\\", "]]", "--[[ x", "yes", "null", "*a", "${jndi:x}", "{{x}}", "end)", "\\065", "a.b*c",
           "(?s).*", "x|y", "spiffe://e.org/a?b#c"]


def test_hostile_peer_values_keep_their_meaning_in_envoy(tmp_path):
    ca = devcerts.make_ca("mesh")
    server = devcerts.issue(ca, "proxy.test", server=True)
    for name, text in (("ca.pem", ca.cert_pem), ("server.pem", server.cert_pem), ("server.key", server.key_pem)):
        (tmp_path / name).write_text(text)
    rules = [f'    allow "u{i}" when peer.uri == {string(v)}\n    allow "d{i}" when peer.dns == {string(v)}\n'
             f'    allow "s{i}" when peer.subject == {string("CN=" + v)}' for i, v in enumerate(HOSTILE)]
    (tmp_path / "hostile.policy").write_text(
        'tls { cert file "server.pem" key file "server.key" }\ntrust mesh { ca file "ca.pem" }\n'
        'service hostile {\n    hosts "hostile.test"\n    upstream "127.0.0.1:9"\n' + "\n".join(rules) + "\n}\n")
    pipeline = load_and_check([str(tmp_path / "hostile.policy")])
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    requests = []
    for value in HOSTILE + [v + "x" for v in HOSTILE]:  # each value, and a near miss of it
        issued = devcerts.issue(ca, value, uris=[value], dns=[value])
        requests.append(RawRequest("GET", "/", "hostile.test", certificate=ClientCertificate(issued.cert_pem,
                                                                                              issued.key_pem)))
    with EnvoyUnderTest(tmp_path / "envoy") as envoy:
        for target in ("lua", "auto", "rbac"):
            policies = expressible_part(pipeline.checked, target)
            envoy.load(policies, target)
            comparisons = compare(policies, envoy.send_all(requests), time.time(), {})
            assert [c.report() for c in comparisons if c.differences] == [], target
            assert sum(c.observed.status == 200 for c in comparisons) == len(HOSTILE), target
