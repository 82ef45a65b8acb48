"""Request headers as the policy filters see them: takes the header lines (or HTTP/2 fields) as
sent and returns, per lower-case name, the values in arrival order, after what Envoy's codecs do
to them; and the header names whose values the policies test, which the emitted routes refuse to
see padded with whitespace.

Observed on Envoy 1.40 with the emitted configuration (tests/envoy/test_headers_envoy.py):
- spaces and tabs around a value are dropped by the HTTP/1 codec, kept by the HTTP/2 codec;
- most headers keep one value per line, so any one of them can match a rule;
- the headers Envoy keeps in its fixed ("inline") slots — those below — hold one value: repeated
  lines are joined with ",", empty lines skipped, so `header "accept" == "a"` does not match the
  lines `accept: a` and `accept: b`, whose one value is "a,b";
- over HTTP/2, `cookie` fields are joined with "; " into one value, empty ones skipped;
- `x-envoy-*` headers from the client never reach the filters.
"""

from __future__ import annotations

from .. import nodes as n
from .memo import per_object

MERGED_HEADERS = frozenset({
    "accept", "accept-encoding", "access-control-request-headers", "access-control-request-method",
    "authorization", "cache-control", "content-encoding", "content-type", "grpc-accept-encoding",
    "grpc-timeout", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
    "origin", "pragma", "proxy-status", "referer", "user-agent", "via", "x-client-trace-id",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto", "x-request-id",
})


def header_table(lines, http2: bool = False) -> dict[str, tuple[str, ...]]:
    """Values per lower-case name, as the policy filters see them."""
    table: dict[str, list[str]] = {}
    for name, value in lines:
        name = name.lower()
        if not name.startswith("x-envoy-"):
            table.setdefault(name, []).append(value if http2 else value.strip(" \t"))
    if http2 and "cookie" in table:
        table["cookie"] = ["; ".join(v for v in table["cookie"] if v)]
    return {name: _merged(values) if name in MERGED_HEADERS else tuple(values) for name, values in table.items()}


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
