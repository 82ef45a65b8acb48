"""What Envoy 1.40's HTTP/2 codec hands the HCM: takes a `RawRequest` framed as HTTP/2 (its
method, target and Host as :method, :path and :authority, its header lines as fields, names and
values as given) and returns the `Received` request line, the :authority and the header fields,
or the stream reset the caller gets instead of an answer (`Rejected` with status 0).

Observed on the real binary with the emitted configuration, over h2c and over TLS
(tests/envoy/test_h2_envoy.py, tests/security/h2_corpus.yaml):
- A field name with an upper-case letter, `_` or a character outside the token set, a field after
  which a pseudo-header follows (or any unknown pseudo-header), a value holding NUL, CR, LF, any
  other control character but HTAB, or DEL: the stream is reset.
- Connection-specific fields (connection, keep-alive, proxy-connection, transfer-encoding,
  upgrade) and a `te` other than "trailers": reset.
- :path must start with "/" (or be "*" for OPTIONS), hold no space, control character or DEL (reset); raw
  non-ASCII bytes are percent-encoded; the HCM then normalizes it as for HTTP/1.
- :authority is required (a single non-empty `host` field stands in for a missing one; two, or
  an empty one, reset); `host` fields beside an :authority are dropped. An :authority that is
  empty or holds characters outside reg-name, port and IP-literal syntax (space, '/', '@') resets.
- Values keep their surrounding spaces and tabs (HTTP/1 drops them); `cookie` fields are joined
  with "; " into one value; the headers Envoy keeps one value of are joined with "," as for
  HTTP/1 (interpret/headers.py).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from .paths import Received, Rejected
from .request import RawRequest

RESET = "http2.invalid.header.field"

_NAME = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_PATH = re.compile(r"[\x00-\x20\x7f]")
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_AUTHORITY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:[]")


@dataclass(frozen=True)
class H2Received:
    """The request the HTTP/2 codec hands the HCM."""

    received: Received
    authority: str
    fields: tuple[tuple[str, str], ...]  # the non-pseudo fields but `host`, in arrival order


def receive(request: RawRequest) -> H2Received | Rejected:
    """The codec's reading of `request`, or the stream reset it answers instead."""
    reset = Rejected(0, RESET)
    if not _valid_method(request.method) or not all(_valid_field(name, value) for name, value in request.headers):
        return reset
    path = _path(request.target, request.method)
    authority = _authority(request)
    if path is None or authority is None:
        return reset
    fields = tuple((name, value) for name, value in request.headers if name != "host")
    return H2Received(Received(path, None), authority, fields)


def _valid_method(method: str) -> bool:
    return bool(_NAME.fullmatch(method.lower()))


def _valid_field(name: str, value: str) -> bool:
    # `_` in a name: headers_with_underscores_action REJECT_REQUEST, a reset over HTTP/2.
    if not _NAME.fullmatch(name) or "_" in name or _BAD_VALUE.search(value):
        return False
    return name not in _CONNECTION_SPECIFIC and (name != "te" or value == "trailers")


def _path(target: str, method: str) -> str | None:
    """:path as the HCM receives it: raw non-ASCII bytes percent-encoded; None when it resets."""
    if not target or _BAD_PATH.search(target) or not (target.startswith("/") or (target, method) == ("*", "OPTIONS")):
        return None
    return "".join(c if c.isascii() else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                   for c in target)


def _authority(request: RawRequest) -> str | None:
    if request.host is not None:
        authority = request.host
    else:
        hosts = [value for name, value in request.headers if name == "host"]
        if len(hosts) != 1:
            return None
        authority = hosts[0]
    return authority if authority and set(authority) <= _AUTHORITY_CHARACTERS else None
