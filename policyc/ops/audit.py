"""Audit trails from Envoy's JSON access logs (the format the emitted config writes).

`Reader().events(lines, query)` turns log lines into `Event`s as they are read: who (the verified
token's `sub` and issuer, the client certificate's URI SANs and subject, or anonymous) asked what
(method, host, path, source), the deciding rule and reason as `backends.accesslog.logged_decision`
reads them, the policy version that decided, the request and trace ids that join the line to the
application's logs, and a verdict: `allowed`, `denied`, or `would-deny` for a dry-run service
that let through a request its policy refuses (`unknown` when the line does not say). A `Query`
keeps the events of a window, caller, service, path prefix, rule or verdict. Lines that are not
JSON objects (Envoy's own log mixed in) are counted and skipped. `Summary` counts verdicts per
rule and per caller as events pass; `write_json` and `write_csv` write events as they are read,
so a log of any length streams; `render_table` aligns its columns, so it holds them.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, TextIO

from ..backends.accesslog import logged_decision

ALLOWED, DENIED, WOULD_DENY, UNKNOWN = "allowed", "denied", "would-deny", "unknown"
ANONYMOUS = "anonymous"  # the caller of a request with neither a verified token nor a certificate
_VERBATIM = re.compile(r"[\w:/.@,=+ -]+", re.ASCII)
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class Event(NamedTuple):
    """One request as the log recorded it (a named tuple: a million of them are made quickly)."""

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
    request_id: str | None  # Envoy's x-request-id: the caller's, or one Envoy generated
    trace_id: str | None  # the W3C trace id: the caller's `traceparent`'s, or one Envoy started
    duration_ms: int | None
    bytes_received: int | None
    bytes_sent: int | None


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


def _number(entry: dict, field: str) -> int | None:
    value = entry.get(field)
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def _event(entry: dict) -> Event:
    reason, rule = logged_decision(entry)
    return Event(
        time=str(entry.get("time") or ""),
        service=entry.get("service"),
        mode=entry.get("mode"),
        policy_version=entry.get("policy_version"),
        caller=entry.get("sub") or entry.get("peer") or entry.get("peer_subject") or ANONYMOUS,
        issuer=entry.get("issuer"),
        peer=entry.get("peer"),
        peer_subject=entry.get("peer_subject"),
        method=str(entry.get("method") or ""),
        host=str(entry.get("authority") or ""),
        path=str(entry.get("path") or ""),
        source=str(entry.get("source") or ""),
        status=int(entry.get("status") or 0),
        grpc_status=_number(entry, "grpc_status"),
        reason=reason,
        rule=rule,
        verdict=_verdict(entry, reason),
        details=str(entry.get("details") or ""),
        request_id=entry.get("request_id"),
        trace_id=entry.get("trace_id"),
        duration_ms=_number(entry, "duration_ms"),
        bytes_received=_number(entry, "bytes_received"),
        bytes_sent=_number(entry, "bytes_sent"),
    )


def _time(event: Event) -> datetime | None:
    try:
        return datetime.fromisoformat(event.time)
    except ValueError:
        return None


@dataclass(frozen=True)
class Query:
    """Which events to report; every field given must match. `rule` is a rule's name, or
    `service/rule`; `path` a prefix of the request's path; `verdicts` any of the verdicts."""

    service: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive: [since, until) is the window
    caller: str | None = None
    path: str | None = None
    rule: str | None = None
    verdicts: frozenset[str] = frozenset()

    def matches(self, event: Event) -> bool:
        if self.service is not None and event.service != self.service:
            return False
        if self.caller is not None and self.caller not in (event.caller, event.peer, event.peer_subject):
            return False
        if self.path is not None and not event.path.startswith(self.path):
            return False
        if self.rule is not None and self.rule not in (event.rule, f"{event.service}/{event.rule}"):
            return False
        if self.verdicts and event.verdict not in self.verdicts:
            return False
        return self._in_window(event)

    def needles(self) -> tuple[str, ...]:
        """Text that every matching line holds verbatim: a line without it is skipped unparsed.
        Only values that JSON writes as they are count (Envoy escapes none of these characters),
        and not `anonymous`, which no line holds."""
        rule = self.rule.rsplit("/", 1)[-1] if self.rule else None
        values = (self.service, None if self.caller == ANONYMOUS else self.caller, self.path, rule)
        return tuple(v for v in values if v and _VERBATIM.fullmatch(v))

    def _in_window(self, event: Event) -> bool:
        if self.since is None and self.until is None:
            return True
        moment = _time(event)
        return moment is not None and (self.since is None or moment >= self.since) \
            and (self.until is None or moment < self.until)


class Reader:
    """Reads access-log lines one at a time: `events(lines, query)` yields the matching events as
    they are read, and `skipped` counts the lines that were not log entries (with a query that
    has `needles`, among the lines that hold them: the others are never parsed)."""

    def __init__(self) -> None:
        self.skipped = 0

    def entries(self, lines: Iterable[str]) -> Iterator[dict]:
        """Each line that is an access-log entry, as its JSON object."""
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if not isinstance(entry, dict) or "status" not in entry:
                self.skipped += bool(line.strip())
                continue
            yield entry

    def events(self, lines: Iterable[str], query: Query = Query()) -> Iterator[Event]:
        if needles := query.needles():
            lines = (line for line in lines if all(needle in line for needle in needles))
        return (event for event in map(_event, self.entries(lines)) if query.matches(event))


def read_events(lines: Iterable[str], service: str | None = None,
                since: datetime | None = None) -> tuple[list[Event], int]:
    """The events of the access-log `lines` (filtered), and how many lines were not log entries."""
    reader = Reader()
    events = list(reader.events(lines, Query(service=service, since=since)))
    return events, reader.skipped


class Summary:
    """Counts kept while events stream past: per service and deciding rule, and per caller."""

    def __init__(self) -> None:
        self.rules: dict[tuple[str, str], Counter] = {}
        self.rule_callers: dict[tuple[str, str], set] = {}
        self.callers: dict[str, Counter] = {}
        self.verdicts: Counter = Counter()

    def add(self, event: Event) -> Event:
        key = (event.service or "-", event.rule or f"({event.reason})")
        self.rules.setdefault(key, Counter())[event.verdict] += 1
        self.rule_callers.setdefault(key, set()).add(event.caller)
        self.callers.setdefault(event.caller, Counter())[event.verdict] += 1
        self.verdicts[event.verdict] += 1
        return event

    def by_rule(self) -> list[dict]:
        """Per service and deciding rule: how many requests were allowed, denied, would be
        denied, and by how many distinct callers."""
        return [{"service": service, "rule": rule, ALLOWED: c[ALLOWED], DENIED: c[DENIED], WOULD_DENY: c[WOULD_DENY],
                 "callers": len(self.rule_callers[(service, rule)])}
                for (service, rule), c in sorted(self.rules.items())]

    def by_caller(self) -> list[dict]:
        return [{"caller": caller, ALLOWED: c[ALLOWED], DENIED: c[DENIED], WOULD_DENY: c[WOULD_DENY]}
                for caller, c in sorted(self.callers.items())]


def write_json(events: Iterable[Event], reader: Reader, out: TextIO) -> None:
    """`{"events": [...], "summary": [...], "callers": [...], "skipped_lines": N}`, each event
    written as it is read."""
    summary = Summary()
    out.write('{"events": [')
    for number, event in enumerate(map(summary.add, events)):
        out.write(("," if number else "") + "\n  " + json.dumps(event._asdict()))
    out.write(f'\n], "summary": {json.dumps(summary.by_rule())}, "callers": {json.dumps(summary.by_caller())}, '
              f'"skipped_lines": {reader.skipped}}}\n')


CSV_FIELDS = list(Event._fields)


def write_csv(events: Iterable[Event], out: TextIO) -> None:
    """One row per event, every field of `Event`, with a header row; written as read."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    writer.writerows(events)


def _columns(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _status(event: Event) -> str:
    return f"{event.status} grpc {event.grpc_status}" if event.grpc_status is not None else str(event.status)


def render_table(events: Iterable[Event], reader: Reader) -> str:
    """The events as aligned columns (held in memory to align them), then the per-rule summary."""
    summary = Summary()
    rows = [("time", "service", "caller", "request", "status", "verdict", "rule", "version")]
    rows += [(e.time, e.service or "-", e.caller, f"{e.method} {e.host}{e.path}", _status(e), e.verdict,
              e.rule or f"({e.reason})", e.policy_version or "-") for e in map(summary.add, events)]
    table = [("service", "rule", ALLOWED, DENIED, WOULD_DENY, "callers")]
    table += [tuple(row.values()) for row in summary.by_rule()]
    lines = _columns(rows) + [""] + _columns(table)
    skipped, verdicts = reader.skipped, summary.verdicts
    lines.append(f"\n{len(rows) - 1} requests: {verdicts[ALLOWED]} allowed, {verdicts[DENIED]} denied, "
                 f"{verdicts[WOULD_DENY]} would be denied by dry-run services"
                 + (f"; {skipped} lines were not access-log entries" if skipped else ""))
    return "\n".join(lines)
