"""Renders a `Diff` as readable text, as Markdown for a pull-request comment, or as JSON."""

from __future__ import annotations

import json

from ..semantics.request import Decision
from .diff import EQUIVALENT, CallerChange, Change, Diff, ServiceDiff

_ACCESS = {"gains": "newly allowed", "loses": "no longer allowed", "status": "status changed"}
_WHO = {"gains": "gains access through", "loses": "loses access through"}


def decision_text(decision: Decision) -> str:
    """"200 allow by rule 'read'", "403 default-deny", "200 dry-run, enforcing 403 deny by rule …"."""
    enforced = decision.enforced_status if decision.dry_run else decision.status
    core = f"{enforced} {decision.reason}" + (f" by rule '{decision.rule}'" if decision.rule else "")
    return f"{decision.status} dry-run, enforcing {core}" if decision.dry_run else core


def request_text(request: dict) -> list[str]:
    """A request in a few lines: request line and host, then headers, token, client certificate
    and source."""
    lines = [f"{request['method']} {request['path']}  (host {request['host']})"]
    for name, value in request.get("headers", {}).items():
        lines.append(f"{name}: {json.dumps(value)}")
    token = request.get("token")
    if isinstance(token, dict):
        claims = json.dumps(token["claims"], sort_keys=True)
        lines.append(f"token from {token['issuer']} ({token['iss']}), claims {claims}")
    elif token:
        lines.append(f"token: {token}")
    else:
        lines.append("no token")
    if certificate := request.get("certificate"):
        names = "".join(f", {kind} {json.dumps(certificate[kind])}" for kind in ("uri", "dns") if kind in certificate)
        lines.append(f"client certificate from {certificate['issued by']}: subject {json.dumps(certificate['subject'])}"
                     f"{names}")
    lines.append(f"source {request['source']}")
    return lines


def _rules_line(service: ServiceDiff) -> str:
    parts = [f"{what} {', '.join(names)}" for what, names in
             (("added", service.added), ("removed", service.removed), ("edited", service.edited)) if names]
    return "; ".join(parts)


def _title(service: ServiceDiff) -> str:
    return f"{service.name} ({', '.join(service.hosts)}): {service.verdict}"


def caller_text(caller: CallerChange) -> str:
    """"user:default/carol gains access through rule 'sre-read'"."""
    return f"{caller.user} {_WHO[caller.access]} {_rule(caller.rule)}"


def _rule(name: str) -> str:
    # A dry-run service's decision without a rule is named by its reason.
    return name if name in ("dry-run", "default-deny") else f"rule '{name}'"


def text(diff: Diff) -> str:
    out = []
    for service in diff.services:
        out.append(_title(service))
        out += [f"  not analysed: {reason}" for reason in service.not_analysed]
        if rules := _rules_line(service):
            out.append(f"  rules: {rules}")
        for caller in service.callers:
            out.append(f"  who: {caller_text(caller)}")
            out += [f"      {line}" for line in request_text(caller.change.request)]
        for change in service.changes:
            out.append(f"  {_ACCESS[change.access]}: {decision_text(change.old)} -> {decision_text(change.new)}")
            out += [f"      {line}" for line in request_text(change.request)]
        if not service.complete:
            out.append(f"  … more kinds of change than the {len(service.changes)} shown")
    out.append(f"policyc diff: {summary(diff)}")
    return "\n".join(out)


def summary(diff: Diff) -> str:
    changed = [s for s in diff.services if s.verdict != EQUIVALENT]
    return f"{diff.verdict} ({len(changed)} of {len(diff.services)} services changed)"


def _markdown_change(change: Change) -> list[str]:
    lines = [f"- **{_ACCESS[change.access]}**: `{decision_text(change.old)}` → `{decision_text(change.new)}`",
             "  ```"]
    lines += [f"  {line}" for line in request_text(change.request)]
    return lines + ["  ```"]


def markdown(diff: Diff) -> str:
    out = [f"### policyc diff: **{diff.verdict}**", "", "| service | hosts | verdict | rules |",
           "|---|---|---|---|"]
    for service in diff.services:
        out.append(f"| `{service.name}` | {', '.join(service.hosts)} | {service.verdict} | {_rules_line(service)} |")
    for service in diff.services:
        if not (service.changes or service.not_analysed):
            continue
        out += ["", f"#### `{service.name}`: {service.verdict}", ""]
        out += [f"- **not analysed**: {reason}" for reason in service.not_analysed]
        for caller in service.callers:
            out += [f"- **who**: `{caller.user}` {_WHO[caller.access]} {_rule(caller.rule)}", "  ```"]
            out += [f"  {line}" for line in request_text(caller.change.request)] + ["  ```"]
        for change in service.changes:
            out += _markdown_change(change)
        if not service.complete:
            out.append(f"- … more kinds of change than the {len(service.changes)} shown")
    return "\n".join(out)


def to_json(diff: Diff) -> str:
    services = [{
        "service": s.name, "old_service": s.old_service, "new_service": s.new_service, "hosts": s.hosts,
        "verdict": s.verdict, "complete": s.complete,
        "rules": {"added": s.added, "removed": s.removed, "edited": s.edited},
        "changes": [_change_json(c) for c in s.changes], "not_analysed": s.not_analysed,
        "callers": [{"user": c.user, "access": c.access, "rule": c.rule} | _change_json(c.change)
                    for c in s.callers],
    } for s in diff.services]
    return json.dumps({"verdict": diff.verdict, "services": services}, indent=2, sort_keys=True)


def _change_json(change: Change) -> dict:
    return {"access": change.access, "old": change.old.to_json(), "new": change.new.to_json(),
            "request": change.request}


RENDERERS = {"text": text, "markdown": markdown, "json": to_json}
