"""Least privilege from real use: what a window of access logs shows the policy grants for nothing.

`usage(checked, events)` reads the decisions of a window (`ops.audit` events, streamed) against
the policy and finds:
- rules that decided no request: allow rules are candidates to remove; deny rules that never
  fired are listed apart (a guard that has not been needed is not thereby unneeded);
- group memberships that allowed nothing: a catalog user whom a `member` atom admits through a
  group, but whom no rule holding that atom ever allowed;
- catalog owners that allowed nothing: `member owners(ENTITY)` atoms whose rules allowed no one
  the owner admits;
- callers who hold access they never used: per catalog user, and per identity a rule names
  exactly (`token.sub ==`, `peer.uri ==`), the allow rules they could pass that never allowed them.

A request counts for a rule when the log names that rule as the decider; an atom counts as used
by a caller when a rule holding it allowed that caller and the atom admits the caller.
`without_rules(checked, rules)` is the policy with rules removed, for `analysis.diff` to say what
the removal would change (the `policyc diff` of the two).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from .. import nodes as n
from ..catalog import normalize_ref
from ..checked import Checked
from .audit import Event

RuleKey = tuple[str, str]  # (service, rule)


def atoms(checked: Checked, expr: n.Expr, seen: frozenset[str] = frozenset()) -> Iterator[n.Expr]:
    """Every node of a rule's condition, named conditions written out."""
    for node in n.walk(expr):
        if isinstance(node, n.ConditionRef) and node.name not in seen and node.name in checked.conditions:
            yield from atoms(checked, checked.conditions[node.name].expr, seen | {node.name})
        else:
            yield node


def _membership(checked: Checked, atom: n.Member | n.MemberOwners) -> str:
    """How a membership atom reads in a report: its group, or the owner of its entity."""
    if isinstance(atom, n.Member):
        return f"member {atom.group}"
    return f"owners({atom.entity}) = {checked.catalog.owner_of(normalize_ref(atom.entity, None)) or '?'}"


def _named_identities(atom: n.Expr) -> tuple[str, ...]:
    """The identities an atom names exactly: a token's `sub`, a certificate's URI."""
    if isinstance(atom, n.ClaimTest) and atom.claim.path == ("sub",) and atom.op in (n.Op.EQ, n.Op.IN):
        return atom.values
    if isinstance(atom, n.PeerTest) and atom.field is n.PeerField.URI and atom.op in (n.Op.EQ, n.Op.IN):
        return atom.values
    return ()


@dataclass
class Usage:
    """What a window of decisions used, and what it did not."""

    requests: int = 0
    first: str | None = None  # the earliest and latest request time seen
    last: str | None = None
    decided: dict[RuleKey, int] = field(default_factory=dict)  # rule → requests it decided
    allowed: dict[RuleKey, set[str]] = field(default_factory=dict)  # allow rule → callers it allowed
    unused_allow: list[RuleKey] = field(default_factory=list)
    unused_deny: list[RuleKey] = field(default_factory=list)
    unused_memberships: list[tuple[str, str]] = field(default_factory=list)  # (membership, user)
    unused_owners: list[tuple[str, list[RuleKey]]] = field(default_factory=list)  # (owners(...), its rules)
    idle_access: dict[str, list[RuleKey]] = field(default_factory=dict)  # caller → rules held, never used

    def to_json(self) -> dict:
        def rule(key: RuleKey) -> dict:
            return {"service": key[0], "rule": key[1]}
        return {
            "requests": self.requests, "first": self.first, "last": self.last,
            "unused_allow_rules": [rule(k) for k in self.unused_allow],
            "unused_deny_rules": [rule(k) for k in self.unused_deny],
            "unused_memberships": [{"membership": m, "user": u} for m, u in self.unused_memberships],
            "unused_owners": [{"owners": o, "rules": [rule(k) for k in keys]} for o, keys in self.unused_owners],
            "idle_access": [{"caller": c, "rules": [rule(k) for k in keys]} for c, keys in self.idle_access.items()],
        }


def _read(events: Iterable[Event]) -> Usage:
    found = Usage()
    for event in events:
        found.requests += 1
        if event.time:
            found.first = min(found.first or event.time, event.time)
            found.last = max(found.last or event.time, event.time)
        if event.service is None or event.rule is None:
            continue
        key = (event.service, event.rule)
        found.decided[key] = found.decided.get(key, 0) + 1
        if event.reason == "allow":
            found.allowed.setdefault(key, set()).add(event.caller)
    return found


def usage(checked: Checked, events: Iterable[Event]) -> Usage:
    found = _read(events)
    rules = [((service.name, rule.name), rule) for service in checked.services.values() for rule in service.rules]
    for key, rule in sorted(rules, key=lambda item: item[0]):
        if key not in found.decided:
            (found.unused_allow if rule.effect is n.Effect.ALLOW else found.unused_deny).append(key)
    allow = [(key, rule) for key, rule in rules if rule.effect is n.Effect.ALLOW]
    _memberships(checked, allow, found)
    _idle_access(checked, allow, found)
    return found


def _memberships(checked: Checked, allow: list[tuple[RuleKey, n.Rule]], found: Usage) -> None:
    """Memberships and owners that no allowed request went through."""
    by_atom: dict[n.Member | n.MemberOwners, list[RuleKey]] = {}
    for key, rule in allow:
        for atom in atoms(checked, rule.expr):
            if isinstance(atom, n.Member | n.MemberOwners):
                by_atom.setdefault(replace(atom, span=None), []).append(key)
    used: dict[str, set[str]] = {}  # membership → users it let through
    for atom, keys in by_atom.items():
        subjects = checked.members(atom).subjects
        users = used.setdefault(_membership(checked, atom), set())
        users |= {c for key in keys for c in found.allowed.get(key, ()) if c in subjects}
        if isinstance(atom, n.MemberOwners) and not users:
            found.unused_owners.append((_membership(checked, atom), sorted(set(keys))))
    for atom in by_atom:
        if isinstance(atom, n.MemberOwners) and not str(checked.catalog.owner_of(
                normalize_ref(atom.entity, None))).startswith("group:"):
            continue  # a user owns it: no membership, and the owner is reported above
        name = _membership(checked, atom)
        for user in sorted(checked.members(atom).subjects - used[name]):
            if (name, user) not in found.unused_memberships:
                found.unused_memberships.append((name, user))
    found.unused_memberships.sort()
    found.unused_owners.sort()


def _idle_access(checked: Checked, allow: list[tuple[RuleKey, n.Rule]], found: Usage) -> None:
    """Per caller the policy names (catalog users by membership, identities named exactly), the
    allow rules they hold that never allowed them."""
    held: dict[str, set[RuleKey]] = {}
    for key, rule in allow:
        for atom in atoms(checked, rule.expr):
            if isinstance(atom, n.Member | n.MemberOwners):
                callers = checked.members(atom).subjects
            else:
                callers = _named_identities(atom)
            for caller in callers:
                held.setdefault(caller, set()).add(key)
    for caller, keys in sorted(held.items()):
        idle = sorted(key for key in keys if caller not in found.allowed.get(key, ()))
        if idle:
            found.idle_access[caller] = idle


def without_rules(checked: Checked, removed: Iterable[RuleKey]) -> Checked:
    """The policy with the `removed` rules taken out of their services."""
    gone = set(removed)
    services = {name: replace(service, rules=tuple(r for r in service.rules if (name, r.name) not in gone))
                for name, service in checked.services.items()}
    return replace(checked, services=services)


def render_text(found: Usage) -> list[str]:
    """The usage report as lines of text."""
    window = f" from {found.first} to {found.last}" if found.first else ""
    lines = [f"{found.requests} requests{window}"]

    def section(title: str, rows: list[str]) -> None:
        lines.append(f"{title}: {len(rows) or 'none'}")
        lines.extend(f"  {row}" for row in rows)

    section("allow rules that allowed nothing (candidates to remove)", [f"{s}/{r}" for s, r in found.unused_allow])
    section("deny rules that never fired", [f"{s}/{r}" for s, r in found.unused_deny])
    section("memberships that allowed nothing", [f"{user} in {m}" for m, user in found.unused_memberships])
    section("catalog owners that allowed nothing",
            [f"{o}: {', '.join(f'{s}/{r}' for s, r in keys)}" for o, keys in found.unused_owners])
    section("callers holding access they never used",
            [f"{c}: {', '.join(f'{s}/{r}' for s, r in keys)}" for c, keys in found.idle_access.items()])
    return lines
