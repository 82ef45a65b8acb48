"""One checked policy set over a `RequestSpace`: takes the set and the space and returns z3 terms
for every condition, rule and decision, following the interpreter (policyc/interpret/evaluator.py)
step by step: the token check, the host, deny-overrides, allow, default deny and dry-run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import z3

from .. import nodes as n
from ..checked import Checked
from ..semantics.tokens import _normalized_audience
from .space import BOOL, LIST, STRING, TOKEN_FOREIGN, TOKEN_GARBAGE, Claim, RequestSpace, fingerprint

_BEARER = "Bearer "


@dataclass(frozen=True)
class Outcome:
    """A version's decision of the symbolic request: the status it enforces, the rule it names
    (`RequestSpace.rule_id`, -1 for none) and whether the request reaches the upstream."""

    status: z3.ArithRef
    rule: z3.ArithRef
    allowed: z3.BoolRef


def _compare_jwt(op: n.Op, values: tuple[str, ...]) -> bool:
    """A test on `Authorization: Bearer <signed JWT>`: the JWT's text is a signature no literal
    predicts, so only what "Bearer " itself decides is known."""
    match op:
        case n.Op.PREFIX:
            return _BEARER.startswith(values[0])
        case n.Op.SUFFIX:
            return values[0] == ""
    return False


class Encoder(n.Visitor):
    """The z3 terms of one checked policy set: `holds(expr)` and `outcome(service)`."""

    lowered = frozenset({n.GrpcTest})  # the checker writes gRPC atoms out as path tests

    def __init__(self, space: RequestSpace, checked: Checked, now: float | None = None):
        self.space = space
        self.checked = checked
        self.now = time.time() if now is None else now  # what grants' windows are read at
        self._conditions: dict[str, z3.BoolRef] = {}
        self.valid = {name: self._valid(issuer) for name, issuer in checked.issuers.items()}
        self.authenticated = z3.Or(list(self.valid.values())) if self.valid else z3.BoolVal(False)
        self.trust_of = _trust_of_ca(checked)
        self.verified = space.issued_by(set(self.trust_of))
        # Without a trust the listener asks for no certificate: one offered is not seen at all.
        self.handshake_refused = z3.And(space.certificate != -1, z3.Not(self.verified)) if checked.trusts \
            else z3.BoolVal(False)

    # ---------------------------------------------------------------- the token check

    def _valid(self, issuer: n.Issuer) -> z3.BoolRef:
        return z3.And(self.space.token_is(issuer.url), self._audience_ok(issuer))

    def _audience_ok(self, issuer: n.Issuer) -> z3.BoolRef:
        if not issuer.audiences:
            return z3.BoolVal(True)
        aud = self.space.claim(("aud",))
        # The proxy drops one scheme and then one trailing slash from both sides.
        spellings = {f"{scheme}{_normalized_audience(a)}{slash}" for a in issuer.audiences
                     for scheme in ("", "https://", "http://") for slash in ("", "/")}
        return z3.And(aud.kind == STRING, z3.Or([aud.text.equals(s) for s in sorted(spellings)]))

    def token_failure(self) -> tuple[z3.BoolRef, z3.BoolRef]:
        """(401, 403): a token presented and refused. With no issuer there is no token check."""
        if not self.checked.issuers:
            return z3.BoolVal(False), z3.BoolVal(False)
        space, urls = self.space, {i.url for i in self.checked.issuers.values()}
        strangers = [k for k in space.token_kinds if k in (TOKEN_GARBAGE, TOKEN_FOREIGN) or k.startswith("http")
                     and k not in urls]
        unauthenticated = z3.Or([space.token_is(k) for k in strangers])
        forbidden = z3.Or([z3.And(space.token_is(i.url), z3.Not(self._audience_ok(i)))
                           for i in self.checked.issuers.values()])
        return unauthenticated, forbidden

    # ---------------------------------------------------------------- conditions

    def holds(self, expr: n.Expr) -> z3.BoolRef:
        """Whether the symbolic request satisfies `expr`, as a z3 term."""
        return self.visit(expr)

    def visit_And(self, expr: n.And) -> z3.BoolRef:
        return z3.And([self.visit(o) for o in expr.operands])

    def visit_Or(self, expr: n.Or) -> z3.BoolRef:
        return z3.Or([self.visit(o) for o in expr.operands])

    def visit_Not(self, expr: n.Not) -> z3.BoolRef:
        return z3.Not(self.visit(expr.operand))

    def visit_ConditionRef(self, expr: n.ConditionRef) -> z3.BoolRef:
        if expr.name not in self._conditions:
            self._conditions[expr.name] = self.visit(self.checked.conditions[expr.name].expr)
        return self._conditions[expr.name]

    def visit_TimeWindow(self, expr: n.TimeWindow) -> z3.BoolRef:
        # Time is no variable of the encoding: a grant's rule holds as it does at `now`, the
        # instant its examples are replayed at, so every answer is the proxy's at that instant
        # (docs/analysis.md); `policyc grants` lists the windows to come.
        return z3.BoolVal(expr.start <= self.now < expr.end)

    def visit_Authenticated(self, expr: n.Authenticated) -> z3.BoolRef:
        return self.authenticated

    def visit_IssuerIs(self, expr: n.IssuerIs) -> z3.BoolRef:
        return self.valid[expr.name]

    def visit_MethodTest(self, expr: n.MethodTest) -> z3.BoolRef:
        return self.space.method_in(expr.methods)

    def visit_PathTest(self, expr: n.PathTest) -> z3.BoolRef:
        return self.path_matches(expr.op, expr.values)

    def visit_HeaderTest(self, expr: n.HeaderTest) -> z3.BoolRef:
        op, values = expr.op, expr.values
        return self._header(expr.name, lambda v: v.test(op, values), _compare_jwt(op, values))

    def visit_HeaderPresent(self, expr: n.HeaderPresent) -> z3.BoolRef:
        return self._header(expr.name, lambda v: z3.BoolVal(True), True)

    def visit_HeaderEqualsClaim(self, expr: n.HeaderEqualsClaim) -> z3.BoolRef:
        c = self.space.claim(expr.claim.path)
        test = self._header(expr.name, lambda v: v.same_as(c.text), False)
        return z3.And(self.authenticated, c.kind == STRING, test)

    def visit_SourceIn(self, expr: n.SourceIn) -> z3.BoolRef:
        return z3.Or([self.space.source_in(c) for c in expr.cidrs])

    def visit_ClaimTest(self, expr: n.ClaimTest) -> z3.BoolRef:
        c, op, values = self.space.claim(expr.claim.path), expr.op, expr.values
        test = c.contains(values[0]) if op is n.Op.CONTAINS else c.is_string(op, values)
        return z3.And(self.authenticated, test)

    def visit_ClaimIsBool(self, expr: n.ClaimIsBool) -> z3.BoolRef:
        c = self.space.claim(expr.claim.path)
        return z3.And(self.authenticated, c.kind == BOOL, c.flag == expr.value)

    def visit_Member(self, expr: n.Member | n.MemberOwners) -> z3.BoolRef:
        members = self.checked.members(expr)
        within = z3.Or([self._ent_holds(entity) for entity in sorted(members.entities)])
        return z3.And(self._catalog_caller(), z3.Or(self._sub_is(members.subjects), within))

    visit_MemberOwners = visit_Member

    def visit_PeerTest(self, expr: n.PeerTest) -> z3.BoolRef:
        op, values = expr.op, expr.values
        return z3.And(self.verified, self.space.peer_values(expr.field).any_value(lambda v: v.test(op, values)))

    def visit_PeerTrusted(self, expr: n.PeerTrusted) -> z3.BoolRef:
        if expr.trust is None:
            return self.verified
        return self.space.issued_by({ca for ca, name in self.trust_of.items() if name == expr.trust})

    def path_matches(self, op: n.Op, values: tuple[str, ...]) -> z3.BoolRef:
        return self.space.paths.atom(op, values)

    def _header(self, name: str, test, with_jwt: bool) -> z3.BoolRef:
        found = self.space.headers[name].any_value(test)
        if name == "authorization":
            return z3.If(self.space.signed_token(), z3.BoolVal(with_jwt), found)
        return found

    # ---------------------------------------------------------------- catalog membership

    def _catalog_caller(self) -> z3.BoolRef:
        """A valid token of an issuer whose tokens name catalog users."""
        return z3.Or([self.valid[name] for name, i in self.checked.issuers.items() if i.catalog_users])

    def _ent_holds(self, ref: str) -> z3.BoolRef:
        ent: Claim = self.space.claim(("ent",))
        return z3.Or(z3.And(ent.kind == LIST, ent.holds(ref)), z3.And(ent.kind == STRING, ent.text.equals(ref)))

    def _sub_is(self, users) -> z3.BoolRef:
        sub = self.space.claim(("sub",))
        return z3.And(sub.kind == STRING, z3.Or([sub.text.equals(u) for u in sorted(users)]))

    # ---------------------------------------------------------------- decisions

    def rule_matches(self, service: n.Service, effect: n.Effect) -> list[tuple[str, z3.BoolRef]]:
        """The rules of `effect`, in the order the interpreter names them (by name)."""
        rules = sorted((r for r in service.rules if r.effect is effect), key=lambda r: r.name)
        return [(r.name, self.holds(r.expr)) for r in rules]

    def path_refused(self, service: n.Service | None) -> z3.BoolRef:
        """The proxy refuses the path before any rule: `;` parameters, unless the service takes them."""
        return z3.BoolVal(False) if service is not None and service.path_parameters else self.space.path_parameters

    def outcome(self, service: n.Service | None) -> Outcome:
        """The decision of a request routed to `service` (None: no service serves its host)."""
        return self._handshake(self._refusal(service, self._decided(service)))

    def _refusal(self, service: n.Service | None, outcome: Outcome) -> Outcome:
        refused = self.path_refused(service)
        return Outcome(z3.If(refused, 400, outcome.status), z3.If(refused, -1, outcome.rule),
                       z3.And(z3.Not(refused), outcome.allowed))

    def _decided(self, service: n.Service | None) -> Outcome:
        unauthenticated, forbidden = self.token_failure()
        refused = z3.Or(unauthenticated, forbidden)
        refused_status = z3.If(unauthenticated, 401, 403)
        if service is None:
            return Outcome(z3.If(refused, refused_status, 404), z3.IntVal(-1), z3.BoolVal(False))
        denies = self.rule_matches(service, n.Effect.DENY)
        allows = self.rule_matches(service, n.Effect.ALLOW)
        rule = z3.IntVal(-1)
        for name, matches in reversed(denies + allows):
            rule = z3.If(matches, self.space.rule_id(name), rule)
        denied = z3.Or([m for _, m in denies])
        allowed = z3.Or([m for _, m in allows])
        status = z3.If(refused, refused_status, z3.If(denied, 403, z3.If(allowed, 200, 403)))
        rule = z3.If(refused, -1, rule)
        reaches = z3.BoolVal(True) if service.mode is n.Mode.DRY_RUN else status == 200
        return Outcome(status, rule, reaches)

    def _handshake(self, outcome: Outcome) -> Outcome:
        """A certificate the listener does not trust ends the connection before any HTTP: status 0."""
        refused = self.handshake_refused
        return Outcome(z3.If(refused, 0, outcome.status), z3.If(refused, -1, outcome.rule),
                       z3.And(z3.Not(refused), outcome.allowed))


def _trust_of_ca(checked: Checked) -> dict[str, str]:
    """Per trusted CA (fingerprint), the trust that names a certificate it issued: the first by
    name, as the listener's verification reports it."""
    found: dict[str, str] = {}
    for name, cas in sorted(checked.trusts.items()):
        for ca in cas:
            found.setdefault(fingerprint(ca), name)
    return found
