"""Lua backend: a service's rules → the source of one Envoy Lua filter script.

The script is the runtime in lua_runtime/ (values, glob, net, request, claims, peer, decide) followed by this
service's constants and rule tests. Policy text reaches the script only through `lua_string`,
which writes every byte outside a small safe set as a decimal escape, so no policy can inject code.
"""

from __future__ import annotations

import ipaddress
import os
from functools import cache

from .. import nodes as n
from ..checked import Checked
from ..resources import resource_dir
from ..semantics.glob import ANY, parse_glob
from .resolve import PAYLOAD_KEY, membership, required_prefixes

RUNTIME_MODULES = ("values", "glob", "net", "request", "claims", "peer", "decide")
_SAFE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _.,/:@+=-")


def lua_string(text: str) -> str:
    """A Lua string literal holding exactly `text` (as UTF-8)."""
    data = text.encode("utf-8", "surrogatepass")
    return '"' + "".join(chr(b) if b in _SAFE_BYTES else f"\\{b:03d}" for b in data) + '"'


def _set(values) -> str:
    return "{" + ", ".join(f"[{lua_string(v)}] = true" for v in sorted(set(values))) + "}"


def _list(values) -> str:
    return "{" + ", ".join(lua_string(v) for v in values) + "}"


@cache
def runtime_modules() -> dict[str, str]:
    """Each runtime module's Lua source, by name, in load order."""
    folder = resource_dir("lua_runtime")
    return {name: (folder / f"{name}.lua").read_text(encoding="utf-8") for name in RUNTIME_MODULES}


def bundle(modules: dict[str, str]) -> str:
    """The runtime modules, each loaded into a local of the same name."""
    return "".join(f"local {name} = (function()\n{body}end)()\n" for name, body in modules.items())


def runtime_source() -> str:
    return bundle(runtime_modules())


class _Emitter(n.Visitor):
    """Emits one service: constants into table K, named conditions into table C, then the rules.
    `visit` gives a condition's Lua expression, a handler per node type."""

    lowered = frozenset({n.GrpcTest})  # the checker writes gRPC atoms out as path tests

    def __init__(self, checked: Checked):
        self.checked = checked
        self.constants: list[str] = []
        self.conditions: dict[str, int] = {}
        self.condition_lines: list[str] = []

    def constant(self, text: str) -> str:
        self.constants.append(text)
        return f"K[{len(self.constants)}]"

    def condition(self, name: str) -> str:
        if name not in self.conditions:
            index = self.conditions[name] = len(self.conditions) + 1
            body = self.visit(self.checked.conditions[name].expr)
            self.condition_lines.append(f"C[{index}] = function(q) return {body} end  -- condition {name}")
        return f"C[{self.conditions[name]}](q)"

    def claim(self, claim: n.Claim) -> str:
        return f"claims.value(q, {self.constant(_list(claim.path))})"

    def visit_And(self, expr: n.And) -> str:
        return "(" + " and ".join(self.visit(o) for o in expr.operands) + ")"

    def visit_Or(self, expr: n.Or) -> str:
        return "(" + " or ".join(self.visit(o) for o in expr.operands) + ")"

    def visit_Not(self, expr: n.Not) -> str:
        return f"(not {self.visit(expr.operand)})"

    def visit_ConditionRef(self, expr: n.ConditionRef) -> str:
        return self.condition(expr.name)

    def visit_Authenticated(self, expr: n.Authenticated) -> str:
        return "(q.payload ~= nil)"

    def visit_IssuerIs(self, expr: n.IssuerIs) -> str:
        return f"(q.payload ~= nil and q.payload.iss == {lua_string(self.checked.issuers[expr.name].url)})"

    def visit_MethodTest(self, expr: n.MethodTest) -> str:
        if expr.op is n.Op.EQ and len(expr.methods) == 1:
            return f"(q.method == {lua_string(expr.methods[0])})"
        return f"({self.constant(_set(expr.methods))}[q.method] == true)"

    def visit_PathTest(self, expr: n.PathTest) -> str:
        return self.path(expr.op, expr.values)

    def visit_HeaderTest(self, expr: n.HeaderTest) -> str:
        test, argument = _string_test(expr.op, expr.values)
        return f"request.any_header_value(q, {lua_string(expr.name)}, {test}, {self.constant(argument)})"

    def visit_HeaderPresent(self, expr: n.HeaderPresent) -> str:
        return f"(q.headers:getNumValues({lua_string(expr.name)}) > 0)"

    def visit_HeaderEqualsClaim(self, expr: n.HeaderEqualsClaim) -> str:
        return f"request.any_header_value(q, {lua_string(expr.name)}, claims.equals_claim, {self.claim(expr.claim)})"

    def visit_SourceIn(self, expr: n.SourceIn) -> str:
        return f"net.any_contains({self.constant(_networks(expr.cidrs))}, request.peer(q, net))"

    def visit_ClaimTest(self, expr: n.ClaimTest) -> str:
        return self.claim_test(expr.claim, expr.op, expr.values)

    def visit_ClaimIsBool(self, expr: n.ClaimIsBool) -> str:
        return f"({self.claim(expr.claim)} == {'true' if expr.value else 'false'})"

    def visit_Member(self, expr: n.Member | n.MemberOwners) -> str:
        facts = membership(self.checked, expr)
        table = (f"{{issuers = {_set(facts.issuer_urls)}, subjects = {_set(facts.subjects)}, "
                 f"entities = {_set(facts.entities)}}}")
        return f"claims.member(q, {self.constant(table)})"

    visit_MemberOwners = visit_Member

    def visit_PeerTest(self, expr: n.PeerTest) -> str:
        test, argument = _string_test(expr.op, expr.values)
        return f"peer.any(q, {lua_string(expr.field.value)}, {test}, {self.constant(argument)})"

    def visit_TimeWindow(self, expr: n.TimeWindow) -> str:
        return f"request.within(q, {expr.start}, {expr.end})"

    def visit_PeerTrusted(self, expr: n.PeerTrusted) -> str:
        return "peer.trusted(q)"  # one trust only when named (check.py): any verified certificate

    def path(self, op: n.Op, values) -> str:
        match op:
            case n.Op.EQ:
                return f"(q.path == {lua_string(values[0])})"
            case n.Op.IN:
                return f"({self.constant(_set(values))}[q.path] == true)"
            case n.Op.PREFIX:
                length = len(values[0].encode("utf-8", "surrogatepass"))
                return f"(q.path:sub(1, {length}) == {lua_string(values[0])})"
            case n.Op.GLOB:
                return f"glob.match({self.constant(_glob(values[0]))}, request.segments(q, glob))"
        raise AssertionError(op)

    def claim_test(self, claim: n.Claim, op: n.Op, values) -> str:
        value = self.claim(claim)
        match op:
            case n.Op.EQ | n.Op.IN:
                return f"claims.in_set({value}, {self.constant(_set(values))})"
            case n.Op.PREFIX:
                return f"claims.has_prefix({value}, {lua_string(values[0])})"
            case n.Op.SUFFIX:
                return f"claims.has_suffix({value}, {lua_string(values[0])})"
            case n.Op.CONTAINS:
                return f"claims.contains({value}, {lua_string(values[0])})"
        raise AssertionError(op)


def _string_test(op: n.Op, values) -> tuple[str, str]:
    """The runtime test comparing one string value, and its argument, for `op` over `values`."""
    return {
        n.Op.EQ: ("claims.in_set", _set(values)), n.Op.IN: ("claims.in_set", _set(values)),
        n.Op.PREFIX: ("claims.has_prefix", lua_string(values[0])),
        n.Op.SUFFIX: ("claims.has_suffix", lua_string(values[0])),
    }[op]


def _glob(pattern: str) -> str:
    """The parsed glob as lua_runtime/glob.lua reads it: an array of segments, each `glob.ANY` or
    the array of its literal pieces."""
    return "{" + ", ".join("glob.ANY" if s is ANY else _list(s) for s in parse_glob(pattern)) + "}"


def _networks(cidrs) -> str:
    tables = []
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr)
        data = ", ".join(str(b) for b in network.network_address.packed)
        tables.append(f"{{bytes = {{{data}}}, length = {network.prefixlen}}}")
    return "{" + ", ".join(tables) + "}"



def _rules_table(emitter: _Emitter, rules: list[n.Rule]) -> str:
    lines = ["decide.indexed({"]
    # Name order: when several rules of one effect match, the one whose name sorts first is named
    # (docs/language.md), as Envoy's RBAC engine, which keeps its policies in a sorted map, does.
    for rule in sorted(rules, key=lambda r: r.name):
        # The file's name only: the output must not depend on how the inputs were named.
        where = f"  -- {lua_string(f'{os.path.basename(rule.span.path)}:{rule.span.line}')}" if rule.span else ""
        prefixes = required_prefixes(emitter.checked, rule.expr)
        indexed = f" prefixes = {_list(prefixes)}," if prefixes else ""
        test = f"function(q) return {emitter.visit(rule.expr)} end"
        lines.append(f"  {{name = {lua_string(rule.name)},{indexed} test = {test}}}," + where)
    lines.append("})")
    return "\n".join(lines)


def service_script(checked: Checked, service: n.Service, deny: bool = True, allow: bool = True) -> str:
    """The Lua script deciding `service`: its deny rules when `deny`, its allow rules (and the
    default deny) when `allow`. Rules left out are enforced by RBAC filters around this one."""
    emitter = _Emitter(checked)
    deny_rules = _rules_table(emitter, [r for r in service.rules if deny and r.effect is n.Effect.DENY])
    allow_rules = _rules_table(emitter, [r for r in service.rules if allow and r.effect is n.Effect.ALLOW])
    constants = "\n".join(f"K[{i}] = {text}" for i, text in enumerate(emitter.constants, 1))
    return "\n".join([
        f"-- policyc: service {lua_string(service.name)}. Generated: edit the .policy files instead.",
        runtime_source(),
        "local K, C = {}, {}",
        constants,
        *emitter.condition_lines,
        f"local DENY = {deny_rules}",
        f"local ALLOW = {allow_rules}",
        "local POLICY = {",
        f"  service = {lua_string(service.name)},",
        "  deny = DENY,",
        "  allow = ALLOW,",
        f"  decides_allow = {'true' if allow else 'false'},",
        f"  dry_run = {'true' if service.mode is n.Mode.DRY_RUN else 'false'},",
        f"  payload_key = {lua_string(PAYLOAD_KEY)},",
        "}",
        "function envoy_on_request(handle)",
        "  decide.run(handle, POLICY, request)",
        "end",
        "",
    ])
