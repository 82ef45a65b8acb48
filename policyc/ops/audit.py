"""Audit trails from Envoy's JSON access logs (the format the emitted config writes).

`read_events(lines, service, since)` turns log lines into `Event`s: who (the verified token's
`sub` and issuer, the client certificate's URI SANs and subject, or anonymous) asked what (method,
host, path, source), the deciding rule and reason as `harness.decisions.logged_decision` reads
them, the policy version that decided, and a verdict: `allowed`, `denied`, or `would-deny` for a
dry-run service that let through a request its policy refuses (`unknown` when the line does not
say). Lines that are not JSON objects (Envoy's own log mixed in) are counted and skipped.
`summarize(events)` counts verdicts per service and rule; `render_table` and `render_json` print.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from ..backends.accesslog import logged_decision

ALLOWED, DENIED, WOULD_DENY, UNKNOWN = "allowed", "denied", "would-deny", "unknown"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Event:
    time: str
    service: str | None
    mode: str | None
    policy_version: str | None
    caller: str  # the token's `sub`, else the certificate's URI SANs, else its subject, else "anonymous"
    issuer: str | None  # the token's `iss`
    peer: str | None  # the client certificate's URI SANs, joined by "," as Envoy logs them
    peer_subject: str | None  # the client certificate's subject (RFC 2253)
    method: str
    host: str
    path: str
    source: str
    status: int
    grpc_status: int | None  # a gRPC call's refusal is status 200 with this grpc-status
    reason: str  # the interpreter's vocabulary: allow, deny, default-deny, unauthenticated, …
    rule: str | None
    verdict: str
    details: str


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no zone is given), or a duration back from now: 90s, 15m, 2h, 7d."""
    if match := _DURATION.match(text.strip()):
        amount, unit = match.groups()
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: int(amount)})
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _verdict(entry: dict, reason: str) -> str:
    if reason in ("allow", "unknown"):
        return ALLOWED if reason == "allow" else UNKNOWN
    return WOULD_DENY if entry.get("mode") == "dry-run" else DENIED


def _grpc_status(entry: dict) -> int | None:
    value = entry.get("grpc_status")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _event(entry: dict) -> Event:
    reason, rule = logged_decision(entry)
    return Event(
        time=str(entry.get("time") or ""),
        service=entry.get("service"),
        mode=entry.get("mode"),
        policy_version=entry.get("policy_version"),
        caller=entry.get("sub") or entry.get("peer") or entry.get("peer_subject") or "anonymous",
        issuer=entry.get("issuer"),
        peer=entry.get("peer"),
        peer_subject=entry.get("peer_subject"),
        method=str(entry.get("method") or ""),
        host=str(entry.get("authority") or ""),
        path=str(entry.get("path") or ""),
        source=str(entry.get("source") or ""),
        status=int(entry.get("status") or 0),
        grpc_status=_grpc_status(entry),
        reason=reason,
        rule=rule,
        verdict=_verdict(entry, reason),
        details=str(entry.get("details") or ""),
    )


def _time(event: Event) -> datetime | None:
    try:
        return datetime.fromisoformat(event.time)
    except ValueError:
        return None


def read_events(lines: Iterable[str], service: str | None = None,
                since: datetime | None = None) -> tuple[list[Event], int]:
    """The events of the access-log `lines` (filtered), and how many lines were not log entries."""
    events, skipped = [], 0
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or "status" not in entry:
            skipped += bool(line.strip())
            continue
        event = _event(entry)
        if service is not None and event.service != service:
            continue
        if since is not None and ((moment := _time(event)) is None or moment < since):
            continue
        events.append(event)
    return events, skipped


def summarize(events: list[Event]) -> list[dict]:
    """Per service and deciding rule: how many requests were allowed, denied, would be denied,
    and by how many distinct callers."""
    counts: dict[tuple, Counter] = {}
    callers: dict[tuple, set] = {}
    for event in events:
        key = (event.service or "-", event.rule or f"({event.reason})")
        counts.setdefault(key, Counter())[event.verdict] += 1
        callers.setdefault(key, set()).add(event.caller)
    return [{"service": service, "rule": rule, ALLOWED: c[ALLOWED], DENIED: c[DENIED], WOULD_DENY: c[WOULD_DENY],
             "callers": len(callers[(service, rule)])}
            for (service, rule), c in sorted(counts.items())]


def render_json(events: list[Event], skipped: int) -> str:
    return json.dumps({"events": [asdict(e) for e in events], "summary": summarize(events),
                       "skipped_lines": skipped}, indent=2)


def _columns(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _status(event: Event) -> str:
    return f"{event.status} grpc {event.grpc_status}" if event.grpc_status is not None else str(event.status)


def render_table(events: list[Event], skipped: int) -> str:
    rows = [("time", "service", "caller", "request", "status", "verdict", "rule", "version")]
    rows += [(e.time, e.service or "-", e.caller, f"{e.method} {e.host}{e.path}", _status(e), e.verdict,
              e.rule or f"({e.reason})", e.policy_version or "-") for e in events]
    summary = [("service", "rule", ALLOWED, DENIED, WOULD_DENY, "callers")]
    summary += [tuple(row.values()) for row in summarize(events)]
    lines = _columns(rows) + [""] + _columns(summary)
    verdicts = Counter(e.verdict for e in events)
    lines.append(f"\n{len(events)} requests: {verdicts[ALLOWED]} allowed, {verdicts[DENIED]} denied, "
                 f"{verdicts[WOULD_DENY]} would be denied by dry-run services"
                 + (f"; {skipped} lines were not access-log entries" if skipped else ""))
    return "\n".join(lines)
