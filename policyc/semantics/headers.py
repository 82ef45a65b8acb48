"""Request headers as the policy filters see them: takes the header lines (or HTTP/2 fields) as
sent and returns, per lower-case name, the values in arrival order, after what Envoy's codecs do
to them; the one list of headers the proxy itself refuses, removes, adds or rewrites before any
policy filter runs, which the checker (rules may not test them) and the interpreter share; and
the header names whose values the policies test, which the emitted routes refuse to see padded
with whitespace.

Observed on Envoy 1.40 with the emitted configuration (tests/envoy/test_headers_envoy.py):
- spaces and tabs around a value are dropped by the HTTP/1 codec, kept by the HTTP/2 codec;
- most headers keep one value per line, so any one of them can match a rule;
- the headers Envoy keeps in its fixed ("inline") slots — those below — hold one value: repeated
  lines are joined with ",", empty lines skipped, so `header "accept" == "a"` does not match the
  lines `accept: a` and `accept: b`, whose one value is "a,b";
- over HTTP/2, `cookie` fields are joined with "; " into one value (`_joined_cookies`);
- a header name holding `_`, or a value holding a control character other than tab, gets the
  request refused (400 over HTTP/1, a reset stream over HTTP/2) before anything else reads it;
- the headers that `Connection` names are removed (HTTP/1), `Authorization` included, and naming
  `X-Forwarded-For`, `-Host`, `-Proto`, a pseudo-header, or ten names or more is refused (400);
- Envoy removes some `x-envoy-*` headers and keeps others; rules may name none, so the table
  leaves them all out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .. import nodes as n
from .memo import per_object
from .paths import Rejected

MERGED_HEADERS = frozenset({
    "accept", "accept-encoding", "access-control-request-headers", "access-control-request-method",
    "authorization", "cache-control", "content-encoding", "content-type", "grpc-accept-encoding",
    "grpc-timeout", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
    "origin", "pragma", "proxy-status", "referer", "user-agent", "via", "x-client-trace-id",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto", "x-request-id",
})

# Headers that make an application serve another URL or method than the request line's: IIS's
# URL Rewrite module sets X-Original-URL, ISAPI_Rewrite X-Rewrite-URL, and frameworks read them
# as the request (Symfony and Laravel until CVE-2018-14773, Zend Framework until ZF2018-01);
# X-Original-URI and X-Forwarded-Uri carry the URL to authorize to nginx `auth_request` and
# Traefik ForwardAuth backends. Symfony, Laravel, ASP.NET Core and Express's method-override read
# a POST as the method in X-HTTP-Method-Override (and its two variants). A request carrying any
# of them is refused (400) before the policy filters, in every virtual host (backends/envoy.py):
# otherwise the policy would decide on one request and the application serve another.
OVERRIDE_HEADERS = (
    "x-original-url", "x-rewrite-url", "x-original-uri", "x-forwarded-uri",
    "x-http-method-override", "x-http-method", "x-method-override",
)

# The header in which jwt_authn hands a verified token's payload to the native filter, taking a
# client's own copy off first (backends/envoy.py, native_runtime/README.md); every route removes it
# before the upstream, whatever the target.
PAYLOAD_HEADER = "x-policyc-jwt-payload"

_HOP_BY_HOP = "a hop-by-hop header: the proxy removes it before the policy filters"
# Why a rule may not test each header: the filters do not see its presence or value as sent.
PROXY_HEADERS = {
    "host": "the proxy reads it as the request's authority; test it with the service's `hosts`",
    "expect": "the proxy answers `Expect: 100-continue` itself and removes the header",
    "connection": _HOP_BY_HOP + ", and the headers it names",
    "keep-alive": _HOP_BY_HOP,
    "proxy-connection": _HOP_BY_HOP,
    "transfer-encoding": _HOP_BY_HOP,
    "upgrade": _HOP_BY_HOP + ", or refuses the request (403) when `Connection` names it",
    "http2-settings": _HOP_BY_HOP + " when it comes with an `h2c` upgrade",
    "te": "the proxy keeps only a lower-case `trailers` in it",
    "x-request-id": "the proxy makes one up when the client sends none",
    "x-forwarded-proto": "the proxy sets it to the request's scheme when the client sends none",
    "x-forwarded-client-cert": "the proxy removes it",
    "referer": "the proxy drops a value that is no URI reference (over HTTP/2, one with spaces around it)",
    **{name: "the proxy refuses (400) every request that carries it" for name in OVERRIDE_HEADERS},
    PAYLOAD_HEADER: "the proxy puts a verified token's claims in it, for the native filter, and removes it "
                    "before the upstream",
}
_ENVOY_HEADERS = "the proxy removes or sets many `x-envoy-*` headers itself"
_UNDERSCORE = "the proxy refuses (400) every request whose header names hold `_`"


def proxy_header(name: str) -> str | None:
    """Why the policy filters cannot see the lower-case header `name` as the client sent it, or
    None when they can."""
    if name.startswith("x-envoy-"):
        return _ENVOY_HEADERS
    if "_" in name:
        return _UNDERSCORE
    return PROXY_HEADERS.get(name)


# ------------------------------------------------------------------ the HTTP/1 codec


# `Connection` may name these without removing anything; it may not name these at all.
_CONNECTION_OPTIONS = frozenset({"close", "keep-alive", "upgrade", "http2-settings", "connection", "te"})
_NOT_NOMINABLE = frozenset({"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})
_MAX_NOMINATED = 10
_WHITESPACE = " \t\f\v\r\n"
# A CR inside a value and a LF (which ends the line) are the codec's own business: not modelled.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def codec_headers(lines: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...] | Rejected:
    """The header lines (Host included) that the HTTP/1 codec hands on, or its refusal: a name
    holding `_` (headers_with_underscores_action REJECT_REQUEST), a value holding a control
    character (but tab) or DEL, then the `Connection` header's nominations. `te` keeps its
    `trailers` and rules may not test it, so it is left as sent."""
    if any("_" in name for name, _ in lines):
        return Rejected(400, "http1.unexpected_underscore")
    if any(_CONTROL.search(value) for _, value in lines):
        return Rejected(400, "http1.invalid_characters")
    connection = _merged([value.strip(" \t") for name, value in lines if name.lower() == "connection"])[0]
    tokens = [token for token in connection.split(",") if token]
    if len(tokens) >= _MAX_NOMINATED:
        return Rejected(400, "http1.connection_header_rejected")
    nominated = {token.strip(_WHITESPACE).lower() for token in tokens}
    if nominated & _NOT_NOMINABLE or any(name.startswith(":") for name in nominated):
        return Rejected(400, "http1.connection_header_rejected")
    removed = nominated - _CONNECTION_OPTIONS
    return tuple((name, value) for name, value in lines if name.lower() not in removed)


def upgrade_refused(lines: Sequence[tuple[str, str]]) -> bool:
    """Whether the proxy refuses the request as an upgrade it does not serve (403 upgrade_failed,
    before any filter): `Connection` names `upgrade` and an `Upgrade` header asks for anything but
    `h2c`, which the codec drops instead."""
    table = header_table(lines)
    asked = [token.strip(_WHITESPACE).lower() for value in table.get("connection", ()) for token in value.split(",")]
    return "upgrade" in asked and "upgrade" in table and table["upgrade"][0].lower() != "h2c"


def overridden(headers: Sequence[tuple[str, str]]) -> str | None:
    """The first URL- or method-override header a request carries, if any."""
    names = {name.lower() for name, _ in headers}
    return next((name for name in OVERRIDE_HEADERS if name in names), None)


def header_table(lines, http2: bool = False) -> dict[str, tuple[str, ...]]:
    """Values per lower-case name, as the policy filters see them."""
    table: dict[str, list[str]] = {}
    for name, value in lines:
        name = name.lower()
        if not name.startswith("x-envoy-"):
            table.setdefault(name, []).append(value if http2 else value.strip(" \t"))
    if http2 and "cookie" in table:
        joined = _joined_cookies(table.pop("cookie"))
        table.update({"cookie": [joined]} if joined else {})
    return {name: _merged(values) if name in MERGED_HEADERS else tuple(values) for name, values in table.items()}


def _joined_cookies(values: list[str]) -> str:
    """Envoy's HTTP/2 codec appends each cookie field to what it has, after "; " unless that is
    still empty: ["", "a"] is "a" but ["a", ""] is "a; ", and no cookie header is left when the
    result is empty."""
    joined = ""
    for value in values:
        joined += ("; " if joined else "") + value
    return joined


def _merged(values: list[str]) -> tuple[str, ...]:
    return (",".join(v for v in values if v),)


@per_object
def value_tested_headers(checked) -> tuple[str, ...]:
    """The header names whose values some rule or condition compares (`authorization` too when
    tokens are read from it), sorted. Over HTTP/2 a value keeps the spaces around it, which an
    HTTP/1 upstream drops: the emitted routes refuse such values of these headers (400) so that
    no rule judges a value other than the one the upstream reads."""
    exprs = [c.expr for c in checked.conditions.values()]
    exprs += [r.expr for s in checked.services.values() for r in s.rules]
    names = {node.name for expr in exprs for node in n.walk(expr)
             if isinstance(node, n.HeaderTest | n.HeaderEqualsClaim)}
    return tuple(sorted(names | ({"authorization"} if checked.issuers else set())))


def padded(table: dict[str, tuple[str, ...]], names: tuple[str, ...]) -> bool:
    """Whether a value of one of `names` starts or ends with a space or a tab."""
    return any(v != v.strip(" \t") for name in names for v in table.get(name, ()))
