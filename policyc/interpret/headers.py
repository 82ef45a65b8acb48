"""Request headers as the policy filters see them: takes the header lines as sent and returns,
per lower-case name, the values in arrival order, after what Envoy's HTTP/1 codec does to them.

Observed on Envoy 1.40 with the emitted configuration (tests/envoy/test_headers_envoy.py):
- spaces and tabs around a value are dropped;
- most headers keep one value per line, so any one of them can match a rule;
- the headers Envoy keeps in its fixed ("inline") slots — those below — hold one value: repeated
  lines are joined with ",", empty lines skipped, so `header "accept" == "a"` does not match the
  lines `accept: a` and `accept: b`, whose one value is "a,b";
- `x-envoy-*` headers from the client never reach the filters.
"""

from __future__ import annotations

MERGED_HEADERS = frozenset({
    "accept", "accept-encoding", "access-control-request-headers", "access-control-request-method",
    "authorization", "cache-control", "content-encoding", "content-type", "grpc-accept-encoding",
    "grpc-timeout", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
    "origin", "pragma", "proxy-status", "referer", "user-agent", "via", "x-client-trace-id",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto", "x-request-id",
})


def header_table(lines) -> dict[str, tuple[str, ...]]:
    """Values per lower-case name, as the policy filters see them."""
    table: dict[str, list[str]] = {}
    for name, value in lines:
        name = name.lower()
        if not name.startswith("x-envoy-"):
            table.setdefault(name, []).append(value.strip(" \t"))
    return {name: _merged(values) if name in MERGED_HEADERS else tuple(values) for name, values in table.items()}


def _merged(values: list[str]) -> tuple[str, ...]:
    return (",".join(v for v in values if v),)
