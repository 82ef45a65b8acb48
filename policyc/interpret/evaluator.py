"""Reference interpreter: a `Checked` policy set and a `RawRequest` → `Decision`.

This module *defines* the semantics every backend must reproduce (contract §2–§5): the proxy's
path and host handling, token verification, deny-overrides, default deny and dry-run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from cryptography import x509

from .. import nodes as n
from ..checked import Checked
from ..semantics import h2
from ..semantics.compare import compare_string, path_matches
from ..semantics.grpc import grpc_status, is_grpc_call
from ..semantics.headers import header_table, padded, value_tested_headers
from ..semantics.hosts import Admitted, admit_received, admit_request
from ..semantics.memo import per_object
from ..semantics.net import address_in
from ..semantics.paths import KNOWN_METHODS, Rejected
from ..semantics.peer import HandshakeRefused, Peer, verified_peer
from ..semantics.request import H2C, HTTP1, Decision, RawRequest
from ..semantics.tokens import Token, TokenError, authenticate, claim_value
from .index import service_index

_UPSTREAM_STATUS = 200  # what the test upstreams answer; a real upstream answers what it likes
_STATUS = {n.Effect.DENY: 403, n.Effect.ALLOW: _UPSTREAM_STATUS}


@dataclass(frozen=True)
class Context:
    """The request as the policy filters see it, after the proxy's own processing."""

    method: str
    path: str
    headers: Mapping[str, tuple[str, ...]]  # lower-case name → values in arrival order
    source: str
    token: Token | None
    peer: Peer | None = None  # a verified client certificate
    now: float = 0.0  # when the request arrives, in seconds since the epoch (what grants' windows read)


def _peer_values(peer: Peer, field: n.PeerField) -> tuple[str, ...]:
    return {n.PeerField.URI: peer.uris, n.PeerField.DNS: peer.dns, n.PeerField.SUBJECT: (peer.subject,)}[field]


class Evaluator(n.Visitor):
    """Decides conditions for one request against one checked policy set. gRPC atoms never reach
    it: the checker writes them out as the path tests they mean."""

    lowered = frozenset({n.GrpcTest})

    def __init__(self, checked: Checked, ctx: Context):
        self.checked = checked
        self.ctx = ctx

    def holds(self, expr: n.Expr) -> bool:
        # The handler by type, not by `visit`'s lookup of its name: this runs for every atom of
        # every rule of every request, and that getattr per call cost a 1,000-rule service a
        # fifth of its decisions per second (bench/interpreter.py).
        return _HANDLERS[type(expr)](self, expr)

    visit = holds

    def visit_And(self, e: n.And) -> bool:
        return all(map(self.holds, e.operands))

    def visit_Or(self, e: n.Or) -> bool:
        return any(map(self.holds, e.operands))

    def visit_Not(self, e: n.Not) -> bool:
        return not self.holds(e.operand)

    def visit_ConditionRef(self, e: n.ConditionRef) -> bool:
        return self.holds(self.checked.conditions[e.name].expr)

    def visit_Authenticated(self, e: n.Authenticated) -> bool:
        return self.ctx.token is not None

    def visit_IssuerIs(self, e: n.IssuerIs) -> bool:
        return self.ctx.token is not None and self.ctx.token.issuer == e.name

    def visit_MethodTest(self, e: n.MethodTest) -> bool:
        return self.ctx.method in e.methods

    def visit_PathTest(self, e: n.PathTest) -> bool:
        return path_matches(e.op, e.values, self.ctx.path)

    def visit_HeaderTest(self, e: n.HeaderTest) -> bool:
        return any(compare_string(e.op, v, e.values) for v in self.ctx.headers.get(e.name, ()))

    def visit_HeaderPresent(self, e: n.HeaderPresent) -> bool:
        return e.name in self.ctx.headers

    def visit_HeaderEqualsClaim(self, e: n.HeaderEqualsClaim) -> bool:
        value = self.claim(e.claim)
        return isinstance(value, str) and value in self.ctx.headers.get(e.name, ())

    def visit_SourceIn(self, e: n.SourceIn) -> bool:
        return address_in(self.ctx.source, e.cidrs)

    def visit_ClaimTest(self, e: n.ClaimTest) -> bool:
        return self.ctx.token is not None and compare_string(e.op, self.claim(e.claim), e.values)

    def visit_ClaimIsBool(self, e: n.ClaimIsBool) -> bool:
        return self.ctx.token is not None and self.claim(e.claim) is e.value

    def visit_Member(self, e: n.Member | n.MemberOwners) -> bool:
        sub, ent = self.catalog_caller()
        members = self.checked.members(e)
        return sub in members.subjects or any(isinstance(x, str) and x in members.entities for x in ent)

    visit_MemberOwners = visit_Member

    def visit_PeerTest(self, e: n.PeerTest) -> bool:
        values = _peer_values(self.ctx.peer, e.field) if self.ctx.peer else ()
        return any(compare_string(e.op, v, e.values) for v in values)

    def visit_PeerTrusted(self, e: n.PeerTrusted) -> bool:
        return self.ctx.peer is not None and e.trust in (None, self.ctx.peer.trust)

    def visit_TimeWindow(self, e: n.TimeWindow) -> bool:
        # The proxy reads its clock in whole seconds; with whole-second ends this is the same test.
        return e.start <= self.ctx.now < e.end

    def claim(self, claim: n.Claim):
        return claim_value(self.ctx.token.claims, claim.path) if self.ctx.token else None

    def catalog_caller(self) -> tuple[str | None, list]:
        """`sub` and `ent` of a token whose issuer names catalog users; (None, []) otherwise."""
        token = self.ctx.token
        if token is None or not _names_catalog_users(self.checked.issuers[token.issuer]):
            return None, []
        sub, ent = token.claims.get("sub"), token.claims.get("ent", [])
        return (sub if isinstance(sub, str) else None), (ent if isinstance(ent, list) else [ent])


# Built from the methods present, so that a missing one is named by the test of every engine's
# handlers (tests/unit/test_architecture.py) rather than breaking the import.
_HANDLERS: dict[type, Callable[[Evaluator, n.Expr], bool]] = {
    node_type: handler for node_type in n.EXPRESSIONS
    if (handler := getattr(Evaluator, f"visit_{node_type.__name__}", None)) is not None}


@per_object
def _mode(service: n.Service) -> n.Mode:
    return service.mode


@per_object
def _names_catalog_users(issuer: n.Issuer) -> bool:
    return issuer.catalog_users


@per_object
def _hosts_by_service(checked: Checked) -> dict[str, tuple[str, ...]]:
    return {name: service.hosts for name, service in checked.services.items()}


@per_object
def _parameters_allowed(checked: Checked) -> frozenset[str]:
    return frozenset(name for name, service in checked.services.items() if service.path_parameters)


def _caller(token: Token | None, peer: Peer | None) -> dict:
    caller = {}
    if token is not None:
        sub = token.claims.get("sub")
        caller = {"issuer": token.issuer, "sub": sub if isinstance(sub, str) else None}
    if peer is not None:  # named as the access log names it: its URI SANs joined by ",", else its subject
        caller["peer"] = ",".join(peer.uris) if peer.uris else peer.subject
    return caller


def _rule_decision(checked: Checked, service: n.Service, ctx: Context) -> Decision:
    evaluator = Evaluator(checked, ctx)
    caller = _caller(ctx.token, ctx.peer)
    # The first rule in deciding order that holds (index.py): only the rules the request can
    # match are tried, and a rule left out could not have been the first to hold.
    index = service_index(checked)(service)
    for position in index.candidates(ctx.method, ctx.path):
        rule = index.rules[position]
        if evaluator.holds(rule.expr):
            return Decision(_STATUS[rule.effect], rule.effect.value, rule.name, service.name, caller=caller)
    return Decision(403, "default-deny", None, service.name, caller=caller)


def evaluate(checked: Checked, request: RawRequest, now: float | None = None,
             keys: Mapping[str, dict] | None = None,
             trusts: Mapping[str, tuple[x509.Certificate, ...]] | None = None) -> Decision:
    """Decide `request` as the emitted Envoy config would. `keys` adds JWKS for `jwks "<uri>"`
    issuers (the proxy fetches those; without keys their tokens fail verification), or stands in
    for an issuer's own; `trusts` likewise stands in CA certificates for declared trusts. A gRPC
    call's decision carries the grpc-status its client reads (semantics/grpc.py)."""
    decision = _decide(checked, request, time.time() if now is None else now, keys, trusts)
    lines = [(name, value) for name, value in request.headers if name.lower() != "host"]
    grpc = is_grpc_call(header_table(lines, http2=request.protocol != HTTP1))
    status = grpc_status(decision.status, decision.reason, decision.detail) if grpc else None
    return decision if status is None else replace(decision, grpc_status=status)


def _decide(checked: Checked, request: RawRequest, now: float, keys: Mapping[str, dict] | None,
            trusts: Mapping[str, tuple[x509.Certificate, ...]] | None) -> Decision:
    # h2c is HTTP/2 in the clear: there is no handshake in which to present a certificate.
    cas = {**checked.trusts, **trusts} if trusts else checked.trusts
    peer = verified_peer(request.certificate if request.protocol != H2C else None, cas, now)
    if isinstance(peer, HandshakeRefused):  # before any HTTP: no status, no service, no log line
        return Decision(0, "handshake-refused", detail=peer.reason)
    admitted = admit(checked, request)
    if isinstance(admitted, Rejected):
        return Decision(admitted.status, "bad-request" if admitted.status else "reset", detail=admitted.reason)
    (admitted, table) = admitted
    identity = authenticate(admitted.headers, checked.issuers, {**checked.keys, **(keys or {})}, now,
                            http2=request.protocol != HTTP1)
    service = checked.services.get(admitted.service)
    if isinstance(identity, TokenError):
        reason = "forbidden" if identity.status == 403 else "unauthenticated"
        if service is not None and _mode(service) is n.Mode.DRY_RUN:
            return Decision(_UPSTREAM_STATUS, reason, None, service.name, identity.reason, dry_run=True,
                            enforced_status=identity.status)
        return Decision(identity.status, reason, detail=identity.reason)
    if service is None:
        return Decision(404, "no-service", detail=f"no service serves host {admitted.authority!r}")
    ctx = Context(request.method, admitted.target.path, table, request.source, identity, peer, now)
    decision = _rule_decision(checked, service, ctx)
    if _mode(service) is n.Mode.DRY_RUN:
        return Decision(_UPSTREAM_STATUS, decision.reason, decision.rule, service.name, dry_run=True,
                        enforced_status=decision.status, caller=decision.caller)
    return decision


def admit(checked: Checked, request: RawRequest) -> tuple[Admitted, Mapping[str, tuple[str, ...]]] | Rejected:
    """The request Envoy routes and the header table its filters see, or Envoy's own answer:
    the codec's (HTTP/1 or HTTP/2), the HCM's, or a refusal route's (backends/envoy.py). Raises
    ValueError for what the HTTP/1 model leaves out (CONNECT, a LF ending the request line early)."""
    if request.protocol == HTTP1:
        host_lines = ([request.host] if request.host is not None else []) + [
            value for name, value in request.headers if name.lower() == "host"]
        others = [(name, value) for name, value in request.headers if name.lower() != "host"]
        admitted = admit_request(request.method, request.target, host_lines, _hosts_by_service(checked),
                                 request.version, others, _parameters_allowed(checked))
    else:
        received = h2.receive(request)
        if isinstance(received, Rejected):
            return received
        admitted = admit_received(received.received, received.authority, received.fields,
                                  _hosts_by_service(checked), _parameters_allowed(checked))
        if not isinstance(admitted, Rejected) and request.method not in KNOWN_METHODS:
            return Rejected(400, "unknown method")  # a refusal route: HTTP/2 carries any method token
    if isinstance(admitted, Rejected):
        return admitted
    table = header_table(admitted.headers, http2=request.protocol != HTTP1)
    if padded(table, value_tested_headers(checked)):
        return Rejected(400, "header value with surrounding whitespace")
    return admitted, table
