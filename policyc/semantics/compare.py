"""The string tests of the language (`==`, `in`, `prefix`, `suffix`, `contains`, `glob`) on one
value, as the interpreter decides them; the analysis applies the same tests to the strings it
builds."""

from __future__ import annotations

from .. import nodes as n
from .glob import glob_matches


def compare_string(op: n.Op, value, wanted: tuple[str, ...]) -> bool:
    """`value` (a claim's, a header's: any JSON value) passes the test `op` against `wanted`."""
    if op is n.Op.CONTAINS:
        held = value if isinstance(value, list) else [value]
        return any(isinstance(v, str) and v == wanted[0] for v in held)
    if not isinstance(value, str):
        return False
    match op:
        case n.Op.EQ | n.Op.IN:
            return value in wanted
        case n.Op.PREFIX:
            return value.startswith(wanted[0])
        case n.Op.SUFFIX:
            return value.endswith(wanted[0])
    raise AssertionError(op)


def path_matches(op: n.Op, values: tuple[str, ...], path: str) -> bool:
    """A path test on a normalized path (the analysis uses it for any string tested so)."""
    return glob_matches(values[0], path) if op is n.Op.GLOB else compare_string(op, path, values)
