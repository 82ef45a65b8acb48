"""The typed tree of a policy set, built by `syntax.to_ast` and read by the checker, the
interpreter, the printer and every backend. Frozen dataclasses; spans never take part in `==`.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum

from .source import Span


def _span() -> Span | None:
    # None only for trees built by code (tests, generators) rather than parsed from text.
    return field(default=None, compare=False, repr=False)


def _spans() -> tuple[Span, ...]:
    return field(default=(), compare=False, repr=False)


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Mode(StrEnum):
    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


class Op(StrEnum):
    """Comparison operators; which ones an atom accepts is fixed by the grammar."""

    EQ = "=="
    IN = "in"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    GLOB = "glob"
    CONTAINS = "contains"


# ---------------------------------------------------------------- template parameters


@dataclass(frozen=True)
class Param:
    """`$name`: a template's parameter, standing where a value of a condition is written. It
    appears only inside a `template` as written; `templates.expand` puts the argument's value in
    its place (in the tree, never in text), so nothing after it sees one. `listed` says it stands
    for a whole list (`path in $paths`, `member in $groups`), not for one string."""

    name: str
    listed: bool = False
    span: Span | None = _span()


# A value as written in a condition: a literal, or (in a template) a parameter.
Value = str | Param


# ---------------------------------------------------------------- conditions


@dataclass(frozen=True)
class And:
    """All operands hold."""

    operands: tuple[Expr, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Or:
    """At least one operand holds."""

    operands: tuple[Expr, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Not:
    """The operand does not hold."""

    operand: Expr
    span: Span | None = _span()


@dataclass(frozen=True)
class ConditionRef:
    """A named `condition`, by name."""

    name: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Authenticated:
    """A token verified, from any issuer."""

    span: Span | None = _span()


@dataclass(frozen=True)
class IssuerIs:
    """A token verified, from the named issuer."""

    name: str
    span: Span | None = _span()


@dataclass(frozen=True)
class MethodTest:
    """`method == M` (op EQ, one value) or `method in [..]` (op IN)."""

    op: Op
    methods: tuple[str, ...]
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()


@dataclass(frozen=True)
class PathTest:
    """`path ==`, `prefix`, `glob` (one value) or `path in [..]` over the normalized path."""

    op: Op
    values: tuple[Value, ...]
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()


@dataclass(frozen=True)
class HeaderTest:
    """`header "h" ==|prefix|suffix "v"` or `in [..]`: any one value of the header compares so."""

    name: str
    op: Op
    values: tuple[Value, ...]
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()


@dataclass(frozen=True)
class HeaderPresent:
    """The header is present."""

    name: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Claim:
    """A claim of the verified token, by its path of object keys (`token.a["b"]` is ("a", "b"))."""

    path: tuple[str, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class HeaderEqualsClaim:
    """The claim is a string and one of the header's values equals it."""

    name: str
    claim: Claim
    span: Span | None = _span()


@dataclass(frozen=True)
class SourceIn:
    """The direct peer's address is in one of the CIDRs."""

    cidrs: tuple[Value, ...]
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()


@dataclass(frozen=True)
class ClaimTest:
    """`token.x ==|prefix|suffix|contains "v"` or `token.x in [..]`."""

    claim: Claim
    op: Op
    values: tuple[Value, ...]
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()


@dataclass(frozen=True)
class ClaimIsBool:
    """`token.x == true|false`: the claim is that boolean."""

    claim: Claim
    value: bool
    span: Span | None = _span()


@dataclass(frozen=True)
class Member:
    """The caller belongs to a catalog group (ref as written; normalized by the catalog)."""

    group: Value
    span: Span | None = _span()


@dataclass(frozen=True)
class MemberOwners:
    """The caller is, or belongs to, the catalog owner of an entity (ref as written)."""

    entity: Value
    span: Span | None = _span()


class PeerField(StrEnum):
    """What a peer atom reads from the verified client certificate."""

    URI = "uri"  # the URI SANs (SPIFFE IDs)
    DNS = "dns"  # the DNS SANs
    SUBJECT = "subject"  # the subject, as RFC 2253 text


@dataclass(frozen=True)
class PeerTest:
    """`peer.uri|dns|subject ==|prefix|suffix "v"` or `in [..]`: a verified client certificate
    was presented and one of its values of that field compares so."""

    field: PeerField
    op: Op
    values: tuple[Value, ...]
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()


@dataclass(frozen=True)
class PeerTrusted:
    """`peer trusted [NAME]`: a client certificate verified against the `trust` CAs (that one)."""

    trust: str | None
    span: Span | None = _span()


class GrpcKind(StrEnum):
    """What a gRPC atom names."""

    SERVICE = "service"  # `grpc service "pkg.v1.Svc"` or `in [..]`
    METHOD = "method"  # `grpc method "pkg.v1.Svc/Get"` or `in [..]`
    HEALTH = "health"  # `grpc health`: the standard health-checking service
    REFLECTION = "reflection"  # `grpc reflection`: server reflection, every version


GRPC_HEALTH = ("grpc.health.v1.Health",)
GRPC_REFLECTION = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")


@dataclass(frozen=True)
class GrpcTest:
    """The request calls one of these gRPC services or methods. A call is `POST /Service/Method`,
    and an upstream dispatches on the path alone, whatever protocol carries it (gRPC, gRPC-Web,
    Connect), so the atom is a test on the normalized path: `grpc_paths` says which. `check`
    writes it out so in `Checked`: the interpreter, the backends and the analysis never see it."""

    kind: GrpcKind
    op: Op = Op.EQ  # EQ or IN, for SERVICE and METHOD
    names: tuple[str, ...] = ()  # services, or `Service/Method`s, as written (none for the shorthands)
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()

    @property
    def services(self) -> tuple[str, ...]:
        """The services of a service atom or shorthand (none for a method atom)."""
        return {GrpcKind.HEALTH: GRPC_HEALTH, GrpcKind.REFLECTION: GRPC_REFLECTION,
                GrpcKind.SERVICE: self.names}.get(self.kind, ())


@dataclass(frozen=True)
class TimeWindow:
    """The request arrives at or after `start` and before `end` (seconds since the epoch, UTC).
    No one writes it: a grant's rule holds only in the grant's window (`grants.expand`)."""

    start: int
    end: int
    span: Span | None = _span()


Expr = (
    And | Or | Not | ConditionRef | Authenticated | IssuerIs | MethodTest | PathTest | HeaderTest
    | HeaderPresent | HeaderEqualsClaim | SourceIn | ClaimTest | ClaimIsBool | Member | MemberOwners
    | PeerTest | PeerTrusted | GrpcTest | TimeWindow
)

EXPRESSIONS: tuple[type, ...] = typing.get_args(Expr)


class Visitor:
    """One engine's reading of conditions: `visit(expr, *args)` calls the engine's
    `visit_<NodeType>(expr, *args)`. Each engine (interpreter, RBAC, Lua, analysis, printer,
    checker) subclasses it with a method for every node type in `EXPRESSIONS`, and names in
    `lowered` the node types an earlier stage rewrites before the engine sees them (gRPC atoms
    become path tests in the checker). tests/unit/test_architecture.py fails, naming the engine
    and the method, when a node type has neither."""

    lowered: typing.ClassVar[frozenset[type]] = frozenset()

    def visit(self, expr: Expr, *args):
        return getattr(self, _HANDLERS[type(expr)], self._unread)(expr, *args)

    def _unread(self, expr: Expr, *args):
        raise TypeError(f"{type(self).__name__} does not read {type(expr).__name__}: an earlier stage rewrites it")


_HANDLERS = {node_type: f"visit_{node_type.__name__}" for node_type in EXPRESSIONS}


def missing_handlers(engine: type[Visitor]) -> list[str]:
    """The `visit_<NodeType>` methods `engine` lacks, for node types it does not declare lowered."""
    return [f"{engine.__module__}.{engine.__qualname__}.{_HANDLERS[t]}" for t in EXPRESSIONS
            if t not in engine.lowered and not callable(getattr(engine, _HANDLERS[t], None))]


# ---------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Import:
    """`import "path"`, relative to the importing file."""

    path: str
    span: Span | None = _span()
    path_span: Span | None = _span()  # the string naming the file


@dataclass(frozen=True)
class IssuerUrl:
    """`url "…"`: the token's `iss`."""

    url: str
    span: Span | None = _span()


@dataclass(frozen=True)
class JwksUri:
    """`jwks "https://…"`: keys fetched by the proxy."""

    uri: str
    span: Span | None = _span()


@dataclass(frozen=True)
class JwksFile:
    """`jwks file "path"`: keys read at compile time, relative to the declaring file."""

    path: str
    span: Span | None = _span()
    path_span: Span | None = _span()  # the string naming the file


@dataclass(frozen=True)
class Audience:
    """`audience "a"` or `audience ["a", "b"]`: the token's `aud` must hold one of them."""

    values: tuple[str, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class CatalogUsers:
    """`catalog users`: this issuer's `sub` and `ent` claims name catalog entities."""

    span: Span | None = _span()


IssuerSetting = IssuerUrl | JwksUri | JwksFile | Audience | CatalogUsers


@dataclass(frozen=True)
class Issuer:
    """An identity provider whose tokens the proxy verifies."""

    name: str
    settings: tuple[IssuerSetting, ...]
    span: Span | None = _span()
    name_span: Span | None = _span()

    def first(self, kind: type) -> IssuerSetting | None:
        return next((s for s in self.settings if isinstance(s, kind)), None)

    @property
    def url(self) -> str | None:
        setting = self.first(IssuerUrl)
        return setting.url if setting else None

    @property
    def jwks(self) -> JwksUri | JwksFile | None:
        return next((s for s in self.settings if isinstance(s, JwksUri | JwksFile)), None)

    @property
    def audiences(self) -> tuple[str, ...]:
        setting = self.first(Audience)
        return setting.values if setting else ()

    @property
    def catalog_users(self) -> bool:
        return self.first(CatalogUsers) is not None


@dataclass(frozen=True)
class Catalog:
    """`catalog "dir"`: Backstage catalog files, relative to the declaring file."""

    path: str
    span: Span | None = _span()
    path_span: Span | None = _span()  # the string naming the file


@dataclass(frozen=True)
class CaFile:
    """`ca file "path"`: PEM certificates of a client-certificate authority, read when compiling."""

    path: str
    span: Span | None = _span()
    path_span: Span | None = _span()  # the string naming the file


@dataclass(frozen=True)
class Trust:
    """`trust NAME { ca file "…" }`: an authority whose client certificates the listener verifies."""

    name: str
    settings: tuple[CaFile, ...]
    span: Span | None = _span()
    name_span: Span | None = _span()

    @property
    def ca(self) -> CaFile | None:
        return self.settings[0] if self.settings else None


@dataclass(frozen=True)
class CertFile:
    """`cert file "path"`: the listener's certificate chain (PEM), read when compiling."""

    path: str
    span: Span | None = _span()
    path_span: Span | None = _span()  # the string naming the file


@dataclass(frozen=True)
class KeyFile:
    """`key file "path"`: the listener's private key (PEM), read when compiling."""

    path: str
    span: Span | None = _span()
    path_span: Span | None = _span()  # the string naming the file


@dataclass(frozen=True)
class Tls:
    """`tls { cert file "…" key file "…" }`: the listener speaks TLS with this certificate."""

    settings: tuple[CertFile | KeyFile, ...]
    span: Span | None = _span()

    def first(self, kind: type) -> CertFile | KeyFile | None:
        return next((s for s in self.settings if isinstance(s, kind)), None)


@dataclass(frozen=True)
class Condition:
    """`condition name = expr`: a reusable, named condition."""

    name: str
    expr: Expr
    span: Span | None = _span()
    name_span: Span | None = _span()


@dataclass(frozen=True)
class Hosts:
    """`hosts [...]`: the `:authority` values routed to the service."""

    hosts: tuple[str, ...]
    span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()


class UpstreamProtocol(StrEnum):
    """What the proxy speaks to an upstream: HTTP/1.1, or HTTP/2 in the clear (gRPC needs it)."""

    HTTP1 = "http1"
    HTTP2 = "http2"


@dataclass(frozen=True)
class Upstream:
    """`upstream "host:port" [http1|http2]`: where allowed requests go, and how."""

    address: str
    protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    span: Span | None = _span()


@dataclass(frozen=True)
class ModeSetting:
    """`mode enforce|dry-run`."""

    mode: Mode
    span: Span | None = _span()


@dataclass(frozen=True)
class PathParameters:
    """`path parameters allowed`: paths holding `;` (or `%3B`) reach the service's rules and
    upstream instead of being refused with 400."""

    span: Span | None = _span()


@dataclass(frozen=True)
class Argument:
    """`name = value` in a `use`: a string, a list of strings, or a catalog ref."""

    name: str
    value: str | tuple[str, ...]
    span: Span | None = _span()
    name_span: Span | None = _span()
    value_spans: tuple[Span, ...] = _spans()  # each string's (one for a string or a ref)


@dataclass(frozen=True)
class Use:
    """`use template(name = value, …)` in a service: the template's settings and rules, with the
    arguments in place of its parameters, become the service's (`templates.expand`)."""

    template: str
    arguments: tuple[Argument, ...]
    span: Span | None = _span()
    name_span: Span | None = _span()


ServiceSetting = Hosts | Upstream | ModeSetting | PathParameters | Use


@dataclass(frozen=True)
class Rule:
    """`allow|deny [public] "name" when expr`; in a template, `locked` may stand first. A rule a
    template gave a service is named `template/rule` and knows its `template`; `instance` is
    the `use` that instantiated it. A grant's rule is named `grant/NAME` and knows its `grant`."""

    effect: Effect
    public: bool
    name: str
    expr: Expr
    span: Span | None = _span()
    name_span: Span | None = _span()
    locked: bool = False
    template: str | None = field(default=None, repr=False)
    instance: Span | None = _span()
    grant: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Service:
    """A set of hosts, where their traffic goes, and the rules that guard it."""

    name: str
    settings: tuple[ServiceSetting, ...]
    rules: tuple[Rule, ...]
    span: Span | None = _span()
    name_span: Span | None = _span()

    def first(self, kind: type) -> ServiceSetting | None:
        return next((s for s in self.settings if isinstance(s, kind)), None)

    @property
    def hosts(self) -> tuple[str, ...]:
        setting = self.first(Hosts)
        return setting.hosts if setting else ()

    @property
    def upstream(self) -> str | None:
        setting = self.first(Upstream)
        return setting.address if setting else None

    @property
    def upstream_protocol(self) -> UpstreamProtocol:
        setting = self.first(Upstream)
        return setting.protocol if setting else UpstreamProtocol.HTTP1

    @property
    def mode(self) -> Mode:
        setting = self.first(ModeSetting)
        return setting.mode if setting else Mode.ENFORCE

    @property
    def path_parameters(self) -> bool:
        return self.first(PathParameters) is not None


class ParamType(StrEnum):
    """What a template parameter holds, and so where it may stand."""

    STRING = "string"  # one string: header, claim and peer values (a path or a ref fits there too)
    PATH = "path"  # one path, starting with `/`: `path ==`, `prefix`, `glob`
    REF = "ref"  # one catalog ref: `member`, `member owners(…)`
    LIST = "list"  # a list of strings: after `in`, and `source in`


@dataclass(frozen=True)
class TemplateParam:
    """`name: type [= default]` in a template's head."""

    name: str
    type: ParamType
    default: Argument | None = None
    span: Span | None = _span()
    name_span: Span | None = _span()


@dataclass(frozen=True)
class Template:
    """`template name(params) { settings and rules }`: a named, parameterized part of a service."""

    name: str
    params: tuple[TemplateParam, ...]
    settings: tuple[ServiceSetting, ...]
    rules: tuple[Rule, ...]
    span: Span | None = _span()
    name_span: Span | None = _span()


class GrantKey(StrEnum):
    """A setting of a `grant`, by its keyword."""

    SERVICE = "service"  # the service the grant opens (a NAME)
    WHO = "who"  # the grantee: a condition on the caller (token claims, catalog user or group, certificate)
    WHAT = "what"  # what the grantee may do: any condition a rule takes
    FROM = "from"  # the window's start, RFC 3339 with a zone
    UNTIL = "until"  # the window's end (exclusive)
    REQUESTED_BY = "requested by"  # who asked for it
    APPROVED_BY = "approved by"  # who approved it
    REASON = "reason"  # why
    SIGNATURE = "signature"  # the approver's signature over the rest (`grants.signed_text`)


@dataclass(frozen=True)
class GrantSetting:
    """One `key value` line of a grant: a name, a condition or a string, by its key."""

    key: GrantKey
    value: str | Expr
    span: Span | None = _span()
    value_span: Span | None = _span()


@dataclass(frozen=True)
class Grant:
    """`grant NAME { service … who … what … from … until … approved by … reason … }`: an
    approved, time-bound allow rule of one service, `grant/NAME` (`grants.expand`)."""

    name: str
    settings: tuple[GrantSetting, ...]
    span: Span | None = _span()
    name_span: Span | None = _span()

    def setting(self, key: GrantKey) -> GrantSetting | None:
        return next((s for s in self.settings if s.key is key), None)

    def value(self, key: GrantKey):
        found = self.setting(key)
        return found.value if found else None


@dataclass(frozen=True)
class GrantsMaxWindow:
    """`max window "8h"`: the longest window a grant may have."""

    duration: str
    span: Span | None = _span()


@dataclass(frozen=True)
class GrantsKeyFile:
    """`key file "path"`: the Ed25519 public key (PEM) that every grant's approval is signed with."""

    path: str
    span: Span | None = _span()
    path_span: Span | None = _span()  # the string naming the file


@dataclass(frozen=True)
class GrantsConfig:
    """`grants { … }`: the policy set's rules for its grants."""

    settings: tuple[GrantsMaxWindow | GrantsKeyFile, ...]
    span: Span | None = _span()

    def first(self, kind: type):
        return next((s for s in self.settings if isinstance(s, kind)), None)


Item = Import | Issuer | Catalog | Condition | Service | Trust | Tls | Template | Grant | GrantsConfig


@dataclass(frozen=True)
class PolicyFile:
    """One parsed `.policy` file: its items in source order."""

    path: str
    items: tuple[Item, ...]

    def of(self, kind: type) -> Iterator:
        return (item for item in self.items if isinstance(item, kind))


@dataclass(frozen=True)
class PolicySet:
    """Every file loaded together (the inputs and what they import); one shared namespace."""

    files: tuple[PolicyFile, ...]

    def of(self, kind: type) -> list:
        return [item for f in self.files for item in f.of(kind)]

    @property
    def issuers(self) -> list[Issuer]:
        return self.of(Issuer)

    @property
    def conditions(self) -> list[Condition]:
        return self.of(Condition)

    @property
    def services(self) -> list[Service]:
        return self.of(Service)

    @property
    def catalogs(self) -> list[Catalog]:
        return self.of(Catalog)

    @property
    def trusts(self) -> list[Trust]:
        return self.of(Trust)

    @property
    def templates(self) -> list[Template]:
        return self.of(Template)

    @property
    def grants(self) -> list[Grant]:
        return self.of(Grant)

    def named_files(self) -> list[str]:
        """Every file the policies name, resolved: imports, key, certificate and CA files (catalog
        folders are `catalogs`). A change of the policy can come from any of them."""
        return [relative_to_declaring_file(node.span, node.path) for f in self.files for item in f.items
                for node in (item, *getattr(item, "settings", ())) if isinstance(node, _FILE_NODES)]


# Nodes that name a file by a `path` relative to the declaring file.
_FILE_NODES = (Import, JwksFile, CaFile, CertFile, KeyFile, GrantsKeyFile)


def relative_to_declaring_file(span: Span, path: str) -> str:
    """A path written in a policy, resolved against the folder of the file that wrote it."""
    return os.path.normpath(os.path.join(os.path.dirname(span.path), path))


def children(expr: Expr) -> tuple[Expr, ...]:
    """The sub-conditions of a condition (empty for atoms)."""
    match expr:
        case And(operands) | Or(operands):
            return operands
        case Not(operand):
            return (operand,)
    return ()


def params_of(node: Expr) -> tuple[Param, ...]:
    """The template parameters an atom names (none for an and/or/not: its operands hold them)."""
    match node:
        case Member(group):
            values = (group,)
        case MemberOwners(entity):
            values = (entity,)
        case SourceIn(cidrs):
            values = cidrs
        case _:
            values = getattr(node, "values", ())
    return tuple(v for v in values if isinstance(v, Param))


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of a condition, parents before children."""
    yield expr
    for child in children(expr):
        yield from walk(child)


def grpc_paths(test: GrpcTest) -> Expr:
    """What a gRPC atom tests: a method's path exactly (`/pkg.v1.Svc/Get`), or a service's
    prefix (`/pkg.v1.Svc/`, every method of it)."""
    if test.kind is GrpcKind.METHOD:
        return PathTest(test.op, tuple(f"/{name}" for name in test.names), test.span, test.value_spans)
    spans = test.value_spans if test.kind is GrpcKind.SERVICE else ()  # the shorthands have no values
    prefixes = tuple(PathTest(Op.PREFIX, (f"/{service}/",), test.span, spans[i:i + 1])
                     for i, service in enumerate(test.services))
    if len(prefixes) == 1:
        return prefixes[0]
    return Or(prefixes, test.span) if prefixes else PathTest(Op.IN, (), test.span)


def without_grpc(expr: Expr) -> Expr:
    """`expr` with every gRPC atom written out as the path tests it means (the same object when
    it holds none)."""
    match expr:
        case GrpcTest():
            return grpc_paths(expr)
        case And(operands) | Or(operands):
            written = tuple(without_grpc(o) for o in operands)
            unchanged = all(a is b for a, b in zip(written, operands, strict=True))
            return expr if unchanged else replace(expr, operands=written)
        case Not(operand):
            written = without_grpc(operand)
            return expr if written is operand else replace(expr, operand=written)
    return expr
