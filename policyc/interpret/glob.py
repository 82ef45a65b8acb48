"""Path globs (contract §4): takes a pattern and a normalized path; `glob_matches` says whether it
matches, `glob_to_regex` gives the same test as an RE2 full-match regex for Envoy's safe_regex, and
`glob_error` says why a pattern is malformed.
"""

from __future__ import annotations

from functools import lru_cache

from .paths import PATH_CHARACTERS

_ANY_SEGMENTS = "**"


def glob_error(pattern: str) -> str | None:
    """Why `pattern` is not a usable glob, or None. Besides the syntax, a literal that never occurs
    in a normalized path (paths.py) is an error: such a rule could never match."""
    if not pattern:
        return "is empty"
    if not pattern.startswith("/"):
        return "must start with `/`"
    segments = pattern.split("/")[1:]
    if any(_ANY_SEGMENTS in s and s != _ANY_SEGMENTS for s in segments):
        return "has `**` inside a segment: `**` must be a whole segment (use `*` within one)"
    if any(s in (".", "..") for s in segments):
        return "has a `.` or `..` segment, which the proxy resolves away before matching"
    if "" in segments[:-1]:
        return "has an empty segment (`//`), which the proxy merges into `/`"
    stray = sorted({c for c in pattern if c != "*" and c not in PATH_CHARACTERS})
    if stray:
        shown = " ".join(repr(c) for c in stray)
        return (f"has {shown}, never seen in a normalized path (no query or fragment; the proxy "
                "turns `\\` into `/` and percent-encodes the others)")
    return None


def glob_matches(pattern: str, path: str) -> bool:
    """`*` is any run (maybe empty) within one segment; a `**` segment is zero or more whole
    segments; the rest is literal and case-sensitive. No backtracking blow-up: at most
    (pattern segments × path segments) segment tests, each at most quadratic in its length."""
    return _wildcard_match(_segments(pattern), path.split("/"), _ANY_SEGMENTS.__eq__, _segment_matches)


@lru_cache(maxsize=65536)
def _segments(pattern: str) -> tuple[str, ...]:
    _require_leading_slash(pattern)
    return tuple(pattern.split("/"))


def _segment_matches(pattern: str, segment: str) -> bool:
    if "*" not in pattern:
        return pattern == segment  # the common case, without the character-by-character walk
    return _wildcard_match(pattern, segment, "*".__eq__, str.__eq__)


def _wildcard_match(pattern, items, is_star, matches_one) -> bool:
    """Greedy matching with one backtrack point, the last star seen: a later star can absorb
    anything an earlier one could, so no earlier choice is ever revisited (no exponential time).
    Works for any pattern elements that match exactly one item."""
    p = i = 0
    star, star_i = -1, 0
    while i < len(items):
        if p < len(pattern) and is_star(pattern[p]):
            star, star_i = p, i
            p += 1
        elif p < len(pattern) and matches_one(pattern[p], items[i]):
            p += 1
            i += 1
        elif star >= 0:
            star_i += 1  # let the last star take one more item and retry after it
            p, i = star + 1, star_i
        else:
            return False
    return all(is_star(rest) for rest in pattern[p:])


# RE2 and Python `re` both read a backslash before punctuation as the literal character.
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def glob_to_regex(pattern: str) -> str:
    """An RE2 regex that fully matches exactly the paths `glob_matches(pattern, ·)` accepts.
    `**` becomes `(?:/[^/]*)*`, taking its preceding slash with it, so `/a/**` also matches `/a`."""
    _require_leading_slash(pattern)
    pieces = []
    for segment in pattern.split("/")[1:]:
        if segment == _ANY_SEGMENTS:
            pieces.append("(?:/[^/]*)*")
        else:
            pieces.append("/" + "".join(_segment_regex(c) for c in segment))
    return "".join(pieces)


def _require_leading_slash(pattern: str) -> None:
    # The checker refuses such patterns (glob_error); evaluating one is a caller's bug.
    if not pattern.startswith("/"):
        raise ValueError(f"a glob starts with '/': {pattern!r}")


def _segment_regex(char: str) -> str:
    if char == "*":
        return "[^/]*"
    return "\\" + char if char in _REGEX_SPECIAL else char
