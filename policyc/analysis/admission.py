"""What the proxy makes of a request before any rule: takes a method, a request-target as sent
and a host (`read_request`), or a whole request with its headers (`read`), and returns, per
protocol, the service, normalized path and header table the rules see, or the proxy's own answer
(400, 404, a reset HTTP/2 stream). The interpreter decides both (`interpret.evaluator.admit`:
hosts.py and paths.py for HTTP/1, h2.py for HTTP/2, headers.py for the header table), so `who-can`
and `decide` ask the solver about the request the rules would see, and only when the proxy lets it
through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..checked import Checked
from ..interpret.evaluator import admit
from ..semantics.paths import Rejected
from ..semantics.request import PROTOCOLS, RawRequest


@dataclass(frozen=True)
class Reading:
    """The protocols over which the request reaches `service`'s rules with the normalized `path`."""

    protocols: tuple[str, ...]
    service: str
    path: str


@dataclass(frozen=True)
class Refusal:
    """The protocols over which the proxy answers the request itself: `status` (0: the HTTP/2
    stream is reset, no answer) and the interpreter's reason."""

    protocols: tuple[str, ...]
    status: int
    reason: str

    def __str__(self) -> str:
        answer = f"{self.status} {self.reason}" if self.status else f"stream reset ({self.reason})"
        return f"{', '.join(self.protocols)}: {answer}"


@dataclass(frozen=True)
class Seen:
    """One protocol's request as the proxy hands it to the rules: the service its host is routed
    to by its `authority` (None: no service serves it), the normalized path, and the header table
    (lower-case name → values, merged and trimmed as the filters see them)."""

    service: str | None
    authority: str
    path: str
    headers: Mapping[str, tuple[str, ...]]


def read(checked: Checked, request: RawRequest) -> Seen | Refusal:
    """How the proxy hands `request` to the rules over its protocol, or its own answer (a host no
    service serves is left to the caller: the token check answers before the 404). Raises
    ValueError for a request the interpreter does not model (CONNECT)."""
    admitted = admit(checked, request)
    if isinstance(admitted, Rejected):
        return Refusal((request.protocol,), admitted.status, admitted.reason)
    admitted, table = admitted
    return Seen(admitted.service, admitted.authority, admitted.target.path, table)


def read_request(checked: Checked, method: str, target: str, host: str) -> tuple[list[Reading], list[Refusal]]:
    """How each protocol's request `method target` to `host` (no other header, no token) reaches
    the rules, or is refused before them; protocols that agree are grouped, in `PROTOCOLS` order.
    Raises ValueError for a request the interpreter does not model (CONNECT)."""
    grouped: dict[tuple, list[str]] = {}
    for protocol in PROTOCOLS:
        grouped.setdefault(_outcome(checked, RawRequest(method, target, host, protocol=protocol)), []).append(protocol)
    readings = [Reading(tuple(protocols), *rest) for (kind, *rest), protocols in grouped.items() if kind == "read"]
    refusals = [Refusal(tuple(protocols), *rest) for (kind, *rest), protocols in grouped.items() if kind == "refused"]
    return readings, refusals


def _outcome(checked: Checked, request: RawRequest) -> tuple:
    seen = read(checked, request)
    if isinstance(seen, Refusal):
        return "refused", seen.status, seen.reason
    if seen.service is None:
        return "refused", 404, f"no service serves host {seen.authority!r}"
    return "read", seen.service, seen.path
