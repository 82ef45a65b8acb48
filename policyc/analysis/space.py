"""The symbolic request: takes the checked policy sets to be compared and returns a `RequestSpace`
of z3 variables for everything a rule can test, with the constraints that keep it to requests the
proxy can actually hand to the policy filters.

The model is the request *after* the proxy's admission and normalization (docs/analysis.md):
- the method is one of those the policies name, or one more known method standing for all others;
- the path is a normalized path: starts with `/`, no `//`, no `.` or `..` segment, only the
  characters a normalized path can hold. `%` appears only in the escapes the policies' own
  literals spell, because an escape the policies never name behaves as any other character does.
  It holds `;` (or `%3B`) only when a service asked about allows path parameters; the others'
  outcomes refuse such paths. It is seen through one Boolean per path test
  (policyc/analysis/strings.py);
- each header a rule names holds up to `HEADER_SLOTS` values (one for the headers the proxy
  merges), printable ASCII without surrounding blanks;
- the peer is an IPv4 address or an IPv6 address outside ::ffff:0:0/96, as a 128-bit vector;
- the token is absent, garbage, signed by the issuer of one of the policies' `url`s, or signed by an
  unknown issuer; its `aud` and every claim a rule tests are symbolic: a type tag, a string, a
  boolean, and for list claims the membership of each literal a rule looks for.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from itertools import count

import z3
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .. import nodes as n
from ..catalog import normalize_ref
from ..checked import Checked
from ..semantics.headers import MERGED_HEADERS
from ..semantics.paths import KNOWN_METHODS, PATH_CHARACTERS
from .strings import READABLE_PATH, TIMEOUT_MS, StringAtoms, Undecided

# Claim types. NUMBER stands for every JSON value no atom can satisfy (numbers, null).
MISSING, STRING, BOOL, LIST, OBJECT, NUMBER = range(6)
# Claims the token check itself reads: their shape is fixed by how a valid token is minted.
REGISTERED = {"iss", "exp", "iat", "nbf", "aud", "sub", "jti"}
# At most this many values per repeated header: enough for every difference that needs no more
# than this many distinct values of one header at once (docs/analysis.md, "Bounds").
HEADER_SLOTS = 4
TOKEN_NONE, TOKEN_GARBAGE, TOKEN_FOREIGN = "none", "garbage", "foreign"
# What a certificate carries when a test reads more than a literal's equal: SANs in visible
# ASCII, subjects as `CN=` and a plain name, or one the tests spell (docs/analysis.md, "Bounds").
SAN_SHAPE = z3.Plus(z3.Range("!", "~"))
SUBJECT_SHAPE = z3.Concat(z3.Re("CN="), z3.Plus(z3.Union(z3.Range("a", "z"), z3.Range("A", "Z"), z3.Range("0", "9"),
                                                         z3.Re("."), z3.Re("-"), z3.Re("_"))))
FOREIGN_ISSUER = "https://unknown-issuer.invalid/"


def _char_class(chars) -> z3.ReRef:
    """A regex for one character of `chars`, as a union of contiguous ranges."""
    codes = sorted(ord(c) for c in chars)
    runs, start = [], codes[0]
    for previous, code in zip(codes, codes[1:] + [None], strict=True):
        if code != previous + 1:
            runs.append(z3.Range(chr(start), chr(previous)))
            start = code
    return z3.Union(*runs) if len(runs) > 1 else runs[0]


SEGMENT_CHAR = _char_class(PATH_CHARACTERS - {"/", "%"})


def exprs_of(checked: Checked, services: set[str] | None = None) -> list[n.Expr]:
    """Every condition's expression, and every rule's of the services named (of all, for None)."""
    return [c.expr for c in checked.conditions.values()] + [
        r.expr for s in checked.services.values() if services is None or s.name in services for r in s.rules]


def _escapes(text: str) -> set[str]:
    """The `%XX` escapes a literal spells."""
    return {text[i:i + 3] for i in range(len(text) - 2) if text[i] == "%"}


class Form(Enum):
    """How a `Text` is seen by the solver, cheapest first."""

    LITERALS = "literals"
    TESTED = "tested"
    RELATED = "related"


_ANY = z3.Full(z3.ReSort(z3.StringSort()))
_BLANK = z3.Union(z3.Re(" "), z3.Re("\t"))
_TRIMMED = z3.Intersect(z3.Complement(z3.Concat(_BLANK, _ANY)), z3.Complement(z3.Concat(_ANY, _BLANK)))


class Text:
    """A string of the request that rules test, in the cheapest form its tests allow:
    - compared with literals only (`Form.LITERALS`): an integer, one code per literal, any other value
      standing for "none of them", which every such test treats alike;
    - tested with `prefix` or `suffix` too (`Form.TESTED`): one Boolean per test (`StringAtoms`);
    - compared with another string (`Form.RELATED`: `header == token.claim`, and the Authorization
      header, which carries the token): a z3 string.
    `trimmed`: the proxy drops blanks around it (headers); `shape`: what it may hold; `other`: how
    a value no literal names starts."""

    def __init__(self, name: str, mode: Form, trimmed: bool = False, shape: z3.ReRef | None = None,
                 other: str = "x"):
        self.mode, self.trimmed, self.shape, self.other = mode, trimmed, shape, other
        self.codes: dict[str, int] = {}
        whole = z3.Intersect(shape, _TRIMMED) if trimmed and shape is not None else _TRIMMED if trimmed else shape
        self.atoms = StringAtoms(name, whole) if mode is Form.TESTED else None
        self.term = z3.Int(name) if mode is Form.LITERALS else z3.String(name) if mode is Form.RELATED else None

    def equals(self, literal: str) -> z3.BoolRef:
        if self.trimmed and literal != literal.strip(" \t"):
            return z3.BoolVal(False)
        match self.mode:
            case Form.LITERALS:
                return self.term == self.codes.setdefault(literal, len(self.codes))
            case Form.TESTED:
                return self.atoms.atom(n.Op.EQ, (literal,))
        return self.term == z3.StringVal(literal)

    def test(self, op: n.Op, values: tuple[str, ...]) -> z3.BoolRef:
        if op in (n.Op.EQ, n.Op.IN):
            return z3.Or([self.equals(v) for v in values])
        if self.mode is Form.TESTED:
            return self.atoms.atom(op, values)
        function = {n.Op.PREFIX: z3.PrefixOf, n.Op.SUFFIX: z3.SuffixOf}[op]
        return function(z3.StringVal(values[0]), self.term)

    def assigned(self, literal: str) -> list[tuple[z3.ExprRef, z3.ExprRef]]:
        """(variable, value) pairs that make the text `literal`, to substitute into a question."""
        match self.mode:
            case Form.LITERALS:
                return [(self.term, z3.IntVal(self.codes.setdefault(literal, len(self.codes))))]
            case Form.TESTED:
                return self.atoms.values_on(literal)
        return [(self.term, z3.StringVal(literal))]

    def same_as(self, other: Text) -> z3.BoolRef:
        return self.term == other.term

    def domain(self) -> list[z3.BoolRef]:
        if self.mode is not Form.RELATED:
            return []
        facts = [z3.InRe(self.term, self.shape)] if self.shape is not None else []
        if self.trimmed:
            facts += [z3.Not(f(z3.StringVal(blank), self.term)) for f in (z3.PrefixOf, z3.SuffixOf) for blank in " \t"]
        return facts

    def value(self, solution: Solution) -> str:
        """The string `solution` gives: the literal of its code, or one no literal names."""
        if self.mode is Form.TESTED:
            return solution.strings[self.atoms]
        found = solution.eval(self.term, model_completion=True)
        if self.mode is Form.RELATED:
            return found.as_string()
        literals = {code: literal for literal, code in self.codes.items()}
        if found.as_long() in literals:
            return literals[found.as_long()]
        return next(other for other in (f"{self.other}{i}" if i else self.other for i in count())
                    if other not in self.codes)


@dataclass
class Claim:
    """One claim path of the token: its type, and its value for each type an atom can test."""

    path: tuple[str, ...]
    kind: z3.ArithRef
    text: Text
    flag: z3.BoolRef
    members: dict[str, z3.BoolRef] = field(default_factory=dict)

    def holds(self, value: str) -> z3.BoolRef:
        """A list claim holds `value`: one Boolean per literal looked for is all a rule can see."""
        if value not in self.members:
            self.members[value] = z3.Bool(f"claim{list(self.path)}∋{value!r}")
        return self.members[value]

    def is_string(self, op: n.Op, values: tuple[str, ...]) -> z3.BoolRef:
        return z3.And(self.kind == STRING, self.text.test(op, values))

    def contains(self, value: str) -> z3.BoolRef:
        """`contains`: a list holding the string, or a string equal to it."""
        return z3.Or(z3.And(self.kind == LIST, self.holds(value)), self.is_string(n.Op.EQ, (value,)))


@dataclass
class Header:
    """One header a rule names (or the SANs of one kind of a client certificate): up to
    `len(values)` values, each present or not."""

    name: str
    present: list[z3.BoolRef]
    values: list[Text]

    def any_value(self, test) -> z3.BoolRef:
        return z3.Or([z3.And(p, test(v)) for p, v in zip(self.present, self.values, strict=True)])


class RequestSpace:
    """The variables shared by every policy version encoded against it, so that one model is one
    request, decided by each version. With `services`, only those services' rules are encoded
    against it: a question about one service then carries none of the others' tests."""

    def __init__(self, versions: list[Checked], services: set[str] | None = None):
        exprs = [e for checked in versions for root in exprs_of(checked, services) for e in n.walk(root)]
        methods = sorted({m for e in exprs if isinstance(e, n.MethodTest) for m in e.methods} | {"GET"})
        # One known method the policies never name stands for all of them.
        other = sorted(KNOWN_METHODS - set(methods) - {"CONNECT"})
        self.methods = methods + other[:1]
        self.method = z3.Int("method")
        path_tests = [e for e in exprs if isinstance(e, n.PathTest)]
        self.escapes = sorted({escape for e in path_tests for value in e.values for escape in _escapes(value)})
        self.paths = StringAtoms("path", self.path_shape, self.path_characters, READABLE_PATH)
        for e in path_tests:  # all of them now, so that `paths.fixed` decides every test
            self.paths.atom(e.op, e.values)
        # A path with `;` parameters, which the proxy refuses for services that do not allow them.
        self.path_parameters = z3.Or([self.paths.atom(n.Op.GLOB, (f"/**/*{sign}*/**",))
                                      for sign in [";", *(e for e in self.escapes if e.lower() == "%3b")]])
        # Paths holding them are left out unless some service asked about takes them.
        self.parameters_possible = any(s.path_parameters for checked in versions for s in checked.services.values()
                                       if services is None or s.name in services)
        self.strings = [self.paths]  # and the atoms of every `Form.TESTED` text
        self._solver: tuple[tuple, z3.Solver, list[int]] | None = None
        self.modes = _text_modes(exprs)
        self.headers = {name: self._header(name, count) for name, count in _header_tests(exprs).items()}
        self.v6 = z3.Bool("source_is_ipv6")
        self.address = z3.BitVec("source", 128)
        urls = sorted({i.url for checked in versions for i in checked.issuers.values()})
        self.token_kinds = [TOKEN_NONE, TOKEN_GARBAGE, *urls, TOKEN_FOREIGN]
        self.token = z3.Int("token")
        self.rule_names = sorted({r.name for checked in versions for s in checked.services.values()
                                  for r in s.rules})
        self.claims: dict[tuple[str, ...], Claim] = {}
        for path in sorted(_claim_paths(exprs)) + [("aud",), ("sub",), ("ent",)]:
            self.claim(path)
        self._peer(versions, exprs)

    def _peer(self, versions: list[Checked], exprs: list[n.Expr]) -> None:
        """The client certificate: none, or one issued by one of the trusts' CAs or by a CA none of
        them trusts, with its SANs and subject."""
        self.trusts_of_ca: dict[str, set[str]] = {}
        for checked in versions:
            for name, cas in checked.trusts.items():
                for ca in cas:
                    self.trusts_of_ca.setdefault(fingerprint(ca), set()).add(name)
        self.cas = sorted(self.trusts_of_ca)
        self.certificate = z3.Int("certificate")  # -1: none; i: issued by cas[i]; len(cas): by a stranger
        tests = [e for e in exprs if isinstance(e, n.PeerTest)]
        self.sans = {field: self._sans(field, len({e for e in tests if e.field is field}))
                     for field in (n.PeerField.URI, n.PeerField.DNS)}
        named = sorted({v for e in tests if e.field is n.PeerField.SUBJECT and e.op in (n.Op.EQ, n.Op.IN)
                        for v in e.values})
        self.subject = self._text("peer.subject", ("peer", n.PeerField.SUBJECT), other="CN=x",
                                  shape=z3.Union(SUBJECT_SHAPE, *[z3.Re(v) for v in named]) if named else SUBJECT_SHAPE)

    def _sans(self, field: n.PeerField, tests: int) -> Header:
        slots = range(max(1, min(tests, HEADER_SLOTS)))
        return Header(f"peer.{field}", [z3.Bool(f"peer.{field}#{i}") for i in slots],
                      [self._text(f"peer.{field}={i}", ("peer", field), shape=SAN_SHAPE) for i in slots])

    def _text(self, name: str, key, **form) -> Text:
        """A text read by the tests on `key` (a header name, a claim path, a certificate field)."""
        text = Text(name, self.modes.get(key, Form.LITERALS), **form)
        if text.atoms is not None:
            self.strings.append(text.atoms)
        return text

    def issued_by(self, cas: set[str]) -> z3.BoolRef:
        """The client presented a certificate issued by one of the CAs `cas` (fingerprints)."""
        return z3.Or([self.certificate == i for i, ca in enumerate(self.cas) if ca in cas])

    def peer_values(self, field: n.PeerField) -> Header:
        if field is n.PeerField.SUBJECT:
            return Header("peer.subject", [z3.BoolVal(True)], [self.subject])
        return self.sans[field]

    def _header(self, name: str, tests: int) -> Header:
        slots = 1 if name in MERGED_HEADERS else max(1, min(tests, HEADER_SLOTS))
        return Header(name, [z3.Bool(f"header[{name!r}]#{i}") for i in range(slots)],
                      [self._text(f"header[{name!r}]={i}", name, trimmed=True) for i in range(slots)])

    def claim(self, path: tuple[str, ...]) -> Claim:
        if path not in self.claims:
            label = f"claim{list(path)}"
            self.claims[path] = Claim(path, z3.Int(f"{label}:type"), self._text(f"{label}:text", path),
                                      z3.Bool(f"{label}:bool"))
        return self.claims[path]

    def rule_id(self, name: str | None) -> int:
        return -1 if name is None else self.rule_names.index(name)

    def token_is(self, kind: str) -> z3.BoolRef:
        return self.token == self.token_kinds.index(kind) if kind in self.token_kinds else z3.BoolVal(False)

    def method_in(self, methods) -> z3.BoolRef:
        return z3.Or([self.method == self.methods.index(m) for m in methods if m in self.methods])

    def method_is(self, method: str) -> z3.BoolRef:
        """The request's method is `method`, a known one: one the policies never name is seen as
        the method that stands for all of them."""
        return self.method_in([method if method in self.methods else self.methods[-1]])

    def source_in(self, cidr: str) -> z3.BoolRef:
        network = ipaddress.ip_network(cidr)
        bits = network.prefixlen
        if network.version == 4:
            inside = z3.BoolVal(True) if bits == 0 else (
                z3.Extract(31, 32 - bits, self.address) == int(network.network_address) >> (32 - bits))
            return z3.And(z3.Not(self.v6), inside)
        inside = z3.BoolVal(True) if bits == 0 else (
            z3.Extract(127, 128 - bits, self.address) == int(network.network_address) >> (128 - bits))
        return z3.And(self.v6, inside)

    @cached_property
    def path_characters(self) -> z3.ReRef:
        return z3.Union(SEGMENT_CHAR, *[z3.Re(e) for e in self.escapes]) if self.escapes else SEGMENT_CHAR

    @cached_property
    def path_shape(self) -> z3.ReRef:
        """`/`, or `/`-led segments, none empty, `.` or `..`, and maybe a trailing `/`. One regex:
        z3 decides it far faster than the same facts written with `Contains`."""
        dots = z3.Union(z3.Re("."), z3.Re(".."))
        segment = z3.Intersect(z3.Plus(self.path_characters), z3.Complement(dots))
        return z3.Union(z3.Re("/"), z3.Concat(z3.Plus(z3.Concat(z3.Re("/"), segment)), z3.Option(z3.Re("/"))))

    @cached_property
    def domain(self) -> tuple[z3.BoolRef, ...]:
        """What keeps every variable to a request the proxy can hand to the filters."""
        facts = [self.method >= 0, self.method < len(self.methods), self.certificate >= -1,
                 self.certificate <= len(self.cas), self.token >= 0, self.token < len(self.token_kinds)]
        mapped = ipaddress.IPv6Network("::ffff:0:0/96")
        facts += [z3.Implies(z3.Not(self.v6), z3.ULT(self.address, 2 ** 32)),
                  z3.Implies(self.v6, z3.Extract(127, 32, self.address) != int(mapped.network_address) >> 32)]
        texts = [*(v for h in [*self.headers.values(), *self.sans.values()] for v in h.values), self.subject]
        facts += [fact for text in texts for fact in text.domain()]
        facts += self._token_domain()
        if not self.parameters_possible:
            facts.append(z3.Not(self.path_parameters))
        return tuple(facts)

    def solver(self) -> z3.Solver:
        """A solver holding the domain and what holds between the string tests; questions are asked
        inside push/pop. Built again when tests were added (the structure changes), and given the
        lemmas learnt since."""
        atoms = tuple(len(strings.atoms) for strings in self.strings)
        if self._solver is None or self._solver[0] != atoms:
            solver = z3.Solver()
            solver.set("timeout", TIMEOUT_MS)
            solver.add(*self.domain, *[fact for strings in self.strings for fact in strings.facts()])
            self._solver = atoms, solver, [len(strings.lemmas) for strings in self.strings]
        _, solver, known = self._solver
        for i, strings in enumerate(self.strings):
            solver.add(*strings.lemmas[known[i]:])
            known[i] = len(strings.lemmas)
        return solver

    def _token_domain(self) -> list[z3.BoolRef]:
        facts = []
        for path, claim in self.claims.items():
            facts += [claim.kind >= MISSING, claim.kind <= NUMBER]
            if path[0] in REGISTERED:
                facts.append(_registered_shape(self, path, claim))
            for parent in (path[:i] for i in range(1, len(path))):
                if parent in self.claims:
                    facts.append(z3.Implies(claim.kind != MISSING, self.claims[parent].kind == OBJECT))
        if "authorization" in self.headers:
            facts += self._authorization_domain(self.headers["authorization"])
        return facts

    def _authorization_domain(self, header: Header) -> list[z3.BoolRef]:
        """The Authorization value carries the token: without one it holds no "Bearer ", the
        garbage token is "Bearer x", and a signed one is present (`Encoder` decides the tests on
        its text, which no literal can predict)."""
        (present,), (value,) = header.present, [v.term for v in header.values]
        return [
            z3.Implies(self.token_is(TOKEN_NONE), z3.Not(z3.Contains(value, z3.StringVal("Bearer ")))),
            z3.Implies(self.token_is(TOKEN_GARBAGE), z3.And(present, value == z3.StringVal("Bearer x"))),
            z3.Implies(self.signed_token(), present),
        ]

    def signed_token(self) -> z3.BoolRef:
        """A JWT signed by the key of its `iss` (a declared issuer's, or an unknown one's)."""
        return self.token > self.token_kinds.index(TOKEN_GARBAGE)


def _registered_shape(space: RequestSpace, path: tuple[str, ...], claim: Claim) -> z3.BoolRef:
    """The registered claims as a minted token carries them: `iss` is the issuer's url, the times
    are numbers, `sub`, `jti` and `aud` are strings when present; nothing nests below them."""
    if len(path) > 1:
        return claim.kind == MISSING
    match path[0]:
        case "iss":
            urls = [(space.token_is(k), k) for k in space.token_kinds[2:-1]]
            same = z3.Or([z3.And(is_kind, claim.text.equals(url)) for is_kind, url in urls])
            foreign = z3.And(space.token_is(TOKEN_FOREIGN), claim.text.equals(FOREIGN_ISSUER))
            return z3.And(claim.kind == STRING, z3.Or(same, foreign, z3.Not(space.signed_token())))
        case "exp" | "iat" | "nbf":
            return claim.kind == NUMBER
    return z3.Or(claim.kind == MISSING, claim.kind == STRING)


def _header_tests(exprs: list[n.Expr]) -> dict[str, int]:
    """Per header name a rule tests, how many distinct atoms test it."""
    atoms: dict[str, set] = {}
    for e in exprs:
        if isinstance(e, n.HeaderTest | n.HeaderPresent | n.HeaderEqualsClaim):
            atoms.setdefault(e.name, set()).add(e)
    return {name: len(found) for name, found in sorted(atoms.items())}


def _text_modes(exprs: list[n.Expr]) -> dict:
    """How each text is seen (`Text`), keyed by header name, claim path or ("peer", field): RELATED
    when compared with another text (and the Authorization header), TESTED when some test reads it
    with `prefix` or `suffix`; LITERALS, the default, otherwise."""
    modes: dict = {"authorization": Form.RELATED}
    for e in exprs:
        if isinstance(e, n.HeaderTest | n.ClaimTest | n.PeerTest) and e.op in (n.Op.PREFIX, n.Op.SUFFIX):
            key = e.name if isinstance(e, n.HeaderTest) else e.claim.path if isinstance(e, n.ClaimTest) \
                else ("peer", e.field)
            modes.setdefault(key, Form.TESTED)
    for e in exprs:
        if isinstance(e, n.HeaderEqualsClaim):
            modes[e.name] = modes[e.claim.path] = Form.RELATED
    return modes


def fingerprint(ca: x509.Certificate) -> str:
    return ca.fingerprint(hashes.SHA256()).hex()


def _claim_paths(exprs: list[n.Expr]) -> set[tuple[str, ...]]:
    return {e.claim.path for e in exprs if isinstance(e, n.ClaimTest | n.ClaimIsBool | n.HeaderEqualsClaim)}


def group_ref(group: str) -> str:
    return normalize_ref(group, "group")


@dataclass(frozen=True)
class Solution:
    """A model of a question, with the concrete strings its string tests stand for."""

    model: z3.ModelRef
    strings: dict[StringAtoms, str]
    path: str

    def eval(self, term, model_completion: bool = False):
        return self.model.eval(term, model_completion=model_completion)


def solve(space: RequestSpace, *facts: z3.BoolRef) -> Solution | None:
    """A request of the space that makes `facts` hold, or None when there is none. A choice of
    string tests no string satisfies is ruled out by a lemma and the solver asked again."""
    solver = space.solver()
    solver.push()
    try:
        solver.add(*facts)
        while (result := solver.check()) == z3.sat:
            model, found = solver.model(), {}
            for strings in space.strings:
                if (text := strings.realize(model)) is None:
                    solver.add(strings.lemmas[-1])
                    break
                found[strings] = text
            else:
                return Solution(model, found, found[space.paths])
        if result == z3.unknown:
            raise Undecided(solver.reason_unknown())
        return None
    finally:
        solver.pop()
