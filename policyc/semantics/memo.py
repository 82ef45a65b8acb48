"""`per_object(build)`: a function of one object (and hashable extra arguments) whose results
are kept for as long as the object lives, found by the object's identity.

The interpreter derives facts from policy nodes (rules in name order, a service's hosts, an
issuer's settings) on every request. The nodes are frozen dataclasses, but hashing one hashes its
whole tree, which costs more than what is kept: `functools.lru_cache` does not fit.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable


def per_object(build: Callable) -> Callable:
    """`build` with its results kept. An entry goes with its object, so a new object at a
    recycled address is never confused with the old one."""
    values: dict[tuple, tuple[weakref.ref, object]] = {}

    @functools.wraps(build)
    def kept(obj, *args):
        key = (id(obj), *args)
        entry = values.get(key)
        if entry is not None and entry[0]() is obj:
            return entry[1]
        value = build(obj, *args)
        values[key] = (weakref.ref(obj, lambda _, key=key: values.pop(key, None)), value)
        return value

    return kept
