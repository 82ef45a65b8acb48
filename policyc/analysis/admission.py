"""What the proxy makes of a request line before any rule: takes a method, a request-target as
sent and a host, and returns, per protocol, the service and normalized path the rules see, or the
proxy's own answer (400, 404, a reset HTTP/2 stream). The interpreter decides both
(`interpret.evaluator.admit`: hosts.py and paths.py for HTTP/1, h2.py for HTTP/2), so `who-can`
asks the solver about the request the rules would see, and only when the proxy lets it through.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..check import Checked
from ..interpret.evaluator import admit
from ..interpret.paths import Rejected
from ..interpret.request import PROTOCOLS, RawRequest


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
    admitted = admit(checked, request)
    if isinstance(admitted, Rejected):
        return "refused", admitted.status, admitted.reason
    admitted, _ = admitted
    if admitted.service is None:
        return "refused", 404, f"no service serves host {admitted.authority!r}"
    return "read", admitted.service, admitted.target.path
