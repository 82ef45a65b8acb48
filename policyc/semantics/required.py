"""What every request a condition matches must have: one of a few path prefixes, one of a few
methods. Conservative by construction: when an atom or a combinator does not narrow the requests
(`not`, an `or` with an operand that does not), the answer is None, "any". The interpreter and
the Lua runtime index rules by these facts and the route assembly files rules under the
prefixes, so a request is only ever tried against rules that can match it.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import nodes as n
from .glob import glob_literal_prefix

# The path tests, by operator, and what each requires of the path (an exact path is its own prefix).
_PATH_PREFIXES = {
    n.Op.EQ: lambda values: values,
    n.Op.IN: lambda values: values,
    n.Op.PREFIX: lambda values: values,
    n.Op.GLOB: lambda values: (prefix,) if (prefix := glob_literal_prefix(values[0])) else None,
}


def required_prefixes(expr: n.Expr, conditions: Mapping[str, n.Condition]) -> tuple[str, ...] | None:
    """Path prefixes one of which every request matching `expr` has, or None when `expr` does not
    narrow the path. `conditions` resolves named conditions."""
    match expr:
        case n.PathTest(op, values) if op in _PATH_PREFIXES:
            return _PATH_PREFIXES[op](values)
        case n.ConditionRef(name):
            return required_prefixes(conditions[name].expr, conditions)
        case n.And(operands):
            known = [p for p in (required_prefixes(o, conditions) for o in operands) if p is not None]
            # The narrowest: the operand whose shortest prefix is longest.
            return max(known, key=lambda p: min(map(len, p)), default=None)
        case n.Or(operands):
            each = [required_prefixes(o, conditions) for o in operands]
            return None if None in each else tuple(sorted({p for prefixes in each for p in prefixes}))
    return None


def required_methods(expr: n.Expr, conditions: Mapping[str, n.Condition]) -> frozenset[str] | None:
    """The methods one of which every request matching `expr` has, or None when `expr` does not
    narrow the method."""
    match expr:
        case n.MethodTest(_, methods):
            return frozenset(methods)
        case n.ConditionRef(name):
            return required_methods(conditions[name].expr, conditions)
        case n.And(operands):
            known = [m for m in (required_methods(o, conditions) for o in operands) if m is not None]
            return frozenset.intersection(*known) if known else None
        case n.Or(operands):
            each = [required_methods(o, conditions) for o in operands]
            return None if None in each else frozenset().union(*each)
    return None
