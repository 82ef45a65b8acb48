"""Tamper evidence for access logs: a signed hash chain over log segments, and its verification.

`seal(records, segments, key)` appends one record per segment (a closed log file, such as a
rotated `access.log.1`) to a seal: the segment's name, its line count, the SHA-256 of its bytes, a
short digest of each line, and the chain value of the record before it; the record's own chain
value is the SHA-256 of all that, signed with an Ed25519 key. Each record therefore covers every
segment sealed before it, and the last one covers them all.

`verify(records, segments, public_key)` checks the seal itself (every signature, every link), then
the given segments against it, in order, and returns `Finding`s: a segment missing, not sealed or
out of order; within a segment, each line deleted, inserted, edited or moved, by line number. The
whole-segment SHA-256 is what detects a change; the line digests (8 bytes, enough to tell lines
apart, not to resist a forger) only say where it is; lines are aligned as a patience diff aligns
them, so repeated lines cannot make that slow, and the first `LOCATED` differences are named.
Segments are read as they stream, line by line: a segment's size does not matter, only its line
count (the line digests are kept).
"""

from __future__ import annotations

import base64
import hashlib
import json
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import islice
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64  # the chain value before the first record
LINE_DIGEST_BYTES = 8
LOCATED = 100  # differences named per segment at most: past that, the segment is simply not the one sealed
_RECORD_FIELDS = ("segment", "lines", "sha256", "line_digests", "previous")


class SealError(ValueError):
    """A key or seal file that cannot be used; the message says why, on one line."""


@dataclass(frozen=True)
class Digests:
    """One segment as read: its SHA-256 and each line's short digest (hex), in order."""

    sha256: str
    lines: tuple[str, ...]


def digest_segment(stream: BinaryIO) -> Digests:
    """The digests of a segment, read line by line (a last line without a newline counts too)."""
    whole, lines = hashlib.sha256(), []
    for line in stream:
        whole.update(line)
        lines.append(hashlib.sha256(line).digest()[:LINE_DIGEST_BYTES].hex())
    return Digests(whole.hexdigest(), tuple(lines))


def _chain(record: dict) -> str:
    body = json.dumps({field: record[field] for field in _RECORD_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_records(lines: Iterable[str]) -> list[dict]:
    """The records of a seal file (JSON lines), or SealError naming the line that is not one."""
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not {*_RECORD_FIELDS, "chain", "signature"} <= record.keys():
            raise SealError(f"line {number} is not a seal record")
        records.append(record)
    return records


def seal(records: list[dict], segments: Iterable[tuple[str, Digests]], key: Ed25519PrivateKey) -> list[dict]:
    """The records that extend `records` (already verified) with each (name, digests) segment."""
    previous = records[-1]["chain"] if records else GENESIS
    sealed = {record["sha256"]: record["segment"] for record in records}
    added = []
    for name, digests in segments:
        if digests.sha256 in sealed:
            raise SealError(f"{name} is already sealed (as {sealed[digests.sha256]})")
        record = {"segment": name, "lines": len(digests.lines), "sha256": digests.sha256,
                  "line_digests": "".join(digests.lines), "previous": previous}
        record["chain"] = previous = _chain(record)
        record["signature"] = base64.b64encode(key.sign(bytes.fromhex(previous))).decode()
        record["key"] = fingerprint(key.public_key())
        sealed[digests.sha256] = name
        added.append(record)
    return added


def dump(records: list[dict]) -> str:
    return "".join(json.dumps(record, separators=(",", ":")) + "\n" for record in records)


@dataclass(frozen=True)
class Finding:
    where: str  # the segment (file:line where known), or "seal:N" for the seal's own record N
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def check_records(records: list[dict], key: Ed25519PublicKey) -> list[Finding]:
    """Every record's link to the one before, its chain value and its signature."""
    findings, previous = [], GENESIS
    for number, record in enumerate(records, 1):
        where = f"seal:{number}"
        if record["previous"] != previous:
            findings.append(Finding(where, "does not follow the record before it (a record was removed or moved)"))
        if _chain(record) != record["chain"]:
            findings.append(Finding(where, "was edited: its chain value does not match its fields"))
        try:
            key.verify(base64.b64decode(record["signature"], validate=True), bytes.fromhex(record["chain"]))
        except (InvalidSignature, ValueError):
            findings.append(Finding(where, f"signature does not verify with key {fingerprint(key)}"))
        previous = record["chain"]
    return findings


def _split(line_digests: str) -> list[str]:
    width = 2 * LINE_DIGEST_BYTES
    return [line_digests[i:i + width] for i in range(0, len(line_digests), width)]


def _span(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest run of `pairs` (sorted by their first item) whose second items increase."""
    tails: list[int] = []  # tails[k]: index into pairs of the smallest end of a run of length k + 1
    ends: list[int] = []  # the second items of those ends, increasing
    before = [-1] * len(pairs)
    for index, (_, j) in enumerate(pairs):
        k = bisect_left(ends, j)
        before[index] = tails[k - 1] if k else -1
        tails[k:k + 1], ends[k:k + 1] = [index], [j]
    run, index = [], tails[-1] if tails else -1
    while index >= 0:
        run.append(pairs[index])
        index = before[index]
    return run[::-1]


_SMALL = 1_000_000  # a stretch with no line unique to it is compared line by line up to this size


def _matched(sealed: list[str], found: tuple[str, ...]) -> list[tuple[int, int]]:
    """(sealed line, found line) pairs that are the same line, in order: the common beginning and
    end of each stretch, then the lines that occur once in both sides of it as anchors (patience
    diff), and between anchors the same again. Unlike a plain diff, this stays near-linear when
    lines repeat, so a log padded with copies cannot make verifying slow."""
    pairs, stretches = [], [(0, len(sealed), 0, len(found))]
    while stretches:
        lo_i, hi_i, lo_j, hi_j = stretches.pop()
        while lo_i < hi_i and lo_j < hi_j and sealed[lo_i] == found[lo_j]:
            pairs.append((lo_i, lo_j))
            lo_i, lo_j = lo_i + 1, lo_j + 1
        while lo_i < hi_i and lo_j < hi_j and sealed[hi_i - 1] == found[hi_j - 1]:
            hi_i, hi_j = hi_i - 1, hi_j - 1
            pairs.append((hi_i, hi_j))
        if lo_i == hi_i or lo_j == hi_j:
            continue
        once_sealed = _once(sealed, lo_i, hi_i)
        anchors = _increasing(sorted((once_sealed[d], j) for d, j in _once(found, lo_j, hi_j).items()
                                     if d in once_sealed))
        if anchors:
            pairs += anchors
            ends = [(lo_i - 1, lo_j - 1), *anchors, (hi_i, hi_j)]
            stretches += [(a[0] + 1, b[0], a[1] + 1, b[1]) for a, b in zip(ends, ends[1:], strict=False)]
        elif (hi_i - lo_i) * (hi_j - lo_j) <= _SMALL:
            blocks = SequenceMatcher(None, sealed[lo_i:hi_i], found[lo_j:hi_j], autojunk=False).get_matching_blocks()
            pairs += [(lo_i + b.a + k, lo_j + b.b + k) for b in blocks for k in range(b.size)]
    return sorted(pairs)


def _once(lines, lo: int, hi: int) -> dict[str, int]:
    """The lines of lines[lo:hi] that occur there once, with their index."""
    seen: dict[str, int] = {}
    for index in range(lo, hi):
        seen[lines[index]] = -1 if lines[index] in seen else index
    return {line: index for line, index in seen.items() if index >= 0}


def _blocks(sealed: list[str], found: tuple[str, ...]) -> Iterator[tuple[str, int, int, int, int]]:
    """(tag, i1, i2, j1, j2) of each stretch that differs, as difflib's opcodes name them."""
    previous_i = previous_j = 0
    for i, j in [*_matched(sealed, found), (len(sealed), len(found))]:
        if i > previous_i or j > previous_j:
            tag = "replace" if i > previous_i and j > previous_j else "delete" if i > previous_i else "insert"
            yield tag, previous_i, i, previous_j, j
        previous_i, previous_j = i + 1, j + 1


def _added(name: str, first_seal: dict[str, int], found: tuple[str, ...], j1: int, j2: int,
           moved: set[str]) -> Iterator[Finding]:
    """Lines j1..j2 of a segment that the seal does not have there: each moved line on its own,
    each run of inserted lines as one finding."""
    run = None  # the first line of the current run of inserted lines
    for j in range(j1, j2 + 1):
        if j < j2 and found[j] not in moved:
            run = j if run is None else run
            continue
        if run is not None:
            yield Finding(f"{name}:{run + 1}", f"{_span(run + 1, j)} inserted: not sealed")
            run = None
        if j < j2:
            yield Finding(f"{name}:{j + 1}", f"sealed line {first_seal[found[j]] + 1} moved here")


def locate(name: str, sealed: list[str], found: tuple[str, ...]) -> Iterator[Finding]:
    """Where a segment's lines (`found`) differ from the sealed ones, numbered from 1: a line
    present in both but elsewhere is moved; one only sealed is deleted; one only found is
    inserted; one in place of another is edited."""
    blocks = list(_blocks(sealed, found))
    removed = {sealed[i] for _, i1, i2, _, _ in blocks for i in range(i1, i2)}
    added = {found[j] for _, _, _, j1, j2 in blocks for j in range(j1, j2)}
    moved = removed & added
    first_seal = {}
    for index, line in enumerate(sealed):
        first_seal.setdefault(line, index)
    for tag, i1, i2, j1, j2 in blocks:
        if tag == "replace" and i2 - i1 == j2 - j1 and not moved & set(found[j1:j2]):
            yield Finding(f"{name}:{j1 + 1}", f"{_span(j1 + 1, j2)} edited (sealed as {_span(i1 + 1, i2)})")
            continue
        yield from _added(name, first_seal, found, j1, j2, moved)
        gone = [i for i in range(i1, i2) if sealed[i] not in moved]
        if gone:
            yield Finding(f"{name}:{j1 + 1}" if j1 < len(found) else f"{name}:end",
                          f"sealed {_span(gone[0] + 1, gone[-1] + 1)} deleted before this point")


def verify(records: list[dict], segments: list[tuple[str, Digests]], key: Ed25519PublicKey,
           head: str | None = None) -> list[Finding]:
    """Everything wrong with the seal and with `segments` (name, digests), given in sealed order;
    `head`: the chain value the seal must end at (kept elsewhere, it shows records cut off the end)."""
    findings = check_records(records, key)
    if head is not None and (records[-1]["chain"] if records else GENESIS) != head:
        findings.append(Finding("seal", f"does not end at chain value {head}: records after it were removed "
                                        "or it is another seal"))
    findings += _segment_findings(records, segments)
    return findings


def _segment_findings(records: list[dict], segments: list[tuple[str, Digests]]) -> list[Finding]:
    """A segment that is a sealed one, unchanged, wherever it was given, must come after the
    sealed segments given before it; one that is none is compared line by line with the record at
    its place, unless that record's segment was given elsewhere (then it was never sealed).
    Records no segment was given for, or compared with, are missing."""
    sealed_at = {record["sha256"]: number for number, record in enumerate(records, 1)}
    given = {digests.sha256 for _, digests in segments}
    findings, accounted, last = [], set(), 0
    for number, (name, digests) in enumerate(segments, 1):
        found = sealed_at.get(digests.sha256)
        if found is not None:
            if found < last:
                findings.append(Finding(name, f"is sealed segment {found}, given after sealed segment {last}: "
                                              "segments out of order"))
            accounted.add(found)
            last = max(last, found)
        elif number > len(records) or records[number - 1]["sha256"] in given:
            findings.append(Finding(name, "not sealed"))
        else:
            record = records[number - 1]
            # Lines whose short digests collide are told apart by the segment's SHA-256 alone.
            located = list(islice(locate(name, _split(record["line_digests"]), digests.lines), LOCATED + 1))
            if len(located) > LOCATED:
                located[LOCATED:] = [Finding(name, f"more differences after the first {LOCATED}")]
            findings.extend(located or [Finding(name, "differs from the sealed segment")])
            accounted.add(number)
    findings += [Finding(record["segment"], f"sealed segment {number} missing")
                 for number, record in enumerate(records, 1) if number not in accounted]
    return findings
