"""Path globs (contract §4): `glob_error` says why a pattern is malformed; `parse_glob` gives the one
form every renderer reads (the interpreter's `glob_matches`, the RBAC regex `glob_to_regex`, the
Lua runtime's table, the solver's regex in analysis/strings.py, the prefix rules are indexed by).
"""

from __future__ import annotations

from functools import lru_cache

from .paths import PATH_CHARACTERS

_ANY_SEGMENTS = "**"
ANY = None  # a `**` segment in the parsed form: zero or more whole segments

Segment = tuple[str, ...] | None  # the literal pieces a segment's `*`s stand between, or ANY


@lru_cache(maxsize=4096)
def parse_glob(pattern: str) -> tuple[Segment, ...]:
    """A checked pattern's segments, split at `/` (the empty one before the leading slash
    included), each ANY for `**` or the literal pieces between its `*`s:
    `/a/x*y/**` → `(("",), ("a",), ("x", "y"), ANY)`."""
    _require_leading_slash(pattern)
    return tuple(ANY if segment == _ANY_SEGMENTS else tuple(segment.split("*")) for segment in pattern.split("/"))


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
    segments; the rest is literal and case-sensitive. Same algorithm as lua_runtime/glob.lua."""
    return _segments_match(parse_glob(pattern), path.split("/"))


def _segments_match(pattern: tuple[Segment, ...], segments: list[str]) -> bool:
    """`**` segments cut the pattern into groups of plain segments. The first group must match the
    path's first segments and the last group its last ones; each group between is taken at its
    leftmost place after the one before, which leaves the most room for the rest, so no choice is
    ever revisited (bench/worst_case.py measures the worst cases)."""
    groups = _split(pattern)
    if len(groups) == 1:
        return len(segments) == len(pattern) and _group_at(pattern, segments, 0)
    head, *middle, tail = groups
    stop = len(segments) - len(tail)  # the tail's place; middle groups end before it
    if stop < len(head) or not _group_at(head, segments, 0) or not _group_at(tail, segments, stop):
        return False
    at = len(head)
    for group in middle:
        while at + len(group) <= stop and not _group_at(group, segments, at):
            at += 1
        if at + len(group) > stop:
            return False
        at += len(group)
    return True


def _split(pattern: tuple[Segment, ...]) -> list[list[tuple[str, ...]]]:
    groups: list[list[tuple[str, ...]]] = [[]]
    for segment in pattern:
        if segment is ANY:
            groups.append([])
        else:
            groups[-1].append(segment)
    return groups


def _group_at(group, segments: list[str], at: int) -> bool:
    return all(_segment_matches(p, s) for p, s in zip(group, segments[at:at + len(group)], strict=True))


def _segment_matches(pieces: tuple[str, ...], segment: str) -> bool:
    """The literal pieces between the stars: the first begins the segment, the last ends it, and
    each one between is found leftmost after the one before (linear, as str.find is)."""
    if len(pieces) == 1:
        return pieces[0] == segment
    first, *middle, last = pieces
    stop = len(segment) - len(last)
    if stop < len(first) or not segment.startswith(first) or not segment.endswith(last):
        return False
    at = len(first)
    for piece in middle:
        found = segment.find(piece, at, stop)
        if found < 0:
            return False
        at = found + len(piece)
    return True


# RE2 and Python `re` both read a backslash before punctuation as the literal character.
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def glob_to_regex(pattern: str) -> str:
    """An RE2 regex that fully matches exactly the paths `glob_matches(pattern, ·)` accepts.
    `**` becomes `(?:/[^/]*)*`, taking its preceding slash with it, so `/a/**` also matches `/a`."""
    return "".join("(?:/[^/]*)*" if segment is ANY else "/" + "[^/]*".join(map(_escaped, segment))
                   for segment in parse_glob(pattern)[1:])


def _require_leading_slash(pattern: str) -> None:
    # The checker refuses such patterns (glob_error); evaluating one is a caller's bug.
    if not pattern.startswith("/"):
        raise ValueError(f"a glob starts with '/': {pattern!r}")


def _escaped(literal: str) -> str:
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in literal)


def glob_literal_prefix(pattern: str) -> str:
    """What every path a glob matches starts with: the text before its first `*`, less the slash
    before a `**` segment, which also matches no segment at all (`/a/**` matches `/a`)."""
    written: list[str] = []
    for segment in parse_glob(pattern):
        if segment is ANY:
            return "/".join(written)
        if len(segment) > 1:
            return "/".join([*written, segment[0]])
        written.append(segment[0])
    return pattern
