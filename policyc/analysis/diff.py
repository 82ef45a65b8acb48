"""`policyc diff`: takes two checked policy sets and returns, per service, whether the new one
decides every request alike (equivalent), admits strictly fewer (narrower) or more (broader)
requests, both (mixed), or only answers some refusals with another status (changed); and every
kind of change of decision with the rules that decide it and an example request, replayed
through the interpreter for both sets.

A kind of change is a pair of decisions (status and deciding rule, old and new): the solver is
asked for a request of each kind not yet shown until none is left, or `limit` are shown.

Who: every catalog user a `member` atom of the service names (on either side) is asked about as a
caller (a token of an issuer marked `catalog users` whose `sub` is the user and that carries no
`ent`): each rule through which the user gains or loses access, with a request that shows it.

What the model leaves out is reported, not guessed: where an issuer keeps its `url` but its keys
change, which tokens verify is not analysed, so the verdict is `undecided`, with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import z3

from .. import nodes as n
from ..checked import Checked
from ..semantics.request import Decision
from . import witness
from .encode import Encoder, Outcome
from .space import MISSING, STRING, RequestSpace, Solution, Undecided, exprs_of, solve

EQUIVALENT, NARROWER, BROADER, MIXED, CHANGED = "equivalent", "narrower", "broader", "mixed", "changed"
UNDECIDED = "undecided"  # the solver gave up: the changes shown are real, the verdict unknown


@dataclass(frozen=True)
class Change:
    """One kind of change of decision, shown by one request."""

    old: Decision
    new: Decision
    request: dict

    @property
    def access(self) -> str:
        """"gains" (newly reaches the upstream), "loses", or "status" (refused either way)."""
        before, after = self.old.status == 200, self.new.status == 200
        return "gains" if after and not before else "loses" if before and not after else "status"


@dataclass(frozen=True)
class CallerChange:
    """A catalog user who gains (or loses) access through one rule: the rule that now admits
    them (or used to; a dry-run service's reason where no rule decides), and the request that
    shows it."""

    user: str
    access: str  # "gains" or "loses"
    rule: str
    change: Change


@dataclass
class ServiceDiff:
    """The comparison of what one service (or the hosts that moved between two) decides."""

    old_service: str | None
    new_service: str | None
    hosts: list[str]
    verdict: str = EQUIVALENT
    changes: list[Change] = field(default_factory=list)
    complete: bool = True  # every kind of change is shown
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    callers: list[CallerChange] = field(default_factory=list)
    not_analysed: list[str] = field(default_factory=list)  # why the verdict is `undecided`

    @property
    def name(self) -> str:
        if self.old_service == self.new_service:
            return self.old_service
        return f"{self.old_service or '(no service)'} → {self.new_service or '(no service)'}"


@dataclass
class Diff:
    services: list[ServiceDiff]

    @property
    def verdict(self) -> str:
        verdicts = {s.verdict for s in self.services} - {EQUIVALENT}
        if UNDECIDED in verdicts:
            return UNDECIDED
        if not verdicts:
            return EQUIVALENT
        if MIXED in verdicts or {BROADER, NARROWER} <= verdicts:
            return MIXED
        return next((v for v in (BROADER, NARROWER) if v in verdicts), CHANGED)

    def fails(self, gate: str | None) -> bool:
        """Whether the diff fails `diff --fail-on GATE`: `broader` (it admits more requests) or
        `any` (it changes a decision). A verdict the solver could not reach fails either gate."""
        return gate is not None and self.verdict in FAILING[gate]


FAILING = {"broader": {BROADER, MIXED, UNDECIDED}, "any": {BROADER, MIXED, NARROWER, CHANGED, UNDECIDED}}


def _routes(old: Checked, new: Checked) -> dict[tuple[str | None, str | None], list[str]]:
    """Hosts (lower-case) grouped by the service that serves them in each set."""
    def serving(checked: Checked) -> dict[str, str]:
        return {h.lower(): s.name for s in checked.services.values() for h in s.hosts}

    before, after = serving(old), serving(new)
    routes: dict[tuple[str | None, str | None], list[str]] = {}
    for host in sorted(before.keys() | after.keys()):
        routes.setdefault((before.get(host), after.get(host)), []).append(host)
    return routes


def _rule_edits(diffed: ServiceDiff, old: n.Service | None, new: n.Service | None) -> None:
    before = {r.name: r for r in old.rules} if old else {}
    after = {r.name: r for r in new.rules} if new else {}
    diffed.added = sorted(after.keys() - before.keys())
    diffed.removed = sorted(before.keys() - after.keys())
    diffed.edited = sorted(name for name in before.keys() & after.keys() if before[name] != after[name])


def _unchanged(old: Checked, new: Checked, before: n.Service | None, after: n.Service | None) -> bool:
    """Alike in everything a decision reads: the service, conditions, issuers and their keys,
    catalog and trusts."""
    return (before == after and old.conditions == new.conditions and old.issuers == new.issuers
            and old.keys == new.keys and old.catalog == new.catalog and old.trusts == new.trusts)


def _verification(checked: Checked) -> dict[str, str]:
    """Per issuer url, what verifies its tokens' signatures: the JWKS read from a file, or the
    `jwks` url the proxy fetches (its keys are unknown when compiling)."""
    found = {}
    for name, issuer in checked.issuers.items():
        uri = issuer.first(n.JwksUri)
        keys = checked.keys.get(name, {}).get("keys", [])
        found[issuer.url] = (f"jwks {uri.uri}" if uri else
                             json.dumps(sorted(json.dumps(k, sort_keys=True) for k in keys)))
    return found


def key_changes(old: Checked, new: Checked) -> list[str]:
    """Issuer urls declared on both sides whose keys differ: the model signs every token of a url
    with one key both sides accept (docs/analysis.md, Bounds), so what such a change does to who
    is allowed is not analysed."""
    before, after = _verification(old), _verification(new)
    names = {i.url: name for name, i in new.issuers.items()}
    return [f"issuer {names[url]} ({url}): its signing keys differ, and which tokens verify is not analysed"
            for url in sorted(before.keys() & after.keys()) if before[url] != after[url]]


def catalog_users(checked: Checked, service: n.Service | None) -> set[str]:
    """The catalog users the `member` atoms of `service` (and the conditions) admit by `sub`."""
    if service is None:
        return set()
    return {user for root in exprs_of(checked, {service.name}) for e in n.walk(root)
            if isinstance(e, n.Member | n.MemberOwners) for user in checked.members(e).subjects}


class Differ:
    """Compares two checked sets, service by service, each pair over a request space of its own
    tests."""

    def __init__(self, old: Checked, new: Checked, limit: int = 20):
        self.old, self.new, self.limit = old, new, limit
        self.signer = witness.Signer()
        self.now = witness.now()
        self.issuer_names = {i.url: name for c in (old, new) for name, i in c.issuers.items()}
        self.not_analysed = key_changes(old, new)

    def diff(self, shortcut: bool = True) -> Diff:
        found = []
        for (before, after), hosts in _routes(self.old, self.new).items():
            old_service = self.old.services.get(before) if before else None
            new_service = self.new.services.get(after) if after else None
            diffed = ServiceDiff(before, after, hosts)
            _rule_edits(diffed, old_service, new_service)
            if not (shortcut and _unchanged(self.old, self.new, old_service, new_service)):
                try:
                    self.compare(diffed, old_service, new_service)
                except Undecided:
                    diffed.verdict, diffed.complete = UNDECIDED, False
                    diffed.not_analysed.append("the solver gave up")
            if self.not_analysed:  # every service's token check reads the keys
                diffed.verdict = UNDECIDED
                diffed.not_analysed += self.not_analysed
            found.append(diffed)
        return Diff(found)

    def compare(self, diffed: ServiceDiff, old_service: n.Service | None, new_service: n.Service | None) -> None:
        space = RequestSpace([self.old, self.new], {s.name for s in (old_service, new_service) if s})
        was, now = (Encoder(space, self.old, self.now).outcome(old_service),
                    Encoder(space, self.new, self.now).outcome(new_service))
        gains = z3.And(z3.Not(was.allowed), now.allowed)
        loses = z3.And(was.allowed, z3.Not(now.allowed))
        differs = z3.Or(was.status != now.status, was.allowed != now.allowed)
        shown: list[z3.BoolRef] = []
        # Gains first, then losses, then status changes: the order a reviewer reads them in.
        for region in (gains, loses, differs):
            while model := solve(space, region, *shown):
                if len(diffed.changes) == self.limit:
                    diffed.complete = False
                    break
                change, block = self.change(model, space, diffed.hosts[0], was, now)
                diffed.changes.append(change)
                shown.append(block)
        accesses = {c.access for c in diffed.changes}
        if not diffed.complete:  # the limit hid some kinds: ask directly
            accesses |= {a for a, region in (("gains", gains), ("loses", loses)) if solve(space, region)}
        diffed.verdict = (MIXED if {"gains", "loses"} <= accesses else BROADER if "gains" in accesses
                          else NARROWER if "loses" in accesses else CHANGED if diffed.changes else EQUIVALENT)
        users = catalog_users(self.old, old_service) | catalog_users(self.new, new_service)
        for user in sorted(users) if accesses & {"gains", "loses"} else ():
            diffed.callers += self.caller_changes(user, space, diffed.hosts[0], was, now, gains, loses)

    def caller_changes(self, user: str, space: RequestSpace, host: str, was: Outcome, now: Outcome,
                       gains: z3.BoolRef, loses: z3.BoolRef) -> list[CallerChange]:
        """Each rule through which `user` gains access (the rule that now admits them) or loses it
        (the rule that used to), with a request replayed like every other example."""
        caller = self.as_user(space, user)
        found = []
        for access, region, side in (("gains", gains, now), ("loses", loses, was)):
            shown: list[z3.BoolRef] = []
            while model := solve(space, region, caller, *shown):
                change, _ = self.change(model, space, host, was, now)
                decision = change.new if access == "gains" else change.old
                found.append(CallerChange(user, access, decision.rule or decision.reason, change))
                shown.append(side.rule != model.eval(side.rule, model_completion=True))
        return found

    def as_user(self, space: RequestSpace, user: str) -> z3.BoolRef:
        """A valid token of an issuer marked `catalog users` (on either side) whose `sub` is
        `user`, without `ent`: the user as the catalog alone places them."""
        urls = sorted({i.url for c in (self.old, self.new) for i in c.issuers.values() if i.catalog_users})
        sub, ent = space.claim(("sub",)), space.claim(("ent",))
        return z3.And(z3.Or([space.token_is(url) for url in urls]), sub.kind == STRING, sub.text.equals(user),
                      ent.kind == MISSING)

    def change(self, model: Solution, space: RequestSpace, host: str, was: Outcome,
               now: Outcome) -> tuple[Change, z3.BoolRef]:
        """The example `model` gives, confirmed by the interpreter, and the constraint that
        excludes its kind of change from the next questions."""
        values = [model.eval(term, model_completion=True).as_long() for term in (was.status, was.rule, now.status,
                                                                                 now.rule)]
        allowed = [z3.is_true(model.eval(o.allowed, model_completion=True)) for o in (was, now)]
        found = witness.example(model, space, host, self.signer, self.issuer_names, self.now)
        decisions = []
        for checked, status, rule, reaches, label in ((self.old, values[0], values[1], allowed[0], "old"),
                                                       (self.new, values[2], values[3], allowed[1], "new")):
            decision = witness.replay(checked, found, self.signer, self.now)
            name = space.rule_names[rule] if rule >= 0 else None
            witness.confirm(decision, status, name, reaches, f"{label} policy, request {found.description}")
            decisions.append(decision)
        block = z3.Not(z3.And(was.status == values[0], was.rule == values[1], now.status == values[2],
                              now.rule == values[3]))
        return Change(decisions[0], decisions[1], found.description), block


def diff(old: Checked, new: Checked, limit: int = 20, shortcut: bool = True) -> Diff:
    """Compare `old` with `new` (`shortcut`: services alike in text are equivalent unsolved)."""
    return Differ(old, new, limit).diff(shortcut)
