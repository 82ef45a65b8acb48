"""Grant stage: a `PolicySet` → the same set with every grant written out as an allow rule of its
service, and the diagnostics of every grant.

A `grant NAME { … }` is just-in-time access: the grantee (`who`) may do `what` in one service
from one instant until another, because someone else approved it. It becomes the rule
`allow "grant/NAME" when <window> and (who) and (what)`, whose `nodes.TimeWindow` holds only
while the request's time is inside the window: the proxy checks it on every request, so a grant
ends on time even when nothing redeploys. Grants only allow; a deny rule still wins.

When the policy set's `grants { key file "…" }` names a public key, every grant must carry the
approver's Ed25519 `signature` over `signed_text` (what `policyc grant approve` writes): an
unsigned or altered grant is an error, and grants nobody approved never reach a proxy.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import nodes as n
from .checked import Checked
from .diagnostics import Diagnostic, Severity, did_you_mean
from .source import Span
from .syntax.printer import grant_setting, utc

K = n.GrantKey
DEFAULT_MAX_WINDOW = 24 * 3600  # without `max window`: a grant is for a day at most
_REQUIRED = (K.SERVICE, K.WHO, K.WHAT, K.FROM, K.UNTIL, K.REASON)
_DURATION = re.compile(r"(?:(\d{1,6})d)?(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?\Z")
_UNITS = (86400, 3600, 60, 1)
LATEST = 253402300799  # 9999-12-31T23:59:59Z: the latest time a window may name (the native index's limit too)
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})\Z")


def _error(code: str, message: str, span: Span | None, hint: str | None = None, notes=()) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.ERROR, hint, tuple(notes))


def _warning(code: str, message: str, span: Span | None, hint: str | None = None, notes=()) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.WARNING, hint, tuple(notes))


def parse_time(text: str) -> int | None:
    """An RFC 3339 time with its zone (`2026-12-04T20:00:00Z`) as whole seconds since the epoch,
    or None. Fractions of a second are refused rather than rounded: a window is whole seconds, as
    the proxy's clock reads them."""
    if not _RFC3339.match(text) or "." in text:
        return None
    try:
        seconds = int(datetime.fromisoformat(text.upper().replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None
    # An offset can carry the year 9999 past its end in UTC: every target must hold the time.
    return seconds if 0 <= seconds <= LATEST else None


def parse_duration(text: str) -> int | None:
    """`90m`, `8h`, `1d12h`: seconds, or None (no unit, or nothing at all)."""
    found = _DURATION.match(text)
    if found is None or not any(found.groups()):
        return None
    return sum(int(part or 0) * unit for part, unit in zip(found.groups(), _UNITS, strict=True))


@dataclass(frozen=True)
class Window:
    """A grant's window: from `start` (inclusive) until `end` (exclusive), seconds since the epoch."""

    start: int
    end: int

    def state(self, now: float) -> str:
        """`upcoming`, `active` or `expired` at `now`."""
        return "upcoming" if now < self.start else "active" if now < self.end else "expired"


def window_of(grant: n.Grant) -> Window | None:
    """The grant's window, when both ends are valid times."""
    start, end = (grant.value(key) for key in (K.FROM, K.UNTIL))
    start, end = (parse_time(t) if isinstance(t, str) else None for t in (start, end))
    return Window(start, end) if start is not None and end is not None else None


def signed_text(grant: n.Grant) -> bytes:
    """What an approver signs: the grant's name and every setting but the signature, one per
    line in canonical form and a fixed order, so that reformatting the file keeps the signature
    valid and any change of meaning breaks it."""
    order = {key: i for i, key in enumerate(K)}
    lines = [f"grant {grant.name}"] + [grant_setting(s) for s in sorted(
        (s for s in grant.settings if s.key is not K.SIGNATURE), key=lambda s: order[s.key])]
    return ("\n".join(lines) + "\n").encode()


def verify_signature(grant: n.Grant, key: Ed25519PublicKey) -> bool:
    signature = grant.value(K.SIGNATURE)
    try:
        key.verify(base64.b64decode(signature, validate=True), signed_text(grant))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def identity(text: str) -> str:
    """A person's name as grants compare them: `user:default/bob`, `default/bob` and `Bob` are `bob`."""
    text = text.lower()
    text = text.removeprefix("user:")
    return text.removeprefix("default/")


def grantee_names(grant: n.Grant) -> set[str]:
    """The names the grant is for: who requested it, and every value its `who` compares against."""
    names = set()
    if isinstance(requester := grant.value(K.REQUESTED_BY), str):
        names.add(identity(requester))
    who = grant.value(K.WHO)
    for node in n.walk(who) if who is not None and not isinstance(who, str) else ():
        values = (node.group,) if isinstance(node, n.Member) else getattr(node, "values", ())
        names.update(identity(v) for v in values if isinstance(v, str))
    return names


def _settings_problems(grant: n.Grant) -> Iterator[Diagnostic]:
    seen: dict[K, n.GrantSetting] = {}
    for setting in grant.settings:
        if setting.key in seen:
            yield _error("check/duplicate-setting", f"grant `{grant.name}` sets `{setting.key.value}` twice",
                         setting.span, notes=[("first set here", seen[setting.key].span)])
        seen.setdefault(setting.key, setting)
    for key in _REQUIRED:
        if key not in seen:
            yield _error("grant/missing-setting", f"grant `{grant.name}` has no `{key.value}`", grant.name_span,
                         hint=f"add `{key.value} …`: a grant names its service, who, what, its window and why")
    if K.APPROVED_BY not in seen:
        yield _error("grant/no-approver", f"grant `{grant.name}` is not approved", grant.name_span,
                     hint="have someone else run `policyc grant approve` on it")


def _named_conditions(grant: n.Grant) -> Iterator[Diagnostic]:
    """A grant says all it means: a named condition could be changed after the approval, and
    widen what was approved without touching the grant (or its signature)."""
    for key in (K.WHO, K.WHAT):
        expr = grant.value(key)
        for node in n.walk(expr) if expr is not None and not isinstance(expr, str) else ():
            if isinstance(node, n.ConditionRef):
                yield _error("grant/condition-ref", f"a grant's `{key.value}` names condition `{node.name}`",
                             node.span, hint="write the condition out in the grant: what is approved is what it says")


def _window_problems(grant: n.Grant, max_window: int) -> Iterator[Diagnostic]:
    for key in (K.FROM, K.UNTIL):
        setting = grant.setting(key)
        if setting is not None and parse_time(setting.value) is None:
            yield _error("grant/bad-time", f"`{setting.value}` is no RFC 3339 time in whole seconds with a zone",
                         setting.value_span, hint='write it as "2026-12-04T20:00:00Z": whole seconds, `Z` or an offset')
    window = window_of(grant)
    if window is None:
        return
    until = grant.setting(K.UNTIL)
    if window.end <= window.start:
        yield _error("grant/empty-window", f"grant `{grant.name}` ends before it begins", until.value_span)
    elif window.end - window.start > max_window:
        yield _error("grant/window-too-long", f"grant `{grant.name}` lasts {_duration(window.end - window.start)}, "
                     f"longer than the {_duration(max_window)} the policy set allows", until.value_span,
                     hint="shorten it, or raise `max window` in the `grants { … }` block")


def _duration(seconds: int) -> str:
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0s"


def _approval_problems(grant: n.Grant, key: Ed25519PublicKey | None) -> Iterator[Diagnostic]:
    approver = grant.setting(K.APPROVED_BY)
    if approver is not None and identity(approver.value) in grantee_names(grant):
        yield _error("grant/self-approved", f"`{approver.value}` approves a grant for themselves", approver.value_span,
                     hint="a grant is approved by someone other than its grantee")
    if key is None:
        return
    signature = grant.setting(K.SIGNATURE)
    if signature is None:
        yield _error("grant/unsigned", f"grant `{grant.name}` carries no signature", grant.name_span,
                     hint="the policy set names a grants key: approve it with `policyc grant approve --key …`")
    elif not verify_signature(grant, key):
        yield _error("grant/bad-signature", f"grant `{grant.name}` does not match its signature: it was changed "
                     "after approval, or signed with another key", signature.value_span,
                     hint="approve the grant as it stands again with `policyc grant approve`")


def max_window(policy_set: n.PolicySet) -> tuple[int, list[Diagnostic]]:
    """The longest window the set allows, and the diagnostics of its `grants` blocks."""
    problems: list[Diagnostic] = []
    configs = policy_set.of(n.GrantsConfig)
    for extra in configs[1:]:
        problems.append(_error("check/duplicate-setting", "a second `grants` block", extra.span,
                               notes=[("the first is here", configs[0].span)]))
    setting = configs[0].first(n.GrantsMaxWindow) if configs else None
    if setting is None:
        return DEFAULT_MAX_WINDOW, problems
    seconds = parse_duration(setting.duration)
    if not seconds:
        problems.append(_error("grant/bad-duration", f"`{setting.duration}` is no duration", setting.span,
                               hint='write it with units, e.g. "90m", "8h" or "1d12h"'))
        return DEFAULT_MAX_WINDOW, problems
    return seconds, problems


def _overlaps(grants: list[tuple[n.Grant, Window]]) -> Iterator[Diagnostic]:
    """Two grants of one service to the same grantee whose windows overlap: one of them is
    redundant for that time, and revoking either alone would not end the access."""
    for i, (later, window) in enumerate(grants):
        for earlier, other in grants[:i]:
            same = (earlier.value(K.SERVICE), earlier.value(K.WHO)) == (later.value(K.SERVICE), later.value(K.WHO))
            if same and window.start < other.end and other.start < window.end:
                yield _warning("grant/overlap", f"grant `{later.name}` overlaps grant `{earlier.name}`: same "
                               "service, same grantee", later.name_span, hint="merge them into one grant",
                               notes=[("that grant is here", earlier.name_span)])


def rule_of(grant: n.Grant, window: Window) -> n.Rule:
    """The allow rule a valid grant stands for."""
    who, what = grant.value(K.WHO), grant.value(K.WHAT)
    expr = n.And((n.TimeWindow(window.start, window.end, grant.setting(K.FROM).span), who, what), grant.span)
    return n.Rule(n.Effect.ALLOW, False, f"grant/{grant.name}", expr, grant.span, grant.name_span, grant=grant.name)


def expand(policy_set: n.PolicySet, now: float, key: Ed25519PublicKey | None = None
           ) -> tuple[n.PolicySet, list[Diagnostic]]:
    """The set with each valid grant added to its service as an allow rule, and every grant's
    diagnostics; `now` only decides which grants are reported expired. `key` is the grants key
    the set names, when it names one. A set without grants comes back as it was."""
    grants = policy_set.grants
    limit, diagnostics = max_window(policy_set)
    if not grants:
        return policy_set, diagnostics
    services = {s.name: s for s in policy_set.services}
    valid: list[tuple[n.Grant, Window]] = []
    names: dict[str, n.Grant] = {}
    for grant in grants:
        found = list(_settings_problems(grant)) + list(_window_problems(grant, limit))
        found += _approval_problems(grant, key)
        found += _named_conditions(grant)
        if grant.name in names:
            found.append(_error("grant/duplicate", f"grant `{grant.name}` is declared twice", grant.name_span,
                                notes=[("first declared here", names[grant.name].name_span)]))
        names.setdefault(grant.name, grant)
        service = grant.setting(K.SERVICE)
        if service is not None and service.value not in services:
            found.append(_error("grant/unknown-service", f"no service is named `{service.value}`",
                                service.value_span, hint=did_you_mean(service.value, services)))
        diagnostics += found
        window = window_of(grant)
        if window is not None and window.end <= now and not any(d.is_error for d in found):
            diagnostics.append(_warning("grant/expired", f"grant `{grant.name}` ended at {utc(window.end)}",
                                        grant.name_span, hint="remove it: it allows nothing any more"))
        if not any(d.is_error for d in found):
            valid.append((grant, window))
    diagnostics += _overlaps(valid)
    added: dict[str, list[n.Rule]] = {}
    for grant, window in valid:
        added.setdefault(grant.value(K.SERVICE), []).append(rule_of(grant, window))
    files = tuple(replace(f, items=tuple(
        replace(item, rules=(*item.rules, *added[item.name])) if isinstance(item, n.Service) and item.name in added
        else item for item in f.items)) for f in policy_set.files)
    return n.PolicySet(files), diagnostics


def _end(rule: n.Rule) -> int | None:
    """When a grant's rule stops holding (None for any other rule)."""
    if rule.grant is None:
        return None
    window = next(o for o in rule.expr.operands if isinstance(o, n.TimeWindow))
    return window.end


def without_ended(checked: Checked, now: float) -> Checked:
    """The set without the rules of grants whose windows ended by `now`: what a deploy at `now`
    publishes. The proxy refuses by their windows anyway; a deploy drops what can no longer allow."""
    services = {name: replace(s, rules=tuple(r for r in s.rules if (_end(r) or now + 1) > now))
                for name, s in checked.services.items()}
    return replace(checked, services=services)


def next_end(checked: Checked, now: float) -> int | None:
    """The first end of a grant's window after `now`, when a watching deploy drops that grant."""
    ends = [end for s in checked.services.values() for r in s.rules if (end := _end(r)) is not None and end > now]
    return min(ends, default=None)
