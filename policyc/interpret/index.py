"""The interpreter's rule index: a service's rules in deciding order, filed by what a request
must have for each to match (a path prefix, a method: `semantics.required`), so that a request is
tried only against the rules it can match. Built once per checked policy set and service.

Skipping a rule is sound only because those facts are conservative: a rule left out of a
request's candidates never holds for it, so the first candidate that holds is the rule the whole
list would have named (tests/property/test_index.py compares both on generated policies).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .. import nodes as n
from ..checked import Checked
from ..semantics.memo import per_object
from ..semantics.required import required_methods, required_prefixes

_DECIDING_ORDER = (n.Effect.DENY, n.Effect.ALLOW)  # deny overrides allow


class RuleIndex:
    """One service's rules in deciding order: the deny rules by
    name, then the allow rules by name. When several rules of the deciding effect match, the one
    whose name sorts first is named: the same whatever the order of the rules, and what Envoy's
    RBAC engine (a sorted map of policies) reports."""

    def __init__(self, service: n.Service, conditions: Mapping[str, n.Condition]):
        self.rules = tuple(rule for effect in _DECIDING_ORDER
                           for rule in sorted((r for r in service.rules if r.effect is effect), key=lambda r: r.name))
        self.methods = tuple(required_methods(rule.expr, conditions) for rule in self.rules)
        anywhere, by_prefix = [], {}
        for position, rule in enumerate(self.rules):
            prefixes = required_prefixes(rule.expr, conditions)
            if prefixes is None:
                anywhere.append(position)
            for prefix in set(prefixes or ()):
                by_prefix.setdefault(prefix, []).append(position)
        self.anywhere = tuple(anywhere)
        # A path finds its prefixes by a lookup of its own first characters at each length a
        # prefix has: as many lookups as distinct lengths, whatever the number of rules.
        by_length: dict[int, dict[str, tuple[int, ...]]] = {}
        for prefix, positions in by_prefix.items():
            by_length.setdefault(len(prefix), {})[prefix] = tuple(positions)
        self.by_length = tuple(sorted(by_length.items()))

    def candidates(self, method: str, path: str) -> list[int]:
        """The positions, in deciding order, of the rules a request with `method` and the
        normalized `path` can match."""
        found = set(self.anywhere)
        for length, table in self.by_length:
            if length > len(path):
                break
            found.update(table.get(path[:length], ()))
        methods = self.methods
        return [p for p in sorted(found) if methods[p] is None or method in methods[p]]


@per_object
def service_index(checked: Checked) -> Callable[[n.Service], RuleIndex]:
    """The index of a service of `checked` (or one built from its rules, as tests do), kept as
    long as both live. Only the conditions are captured: holding `checked` itself would keep it
    alive through its own cache entry."""
    conditions = checked.conditions
    return per_object(lambda service: RuleIndex(service, conditions))
