"""Native backend: services → the config texts of the native policy filter (native_runtime/). It
decides every rule the checker accepts.

The texts are the filter's decision index, version 5 (native_runtime/README.md, *The config and
the decision*), each a header line and then: for the listener, the policy filters its chain holds
beside this one (`listener_config`); for the route of a service the filter decides, that service's
section (`route_config`); for the route of a service other filters decide, the filters it relies
on (`relies_config`). So the rules are in the routes, and a change of rules reloads only them.
A section is `service`, `mode`, the named conditions
its rules use (`cond`, numbered per section, each after the ones it refers to), its deny rules
and its allow rules, each sorted by name, its shares, `end`. A share names the rules a path with
its prefix can match (resolve.route_shares, the split RBAC's routes use), so a request tests only
those. Conditions are in prefix notation; every string is `x` and the lower-case hex of its UTF-8
bytes, so no policy text can break a line or a token.

The filter reads the request (method, path, headers, peer address) and the claims of a verified
token, which jwt_authn forwards in the header PAYLOAD_HEADER (backends/envoy.py asks it to). Token
atoms become claim tests (`member` its `iss`, `sub` and `ent` tests, as the interpreter decides it);
with no issuer there is no token, and they are false. Of a client certificate it reads whether one
was presented, its subject and every URI and DNS SAN; the SANs come from the module's network
filter, which records them on the connection (native_runtime/README.md, *Client certificates*), so
a service that tests `peer.uri` or `peer.dns` needs it in the listener (`reads_sans`). No rule
tests PAYLOAD_HEADER (the checker refuses it: semantics/headers.py).
"""

from __future__ import annotations

from .. import nodes as n
from ..checked import Checked
from ..semantics.glob import ANY, parse_glob
from ..semantics.net import parse_cidr
from .resolve import membership, route_shares

HEADER = "policyc-native 5\n"
NEVER = "or 0"  # an expression that does not hold


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def hex_string(text: str) -> str:
    """One string token: `x` and the lower-case hex of `text`'s UTF-8 bytes."""
    return "x" + _utf8(text).hex()


def _tokens(*parts: str) -> str:
    return " ".join(parts)


def _counted(values) -> str:
    """`<n> x<v1> … x<vn>`."""
    return _tokens(str(len(values)), *map(hex_string, values))


def _network(cidr: str) -> str:
    """`4/<length>/<8 hex digits>` or `6/<length>/<32 hex digits>` (checked CIDRs only)."""
    network = parse_cidr(cidr)
    if network is None:
        raise ValueError(f"not a checked CIDR: {cidr!r}")
    return f"{network.version}/{network.prefixlen}/{network.network_address.packed.hex()}"


def _glob(pattern: str) -> str:
    """`glob <k> s1 … sk`: each segment `any` (`**`) or `seg <m>` and its literal pieces."""
    segments = ["any" if s is ANY else _tokens("seg", _counted(s)) for s in parse_glob(pattern)]
    return _tokens("glob", str(len(segments)), *segments)


class _Renderer(n.Visitor):
    """One service's conditions in prefix notation; the named conditions they use are numbered
    and rendered into `conditions` as they are first met, after those they refer to."""

    lowered = frozenset({n.GrpcTest})  # the checker writes gRPC atoms out as path tests

    def __init__(self, checked: Checked):
        self.checked = checked
        self.indexes: dict[str, int] = {}
        self.conditions: list[str] = []  # expression of condition i

    def visit_And(self, expr: n.And) -> str:
        return _tokens("and", str(len(expr.operands)), *map(self.visit, expr.operands))

    def visit_Or(self, expr: n.Or) -> str:
        return _tokens("or", str(len(expr.operands)), *map(self.visit, expr.operands))

    def visit_Not(self, expr: n.Not) -> str:
        return _tokens("not", self.visit(expr.operand))

    def visit_ConditionRef(self, expr: n.ConditionRef) -> str:
        if expr.name not in self.indexes:
            # Rendered first, so the conditions it refers to get the lower numbers.
            body = self.visit(self.checked.conditions[expr.name].expr)
            self.indexes[expr.name] = len(self.conditions)
            self.conditions.append(body)
        return f"ref {self.indexes[expr.name]}"

    def visit_MethodTest(self, expr: n.MethodTest) -> str:
        return _tokens("method", _counted(expr.methods))

    def visit_TimeWindow(self, expr: n.TimeWindow) -> str:
        return _tokens("time", str(expr.start), str(expr.end))

    def visit_PathTest(self, expr: n.PathTest) -> str:
        match expr.op:
            case n.Op.EQ | n.Op.IN:
                return _tokens("path", "eq", _counted(expr.values))
            case n.Op.PREFIX:
                (prefix,) = expr.values
                return _tokens("path", "prefix", hex_string(prefix))
            case n.Op.GLOB:
                (pattern,) = expr.values
                return _tokens("path", _glob(pattern))
        raise AssertionError(expr.op)

    def visit_HeaderTest(self, expr: n.HeaderTest) -> str:
        name = hex_string(expr.name)
        match expr.op:
            case n.Op.EQ | n.Op.IN:
                return _tokens("header", name, "eq", _counted(expr.values))
            case n.Op.PREFIX | n.Op.SUFFIX:
                (value,) = expr.values
                return _tokens("header", name, expr.op.value, hex_string(value))
        raise AssertionError(expr.op)

    def visit_HeaderPresent(self, expr: n.HeaderPresent) -> str:
        return _tokens("present", hex_string(expr.name))

    def visit_SourceIn(self, expr: n.SourceIn) -> str:
        return _tokens("source", str(len(expr.cidrs)), *map(_network, expr.cidrs))

    def visit_Authenticated(self, expr: n.Authenticated) -> str:
        return "token" if self.checked.issuers else NEVER

    def visit_IssuerIs(self, expr: n.IssuerIs) -> str:
        # A verified token's `iss` is its issuer's URL: jwt_authn picks the provider by it.
        return self._claim(("iss",), "eq", _counted([self.checked.issuers[expr.name].url]))

    def visit_ClaimTest(self, expr: n.ClaimTest) -> str:
        match expr.op:
            case n.Op.EQ | n.Op.IN | n.Op.CONTAINS:
                test = "contains" if expr.op is n.Op.CONTAINS else "eq"
                return self._claim(expr.claim.path, test, _counted(expr.values))
            case n.Op.PREFIX | n.Op.SUFFIX:
                (value,) = expr.values
                return self._claim(expr.claim.path, expr.op.value, hex_string(value))
        raise AssertionError(expr.op)

    def visit_ClaimIsBool(self, expr: n.ClaimIsBool) -> str:
        return self._claim(expr.claim.path, "true" if expr.value else "false")

    def visit_HeaderEqualsClaim(self, expr: n.HeaderEqualsClaim) -> str:
        if not self.checked.issuers:
            return NEVER
        return _tokens("header", hex_string(expr.name), "claim", _counted(expr.claim.path))

    def visit_Member(self, expr: n.Member | n.MemberOwners) -> str:
        """The interpreter's catalog caller: a token from an issuer naming catalog users, whose
        `sub` is one of the subjects or whose `ent` (a list, or one value) holds one of the
        entities."""
        facts = membership(self.checked, expr)
        if not facts.issuer_urls:
            return NEVER
        issuer = self._claim(("iss",), "eq", _counted(facts.issuer_urls))
        subject = self._claim(("sub",), "eq", _counted(facts.subjects))
        entity = self._claim(("ent",), "contains", _counted(facts.entities))
        return _tokens("and", "2", issuer, "or", "2", subject, entity)

    visit_MemberOwners = visit_Member

    def _claim(self, path: tuple[str, ...], *test: str) -> str:
        """`claim <path> <test>`; never true without an issuer, for then there is no token."""
        return _tokens("claim", _counted(path), *test) if self.checked.issuers else NEVER

    def visit_PeerTest(self, expr: n.PeerTest) -> str:
        field = expr.field.value  # `subject`, `uri` or `dns`: the index's words too
        match expr.op:
            case n.Op.EQ | n.Op.IN:
                return _tokens("peer", field, "eq", _counted(expr.values))
            case n.Op.PREFIX | n.Op.SUFFIX:
                (value,) = expr.values
                return _tokens("peer", field, expr.op.value, hex_string(value))
        raise AssertionError(expr.op)

    def visit_PeerTrusted(self, expr: n.PeerTrusted) -> str:
        # A presented certificate is a verified one (the handshake refuses any other), and a named
        # trust is the only one (check.py refuses it among several).
        return "peer trusted"


def reads_sans(checked: Checked, service: n.Service) -> bool:
    """Whether the service's rules, their named conditions written out, test a certificate's SANs
    (`peer.uri`, `peer.dns`): the native filter deciding it then needs the network filter that
    records them on each connection (native_runtime/peer_filter.c)."""
    pending, seen = [rule.expr for rule in service.rules], set()
    while pending:
        for node in n.walk(pending.pop()):
            if isinstance(node, n.ConditionRef) and node.name not in seen:
                seen.add(node.name)
                pending.append(checked.conditions[node.name].expr)
            elif isinstance(node, n.PeerTest) and node.field is not n.PeerField.SUBJECT:
                return True
    return False


def _ordered(service: n.Service) -> list[n.Rule]:
    """The section's rules as numbered: deny rules, then allow rules, each in name order. When
    several rules of one effect match, the one whose name sorts first decides (docs/language.md),
    as in the RBAC and Lua engines."""
    def of(effect: n.Effect) -> list[n.Rule]:
        return sorted((r for r in service.rules if r.effect is effect), key=lambda r: r.name)
    return of(n.Effect.DENY) + of(n.Effect.ALLOW)


def _share_lines(checked: Checked, service: n.Service, ordered: list[n.Rule]) -> list[str]:
    """`share x<prefix> <n> <r1> … <rn>` for each of the service's path prefixes, shortest first,
    then by bytes (the order the filter looks them up in); none when one share holds every rule."""
    shares = route_shares(checked, service)
    if len(shares) == 1:  # "/" and every rule: no narrowing
        return []
    numbers = {rule.name: i for i, rule in enumerate(ordered)}
    return [_tokens("share", hex_string(prefix), str(len(rules)), *map(str, sorted(numbers[r.name] for r in rules)))
            for prefix, rules in sorted(shares.items(), key=lambda share: (len(_utf8(share[0])), _utf8(share[0])))]


def service_section(checked: Checked, service: n.Service) -> str:
    """The service's section, `service` to `end`."""
    renderer = _Renderer(checked)
    ordered = _ordered(service)
    rules = [_tokens(rule.effect.value, hex_string(rule.name), renderer.visit(rule.expr)) for rule in ordered]
    conditions = [f"cond {i} {body}" for i, body in enumerate(renderer.conditions)]
    lines = [f"service {hex_string(service.name)}", f"mode {service.mode.value}", *conditions, *rules,
             *_share_lines(checked, service, ordered), "end"]
    return "".join(line + "\n" for line in lines)


def listener_config(chain: tuple[str, ...]) -> str:
    """The listener's config: the `chain` line naming the policy filters beside this one in its
    chain, when there are any."""
    return HEADER + (f"chain {' '.join(chain)}\n" if chain else "")


def route_config(section: str) -> str:
    """The config of a route of a service the filter decides: that service's section."""
    return HEADER + section


def relies_config(relied_on: tuple[str, ...]) -> str:
    """The config of a route of a service other filters decide: their names, which the listener's
    `chain` must all hold for a request to go on."""
    return HEADER + f"relies {' '.join(relied_on)}\n"
