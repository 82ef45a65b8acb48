"""The interpreter's input and output: a raw request as a client sends it, and a decision."""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from .peer import ClientCertificate


class RequestError(ValueError):
    """A request description (JSON/YAML) that is not of the documented shape."""


# The protocols a caller speaks to the listener: HTTP/1.1 (in the clear, or over TLS when the
# listener has TLS), HTTP/2 with prior knowledge in the clear, and HTTP/2 over TLS chosen by ALPN.
HTTP1, H2C, H2 = "HTTP/1.1", "h2c", "h2"
PROTOCOLS = (HTTP1, H2C, H2)


@dataclass(frozen=True)
class RawRequest:
    """A request as sent: method, request-target, Host, headers in arrival order, peer address and
    the request line's HTTP version, and the client certificate presented over TLS, if any.

    `protocol` says how it is framed. Over HTTP/2 the method, target and Host are sent as the
    :method, :path and :authority pseudo-headers (no :authority when `host` is None) and the
    header lines as fields, names and values exactly as given (semantics/h2.py)."""

    method: str
    target: str
    host: str | None
    headers: tuple[tuple[str, str], ...] = ()
    source: str = "127.0.0.1"
    version: str = "HTTP/1.1"
    certificate: ClientCertificate | None = None
    protocol: str = HTTP1

    @classmethod
    def from_dict(cls, data: Any) -> RawRequest:
        """`{"method", "path", "host", "headers": {name: value or [values]}, "source", "version",
        "protocol"}`."""
        if not isinstance(data, dict):
            raise RequestError("a request is an object with method, path, host, headers and source")
        unknown = set(data) - {"method", "path", "host", "headers", "source", "version", "protocol"}
        if unknown:
            raise RequestError(f"unknown request field(s): {', '.join(sorted(unknown))}")
        method, path = data.get("method", "GET"), data.get("path", "/")
        host, source = data.get("host"), data.get("source", "127.0.0.1")
        version, protocol = data.get("version", "HTTP/1.1"), data.get("protocol", HTTP1)
        for name, value in (("method", method), ("path", path), ("source", source), ("version", version)):
            if not isinstance(value, str):
                raise RequestError(f"request {name} must be a string")
        if protocol not in PROTOCOLS:
            raise RequestError(f"request protocol must be one of {', '.join(PROTOCOLS)}")
        if host is not None and not isinstance(host, str):
            raise RequestError("request host must be a string")
        try:
            ipaddress.ip_address(source)
        except ValueError:
            raise RequestError(f"request source {source!r} is not an IP address") from None
        return cls(method, path, host, _headers(data.get("headers", {})), source, version, protocol=protocol)


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict):
        raise RequestError("request headers must be an object of name: value or [values]")
    pairs = []
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise RequestError(f"header {name!r}: values must be strings")
        pairs += [(name, v) for v in values]
    return tuple(pairs)


@dataclass(frozen=True)
class Decision:
    """What happens to a request: the status the client sees, and which rule decided and why.

    `reason` is one of handshake-refused (status 0: the TLS handshake failed, no HTTP answer),
    `reason` is one of handshake-refused (status 0: the TLS handshake failed, no HTTP answer),
    reset (status 0: the HTTP/2 stream was reset, no HTTP answer), bad-request, unauthenticated,
    forbidden, no-service, deny, allow, default-deny. For a dry-run service `status` is the
    upstream's and `enforced_status` what the policy would have answered. To a gRPC call the proxy
    gives its own answers as `grpc_status` (16 UNAUTHENTICATED, 7 PERMISSION_DENIED, …) in an HTTP
    200 response; `status` stays the HTTP answer it stands for.
    """

    status: int
    reason: str
    rule: str | None = None
    service: str | None = None
    detail: str = ""
    dry_run: bool = False
    enforced_status: int | None = None
    caller: dict = field(default_factory=dict)
    grpc_status: int | None = None

    @property
    def wire_status(self) -> int:
        """The HTTP status on the wire: 200 when the answer travels as a grpc-status."""
        return 200 if self.grpc_status is not None else self.status

    def to_json(self) -> dict:
        data = asdict(self)
        return {k: v for k, v in data.items() if v not in (None, "", {}, False) or k in ("status", "rule")}
