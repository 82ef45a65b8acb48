"""Reference interpreter: a `Checked` policy set and a `RawRequest` → `Decision`.

This module *defines* the semantics every backend must reproduce (contract §2–§5): the proxy's
path and host handling, token verification, deny-overrides, default deny and dry-run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from .. import nodes as n
from ..catalog import normalize_ref
from ..check import Checked
from .glob import glob_matches
from .headers import header_table
from .hosts import admit_request
from .net import address_in
from .paths import Rejected
from .peer import HandshakeRefused, Peer, verified_peer
from .request import Decision, RawRequest
from .tokens import Token, TokenError, authenticate

_UPSTREAM_STATUS = 200  # what the test upstreams answer; a real upstream answers what it likes


@dataclass(frozen=True)
class Context:
    """The request as the policy filters see it, after the proxy's own processing."""

    method: str
    path: str
    headers: Mapping[str, tuple[str, ...]]  # lower-case name → values in arrival order
    source: str
    token: Token | None
    peer: Peer | None = None  # a verified client certificate


def claim_value(claims: dict, path: tuple[str, ...]):
    """The claim at `path` (object keys), or None when any step is missing or not an object."""
    value = claims
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _compare_string(op: n.Op, value, wanted: tuple[str, ...]) -> bool:
    if op is n.Op.CONTAINS:
        held = value if isinstance(value, list) else [value]
        return any(isinstance(v, str) and v == wanted[0] for v in held)
    if not isinstance(value, str):
        return False
    match op:
        case n.Op.EQ | n.Op.IN:
            return value in wanted
        case n.Op.PREFIX:
            return value.startswith(wanted[0])
        case n.Op.SUFFIX:
            return value.endswith(wanted[0])
    raise AssertionError(op)


def _peer_values(peer: Peer, field: n.PeerField) -> tuple[str, ...]:
    return {n.PeerField.URI: peer.uris, n.PeerField.DNS: peer.dns, n.PeerField.SUBJECT: (peer.subject,)}[field]


class Evaluator:
    """Decides conditions for one request against one checked policy set."""

    def __init__(self, checked: Checked, ctx: Context):
        self.checked = checked
        self.ctx = ctx

    def holds(self, expr: n.Expr) -> bool:
        ctx = self.ctx
        match expr:
            case n.And(operands):
                return all(self.holds(o) for o in operands)
            case n.Or(operands):
                return any(self.holds(o) for o in operands)
            case n.Not(operand):
                return not self.holds(operand)
            case n.ConditionRef(name):
                return self.holds(self.checked.conditions[name].expr)
            case n.Authenticated():
                return ctx.token is not None
            case n.IssuerIs(name):
                return ctx.token is not None and ctx.token.issuer == name
            case n.MethodTest(_, methods):
                return ctx.method in methods
            case n.PathTest(op, values):
                return self.path_matches(op, values)
            case n.HeaderTest(name, op, values):
                return any(_compare_string(op, v, values) for v in ctx.headers.get(name, ()))
            case n.HeaderPresent(name):
                return name in ctx.headers
            case n.HeaderEqualsClaim(name, claim):
                value = self.claim(claim)
                return isinstance(value, str) and value in ctx.headers.get(name, ())
            case n.SourceIn(cidrs):
                return address_in(ctx.source, cidrs)
            case n.ClaimTest(claim, op, values):
                return ctx.token is not None and _compare_string(op, self.claim(claim), values)
            case n.ClaimIsBool(claim, value):
                return ctx.token is not None and self.claim(claim) is value
            case n.Member(group):
                return self.member_of_group(normalize_ref(group, "group"))
            case n.MemberOwners(entity):
                return self.is_owner(normalize_ref(entity, None))
            case n.PeerTest(field, op, values):
                peer_values = _peer_values(ctx.peer, field) if ctx.peer else ()
                return any(_compare_string(op, v, values) for v in peer_values)
            case n.PeerTrusted(trust):
                return ctx.peer is not None and trust in (None, ctx.peer.trust)
        raise TypeError(f"no evaluation for {type(expr).__name__}")

    def path_matches(self, op: n.Op, values: tuple[str, ...]) -> bool:
        path = self.ctx.path
        match op:
            case n.Op.EQ | n.Op.IN:
                return path in values
            case n.Op.PREFIX:
                return path.startswith(values[0])
            case n.Op.GLOB:
                return glob_matches(values[0], path)
        raise AssertionError(op)

    def claim(self, claim: n.Claim):
        return claim_value(self.ctx.token.claims, claim.path) if self.ctx.token else None

    def catalog_caller(self) -> tuple[str | None, list]:
        """`sub` and `ent` of a token whose issuer names catalog users; (None, []) otherwise."""
        token = self.ctx.token
        if token is None or not self.checked.issuers[token.issuer].catalog_users:
            return None, []
        sub, ent = token.claims.get("sub"), token.claims.get("ent", [])
        return (sub if isinstance(sub, str) else None), (ent if isinstance(ent, list) else [ent])

    def member_of_group(self, group: str) -> bool:
        sub, ent = self.catalog_caller()
        catalog = self.checked.catalog
        if sub in catalog.users_in(group):
            return True
        return any(isinstance(e, str) and e in catalog.groups_within(group) for e in ent)

    def is_owner(self, entity: str) -> bool:
        owner = self.checked.catalog.owner_of(entity)
        if owner.startswith("group:"):
            return self.member_of_group(owner)
        sub, ent = self.catalog_caller()
        return sub == owner or owner in [e for e in ent if isinstance(e, str)]


def _caller(token: Token | None, peer: Peer | None) -> dict:
    caller = {}
    if token is not None:
        sub = token.claims.get("sub")
        caller = {"issuer": token.issuer, "sub": sub if isinstance(sub, str) else None}
    if peer is not None:  # named as the access log names it: its first URI SAN, else its subject
        caller["peer"] = peer.uris[0] if peer.uris else peer.subject
    return caller


def _rule_decision(checked: Checked, service: n.Service, ctx: Context) -> Decision:
    evaluator = Evaluator(checked, ctx)
    caller = _caller(ctx.token, ctx.peer)
    # Deny overrides allow. When several rules of the deciding effect match, the one whose name
    # sorts first is named: the same whatever the order of the rules, and what Envoy's RBAC
    # engine (a sorted map of policies) reports.
    for effect, status in ((n.Effect.DENY, 403), (n.Effect.ALLOW, _UPSTREAM_STATUS)):
        for rule in sorted((r for r in service.rules if r.effect is effect), key=lambda r: r.name):
            if evaluator.holds(rule.expr):
                return Decision(status, effect.value, rule.name, service.name, caller=caller)
    return Decision(403, "default-deny", None, service.name, caller=caller)


def evaluate(checked: Checked, request: RawRequest, now: float | None = None,
             keys: Mapping[str, dict] | None = None) -> Decision:
    """Decide `request` as the emitted Envoy config would. `keys` adds JWKS for `jwks "<uri>"`
    issuers (the proxy fetches those; without keys their tokens fail verification)."""
    now = time.time() if now is None else now
    peer = verified_peer(request.certificate, checked.trusts, now)
    if isinstance(peer, HandshakeRefused):  # before any HTTP: no status, no service, no log line
        return Decision(0, "handshake-refused", detail=peer.reason)
    hosts = {name: service.hosts for name, service in checked.services.items()}
    host_lines = ([request.host] if request.host is not None else []) + [
        value for name, value in request.headers if name.lower() == "host"]
    admitted = admit_request(request.method, request.target, host_lines, hosts, request.version)
    if isinstance(admitted, Rejected):
        return Decision(admitted.status, "bad-request", detail=admitted.reason)
    identity = authenticate(request.headers, checked.issuers, {**checked.keys, **(keys or {})}, now)
    service = checked.services.get(admitted.service)
    if isinstance(identity, TokenError):
        reason = "forbidden" if identity.status == 403 else "unauthenticated"
        if service is not None and service.mode is n.Mode.DRY_RUN:
            return Decision(_UPSTREAM_STATUS, reason, None, service.name, identity.reason, dry_run=True,
                            enforced_status=identity.status)
        return Decision(identity.status, reason, detail=identity.reason)
    if service is None:
        return Decision(404, "no-service", detail=f"no service serves host {admitted.authority!r}")
    headers = [(name, value) for name, value in request.headers if name.lower() != "host"]
    ctx = Context(request.method, admitted.target.path, header_table(headers), request.source, identity, peer)
    decision = _rule_decision(checked, service, ctx)
    if service.mode is n.Mode.DRY_RUN:
        return Decision(_UPSTREAM_STATUS, decision.reason, decision.rule, service.name, dry_run=True,
                        enforced_status=decision.status, caller=decision.caller)
    return decision
