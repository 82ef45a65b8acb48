"""Rule coverage of policy unit tests: which rules decided at least one passing case.

A rule is covered when the interpreter named it as the deciding rule (`Decision.rule`) of a case
that passed, over any protocol the case is decided over. So:
- a deny rule is covered by a case it refused; an allow rule that matched a case a deny rule then
  refused, or a rule that matched but lost to a rule of its effect whose name sorts first, is not:
  it decided nothing there;
- in a `mode dry-run` service the rule named is the one enforce would apply (the decision's
  `enforced_status`): that rule is covered, since the cases pin what switching to enforce does;
- a failing case covers nothing: its expectation does not hold, so it pins no rule's behaviour;
- default deny, token refusals and the proxy's own answers are not rules and are not counted.
A policy set without rules is fully covered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from .. import nodes as n
from ..checked import Checked
from .casefile import CaseResult


@dataclass(frozen=True)
class RuleCoverage:
    """One rule and how many passing cases it decided."""

    service: str
    rule: str
    effect: str
    dry_run: bool
    where: str  # file:line:col of the rule, or "" for a tree built by code
    cases: int

    def to_json(self) -> dict:
        return {"service": self.service, "rule": self.rule, "effect": self.effect, "dry_run": self.dry_run,
                "where": self.where, "cases": self.cases, "covered": self.cases > 0}


@dataclass(frozen=True)
class Coverage:
    rules: tuple[RuleCoverage, ...]  # every rule of every service, in source order

    @property
    def covered(self) -> int:
        return sum(r.cases > 0 for r in self.rules)

    @property
    def percent(self) -> float:
        """Covered rules in percent, rounded *down* to one decimal: never shown at a threshold it misses."""
        if not self.rules:
            return 100.0
        return int(self.covered * 1000 / len(self.rules)) / 10

    def below(self, minimum: float) -> bool:
        """Whether coverage is under `minimum` percent, compared exactly rather than as rounded."""
        return self.covered * 100 < minimum * len(self.rules)

    def to_json(self) -> dict:
        return {"covered": self.covered, "total": len(self.rules), "percent": self.percent,
                "rules": [r.to_json() for r in self.rules]}

    def text(self) -> str:
        lines = [f"coverage: {self.covered} of {len(self.rules)} rules decided a passing case ({self.percent}%)"]
        lines += [f"  {r.where}: {r.effect} rule {r.rule!r} of service {r.service!r}"
                  + (" (dry-run)" if r.dry_run else "") + " decided no passing case"
                  for r in self.rules if r.cases == 0]
        return "\n".join(lines)


def rule_coverage(checked: Checked, results: Iterable[CaseResult]) -> Coverage:
    """The coverage of every rule of `checked` by the passing cases among `results`."""
    decided = Counter()
    for result in results:
        if result.passed:
            # A case counts once per rule, however many of its protocols that rule decided.
            decided.update({(d.service, d.rule) for d in result.decisions.values() if d.rule is not None})
    rules = sorted(((service, rule) for service in checked.services.values() for rule in service.rules),
                   key=lambda pair: pair[1].span.sort_key if pair[1].span else ("", 0, 0))
    return Coverage(tuple(
        RuleCoverage(service.name, rule.name, rule.effect.value, service.mode is n.Mode.DRY_RUN,
                     str(rule.span) if rule.span else "", decided[(service.name, rule.name)])
        for service, rule in rules))
