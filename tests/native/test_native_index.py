"""The decision index (native_runtime/README.md) deciding in a real Envoy 1.40: each route gives
the filter its service's section; every kind of atom, named conditions, deny overriding allow,
default deny, dry-run, and the `error` decision of a route without a config for the filter or one
relying on a filter the chain lacks, each as status, recorded decision and rule, and whether the
upstream was reached; and a route that turns the filter off."""

from __future__ import annotations

import http.client
import socket

import pytest

from policyc.backends import native
from policyc.backends.accesslog import native_verdict
from policyc.proof.envoy_process import running_envoy
from policyc.proof.upstream import RecordingUpstream
from policyc.semantics.glob import ANY, parse_glob

from .conftest import bootstrap, dynamic_module_filter, log_entries, route_config, section, service_route, x

pytestmark = pytest.mark.envoy

FLUSH = ["--file-flush-interval-msec", "10"]


def glob(pattern: str) -> str:
    """`path glob` of the pattern, in parsed_glob's form."""
    segments = parse_glob(pattern)
    return f"path glob {len(segments)} " + " ".join(
        "any" if pieces is ANY else f"seg {len(pieces)} " + " ".join(map(x, pieces)) for pieces in segments)


def path_is(path: str) -> str:
    return f"path eq 1 {x(path)}"


SHOP = section("shop", [
    f"cond 0 method 2 {x('GET')} {x('HEAD')}",
    f"cond 1 and 2 ref 0 path prefix {x('/public/')}",
    f"deny {x('a-banned')} header {x('x-user')} eq 2 {x('mallory')} {x('eve')}",
    f"deny {x('b-admin-writes')} and 2 path prefix {x('/admin/')} not ref 0",
    f"allow {x('debug')} and 2 {path_is('/debug')} present {x('x-debug')}",
    f"allow {x('docs')} {glob('/docs/*/**/*.md')}",
    f"allow {x('health')} path eq 2 {x('/health')} {x('/healthz')}",
    f"allow {x('internal')} and 2 {path_is('/internal')} header {x('x-client')} suffix {x('.internal')}",
    f"allow {x('local')} and 2 {path_is('/local')} source 2 4/8/7f000000 4/16/0a010000",
    f"allow {x('public')} ref 1",
    f"allow {x('tenant')} and 2 {path_is('/tenant')} header {x('x-tenant')} prefix {x('acme-')}",
    f"allow {x('v6')} and 2 {path_is('/v6')} source 1 6/128/{'0' * 31}1",
])
LAB = section("lab", [f"deny {x('blocked')} path prefix {x('/blocked')}", f"allow {x('health')} {path_is('/health')}"],
              mode="dry-run")
# Hosts: a service each, a route without a config for the filter, and one of a service another
# filter decides, which this chain (the listener's config names none beside the filter) lacks.
ROUTES = {"shop": route_config(SHOP), "lab": route_config(LAB), "bare": None,
          "moved": native.relies_config(("rbac-allow",))}

# (host, method, target, headers) -> (status, decision, rule); headers as sent, in order.
CASES = [
    (("shop", "GET", "/health", []), (200, "allow", "health")),
    (("shop", "GET", "/healthz?probe=1", []), (200, "allow", "health")),  # the query is not the path
    (("shop", "GET", "/health/", []), (403, "default-deny", None)),
    (("shop", "GET", "/Health", []), (403, "default-deny", None)),
    (("shop", "GET", "/health", [("x-user", "mallory")]), (403, "deny", "a-banned")),  # deny overrides allow
    (("shop", "GET", "/health", [("x-user", "bob"), ("x-user", "eve")]), (403, "deny", "a-banned")),  # each value
    (("shop", "GET", "/health", [("x-user", "bob, eve")]), (200, "allow", "health")),  # one value, not split
    (("shop", "HEAD", "/public/a", []), (200, "allow", "public")),
    (("shop", "POST", "/public/a", []), (403, "default-deny", None)),
    (("shop", "POST", "/admin/users", []), (403, "deny", "b-admin-writes")),
    (("shop", "GET", "/admin/users", []), (403, "default-deny", None)),
    (("shop", "GET", "/docs/v1/guide/intro.md", []), (200, "allow", "docs")),
    (("shop", "GET", "/docs/v1/intro.md", []), (200, "allow", "docs")),  # `**` as no segment
    (("shop", "GET", "/docs/intro.md", []), (403, "default-deny", None)),
    (("shop", "GET", "/docs/v1/intro.txt", []), (403, "default-deny", None)),
    (("shop", "GET", "/tenant", [("x-tenant", "acme-blue")]), (200, "allow", "tenant")),
    (("shop", "GET", "/tenant", [("x-tenant", "Acme-blue")]), (403, "default-deny", None)),
    (("shop", "GET", "/tenant", []), (403, "default-deny", None)),  # no header: false
    (("shop", "GET", "/internal", [("x-client", "billing.internal")]), (200, "allow", "internal")),
    (("shop", "GET", "/internal", [("x-client", "billing.internal.example")]), (403, "default-deny", None)),
    (("shop", "GET", "/debug", [("x-debug", "")]), (200, "allow", "debug")),  # present, even empty
    (("shop", "GET", "/debug", []), (403, "default-deny", None)),
    (("shop", "GET", "/local", []), (200, "allow", "local")),  # 127.0.0.1 in 127.0.0.0/8
    (("shop", "GET", "/v6", []), (403, "default-deny", None)),  # an IPv4 peer is never in an IPv6 network
    (("lab", "GET", "/blocked", []), (200, "deny", "blocked")),  # dry-run: recorded, not answered
    (("lab", "GET", "/other", []), (200, "default-deny", None)),
    (("lab", "GET", "/health", []), (200, "allow", "health")),
    (("bare", "GET", "/health", []), (403, "error", None)),
    (("moved", "GET", "/health", []), (403, "error", None)),
    (("off", "GET", "/health", []), (400, None, None)),
]


def send(host: str, port: int, method: str, target: str, headers: list[tuple[str, str]]) -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.putrequest(method, target, skip_host=True)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        connection.close()


def request(port: int, host: str, method: str, target: str, headers: list[tuple[str, str]],
            address: str = "127.0.0.1") -> tuple[int, bytes, dict]:
    return send(address, port, method, target, [("host", host), *headers])


# A route that turns the filter off, as policyc's refusal routes and no-service host turn off the
# Lua filter: its direct answer stands, with no decision.
FILTER_OFF = {"name": "off", "domains": ["off"], "routes": [{
    "match": {"prefix": "/"}, "direct_response": {"status": 400, "body": {"inline_string": "refused\n"}},
    "typed_per_filter_config": {"envoy.filters.http.dynamic_modules": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": True}}}]}


def virtual_hosts(upstream_port: int) -> list[dict]:
    return [*({"name": host, "domains": [host], "routes": [service_route(config, upstream_port, host)]}
              for host, config in ROUTES.items()), FILTER_OFF]


def logged(entry: dict) -> tuple[str | None, str | None, str | None]:
    """The route's service, and the decision and rule the filter recorded."""
    decision, rule = native_verdict(entry["native"]) if entry["native"] is not None else (None, None)
    return entry["service"], decision, rule


def test_every_atom_and_decision_in_envoy(module_dir, search_path, tmp_path):
    search_path(module_dir)
    log_path = tmp_path / "access.log"
    with RecordingUpstream() as upstream:
        config = bootstrap([dynamic_module_filter()], log_path, upstream.port,
                           virtual_hosts=virtual_hosts(upstream.port))
        with running_envoy(config, tmp_path, FLUSH) as envoy:
            answers = [request(envoy.listener_ports["main"], *sent) for sent, _ in CASES]
            envoy_log = envoy.log_path.read_text()
        reached = [received.target for received in upstream.received]
    entries = log_entries(log_path, len(CASES))
    seen = [(status, decision, rule)
            for (status, _, _), (_, decision, rule) in zip(answers, map(logged, entries), strict=True)]
    assert seen == [expected for _, expected in CASES]
    assert reached == [target for (_, _, target, _), (status, _, _) in CASES if status == 200]
    services = [logged(entry)[0] for entry in entries]
    assert services == [None if host == "off" else host for (host, *_), _ in CASES]
    denied = [(body, headers["content-type"], entry["details"])
              for (status, body, headers), entry in zip(answers, entries, strict=True) if status == 403]
    assert set(denied) == {(b"access denied\n", "text/plain", "policyc_denied")}
    assert "policyc: error deciding: the route has no config for the policy filter" in envoy_log
    assert ("policyc: error deciding: the route relies on a policy filter this listener's chain does not hold"
            in envoy_log)


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_peer_is_matched_by_its_network(module_dir, search_path, tmp_path):
    """Envoy gives an IPv6 peer as "[::1]:port"; the filter reads it and compares it with IPv6
    networks only."""
    search_path(module_dir)
    log_path = tmp_path / "access.log"
    config = bootstrap([dynamic_module_filter()], log_path, route=ROUTES["shop"],
                       listeners={"v6": {"address": "::1"}})
    with running_envoy(config, tmp_path, FLUSH) as envoy:
        port = envoy.listener_ports["v6"]
        statuses = [send("::1", port, "GET", target, [("host", "shop")])[0] for target in ("/v6", "/local")]
    assert statuses == [200, 403]
    assert [logged(entry)[1:] for entry in log_entries(log_path, 2)] == [("allow", "v6"), ("default-deny", None)]
