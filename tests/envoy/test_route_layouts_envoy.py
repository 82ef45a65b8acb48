"""A host's routes listed and in a prefix map (envoy.py, `route_matcher`) decide alike, as the
interpreter does, on the requests where the two layouts could part: a header a rule tests sent
more than once with spaces around one value (a route's header matcher tests each value, a matcher
predicate all of them joined), values holding `, `, override headers present and empty, methods
HTTP/2 carries in any case, path parameters and dot segments in the path and in the query, and
paths under each prefix and under none, and a bad token, which a refusal route answers before
jwt_authn does. Over HTTP/1.1 and h2c, against a real Envoy."""

import json
import time

import pytest

from policyc.backends.envoy import PREFIX_MAP_FROM
from policyc.credentials import tokens
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.request import H2C, HTTP1, RawRequest

pytestmark = pytest.mark.envoy

POLICY = """\
issuer idp {
    url "https://idp.test"
    jwks file "idp.jwks.json"
}

service s {
    hosts "s.test"
    upstream "127.0.0.1:1"
    deny "blocked" when header "x-tenant" == "blocked"
    allow "tenant" when path prefix "/api/" and header "x-tenant" in ["acme", "acme, globex"]
    allow "admin" when path prefix "/admin/" and method == GET
    allow "reports" when path prefix "/reports/2026/"
    allow "root" when path == "/"
}
"""
HEADERS = [
    (), (("x-tenant", "acme"),), (("x-tenant", "acme "),), (("x-tenant", " acme"),),
    (("x-tenant", "acme "), ("x-tenant", "globex")), (("x-tenant", "acme"), ("x-tenant", " globex")),
    (("x-tenant", "acme"), ("x-tenant", "\tglobex")), (("x-tenant", "acme"), ("x-tenant", "globex ")),
    (("x-tenant", "acme"), ("x-tenant", " globex"), ("x-tenant", "blocked")),
    (("x-tenant", "acme, globex"),), (("x-tenant", "acme ,globex"),), (("x-tenant", "acme"), ("x-tenant", "globex")),
    (("x-tenant", "blocked"), ("x-tenant", "acme")), (("x-original-url", ""),), (("x-http-method-override", "GET"),),
    # A refusal route turns jwt_authn off, inside a prefix's route list too: 400, not the token's 401.
    (("authorization", "Bearer a.b.c"),), (("authorization", "Bearer a.b.c"), ("x-tenant", "acme"), ("x-tenant", " b")),
]
TARGETS = ["/", "/api/x", "/api/x?q=;y", "/api/x;y", "/api/../admin/x", "/admin/x?a=/..;/b", "/reports/2026/q1",
           "/reports/2025/q1", "/x/..;/api/", "/api"]
METHODS = ["GET", "get", "DELETE"]


@pytest.mark.parametrize("prefix_map_from", [1, PREFIX_MAP_FROM], ids=["prefix map", "listed"])
def test_both_layouts_decide_as_the_interpreter(tmp_path, prefix_map_from):
    (tmp_path / "p.policy").write_text(POLICY)
    (tmp_path / "idp.jwks.json").write_text(json.dumps(tokens.public_jwks(tokens.generate_key())))
    checked = load_and_check([str(tmp_path / "p.policy")]).checked
    requests = [RawRequest(method, target, "s.test", headers, protocol=protocol)
                for protocol in (HTTP1, H2C) for method in METHODS for target in TARGETS for headers in HEADERS
                if protocol == H2C or method.isupper()]  # HTTP/1.1 refuses a method in lower case itself
    (tmp_path / "envoy").mkdir()
    with EnvoyUnderTest(tmp_path / "envoy") as envoy:
        envoy.load(checked, "rbac", prefix_map_from=prefix_map_from)
        comparisons = compare(checked, envoy.send_all(requests), time.time(), {})
    differing = [c.report() for c in comparisons if c.differences]
    assert not differing, "\n".join(differing[:5])
    refused = {c.expected.detail for c in comparisons if c.expected.reason == "bad-request"}
    # The requests reach each kind of refusal route, and the rules behind them.
    assert refused >= {"header value with surrounding whitespace", "unknown method", "path_parameters",
                       "override_header"}, refused
    reasons = {c.expected.reason for c in comparisons}
    assert reasons >= {"allow", "deny", "default-deny", "bad-request", "unauthenticated"}, reasons
