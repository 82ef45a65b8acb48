"""RBAC backend: a service's rules of one effect → an Envoy RBAC config (`rules`, or
`shadow_rules` in dry-run), or `rbac/unsupported` diagnostics for what RBAC cannot express.

Every condition becomes one Principal tree. Claims are read with `sourced_metadata` from the
payload jwt_authn stores; a matcher on a missing payload never matches, which is exactly the
contract's "claim atoms are false for anonymous callers", negations included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import nodes as n
from ..checked import Checked
from ..diagnostics import Diagnostic
from ..semantics.glob import glob_to_regex
from ..semantics.memo import per_object
from .accesslog import LUA_NAMESPACE, NATIVE_VERDICT_KEY
from .resolve import JWT_FILTER, PAYLOAD_KEY, Unsupported, membership, unsupported_diagnostic

LUA_VERDICT_POLICY = "policyc:lua-verdict"
NATIVE_VERDICT_POLICY = "policyc:native-verdict"
MTLS_PRINCIPAL = "envoy.rbac.principals.mtls_authenticated"
NEVER = {"not_id": {"any": True}}
ANY_STRING = {"safe_regex": {"regex": "(?s).*"}}


def _any_of(ids: list[dict]) -> dict:
    return ids[0] if len(ids) == 1 else {"or_ids": {"ids": ids}}


def _all_of(ids: list[dict]) -> dict:
    return ids[0] if len(ids) == 1 else {"and_ids": {"ids": ids}}


def _string_match(op: n.Op, value: str) -> dict:
    """Envoy's StringMatcher for one comparison (prefix/suffix must not be empty there)."""
    if op in (n.Op.PREFIX, n.Op.SUFFIX) and value == "":
        return ANY_STRING
    key = {n.Op.EQ: "exact", n.Op.IN: "exact", n.Op.PREFIX: "prefix", n.Op.SUFFIX: "suffix"}[op]
    return {key: value}


def _claim(path: tuple[str, ...], value: dict, node: n.Expr) -> dict:
    if any(key == "" for key in path):
        raise Unsupported(node, "RBAC cannot name a claim whose name is empty")
    segments = [{"key": key} for key in (PAYLOAD_KEY, *path)]
    return {"sourced_metadata": {"metadata_matcher": {"filter": JWT_FILTER, "path": segments, "value": value}}}


def _mtls(config: dict) -> dict:
    """A principal on the verified client certificate: false without one, whatever `config` says."""
    return {"custom": {"name": MTLS_PRINCIPAL, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.rbac.principals.mtls_authenticated.v3.Config", **config}}}


def _san_match(field: n.PeerField, op: n.Op, value: str) -> dict:
    if field is n.PeerField.DNS and op in (n.Op.EQ, n.Op.IN):
        # An `exact` DNS matcher verifies a host name, so a wildcard SAN `*.example.org` would
        # satisfy "a.example.org". A full-match regex of the literal compares the SAN as written.
        regex = "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in value)
        return {"safe_regex": {"regex": regex or "(?:)"}}  # Envoy refuses an empty regex
    return _string_match(op, value)


def _header(name: str, string_match: dict) -> dict:
    return {"header": {"name": name, "string_match": string_match}}


class PrincipalBuilder(n.Visitor):
    """Turns conditions into RBAC Principal trees for one checked policy set: a handler per node
    type, raising `Unsupported` for what RBAC cannot express."""

    lowered = frozenset({n.GrpcTest})  # the checker writes gRPC atoms out as path tests

    def __init__(self, checked: Checked):
        self.checked = checked
        self._built = _built(checked)

    def policy(self, rule: n.Rule) -> dict:
        """The rule's RBAC policy, built once per checked set however many route configs hold the
        rule, and whether planning asked first: the same object in each, which the YAML writer
        then lays out once."""
        found = self._built.policies.get(id(rule))
        if found is None:
            policy = {"permissions": [{"any": True}], "principals": [self.build(rule.expr)]}
            found = self._built.policies[id(rule)] = (rule, policy)
        return found[1]

    def build(self, expr: n.Expr) -> dict:
        """The principal of a condition."""
        return self.visit(expr)

    def visit_And(self, expr: n.And) -> dict:
        return _all_of([self.visit(o) for o in expr.operands])

    def visit_Or(self, expr: n.Or) -> dict:
        return _any_of([self.visit(o) for o in expr.operands])

    def visit_Not(self, expr: n.Not) -> dict:
        return {"not_id": self.visit(expr.operand)}

    def visit_ConditionRef(self, expr: n.ConditionRef) -> dict:
        # Built once per checked set, like `member` below: one object wherever it is used.
        conditions = self._built.conditions
        if expr.name not in conditions:
            conditions[expr.name] = self.visit(self.checked.conditions[expr.name].expr)
        return conditions[expr.name]

    def visit_Authenticated(self, expr: n.Authenticated) -> dict:
        return _claim((), {"present_match": True}, expr)

    def visit_IssuerIs(self, expr: n.IssuerIs) -> dict:
        return _claim(("iss",), {"string_match": {"exact": self.checked.issuers[expr.name].url}}, expr)

    def visit_MethodTest(self, expr: n.MethodTest) -> dict:
        return _any_of([_header(":method", {"exact": m}) for m in expr.methods])

    def visit_PathTest(self, expr: n.PathTest) -> dict:
        return _any_of([{"url_path": {"path": self._path_match(expr.op, v)}} for v in expr.values])

    def visit_HeaderTest(self, expr: n.HeaderTest) -> dict:
        return _any_of([_header(expr.name, _string_match(expr.op, v)) for v in expr.values])

    def visit_HeaderPresent(self, expr: n.HeaderPresent) -> dict:
        return {"header": {"name": expr.name, "present_match": True}}

    def visit_HeaderEqualsClaim(self, expr: n.HeaderEqualsClaim) -> dict:
        raise Unsupported(expr, "RBAC cannot compare a header with a claim")

    def visit_SourceIn(self, expr: n.SourceIn) -> dict:
        return _any_of([_cidr(c) for c in expr.cidrs])

    def visit_ClaimTest(self, expr: n.ClaimTest) -> dict:
        path = expr.claim.path
        if expr.op is n.Op.CONTAINS:  # one value (the grammar's): an element of a list, or the string
            (value,) = expr.values
            return _any_of([
                _claim(path, {"list_match": {"one_of": {"string_match": {"exact": value}}}}, expr),
                _claim(path, {"string_match": {"exact": value}}, expr),
            ])
        return _any_of([_claim(path, {"string_match": _string_match(expr.op, v)}, expr) for v in expr.values])

    def visit_ClaimIsBool(self, expr: n.ClaimIsBool) -> dict:
        return _claim(expr.claim.path, {"bool_match": expr.value}, expr)

    def visit_Member(self, expr: n.Member | n.MemberOwners) -> dict:
        memberships = self._built.memberships
        if expr not in memberships:  # by the group or entity as written: what the catalog resolves
            memberships[expr] = self._membership(expr)
        return memberships[expr]

    visit_MemberOwners = visit_Member

    def visit_TimeWindow(self, expr: n.TimeWindow) -> dict:
        # RBAC has no clock: a window written into its config would hold until a redeploy.
        raise Unsupported(expr, "RBAC cannot read the time, so it cannot end a grant: compile the service for "
                          "`lua`, `native` or `auto`")

    def visit_PeerTrusted(self, expr: n.PeerTrusted) -> dict:
        # One trust only when named (check.py): any verified certificate.
        return _mtls({"any_validated_client_certificate": True})

    def visit_PeerTest(self, expr: n.PeerTest) -> dict:
        if expr.field is n.PeerField.SUBJECT:
            # `authenticated.principal_name` would also match the SANs, and the typed SAN
            # matcher has no subject: the Lua filter reads the subject on its own.
            raise Unsupported(expr, "RBAC cannot match a certificate's subject apart from its SANs")
        return _any_of([_mtls({"san_matcher": {"san_type": expr.field.name,
                                               "matcher": _san_match(expr.field, expr.op, v)}})
                        for v in expr.values])

    @staticmethod
    def _path_match(op: n.Op, value: str) -> dict:
        if op is n.Op.GLOB:
            return {"safe_regex": {"regex": glob_to_regex(value)}}
        return {"prefix": value} if op is n.Op.PREFIX else {"exact": value}

    def _membership(self, node: n.Member | n.MemberOwners) -> dict:
        # Exact matchers, not one regex: Envoy refuses regexes past a small program size.
        facts = membership(self.checked, node)
        if not facts.issuer_urls or not (facts.subjects or facts.entities):
            return NEVER
        who = [_claim(("sub",), {"string_match": {"exact": s}}, node) for s in facts.subjects]
        for entity in facts.entities:
            who.append(_claim(("ent",), {"list_match": {"one_of": {"string_match": {"exact": entity}}}}, node))
            who.append(_claim(("ent",), {"string_match": {"exact": entity}}, node))
        issuers = [_claim(("iss",), {"string_match": {"exact": url}}, node) for url in facts.issuer_urls]
        return _all_of([_any_of(issuers), _any_of(who)])


def _cidr(text: str) -> dict:
    address, length = text.split("/")
    return {"direct_remote_ip": {"address_prefix": address, "prefix_len": int(length)}}


@dataclass
class _Built:
    """What was built for one checked set, so that it is built once and is one object wherever
    it is used. Not the set itself: its cache entry would keep it alive."""

    policies: dict[int, tuple[n.Rule, dict]] = field(default_factory=dict)  # by the rule's identity,
    # kept with the rule so that the id stays that rule's
    conditions: dict[str, dict] = field(default_factory=dict)  # principal by condition name
    memberships: dict[n.Member | n.MemberOwners, dict] = field(default_factory=dict)


@per_object
def _built(checked: Checked) -> _Built:
    return _Built()


def policy_name(service: n.Service, rule: n.Rule) -> str:
    return f"{service.name}/{rule.name}"


def rules_config(builder: PrincipalBuilder, service: n.Service,
                 effect: n.Effect) -> tuple[dict | None, list[Diagnostic]]:
    """The RBAC config enforcing (or, in dry-run, shadowing) the service's rules of `effect`.
    None when a deny set is empty: no filter needs to run. An empty allow set denies everything."""
    rules = [r for r in service.rules if r.effect is effect]
    if effect is n.Effect.DENY and not rules:
        return None, []
    policies, diagnostics = {}, []
    for rule in rules:
        try:
            policies[policy_name(service, rule)] = builder.policy(rule)
        except Unsupported as unsupported:
            diagnostics.append(unsupported_diagnostic("rbac/unsupported", rule, unsupported))
    body = {"action": effect.name, "policies": policies}
    key = "shadow_rules" if service.mode is n.Mode.DRY_RUN else "rules"
    return {key: body}, diagnostics


def require_verdict(service: n.Service, allow_config: dict | None) -> dict:
    """The allow RBAC config behind a Lua filter, made to demand the verdict it records under
    `LUA_NAMESPACE`. Envoy lets a request through when a Lua script fails where no pcall reaches
    (envoy#14980), so without a verdict nothing is allowed: `allow` when the filter decides the
    allow rules (no config of its own), `no-deny` beside every RBAC allow policy when it decides
    only denials."""
    if allow_config is None:
        return _backstop(service, LUA_VERDICT_POLICY, _lua_verdict("allow"))
    rules = allow_config["rules"]
    policies = {name: {**policy, "principals": [_all_of([*policy["principals"], _lua_verdict("no-deny")])]}
                for name, policy in rules["policies"].items()}
    return {"rules": {**rules, "policies": policies}}


def require_native_verdict(service: n.Service) -> dict:
    """The allow RBAC config of an enforced native service's routes: it lets through only a request
    the native filter recorded `allow` for, in the filter state it logs (`NATIVE_VERDICT_KEY`:
    "allow" or "allow <rule>"), which nothing but that filter writes."""
    allowed = [{"filter_state": {"key": NATIVE_VERDICT_KEY, "string_match": match}}
               for match in ({"exact": "allow"}, {"prefix": "allow "})]
    return _backstop(service, NATIVE_VERDICT_POLICY, {"or_ids": {"ids": allowed}})


def _backstop(service: n.Service, policy: str, verdict: dict) -> dict:
    return {"rules": {"action": "ALLOW", "policies": {
        f"{service.name}/{policy}": {"permissions": [{"any": True}], "principals": [verdict]}}}}


def _lua_verdict(decision: str) -> dict:
    return {"sourced_metadata": {"metadata_matcher": {
        "filter": LUA_NAMESPACE, "path": [{"key": "decision"}], "value": {"string_match": {"exact": decision}}}}}


def expressible(checked: Checked, rule: n.Rule) -> bool:
    try:
        PrincipalBuilder(checked).policy(rule)
    except Unsupported:
        return False
    return True
