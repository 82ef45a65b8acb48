"""One comparison for every place that holds Envoy against the interpreter (tests, `policyc
verify`, the demo): what Envoy did with a request, and what the interpreter decides for it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..checked import Checked
from ..interpret import Decision, evaluate
from .replay import Observed


@dataclass(frozen=True)
class Comparison:
    observed: Observed
    expected: Decision

    @property
    def differences(self) -> list[str]:
        seen, expected = self.observed, self.expected
        found = [f"{field}: interpreter {want!r}, envoy {got!r}" for field, want, got in (
            ("status", expected.wire_status, seen.status), ("grpc_status", expected.grpc_status, seen.grpc_status),
            ("reason", expected.reason, seen.reason), ("rule", expected.rule, seen.rule)) if want != got]
        if seen.reached_upstream != (expected.status == 200):
            found.append(f"reached the upstream: {seen.reached_upstream}")
        return found

    def report(self) -> str:
        request = self.observed.request
        lines = [f"{request.method} {request.target} host={request.host!r} over {request.protocol}"]
        lines += [f"  {name}: {value}" for name, value in request.headers]
        lines += [f"  {difference}" for difference in self.differences]
        lines.append(f"  envoy details: {self.observed.log.get('details')}")
        return "\n".join(lines)


def compare(checked: Checked, observed: list[Observed], now: float, keys: Mapping[str, dict]) -> list[Comparison]:
    """Each observation beside the interpreter's decision on the same request, as Envoy saw it."""
    return [Comparison(seen, evaluate(checked, seen.request, now, keys)) for seen in observed]
