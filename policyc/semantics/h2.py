"""What Envoy 1.40's HTTP/2 codec hands the HCM: takes a `RawRequest` framed as HTTP/2 (its
method, target and Host as :method, :path and :authority, :scheme "http" over h2c and "https"
over TLS, its header lines as fields, names and values as given) and returns the `Received`
request line, the :authority and the header fields, or the stream reset the caller gets instead
of an answer (`Rejected` with status 0). Header lines whose names start with ':' are sent as
fields too, so they may be extra pseudo-headers or pseudo-headers out of order.

Observed on the real binary with the emitted configuration, over h2c and over TLS (the `http2:`
corpus of tests/security/bypass.yaml, and every case of tests/cases/ over both):
- A field name with an upper-case letter, `_` or a character outside the token set (an empty name
  too), a pseudo-header after a regular field, a second :method, :scheme, :path or :authority,
  any other pseudo-header (:protocol, :status, unknown ones), a value holding NUL, CR, LF, any
  other control character but HTAB, or DEL: the stream is reset. An :authority sent right after
  the other pseudo-headers is accepted when the request had none.
- Connection-specific fields (connection, keep-alive, proxy-connection, transfer-encoding,
  upgrade) and a `te` other than "trailers" (in any ASCII case, nothing around it): reset.
- `content-length` must be sent at most once, as digits, and say 0 (a request here has no
  body); CONNECT, which takes no :path, resets too.
- The header list may hold 60 KiB (Envoy's max_request_headers_kb): the names and values of
  every field, pseudo-headers and `host` included, where `cookie` fields count as their values
  joined with "; " and without their name. One byte more resets.
- :path must start with "/" (or be "*" for OPTIONS), hold no space, control character or DEL
  (reset); raw non-ASCII bytes are percent-encoded; the HCM then normalizes it as for HTTP/1.
- :authority is required; a `host` field stands in for a missing one and is dropped beside one.
  Every `host` field is checked as an :authority is, and a second one resets even beside an
  :authority. An :authority that is empty or holds characters outside reg-name, port and
  IP-literal syntax (space, '"', '#', '/', '<', '>', '?', '@', '\\', '^', '`', '{', '|', '}',
  non-ASCII) resets.
- Values keep their surrounding spaces and tabs (HTTP/1 drops them); `cookie` fields are joined
  with "; " into one value; the headers Envoy keeps one value of are joined with "," as for
  HTTP/1 (semantics/headers.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .hosts import AUTHORITY_CHARACTERS
from .paths import Received, Rejected
from .request import H2, RawRequest

RESET = "http2.invalid.header.field"
_MESSAGING = "http2.violation.of.messaging.rule"
_TOO_LARGE = "http2.header_list_size_too_large"
_MAX_HEADER_LIST = 60 * 1024  # bytes: Envoy's max_request_headers_kb, which policyc leaves at its default

_NAME = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_PATH = re.compile(r"[\x00-\x20\x7f]")
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
# The HTTP/2 codec allows no userinfo: `@` resets where HTTP/1 routes to the catch-all.
_AUTHORITY_CHARACTERS = AUTHORITY_CHARACTERS - {"@"}


@dataclass(frozen=True)
class H2Received:
    """The request the HTTP/2 codec hands the HCM."""

    received: Received
    authority: str
    fields: tuple[tuple[str, str], ...]  # the non-pseudo fields but `host`, in arrival order


def receive(request: RawRequest) -> H2Received | Rejected:
    """The codec's reading of `request`, or the stream reset it answers instead."""
    reset = Rejected(0, RESET)
    if _header_list_size(request) > _MAX_HEADER_LIST:
        return Rejected(0, _TOO_LARGE)
    pseudo, fields = _split_pseudo(request.headers)
    # The method, scheme and path are always sent, so only a missing :authority can come late.
    if [name for name, _ in pseudo] not in ([], [":authority"]) or (pseudo and request.host is not None):
        return reset
    if not _valid_method(request.method) or not all(_valid_field(name, value) for name, value in fields):
        return reset
    path = _path(request.target, request.method)
    authority = _authority(pseudo[0][1] if pseudo else request.host, [v for n, v in fields if n == "host"])
    if path is None or authority is None:
        return reset
    lengths = [value for name, value in fields if name == "content-length"]
    if len(lengths) > 1 or not all(value.isascii() and value.isdigit() for value in lengths):
        return reset
    if request.method == "CONNECT" or any(int(value) for value in lengths):
        return Rejected(0, _MESSAGING)
    return H2Received(Received(path, None), authority, tuple((n, v) for n, v in fields if n != "host"))


def _split_pseudo(lines: tuple[tuple[str, str], ...]) -> tuple[tuple, tuple]:
    """The header lines sent as pseudo-headers (those with a name starting with ':' before any
    other field; they follow the :method, :scheme, :path and :authority made from the request),
    and the rest."""
    count = next((i for i, (name, _) in enumerate(lines) if not name.startswith(":")), len(lines))
    return lines[:count], lines[count:]


def _header_list_size(request: RawRequest) -> int:
    """The bytes Envoy counts against its limit on the request's header list."""
    scheme = "https" if request.protocol == H2 else "http"
    pseudo = [(":method", request.method), (":scheme", scheme), (":path", request.target)]
    pseudo += [(":authority", request.host)] if request.host is not None else []
    lines = [*pseudo, *request.headers]
    cookies = "; ".join(value for name, value in lines if name == "cookie")
    others = sum(len(_bytes(name)) + len(_bytes(value)) for name, value in lines if name != "cookie")
    return len(_bytes(cookies)) + others


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _valid_method(method: str) -> bool:
    return bool(_NAME.fullmatch(method.lower()))


def _valid_field(name: str, value: str) -> bool:
    # `_` in a name: headers_with_underscores_action REJECT_REQUEST, a reset over HTTP/2.
    if not _NAME.fullmatch(name) or "_" in name or _BAD_VALUE.search(value):
        return False
    return name not in _CONNECTION_SPECIFIC and (name != "te" or (value.isascii() and value.lower() == "trailers"))


def _path(target: str, method: str) -> str | None:
    """:path as the HCM receives it: raw non-ASCII bytes percent-encoded; None when it resets."""
    if not target or _BAD_PATH.search(target) or not (target.startswith("/") or (target, method) == ("*", "OPTIONS")):
        return None
    return "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                   for c in target)


def _authority(authority: str | None, hosts: list[str]) -> str | None:
    """The :authority, or the one `host` field without it; None when the stream resets: each
    `host` is checked as an :authority, and at most one may be sent."""
    if len(hosts) > 1 or not all(map(_valid_authority, hosts)):
        return None
    authority = authority if authority is not None else next(iter(hosts), None)
    return authority if authority is not None and _valid_authority(authority) else None


def _valid_authority(value: str) -> bool:
    return bool(value) and set(value) <= _AUTHORITY_CHARACTERS
