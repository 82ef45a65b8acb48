"""`decide`: one concrete request, decided by the solver. Takes a checked policy set and a `Request`
as the proxy hands it to the rules (`admission.read` finds its service, normalized path and header
table), with its peer address, token and client certificate, and returns the `Verdict` the encoding
(encode.py) gives it: the status, the reason, the deciding rule and whether it reaches the upstream.

The request becomes values of the request space's variables (space.py), as a caller of `what-can`
does (callers.py), and the solver answers; the interpreter is not asked. The solver must also find
that no other request of the space with those values is decided otherwise: a decision that
depends on something the values leave open is an error, never a guess. So the decision corpus
proves the encoding case by case, as it proves the interpreter and the backends
(tests/analysis/test_cases_analysis.py).

A request outside the model's bounds (docs/analysis.md, "Bounds") is refused with ValueError,
which says why.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import z3

from .. import nodes as n
from ..checked import Checked
from ..semantics.net import peer_address
from ..semantics.paths import KNOWN_METHODS
from .callers import certificate_names, claim_at, claims_problem, passes, sans_problem, token_claims, values_of
from .encode import Encoder
from .space import TOKEN_NONE, RequestSpace, exprs_of
from .strings import Undecided
from .witness import AnalysisError

# The proxy's answers before any rule, by status (a 403 without a rule is the token check's
# `forbidden` or the default deny, told apart by the token check's own term).
_ANSWERS = {0: "handshake-refused", 400: "bad-request", 401: "unauthenticated", 404: "no-service"}


@dataclass(frozen=True)
class Token:
    """A token the token check accepted: the declared issuer whose key signed it (valid now, its
    `iss` that issuer's url) and exactly its other claims (`aud` too: none unless given)."""

    issuer: str
    claims: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Certificate:
    """A client certificate presented over TLS: the SHA-256 fingerprint of the CA that issued it
    (None: a CA no `trust` names), its SANs, and its subject as the proxy writes it."""

    ca: str | None
    subject: str
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """A request as the proxy hands it to the rules: the service its host is routed to (None: no
    service serves it), the method, the normalized path, the header table (lower-case name →
    values, as the filters see them), the peer address, and the caller's token and certificate."""

    service: str | None
    method: str
    path: str
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "127.0.0.1"
    token: Token | None = None
    certificate: Certificate | None = None


@dataclass(frozen=True)
class Verdict:
    """The decision of one request: the status the policy answers (a dry-run service's upstream
    answers in its place, and `allowed` says so), the reason (as the interpreter names it), the
    deciding rule, and whether the request reaches the upstream."""

    status: int
    reason: str
    rule: str | None
    allowed: bool


def _problem(checked: Checked, request: Request) -> str | None:
    """What puts `request` outside the model's bounds, if anything."""
    if request.service is not None and request.service not in checked.services:
        return f"no service is named {request.service!r}"
    if request.method not in KNOWN_METHODS or request.method == "CONNECT":
        return f"method {request.method!r} never reaches a rule"
    if request.token is not None:
        if request.token.issuer not in checked.issuers:
            return f"no issuer is named {request.token.issuer!r}"
        if found := claims_problem(request.token.claims):
            return found
    if request.certificate is not None:
        return sans_problem((*request.certificate.uris, *request.certificate.dns))
    return None


class Decider:
    """Decides requests against one checked set, over one request space per service (of that
    service's tests alone), each built once."""

    def __init__(self, checked: Checked):
        self.checked = checked
        self._spaces: dict[str | None, tuple[RequestSpace, tuple]] = {}

    def _space(self, service: str | None) -> tuple[RequestSpace, tuple]:
        """The space of `service`'s tests, and the terms of its decision: the status, the rule,
        whether the request reaches the upstream, and whether the token check forbids it."""
        if service not in self._spaces:
            space = RequestSpace([self.checked], _scope(service))
            encoder = Encoder(space, self.checked)
            outcome = encoder.outcome(self.checked.services[service] if service else None)
            # Every term first: the values below must cover every literal and test encoded.
            terms = (outcome.status, outcome.rule, outcome.allowed, encoder.token_failure()[1])
            self._spaces[service] = space, terms
        return self._spaces[service]

    def decide(self, request: Request) -> Verdict:
        """The verdict of `request`. Raises ValueError for a request outside the model's bounds,
        `Undecided` when the solver gives up, and `AnalysisError` when the model holds no such
        request or does not fix its decision: a fault of the analysis."""
        if (found := _problem(self.checked, request)) is not None:
            raise ValueError(found)
        space, terms = self._space(request.service)
        pairs = _values(space, self.checked, request)
        solver = space.solver()
        solver.push()
        try:
            solver.add(*[variable == value for variable, value in pairs])
            model = _model(solver, "the request space holds no request like it")
            values = [model.eval(term, model_completion=True) for term in terms]
            solver.add(z3.Or([term != value for term, value in zip(terms, values, strict=True)]))
            if _check(solver) == z3.sat:
                other = [solver.model().eval(term, model_completion=True) for term in terms]
                raise AnalysisError(f"its decision depends on more than the request gives: (status, rule, "
                                    f"allowed, forbidden) is {values} or {other}")
        finally:
            solver.pop()
        status, rule_id, allowed, forbidden = (v.as_long() if z3.is_int_value(v) else z3.is_true(v) for v in values)
        rule = space.rule_names[rule_id] if rule_id >= 0 else None
        return Verdict(status, self._reason(request.service, status, rule, forbidden), rule, allowed)

    def _reason(self, service: str | None, status: int, rule: str | None, forbidden: bool) -> str:
        if rule is not None:
            return next(r.effect.value for r in self.checked.services[service].rules if r.name == rule)
        if status in _ANSWERS:
            return _ANSWERS[status]
        return "forbidden" if forbidden else "default-deny"


def decide(checked: Checked, request: Request) -> Verdict:
    """The verdict of one request (see `Decider.decide`; a `Decider` reuses its spaces)."""
    return Decider(checked).decide(request)


def _check(solver: z3.Solver) -> z3.CheckSatResult:
    result = solver.check()
    if result == z3.unknown:
        raise Undecided(solver.reason_unknown())
    return result


def _model(solver: z3.Solver, otherwise: str) -> z3.ModelRef:
    if _check(solver) != z3.sat:
        raise AnalysisError(otherwise)
    return solver.model()


def _scope(service: str | None) -> set[str]:
    """The services whose rules a request to `service` is asked about with."""
    return {service} if service else set()


def _values(space: RequestSpace, checked: Checked, request: Request) -> list:
    """(variable, value) pairs that make the request space's request `request`. Every string
    test takes its value on the real string, so no string has to be found for them."""
    method = request.method if request.method in space.methods else space.methods[-1]
    pairs = [(space.method, z3.IntVal(space.methods.index(method))), *space.paths.values_on(request.path),
             *_source(space, request.source), *_token(space, checked, request.token),
             *_certificate(space, checked, request.service, request.certificate)]
    tests = _header_tests(checked, request.service, request.token)
    for name, header in space.headers.items():
        # A signed token's Authorization value is decided by what "Bearer " decides (encode.py).
        if name == "authorization" and request.token is not None:
            continue
        pairs += values_of(header, request.headers.get(name, ()), tests.get(name, []), f"values of header {name!r}")
    return pairs


def _source(space: RequestSpace, source: str) -> list:
    address = peer_address(source)  # an IPv4-mapped IPv6 peer is seen as IPv4
    return [(space.v6, z3.BoolVal(isinstance(address, ipaddress.IPv6Address))),
            (space.address, z3.BitVecVal(int(address), 128))]


def _token(space: RequestSpace, checked: Checked, token: Token | None) -> list:
    kind = TOKEN_NONE if token is None else checked.issuers[token.issuer].url
    pairs = [(space.token, z3.IntVal(space.token_kinds.index(kind)))]
    return pairs if token is None else pairs + token_claims(space, token.claims, any_audience=False)


def _certificate(space: RequestSpace, checked: Checked, service: str | None, certificate: Certificate | None) -> list:
    if certificate is None:
        return [(space.certificate, z3.IntVal(-1))]
    issuer = space.cas.index(certificate.ca) if certificate.ca in space.cas else len(space.cas)
    names = certificate_names(space, checked, certificate.uris, certificate.dns, certificate.subject, _scope(service))
    return [(space.certificate, z3.IntVal(issuer)), *names]


def _header_tests(checked: Checked, service: str | None, token: Token | None) -> dict[str, list[Callable]]:
    """Per header name, each test a rule or condition makes on one of its values (whether it is
    present at all, `values_of` keeps)."""
    tests: dict[str, list[Callable]] = {}
    for root in exprs_of(checked, _scope(service)):
        for e in n.walk(root):
            if isinstance(e, n.HeaderTest):
                tests.setdefault(e.name, []).append(passes(e))
            elif isinstance(e, n.HeaderEqualsClaim):
                claim = claim_at(token.claims, e.claim.path) if token else None
                tests.setdefault(e.name, []).append(lambda value, claim=claim: value == claim)
    return tests
