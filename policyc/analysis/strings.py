"""Strings of the request seen through their tests: takes the tests the policies make on one
string (the path; a header, claim or certificate value tested with `prefix` or `suffix`) and
returns one z3 Boolean per distinct test (`StringAtoms.atom`), and `realize`, which turns the
tests' values in a model into a concrete string, or into a lemma: a combination of values no
string has.

Why not one z3 string: z3's string solver needs tens of seconds, or gives up, to place one path
against a hundred regexes, most of them negated (and as long to refute a prefix test on two
certificate SANs); with a Boolean per test the same question is propositional and takes
milliseconds. The solver may then choose values no string has (inside `/api/` and outside `/`);
`realize` refutes such a choice with a lemma and the question is asked again, the lazy scheme SMT
solvers use for their own theories. A lemma is a fact about the string alone, so it is kept for
every later question on the same space. Exactness is kept both ways: an answer "no such request"
holds for strings too (lemmas are true), and a request found has real strings on which every test
has the value the model chose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

import z3

from .. import nodes as n
from ..semantics.compare import path_matches
from ..semantics.glob import ANY, parse_glob

_ANY = z3.Full(z3.ReSort(z3.StringSort()))
# Example paths should read like requests: lower-case words, digits and `.-_`, two segments or more.
_WORD = z3.Plus(z3.Union(z3.Range("a", "z"), z3.Range("0", "9"), z3.Re("."), z3.Re("-"), z3.Re("_")))
READABLE_PATH = z3.Concat(z3.Re("/"), _WORD, z3.Plus(z3.Concat(z3.Re("/"), _WORD)))
# How many ready-made strings to try before asking the string solver.
_CANDIDATES = 400


class Undecided(RuntimeError):
    """The solver gave up on a question: nothing may be concluded from it."""


# How long one question may take. z3 is usually done in well under a second, but a few mixes of
# regexes make it search for long; then the answer is "undecided", never a guess.
TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class StringAtom:
    """One test, as a z3 Boolean and as the regex of the strings it holds for."""

    op: n.Op
    values: tuple[str, ...]
    var: z3.BoolRef
    regex: z3.ReRef

    def matches(self, text: str) -> bool:
        return path_matches(self.op, self.values, text)

    @property
    def literals(self) -> list[str]:
        """Strings the test is written around: a prefix, a suffix, the values, a glob with `**`
        dropped and `*` read as `x`."""
        if self.op is n.Op.GLOB:
            return ["/".join("x".join(s) for s in parse_glob(self.values[0]) if s is not ANY) or "/"]
        return list(self.values)


def glob_regex(pattern: str, segment_char: z3.ReRef) -> z3.ReRef:
    """`glob_matches` as a z3 regex, from the same parsed form: `*` is any run inside a segment, a
    `**` segment any number of whole segments with their slashes (so `/a/**` matches `/a`)."""
    pieces = []
    for segment in parse_glob(pattern)[1:]:
        if segment is ANY:
            pieces.append(z3.Star(z3.Concat(z3.Re("/"), z3.Star(segment_char))))
            continue
        parts = [z3.Re("/")]
        for i, literal in enumerate(segment):
            if i:
                parts.append(z3.Star(segment_char))
            if literal:
                parts.append(z3.Re(literal))
        pieces.append(z3.Concat(*parts) if len(parts) > 1 else parts[0])
    return z3.Concat(*pieces) if len(pieces) > 1 else pieces[0]


class StringAtoms:
    """The tests on one string of the request, over the strings it can hold (`shape`). `name`
    names the z3 variables; `characters` is what a glob's `*` stands for; `readable` is the shape
    an example should have if it can."""

    def __init__(self, name: str, shape: z3.ReRef | None = None, characters: z3.ReRef | None = None,
                 readable: z3.ReRef | None = None):
        self.name, self.characters, self.readable = name, characters, readable
        self.shape = _ANY if shape is None else shape
        self.atoms: dict[tuple[n.Op, tuple[str, ...]], StringAtom] = {}
        self.lemmas: list[z3.BoolRef] = []
        self._fits_shape: dict[str, bool] = {}
        self._conflicts: dict[tuple, bool] = {}
        self._structure: tuple[int, list[z3.BoolRef]] | None = None

    def atom(self, op: n.Op, values: tuple[str, ...]) -> z3.BoolRef:
        key = (op, values)
        if key not in self.atoms:
            var = z3.Bool(f"{self.name} {op.value} {list(values)}")
            self.atoms[key] = StringAtom(op, values, var, self._regex(op, values))
        return self.atoms[key].var

    def _regex(self, op: n.Op, values: tuple[str, ...]) -> z3.ReRef:
        match op:
            case n.Op.EQ | n.Op.IN:
                return z3.Union(*[z3.Re(v) for v in values]) if len(values) > 1 else z3.Re(values[0])
            case n.Op.PREFIX:
                return z3.Concat(z3.Re(values[0]), _ANY)
            case n.Op.SUFFIX:
                return z3.Concat(_ANY, z3.Re(values[0]))
            case n.Op.GLOB:
                return glob_regex(values[0], self.characters)
        raise AssertionError(op)

    def facts(self) -> list[z3.BoolRef]:
        """What holds between the tests on every string: the structure below and the lemmas."""
        if self._structure is None or self._structure[0] != len(self.atoms):
            atoms = list(self.atoms.values())
            self._structure = len(atoms), _heads(self.name, atoms) + _segments(self.name, atoms)
        return self._structure[1] + self.lemmas

    def fits_shape(self, text: str) -> bool:
        """Whether the string can hold `text` (for the path: the proxy can hand it to the filters).
        z3 evaluates the ground membership."""
        if text not in self._fits_shape:
            self._fits_shape[text] = z3.is_true(z3.simplify(z3.InRe(z3.StringVal(text), self.shape)))
        return self._fits_shape[text]

    def fixed(self, text: str) -> z3.BoolRef:
        """The string is `text`: every test takes its value for it."""
        if not self.fits_shape(text):
            return z3.BoolVal(False)
        return z3.And([var == value for var, value in self.values_on(text)])

    def values_on(self, text: str) -> list[tuple[z3.BoolRef, z3.BoolRef]]:
        """(test, its value on `text`) for every test, to substitute into a question."""
        return [(a.var, z3.BoolVal(a.matches(text))) for a in self.atoms.values()]

    def realize(self, model: z3.ModelRef) -> str | None:
        """A string on which every test has the value `model` gives it; None when there is none,
        after keeping the lemma that rules that choice out."""
        values = {a: z3.is_true(model.eval(a.var, model_completion=True)) for a in self.atoms.values()}
        # The tests that hold first: most candidates fail one of those, and are dropped at once.
        values = dict(sorted(values.items(), key=lambda item: not item[1]))
        for text in self._candidates(values):
            if _fits(text, values) and self.fits_shape(text):
                return text
        required = [a for a, value in values.items() if value]
        while (text := self._member(required, values, readable=True)) is not None:
            broken = [a for a in values if a.matches(text) != values[a]]
            if not broken:
                return text
            required += broken
        conflict = self._conflict(required, values)
        self.lemmas.append(z3.Not(z3.And([a.var if values[a] else z3.Not(a.var) for a in conflict])))
        return None

    def _conflict(self, required: list[StringAtom], values: dict[StringAtom, bool]) -> list[StringAtom]:
        """A test or a pair of tests among `required` whose values no string has, or else all of
        them. A small conflict rules out every choice that contains it, not just this one."""
        for size in (1, 2):
            for tests in combinations(required, size):
                key = tuple((a, values[a]) for a in tests)
                if key not in self._conflicts:
                    self._conflicts[key] = self._member(list(tests), values, readable=False) is None
                if self._conflicts[key]:
                    return list(tests)
        return required

    def _candidates(self, values: dict[StringAtom, bool]):
        """Ready-made strings near the tests' own literals, tried before the string solver: each
        literal with one digit or letter changed first (a request just outside an excluded test
        shows a change best, as `/api/v2/x` next to `/api/v1/**`), then the literal itself."""
        seen = set()
        ordered = sorted(values, key=lambda a: values[a])  # excluded tests first
        for atom in ordered:
            for literal in atom.literals:
                for base in (_near(literal), literal):
                    for text in (base.rstrip("/") + "/x", base, base + "x", "x" + base):
                        if text not in seen:
                            seen.add(text)
                            yield text
                            if len(seen) == _CANDIDATES:
                                return

    def _member(self, required: list[StringAtom], values: dict[StringAtom, bool], readable: bool) -> str | None:
        """A string of the shape on which each required test has its value (a readable one if
        `readable` and there is one)."""
        text = z3.String(self.name)
        tests = [z3.InRe(text, a.regex) if values[a] else z3.Not(z3.InRe(text, a.regex)) for a in required]
        preferences = ([z3.InRe(text, self.readable)], []) if readable and self.readable is not None else ([],)
        for preference in preferences:
            solver = z3.Solver()
            solver.set("timeout", TIMEOUT_MS)
            solver.add(z3.InRe(text, self.shape), *tests, *preference)
            result = solver.check()
            if result == z3.sat:
                return solver.model().eval(text, model_completion=True).as_string()
            if result == z3.unknown and not preference:
                raise Undecided(solver.reason_unknown())
        return None


def _fits(text: str, values: dict[StringAtom, bool]) -> bool:
    return all(atom.matches(text) == value for atom, value in values.items())


def _near(literal: str) -> str:
    """`literal` with its last digit counted up, or else its last letter moved on by one."""
    for pattern, step in ((r"\d(?=\D*$)", lambda d: str((int(d) + 1) % 10)),
                          (r"[a-z](?=[^a-z]*$)", lambda c: "a" if c == "z" else chr(ord(c) + 1))):
        if match := re.search(pattern, literal):
            return literal[:match.start()] + step(match.group()) + literal[match.end():]
    return literal


# ---------------------------------------------------------------- structure
# Facts every string obeys, stated once so that the solver does not pick impossible choices and
# learn them one lemma at a time: which literal prefixes the string starts with, and which literal
# `/`-separated segment it has at each place. Each is implied by the tests' meaning, so adding
# them loses nothing; the lemmas still catch whatever they leave out.


def _head(atom: StringAtom) -> list[str]:
    """Literal texts a string the test holds for must start with (one of them, for `in`)."""
    if atom.op is n.Op.SUFFIX:
        return [""]
    if atom.op is not n.Op.GLOB:
        return list(atom.values)
    pattern = atom.values[0]
    star = pattern.index("*") if "*" in pattern else len(pattern)
    if pattern[star:star + 2] == "**" and pattern[star - 1:star] == "/":
        star -= 1  # `/a/**` holds for `/a` itself
    return [pattern[:star]]


def _heads(name: str, atoms: list[StringAtom]) -> list[z3.BoolRef]:
    """The longest head the string starts with, as an index into the heads sorted: the heads that
    start with `h` are then a contiguous run, and "the string starts with h" is a range test."""
    heads = sorted({h for a in atoms for h in _head(a)} | {""})
    deepest = z3.Int(f"{name}:longest head")
    ends = {}
    for i, head in enumerate(heads):
        end = i
        while end + 1 < len(heads) and heads[end + 1].startswith(head):
            end += 1
        ends[head] = (i, end)

    def starts_with(head: str) -> z3.BoolRef:
        first, last = ends[head]
        return z3.And(first <= deepest, deepest <= last)

    facts = [deepest >= 0, deepest < len(heads)]
    for atom in atoms:
        within = z3.Or([starts_with(h) for h in _head(atom)])
        facts.append(atom.var == within if atom.op is n.Op.PREFIX else z3.Implies(atom.var, within))
    return facts


def _literal_segments(atom: StringAtom) -> list[dict[int, str]]:
    """Per value, the literal `/`-separated segment the test requires at each place."""
    found = []
    for value in atom.values:
        segments = value.split("/")
        match atom.op:
            case n.Op.PREFIX:
                segments = segments[:-1]  # the last may go on
            case n.Op.SUFFIX:
                segments = []
            case n.Op.GLOB:
                segments = segments[:segments.index("**")] if "**" in segments else segments
        found.append({i: s for i, s in enumerate(segments) if "*" not in s or atom.op is not n.Op.GLOB})
    return found


def _segments(name: str, atoms: list[StringAtom]) -> list[z3.BoolRef]:
    """Per place, which of the literal segments the tests name the string has there, if any."""
    wanted = {atom: _literal_segments(atom) for atom in atoms}
    places: dict[int, list[str]] = {}
    for per_value in wanted.values():
        for literals in per_value:
            for place, segment in literals.items():
                places.setdefault(place, []).append(segment)
    names = {place: sorted(set(found)) for place, found in places.items()}
    choice = {place: z3.Int(f"{name}:segment {place}") for place in names}
    facts = [z3.And(choice[p] >= 0, choice[p] <= len(names[p])) for p in names]
    for atom, per_value in wanted.items():
        options = [z3.And([choice[p] == names[p].index(s) for p, s in literals.items()]) for literals in per_value]
        facts.append(z3.Implies(atom.var, z3.Or(options)))
    return facts
