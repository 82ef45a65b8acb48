"""The interpreter's model of Envoy's request-target and Host handling (paths.py, hosts.py) and its
glob regexes (glob.py), checked against a real Envoy 1.40 with the emitted HCM settings.

Requests go out byte for byte on raw sockets; the recording upstream reports the request-target and Host
it received. For every request `admit_request` must predict the status (Envoy's own 400/404/426,
the catch-all 404, or the upstream's 200), the exact target the upstream got, its Host and the
virtual host that routed it.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.backends.envoy import REFUSED_ROUTES, refusal_routes, route_matcher
from policyc.proof.envoy_process import running_envoy
from policyc.proof.upstream import RecordingUpstream
from policyc.semantics.glob import glob_error, glob_matches, glob_to_regex
from policyc.semantics.hosts import admit_request
from policyc.semantics.paths import KNOWN_METHODS, Rejected, normalize_target

pytestmark = pytest.mark.envoy

HOSTS = {
    "payments": ("payments.internal", "payments.internal:8443"),
    "orders": ("orders.internal", "Orders.Example:9000"),
    "loopback": ("127.0.0.1:8080", "[::1]:8080"),
}
GLOBS = (
    "/api/*/items/**", "/reports/*.csv", "/v*/x", "/a/**", "/**", "/a/**/b", "/x*y*z", "/a/*/",
    "/", "/**/*.json", "/a.b/(c)/[d]/+$;'/**", "/*", "/a/**/**/c", "/%41/*%25*/~",
    "/s/*/t/**/u/*.v/**/w/*x*y*z*/end",
)
PREFIX_MAP = "services, prefix map"  # the listener whose hosts find their routes by a prefix map
EXPLORE = settings(derandomize=True, deadline=None, max_examples=300)


# ---------------------------------------------------------------- the lab


def _hcm(route_config: dict) -> dict:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                 ".v3.HttpConnectionManager",
        "stat_prefix": "t",
        # The settings the compiler emits (contract §5).
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "route_config": route_config,
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }}


def _listener(name: str, route_config: dict) -> dict:
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [_hcm(route_config)]}]}


# A compiled host's forwarding routes differ only by their RBAC configs, which this lab leaves out.
PREFIXES = ("/admin/", "/a/b", "/a", "/")


def _services_routes(prefix_map: bool) -> dict:
    """Each service's refusal routes, then a route per prefix; with `prefix_map`, the same as the
    matcher a host of many prefixes gets (envoy.py, `route_matcher`)."""
    routes = [{"match": {"prefix": prefix}, "route": {"cluster": "echo"}} for prefix in PREFIXES]
    layout = {"matcher": route_matcher(REFUSED_ROUTES, routes)} if prefix_map else {"routes": REFUSED_ROUTES + routes}
    virtual_hosts = [{
        "name": service, "domains": list(hosts), **layout,
        "request_headers_to_add": [{"header": {"key": "x-vhost", "value": service}}],
    } for service, hosts in HOSTS.items()]
    virtual_hosts.append({"name": "catch-all", "domains": ["*"], "routes": [
        *REFUSED_ROUTES, {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]})
    return {"name": "services", "virtual_hosts": virtual_hosts}


def _glob_routes() -> dict:
    # One route per glob, selected by the x-glob header: 200 when its safe_regex matches. Path
    # parameters are allowed here, so that globs holding `;` meet paths holding it.
    routes = refusal_routes(parameters_allowed=True) + [{"match": {"safe_regex": {"regex": glob_to_regex(glob)},
                         "headers": [{"name": "x-glob", "string_match": {"exact": str(i)}}]},
               "direct_response": {"status": 200}} for i, glob in enumerate(GLOBS)]
    routes.append({"match": {"prefix": ""}, "direct_response": {"status": 404}})
    virtual_host = {"name": "globs", "domains": ["*"], "routes": routes}
    return {"name": "globs", "virtual_hosts": [virtual_host]}


def _bootstrap(upstream_port: int) -> dict:
    address = {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}
    endpoints = [{"lb_endpoints": [{"endpoint": {"address": address}}]}]
    cluster = {"name": "echo", "type": "STATIC", "connect_timeout": "2s",
               "load_assignment": {"cluster_name": "echo", "endpoints": endpoints}}
    listeners = [_listener("services", _services_routes(False)), _listener(PREFIX_MAP, _services_routes(True)),
                 _listener("globs", _glob_routes())]
    return {"static_resources": {"listeners": listeners, "clusters": [cluster]}}


@pytest.fixture(scope="module")
def envoy(tmp_path_factory):
    with RecordingUpstream() as upstream:
        workdir = tmp_path_factory.mktemp("envoy-paths")
        with running_envoy(_bootstrap(upstream.port), workdir, args=["--concurrency", "1"]) as proxy:
            yield proxy.listener_ports


# ---------------------------------------------------------------- one exchange


@dataclass(frozen=True)
class Seen:
    status: int | None  # None: Envoy closed or stalled without answering
    target: str | None = None  # what the upstream received
    host: str | None = None
    vhost: str | None = None


def _exchange(port: int, data: bytes, head: bool = False) -> tuple[int | None, bytes]:
    """One request on a fresh connection: the status (None if none came) and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        try:
            status_line = stream.readline()
        except TimeoutError:
            return None, b""
        if not status_line:
            return None, b""
        headers = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b"" if head else stream.read(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), body


def _request(method: str, target: str, host_lines: tuple[str, ...], extra: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"host: {h}\r\n" for h in host_lines)
    return (head + extra + "\r\n").encode("utf-8")


def observe(ports, method: str, target: str, host_lines: tuple[str, ...], listener: str = "services") -> Seen:
    status, body = _exchange(ports[listener], _request(method, target, host_lines),
                             head=method == "HEAD")
    if status != 200 or method == "HEAD":
        return Seen(status)
    echoed = json.loads(body)
    headers = dict(echoed["headers"])
    return Seen(200, echoed["target"], headers.get("host"), headers.get("x-vhost"))


def predict(method: str, target: str, host_lines: tuple[str, ...]) -> Seen:
    admitted = admit_request(method, target, host_lines, HOSTS)
    if isinstance(admitted, Rejected):
        return Seen(admitted.status)
    if admitted.service is None:
        return Seen(404)
    if method == "HEAD":
        return Seen(200)
    return Seen(200, admitted.target.forwarded, admitted.authority, admitted.service)


def mismatches(ports, cases) -> list[str]:
    """Every (method, target, host_lines) whose observation, by either layout of the routes,
    differs from the prediction."""
    found = []
    for method, target, host_lines in cases:
        predicted = predict(method, target, host_lines)
        for listener in ("services", PREFIX_MAP):
            seen = observe(ports, method, target, host_lines, listener)
            if seen != predicted:
                found.append(f"{method} {target!r} {host_lines!r}: envoy ({listener}) {seen}, model {predicted}")
    return found


# ---------------------------------------------------------------- hand-picked cases

PAYMENTS = ("payments.internal",)
HOSTILE_TARGETS = [
    # envoy-lab §5
    "/admin/../secret", "//secret", "/%61dmin", "/Admin", "/secret%2F..", "/secret/", "/admin/./x",
    "/a/b/../../admin", "/admin%2Fx", "/admin%2fx", "/admin%5Cx", "/admin%5cx", "/admin\\x",
    "/./admin", "/admin;x", "/admin?q=../secret", "/%2e%2e/admin", "/.%2e/admin", "//admin",
    "///admin//x", "/secret#frag", "/sec%72et", "/admin%252Fx", "/a/b/../../admin?x=/../y",
    # dot segments, slashes, backslashes
    "/", "//", "///", "/\\", "/.", "/..", "/./", "/../", "/a/..", "/a/../", "/a/.", "/a/./", "/%2e",
    "/%2e%2e", "/.%2E/", "/a/%2e%2e", "/a/..\\b", "/a\\..\\b", "/a/.b", "/a/..b", "/a/b..", "/...",
    "/a/...", "/a//../b", "//..//a", "/a/b/../../..", "/.//a", "/a/.//b", "/a//./b", "/a/.././../b",
    "/%2E%2E/a", "/%2e./a", "/a%2e%2e/b", "/a\\", "/a;b/../c",
    # ";" after a raw dot segment is dropped, after an encoded one it is not (Tomcat reads "..;")
    "/a/..;/b", "/a/.;/b", "/a/..;x\\..;/b", "/public/%2e%2e;/admin", "/%2e;/a", "/a/.%2e;/b",
    # percent-encoding: unreserved decoded, the rest kept with its hex case, broken escapes kept
    "/%41%5a%61%7A%30%39%2D%5F%7E%7e", "/%3a%3A%40%25%20%22", "/%", "/%%41", "/%4", "/%zz", "/%2",
    "/%25", "/%252F", "/%00", "/a%00?x", "/%01", "/%7f", "/%80", "/%C3%A9", "/%c3%a9",
    # double decoding: a broken escape followed by a decoded one spells a new escape
    "/admin%2%66x", "/admin%2%46x", "/%%341", "/%2%65", "/a/%%32e%%32e/b", "/%5%63",
    # characters Chromium percent-encodes, and ones it keeps
    '/a"b', "/a<b>c", "/a^b", "/a`b", "/a{b}c", "/a|b", "/a[b]c", "/~!$&'()*+,;=:@",
    # the query is never touched, only read for '#'
    "/a?", "/a?#", "/?a=b", "/a?x=/../%2F\\", "/a?b?c", "/a??", "/a?%00", '/a?"<>', "/a?\\",
    # nor refused for what the path alone would be: parameters, a dot segment with them
    "/a?x=;y", "/a?x=/..;/y", "/a?%3B", "/admin/?/.;",
    "/%2e%2e?%2e%2e",
    # the request line: whitespace, controls, non-ASCII, LF
    " /a", "/a ", "\t/a\t", "\r/a", "/a\r", "/a b", "/a\rb", "/a\tb", "/a\x0cb", "/a\x0b", "/a\x00",
    "/a\x7f", "/é", "/a\u2028b", "", " ", "/a\n", "/a\nb", "\n/a", "/a b\nc", "/a#\n", "/a\x01\n",
    # neither origin- nor absolute-form
    "*", "a/b", "\\a", "\\..\\a", "?x", "#x", "%2F", "./a",
]
ABSOLUTE_TARGETS = [
    "http://payments.internal/a/../b", "http://PAYMENTS.internal/x", "https://payments.internal/x",
    "http://payments.internal", "http://payments.internal?x=1", "http://payments.internal:8443/x",
    "http://payments.internal:80/x", "http://payments.internal:0080/x", "https://payments.internal:443/x",
    "http://payments.internal/a#frag", "http://payments.internal/a%2Fb", "ftp://payments.internal/",
    "http://user@payments.internal/", "http://user:pw@payments.internal/", "http://@payments.internal/",
    "http://a@b@payments.internal/", "http://payments.internal./", "HTTP://payments.internal/",
    "http://[::1]:8080/x", "http://[::1]/", "http://127.0.0.1:8080/x", "http://0x7f.1/",
    'http://payments.internal/a"b{}', 'http://payments.internal/a?b"c<>{}', "http://%70ayments.internal/",
    "http://payments.internal:/x", "http:/payments.internal/x", "http:payments.internal/x",
    "http://payments.internal\\x", "http://payments.internal/a\\b", "http://payments.internal//a//b",
    "http://orders.internal/x", "http://orders.example:9000/x", "http://unknown/x",
    "http://payments.internal:65535/", "http://payments.internal:65536/", "http://payments.internal:8443x/",
    "http://pay_ments.internal/", "http://", "http:///x", "http://:80/x", "ws://payments.internal/",
    "h1tp://payments.internal/", "http://payments.internal#c", "http://payments.internal?x#y",
    "http://u@[fe80::1%25eth0]/x", "http://[::1/x", "http://[::1]x/x", "http://payments.internal:0008443/",
    "http://payments.internal/a b", "http://é/",
]
HOST_LINES = [
    *[(host,) for host in [
        "payments.internal", "PAYMENTS.Internal", "payments.internal.", "payments.internal:8443",
        "payments.internal:08443", "payments.internal:80", "payments.internal:",
        "PAYMENTS.INTERNAL:8443", "payments.internal.:8443", "", " payments.internal ",
        "payments.internal\t", "pay ments", "user@payments.internal",
        "payments.internal,orders.internal", "orders.internal:80", "orders.example:9000",
        "ORDERS.EXAMPLE:9000", "[::1]:8080", "[::1]", "127.0.0.1:8080", "payments.internal/x",
        "payments.internal?x", "payments.internal#x", "payments\\internal", "paymentş.internal",
        "*", "payments.internal%2e",
    ]],
    (), ("payments.internal", "payments.internal"), ("payments.internal", "orders.internal"),
    ("", "payments.internal"), ("payments.internal", ""), ("", ""), ("", "", "orders.internal"),
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS, ids=repr)
def test_origin_form_targets(envoy, target):
    assert mismatches(envoy, [("GET", target, PAYMENTS)]) == []


@pytest.mark.parametrize("target", ABSOLUTE_TARGETS, ids=repr)
def test_absolute_form_targets(envoy, target):
    assert mismatches(envoy, [("GET", target, ("orders.internal",)), ("GET", target, ())]) == []


@pytest.mark.parametrize("host_lines", HOST_LINES, ids=repr)
def test_host_lines(envoy, host_lines):
    assert mismatches(envoy, [("GET", "/x", host_lines)]) == []


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "GET", "POST"])
@pytest.mark.parametrize("target", ["*", "*x", "*/a", "*#", "/", "http://payments.internal/"])
def test_asterisk_form(envoy, method, target):
    # Envoy takes OPTIONS * but answers 404 (absolute_path_rejected); a missing Host comes first.
    cases = [(method, target, PAYMENTS), (method, target, ()), (method, target, ("a b",))]
    assert mismatches(envoy, cases) == []


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS - {"CONNECT"})
                         + ["get", "Get", "QUERY", "FOO", "G-T", "M", "M-SEARCH", "GETX", "XGET", "ACLBIND"])
def test_methods(envoy, method):
    assert mismatches(envoy, [(method, "/a/../x", PAYMENTS)]) == []


def test_the_model_reports_what_this_suite_relies_on(envoy):
    # A few predictions spelled out, so a regression in the model reads plainly here.
    assert normalize_target("/a//../b").path == "/a/b"
    assert normalize_target("/admin%2%66x").path == "/admin%252fx"  # no double decoding
    assert normalize_target("*", "OPTIONS") == Rejected(404, "absolute_path_rejected")
    assert admit_request("OPTIONS", "*", (), HOSTS) == Rejected(400, "missing_host_header")


# ---------------------------------------------------------------- generated cases

PIECES = [
    "a", "b", "admin", "A", "x.y", ".", "..", "./", "../", "..;", ".;", "..\\", "%2e", "%2E", "%2f",
    "%2F", "%5c", "%5C", "%25", "%41", "%61", "%7e", "%7E", "%", "%zz", "%2", "%5", "%00", "%20",
    "%22", "%3A", "/", "/", "/", "//", "\\", ";", ";x=1", "?", "#", "~", "é", "\u2028", "\x00",
    "\x01", "\x0b", "\x0c", "\x7f", " ", "\t", "\r", "\n", '"', "<", ">", "`", "{", "}", "|", "^",
    "[", "]", "*", "@", ":", "&", "=", "+", "$", ",", "'", "(", ")", "!", "-", "_",
]
origin_targets = st.lists(st.sampled_from(PIECES), max_size=12).map(lambda p: "/" + "".join(p))
raw_targets = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)
host_variants = st.sampled_from([h for hosts in HOSTS.values() for h in hosts]).flatmap(
    lambda h: st.sampled_from([h, h.upper(), h + ".", h + ":8443", h + ":", " " + h, h + "\t"]))
host_values = st.one_of(
    host_variants,
    st.text(st.sampled_from("abcXYZ019.-_:@[]%,*!$&'()+;=~/?#\\ \té\"<>^`{|}"), max_size=12),
)
absolute_targets = st.builds(
    lambda scheme, userinfo, host, port, rest: f"{scheme}://{userinfo}{host}{port}{rest}",
    st.sampled_from(["http", "https", "HTTP", "hTtPs", "ftp", "h1tp", "ws", "http+x"]),
    st.sampled_from(["", "", "u@", "u:p@", "@", "a@b@", "%41@", "[x]@", "u p@"]),
    st.sampled_from(["payments.internal", "PAYMENTS.internal", "orders.example", "127.0.0.1",
                     "[::1]", "[::1", "-.-", "1", "pay_ments", "%70ay", "a..b", "",
                     "payments.internal.", "[fe80::1%25eth0]", "pay\\ments", "é"]),
    st.sampled_from(["", "", ":8443", ":9000", ":8080", ":80", ":0", ":65535", ":65536", ":008443",
                     ":x", ":"]),
    st.one_of(st.just(""), origin_targets,
              st.lists(st.sampled_from(PIECES), max_size=6).map(lambda p: "?" + "".join(p))),
)


@EXPLORE
@given(st.lists(st.one_of(origin_targets, raw_targets), min_size=1, max_size=6))
def test_generated_origin_form_targets(envoy, targets):
    assert mismatches(envoy, [("GET", t, PAYMENTS) for t in targets]) == []


@EXPLORE
@given(absolute_targets, st.lists(host_values, max_size=2).map(tuple))
def test_generated_absolute_form_targets(envoy, target, host_lines):
    assert mismatches(envoy, [("GET", target, host_lines)]) == []


@EXPLORE
@given(st.lists(host_values, max_size=3).map(tuple), origin_targets)
def test_generated_host_lines(envoy, host_lines, target):
    assert mismatches(envoy, [("GET", target, host_lines), ("OPTIONS", "*", host_lines)]) == []


# ---------------------------------------------------------------- globs as RE2 safe_regex


def glob_paths(glob: str):
    """Targets built from the glob's own literals, so that matches are common."""
    literals = [piece for segment in glob.split("/") for piece in segment.split("*") if piece]
    pieces = st.sampled_from(literals + ["/", "/", "x", "..", "%2e", "", ".csv", "%41", "\\"])
    return st.lists(pieces, max_size=10).map(lambda p: "/" + "".join(p))


@EXPLORE
@given(st.data())
def test_glob_regexes_match_in_envoy_as_glob_matches_says(envoy, data):
    index = data.draw(st.integers(0, len(GLOBS) - 1))
    target = data.draw(glob_paths(GLOBS[index]))
    normalized = normalize_target(target)
    if isinstance(normalized, Rejected):
        return  # the proxy answers before any route; covered above
    data = _request("GET", target, ("globs.internal",), extra=f"x-glob: {index}\r\n")
    status, _ = _exchange(envoy["globs"], data)
    expected = 200 if glob_matches(GLOBS[index], normalized.path) else 404
    assert status == expected, (GLOBS[index], target, normalized.path)


def test_globs_in_this_suite_are_well_formed():
    assert [glob for glob in GLOBS if glob_error(glob)] == []
