"""`policyc what-can`: takes one checked policy set and a caller (a token from an issuer with its
claims, a catalog user or group, a client certificate from a trust, both, or neither) and returns,
per service, which endpoints (the method and path tests of its rules: the columns of `report`'s
access matrix) the caller may call: `always`, `sometimes` (it depends on headers or source) or
`never`. The caller is one more row of that matrix (matrix.py), so every cell is decided exactly by
the solver and its example requests are replayed through the interpreter.

A caller's token carries exactly the claims given; `iss` and the times are those of a valid token,
and `aud`, unless given, any audience its issuer accepts. A certificate carries exactly the SANs
given and, unless one is given, any subject.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import z3

from .. import nodes as n
from ..checked import Checked
from ..semantics.compare import compare_string
from ..semantics.peer import subject_name, subject_text
from ..semantics.tokens import claim_value
from .matrix import Matrix, Row, ServiceMatrix, Values
from .space import (
    BOOL,
    LIST,
    MISSING,
    NUMBER,
    OBJECT,
    SAN_SHAPE,
    STRING,
    TOKEN_NONE,
    Claim,
    Header,
    RequestSpace,
    exprs_of,
    solve,
)
from .strings import Undecided

CALLER = "caller"
# Claims the token check sets itself: every analysed token is valid now, from its issuer.
SET_BY_TOKEN = {"iss", "exp", "iat", "nbf"}
# Registered claims the analysis models as strings only (docs/analysis.md, "Bounds").
_STRING_CLAIMS = {"sub", "jti", "aud"}
ABSENT = object()  # a claim the token does not carry


@dataclass(frozen=True)
class Caller:
    """Who asks. `issuers`: a token from one of them (several: the issuers marked `catalog users`,
    for a catalog user or group), none for no token; `claims` its claims. `trust`: a client
    certificate from that trust, with exactly the SANs `uris` and `dns` and the `subject` given
    (None: any), or no certificate."""

    issuers: tuple[str, ...] = ()
    claims: dict = field(default_factory=dict)
    trust: str | None = None
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    subject: str | None = None

    def describe(self) -> str:
        token = "no token"
        if self.issuers:
            token = f"a token from {' or '.join(self.issuers)}" + (
                f" with claims {json.dumps(self.claims, sort_keys=True)}" if self.claims else " with no claims")
        certificate = "no client certificate"
        if self.trust is not None:
            names = [f"{kind} {json.dumps(list(values))}" for kind, values in (("URI SANs", self.uris),
                                                                               ("DNS SANs", self.dns)) if values]
            names.append(f"subject {json.dumps(self.subject)}" if self.subject is not None else "any subject")
            certificate = f"a client certificate from trust {self.trust} ({', '.join(names)})"
        return f"{token}, {certificate}"

    def to_json(self) -> dict:
        found: dict = {"issuers": list(self.issuers), "claims": self.claims} if self.issuers else {"token": None}
        if self.trust is None:
            return found | {"certificate": None}
        return found | {"certificate": {"trust": self.trust, "uri": list(self.uris), "dns": list(self.dns),
                                        "subject": self.subject}}


def canonical_subject(text: str) -> str:
    """`text` (RFC 4514) as the proxy writes a certificate's subject; ValueError when it is none."""
    return subject_text(subject_name(text))


def caller_problem(checked: Checked, caller: Caller) -> str | None:
    """What makes `caller` one the analysis cannot ask about, if anything: a name the policies do
    not declare, or a claim or name of a shape a valid token or certificate does not have."""
    for name in caller.issuers:
        if name not in checked.issuers:
            return f"no issuer is named {name!r}"
    if caller.trust is not None and caller.trust not in checked.trusts:
        return f"no trust is named {caller.trust!r}"
    return claims_problem(caller.claims) or sans_problem((*caller.uris, *caller.dns))


def claims_problem(claims: dict) -> str | None:
    """What makes a valid token's `claims` ones the analysis does not model, if anything."""
    for name, value in claims.items():
        if name in SET_BY_TOKEN:
            return f"`{name}` is set by the token check: every analysed token is valid now, from its issuer"
        if name in _STRING_CLAIMS and not isinstance(value, str):
            return f"`{name}` is analysed as one string"
    return None


def sans_problem(sans) -> str | None:
    """What makes a certificate's SANs ones the analysis does not generate, if anything."""
    for san in sans:
        if not z3.is_true(z3.simplify(z3.InRe(z3.StringVal(san), SAN_SHAPE))):
            return f"SAN {san!r} is not visible ASCII"
    return None


@dataclass
class CallerAccess:
    """What `caller` may call: per service, its matrix of one row; or why no request of the caller
    reaches any rule (`refused`)."""

    caller: Caller
    refused: str | None = None
    matrices: list[ServiceMatrix] = field(default_factory=list)


def what_can(checked: Checked, caller: Caller, services: list[str]) -> CallerAccess:
    """The endpoints of each of `services` that `caller` may call (`caller_problem` must be None)."""
    matrix = Matrix(checked)
    row = caller_row(matrix, caller)
    refused = _refusal(matrix, row)
    if refused is not None:
        return CallerAccess(caller, refused)
    return CallerAccess(caller, None, [matrix.service_matrix(checked.services[name], [row]) for name in services])


def caller_row(matrix: Matrix, caller: Caller) -> Row:
    """The access-matrix row of `caller`: its token and certificate as values of the request space."""
    pairs, facts = _token(matrix, caller)
    certificate_pairs, certificate_facts = _certificate(matrix, caller)
    values = Values(pairs + certificate_pairs)
    return Row(CALLER, caller.describe(), z3.And(values.condition, *facts, *certificate_facts), values)


def _token(matrix: Matrix, caller: Caller) -> tuple[list, list]:
    space = matrix.space
    if not caller.issuers:
        return [(space.token, z3.IntVal(space.token_kinds.index(TOKEN_NONE)))], []
    kinds = [space.token_kinds.index(matrix.checked.issuers[name].url) for name in caller.issuers]
    pairs, facts = [], []
    if len(kinds) == 1:
        pairs.append((space.token, z3.IntVal(kinds[0])))
    else:
        facts.append(z3.Or([space.token == kind for kind in kinds]))
    return pairs + token_claims(space, caller.claims, any_audience="aud" not in caller.claims), facts


def token_claims(space: RequestSpace, claims: dict, any_audience: bool) -> list[tuple[z3.ExprRef, z3.ExprRef]]:
    """(variable, value) pairs that give a valid token exactly `claims`, but `iss` and the times
    (the token check sets those) and, with `any_audience`, `aud` (left to the token check too)."""
    return [pair for path, claim in space.claims.items()
            if path[0] not in SET_BY_TOKEN and not (any_audience and path == ("aud",))
            for pair in claim_is(claim, claim_at(claims, path))]


def claim_at(claims: dict, path: tuple[str, ...]):
    """The claim at `path` (object keys), `ABSENT` when any step is missing or not an object."""
    return claim_value(claims, path, ABSENT)


def claim_is(claim: Claim, value) -> list[tuple[z3.ExprRef, z3.ExprRef]]:
    """(variable, value) pairs that make the claim the JSON `value` (`ABSENT`: missing), as far
    as any rule can see."""
    if value is ABSENT:
        return [(claim.kind, z3.IntVal(MISSING))]
    if isinstance(value, bool):
        return [(claim.kind, z3.IntVal(BOOL)), (claim.flag, z3.BoolVal(value))]
    if isinstance(value, str):
        return [(claim.kind, z3.IntVal(STRING)), *claim.text.assigned(value)]
    if isinstance(value, list):
        return [(claim.kind, z3.IntVal(LIST)),
                *[(held, z3.BoolVal(literal in value)) for literal, held in claim.members.items()]]
    return [(claim.kind, z3.IntVal(OBJECT if isinstance(value, dict) else NUMBER))]


def _certificate(matrix: Matrix, caller: Caller) -> tuple[list, list]:
    space = matrix.space
    if caller.trust is None:
        return [(space.certificate, z3.IntVal(-1))], []
    cas = {ca for ca, name in matrix.encoder.trust_of.items() if name == caller.trust}
    return certificate_names(space, matrix.checked, caller.uris, caller.dns, caller.subject), [space.issued_by(cas)]


def certificate_names(space: RequestSpace, checked: Checked, uris, dns, subject: str | None,
                      services: set[str] | None = None) -> list:
    """(variable, value) pairs that give a client certificate the SANs `uris` and `dns` and the
    `subject` (None: any); ValueError when the request space (of `services`' tests, of all for
    None) cannot hold them."""
    tests = [e for root in exprs_of(checked, services) for e in n.walk(root) if isinstance(e, n.PeerTest)]
    pairs = []
    for field_, values in ((n.PeerField.URI, uris), (n.PeerField.DNS, dns)):
        pairs += values_of(space.sans[field_], values, [passes(t) for t in tests if t.field is field_],
                           f"{field_} SANs of a certificate")
    if subject is not None:
        atoms = space.subject.atoms
        if atoms is not None and not atoms.fits_shape(subject):
            raise ValueError(f"subject {subject!r} is not of a shape the analysis generates "
                             "(`CN=` and a plain name, or one a test spells)")
        pairs += space.subject.assigned(subject)
    return pairs


def values_of(header: Header, values, tests: list[Callable[[str], bool]], what: str) -> list:
    """(variable, value) pairs that give `header` (a request header, or the SANs of one kind) the
    `values`, as far as its `tests` (predicates on one value) tell them apart, and one value at
    least when there is one, so that it is present as it is; ValueError when that takes more
    values than it holds."""
    chosen = representatives(values, [*tests, lambda value: True])
    if len(chosen) > len(header.present):
        raise ValueError(f"the analysis tells apart at most {len(header.present)} {what}")
    pairs = []
    for i, present in enumerate(header.present):
        pairs.append((present, z3.BoolVal(i < len(chosen))))
        pairs += header.values[i].assigned(chosen[i]) if i < len(chosen) else []
    return pairs


def passes(test: n.HeaderTest | n.PeerTest) -> Callable[[str], bool]:
    """Whether one value passes `test`."""
    return lambda value: compare_string(test.op, value, test.values)


def representatives(values, tests: list[Callable[[str], bool]]) -> list[str]:
    """Some of `values` that pass exactly the tests (predicates on one value) some value passes:
    rules see the several values of one header or SAN kind only through their tests, and the
    request space holds a few of each."""
    chosen: list[str] = []
    for test in tests:
        if not any(test(c) for c in chosen):
            chosen += [v for v in values if test(v)][:1]
    return chosen


def _refusal(matrix: Matrix, row: Row) -> str | None:
    """Why no request of the row's caller passes the TLS handshake and the token check, or None."""
    try:
        if matrix.analyzer.possible(row.caller):
            return None
        forbidden = solve(matrix.space, row.caller, matrix.encoder.token_failure()[1])
    except Undecided:
        return None  # the cells say `undecided`
    if forbidden is not None:
        return "the token check refuses its token (403): its `aud` is not one its issuer accepts"
    return "the TLS handshake or the token check refuses it"
