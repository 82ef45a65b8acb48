"""Hypothesis strategies that build `nodes` trees directly: `any_file()` for the printer and
`checked_policy(world)` for the checker and interpreter, plus raw requests biased to a policy."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from pathlib import Path

import jwt
import yaml
from hypothesis import strategies as st

from policyc import nodes as n
from policyc.catalog_services import ENTITY, OWNER
from policyc.check import check
from policyc.checked import Checked
from policyc.credentials import certs as devcerts
from policyc.credentials import tokens as devtokens
from policyc.interpret.evaluator import Context
from policyc.proof.generate import Literals, glob_instances, grpc_near_misses, literals, near_misses
from policyc.roots import Roots
from policyc.semantics.grpc import GRPC_CONTENT_TYPE
from policyc.semantics.request import RawRequest
from policyc.semantics.tokens import put_claim
from policyc.source import Span
from policyc.syntax.printer import format_file, utc
from policyc.templates import expand

K = n.GrantKey

EQ, IN, PREFIX, SUFFIX, GLOB, CONTAINS = n.Op.EQ, n.Op.IN, n.Op.PREFIX, n.Op.SUFFIX, n.Op.GLOB, n.Op.CONTAINS

# ---------------------------------------------------------------- condition trees


@dataclass(frozen=True)
class Vocabulary:
    """What atoms are built from. `None` leaves out the atoms that would need it."""

    methods: st.SearchStrategy[str]
    paths: st.SearchStrategy[str]
    prefixes: st.SearchStrategy[str]
    globs: st.SearchStrategy[str]
    header_names: st.SearchStrategy[str]
    header_values: st.SearchStrategy[str]
    cidrs: st.SearchStrategy[str]
    claims: st.SearchStrategy[n.Claim]
    claim_values: st.SearchStrategy[str]
    grpc_services: st.SearchStrategy[str]
    grpc_methods: st.SearchStrategy[str]
    min_list: int  # the grammar admits `[]`; the checker refuses it
    issuers: st.SearchStrategy[str] | None
    conditions: st.SearchStrategy[str] | None
    groups: st.SearchStrategy[str] | None
    owned: st.SearchStrategy[str] | None


def _one(values: st.SearchStrategy) -> st.SearchStrategy[tuple]:
    return values.map(lambda v: (v,))


def _some(values: st.SearchStrategy, min_size: int) -> st.SearchStrategy[tuple]:
    return st.lists(values, min_size=min_size, max_size=3).map(tuple)


@cache
def identity_atoms_of(v: Vocabulary) -> st.SearchStrategy[n.Expr]:
    """The atoms that only a verified token can satisfy."""
    options = [
        st.builds(n.Authenticated),
        st.builds(n.ClaimTest, v.claims, st.sampled_from([EQ, PREFIX, SUFFIX, CONTAINS]), _one(v.claim_values)),
        st.builds(n.ClaimTest, v.claims, st.just(IN), _some(v.claim_values, v.min_list)),
        st.builds(n.ClaimIsBool, v.claims, st.booleans()),
        st.builds(n.HeaderEqualsClaim, v.header_names, v.claims),
    ]
    if v.issuers is not None:
        options.append(st.builds(n.IssuerIs, v.issuers))
    if v.groups is not None:
        options.append(st.builds(n.Member, v.groups))
    if v.owned is not None:
        options.append(st.builds(n.MemberOwners, v.owned))
    return st.one_of(options)


def atoms_of(v: Vocabulary) -> st.SearchStrategy[n.Expr]:
    options = [
        st.builds(n.MethodTest, st.just(EQ), _one(v.methods)),
        st.builds(n.MethodTest, st.just(IN), _some(v.methods, 1)),
        st.builds(n.PathTest, st.just(EQ), _one(v.paths)),
        st.builds(n.PathTest, st.just(IN), _some(v.paths, v.min_list)),
        st.builds(n.PathTest, st.just(PREFIX), _one(v.prefixes)),
        st.builds(n.PathTest, st.just(GLOB), _one(v.globs)),
        st.builds(n.HeaderTest, v.header_names, st.sampled_from([EQ, PREFIX, SUFFIX]), _one(v.header_values)),
        st.builds(n.HeaderTest, v.header_names, st.just(IN), _some(v.header_values, v.min_list)),
        st.builds(n.HeaderPresent, v.header_names),
        st.builds(n.SourceIn, _some(v.cidrs, v.min_list)),
        st.builds(n.GrpcTest, st.just(n.GrpcKind.SERVICE), st.just(EQ), _one(v.grpc_services)),
        st.builds(n.GrpcTest, st.just(n.GrpcKind.SERVICE), st.just(IN), _some(v.grpc_services, v.min_list)),
        st.builds(n.GrpcTest, st.just(n.GrpcKind.METHOD), st.just(EQ), _one(v.grpc_methods)),
        st.builds(n.GrpcTest, st.just(n.GrpcKind.METHOD), st.just(IN), _some(v.grpc_methods, v.min_list)),
        st.builds(n.GrpcTest, st.sampled_from([n.GrpcKind.HEALTH, n.GrpcKind.REFLECTION])),
        identity_atoms_of(v),
    ]
    if v.conditions is not None:
        options.append(st.builds(n.ConditionRef, v.conditions))
    return st.one_of(options)


def expressions(atoms: st.SearchStrategy[n.Expr], depth: int) -> st.SearchStrategy[n.Expr]:
    """Conditions nested at most `depth` levels; `and`/`or` always have two or more operands."""
    if depth == 0:
        return atoms
    inner = expressions(atoms, depth - 1)
    operands = st.lists(inner, min_size=2, max_size=3).map(tuple)
    return st.one_of(atoms, st.builds(n.Not, inner), st.builds(n.And, operands), st.builds(n.Or, operands))


# ---------------------------------------------------------------- any_file: what the printer must round-trip

KEYWORDS = ("import", "catalog", "issuer", "url", "jwks", "file", "audience", "users", "condition",
            "service", "hosts", "upstream", "mode", "when", "or", "and", "not", "authenticated",
            "method", "in", "path", "prefix", "glob", "header", "suffix", "present", "source",
            "contains", "true", "false", "member", "owners", "token", "public", "allow", "deny",
            "enforce", "dry-run", "trust", "ca", "tls", "cert", "key", "peer", "trusted", "grpc", "health",
            "reflection", "http1", "http2")
# A bare name is read as a keyword only where that keyword can start an atom, so a parsed tree
# never holds a condition reference by one of these names; every other name position takes any.
_ATOM_KEYWORDS = frozenset({"not", "authenticated", "issuer", "method", "path", "header", "source",
                            "member", "token", "peer", "grpc"})

_NAME_START = "ABCXYZabcxyz_"
_bare_names = st.builds(str.__add__, st.sampled_from(_NAME_START), st.text(_NAME_START + "09-", max_size=10))
names = st.one_of(
    st.sampled_from(KEYWORDS),
    _bare_names,
    st.tuples(st.sampled_from(KEYWORDS), _bare_names).map("".join),  # keyword prefixes: "order", "notx"
)
_reference_names = names.filter(lambda name: name not in _ATOM_KEYWORDS)

# Fragments that stress quoting: escapes, comment and line characters, non-BMP. (A lone surrogate
# is no character, and no policy may hold one: parse/lone-surrogate.)
_TRICKY = ('"', "\\", '\\"', "\\u0041", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "#", "# x", "\u2028",
           "\u0085", "\ufeff", "é", "𝄞", "}", "]", ")", " and ", "token.x")
strings = st.one_of(
    st.text(max_size=8),
    st.lists(st.one_of(st.sampled_from(_TRICKY), st.text(max_size=2)), max_size=4).map("".join),
)
# Refs the printer writes bare (`kind:[namespace/]name`) as well as ones it must quote.
_ref_parts = st.text("abcXYZ09_.-", min_size=1, max_size=5)
_entity_refs = st.one_of(
    strings,
    st.builds("{}:{}{}".format, _bare_names, st.one_of(st.just(""), _ref_parts.map("{}/".format)), _ref_parts),
)
_any_claims = st.builds(n.Claim, st.lists(st.one_of(names, strings), min_size=1, max_size=3).map(tuple))


def _networks(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    return st.builds(lambda address, length: str(ipaddress.ip_network((address, length), strict=False)),
                     st.ip_addresses(v=version), st.integers(0, bits))


_ANY_VOCABULARY = Vocabulary(
    methods=names, paths=strings, prefixes=strings, globs=strings, header_names=strings,
    header_values=strings, cidrs=st.one_of(_networks(4), _networks(6), strings), claims=_any_claims,
    claim_values=strings, grpc_services=strings, grpc_methods=strings, min_list=0, issuers=names,
    conditions=_reference_names, groups=strings, owned=_entity_refs,
)
# `peer trusted` reads a keyword after it as what follows the atom, so a parsed tree never names
# a trust by a keyword there.
_any_peer_atoms = st.one_of(
    st.builds(n.PeerTest, st.sampled_from(n.PeerField), st.sampled_from([EQ, PREFIX, SUFFIX]), _one(strings)),
    st.builds(n.PeerTest, st.sampled_from(n.PeerField), st.just(IN), _some(strings, 0)),
    st.builds(n.PeerTrusted, st.one_of(st.none(), names.filter(lambda name: name not in KEYWORDS))),
)
_any_expressions = expressions(st.one_of(atoms_of(_ANY_VOCABULARY), _any_peer_atoms), 3)
_issuer_settings = st.one_of(
    st.builds(n.IssuerUrl, strings),
    st.builds(n.JwksUri, strings),
    st.builds(n.JwksFile, strings),
    st.builds(n.Audience, _some(strings, 0)),
    st.builds(n.CatalogUsers),
)
_service_settings = st.one_of(
    st.builds(n.Hosts, _some(strings, 0)),
    st.builds(n.Upstream, strings, st.sampled_from(n.UpstreamProtocol)),
    st.builds(n.ModeSetting, st.sampled_from(n.Mode)),
    st.builds(n.PathParameters),
)
_any_rules = st.builds(n.Rule, st.sampled_from(n.Effect), st.booleans(), strings, _any_expressions)
# Templates: `$parameters` wherever a value may be one, `locked` rules, and the services' `use`s.
_one_param = st.builds(n.Param, names, st.just(False))
_list_param = st.builds(n.Param, names, st.just(True))
_param_atoms = st.one_of(
    st.builds(n.PathTest, st.sampled_from([EQ, PREFIX, GLOB]), _one(_one_param)),
    st.builds(n.PathTest, st.just(IN), _one(_list_param)),
    st.builds(n.HeaderTest, strings, st.sampled_from([EQ, PREFIX, SUFFIX]), _one(_one_param)),
    st.builds(n.HeaderTest, strings, st.just(IN), _one(_list_param)),
    st.builds(n.ClaimTest, _any_claims, st.sampled_from([EQ, PREFIX, SUFFIX, CONTAINS]), _one(_one_param)),
    st.builds(n.ClaimTest, _any_claims, st.just(IN), _one(_list_param)),
    st.builds(n.PeerTest, st.sampled_from(n.PeerField), st.sampled_from([EQ, PREFIX, SUFFIX]), _one(_one_param)),
    st.builds(n.PeerTest, st.sampled_from(n.PeerField), st.just(IN), _one(_list_param)),
    st.builds(n.SourceIn, _one(_list_param)),
    st.builds(n.Member, st.one_of(_one_param, _list_param)),
    st.builds(n.MemberOwners, _one_param),
)
_template_rules = st.builds(n.Rule, st.sampled_from(n.Effect), st.booleans(), strings,
                            expressions(st.one_of(atoms_of(_ANY_VOCABULARY), _param_atoms), 2),
                            locked=st.booleans())
_argument_values = st.one_of(strings, _entity_refs, _some(strings, 0))
_template_params = st.builds(
    lambda name, kind, default: n.TemplateParam(name, kind, None if default is None else n.Argument(name, default)),
    names, st.sampled_from(n.ParamType), st.none() | _argument_values)
_uses = st.builds(n.Use, names, st.lists(st.builds(n.Argument, names, _argument_values), max_size=3).map(tuple))
_any_items = st.one_of(
    st.builds(n.Import, strings),
    st.builds(n.Catalog, strings),
    st.builds(n.Condition, names, _any_expressions),
    st.builds(n.Issuer, names, st.lists(_issuer_settings, max_size=4).map(tuple)),
    st.builds(n.Service, names, st.lists(_service_settings | _uses, max_size=3).map(tuple),
              st.lists(_any_rules, max_size=3).map(tuple)),
    st.builds(n.Template, names, st.lists(_template_params, max_size=3).map(tuple),
              st.lists(_service_settings.filter(lambda s: isinstance(s, n.ModeSetting | n.PathParameters)),
                       max_size=2).map(tuple),
              st.lists(_template_rules, max_size=3).map(tuple)),
    st.builds(n.Trust, names, st.lists(st.builds(n.CaFile, strings), max_size=2).map(tuple)),
    st.builds(n.Tls, st.lists(st.one_of(st.builds(n.CertFile, strings), st.builds(n.KeyFile, strings)),
                              max_size=3).map(tuple)),
)


def any_file() -> st.SearchStrategy[n.PolicyFile]:
    """Any tree the parser could produce: bare names where the grammar has NAME, any text in strings."""
    return st.builds(n.PolicyFile, st.just("any.policy"), st.lists(_any_items, max_size=5).map(tuple))


_SOUP = (*KEYWORDS, "{", "}", "(", ")", "[", "]", ",", "=", "==", ".", "\n", "#c\n", "x", "GET",
         "component:payments", '"s"', '"a\\"b"', '"\\q"', '"/api/**"', '"10.0.0.0/8"', '"', "token.a")


def policy_like_text() -> st.SearchStrategy[str]:
    """Text near the language: token soup, and printed trees with a few characters edited."""
    edit = st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.text(max_size=3))

    def edited(text: str, edits) -> str:
        for at, removed, inserted in edits:
            at %= len(text) + 1
            text = text[:at] + inserted + text[at + removed:]
        return text

    printed = st.builds(format_file, any_file())
    return st.one_of(
        st.lists(st.sampled_from(_SOUP), max_size=40).map(" ".join),
        st.builds(edited, printed, st.lists(edit, min_size=1, max_size=3)),
    )


# ---------------------------------------------------------------- the world checked policies share

# The clock of every generated token and decision: the real one (to the minute), so that a real
# Envoy, which checks tokens against its own clock, agrees on which tokens are current.
NOW = int(time.time()) // 60 * 60


@dataclass(frozen=True)
class IssuerProfile:
    name: str
    url: str
    alg: str


ISSUERS = (
    IssuerProfile("backstage", "https://backstage.example.com/api/auth", "ES256"),
    IssuerProfile("okta", "https://example.okta.com/oauth2/default", "RS256"),
    IssuerProfile("ci", "http://127.0.0.1:9000/ci", "ES256"),
)
AUDIENCES = ("backstage", "api://internal", "https://api.example.com/")

CATALOG_YAML = """\
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: org}
spec: {children: [platform]}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: platform}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: sre}
spec: {parent: platform}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: payments-team}
spec: {parent: group:org, members: [dave]}
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: {name: alice}
spec: {memberOf: [sre]}
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: {name: bob}
spec: {memberOf: platform}
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: {name: dave}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: payments}
spec: {owner: payments-team}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: ledger}
spec: {owner: user:bob}
"""
# Groups nest through both `children` and `parent`; members are declared from both sides; one
# component is owned by a group, the other by a user.
# The same catalog after one change each, for generated `diff` pairs: a person joins or leaves a
# group, a group leaves the nesting, an owner changes, a component is added, a user is deleted.
# Every group and component `GROUPS` and `OWNED` name stays, so each policy still checks.
CATALOG_CHANGES = {
    "join": CATALOG_YAML.replace("metadata: {name: dave}\n", "metadata: {name: dave}\nspec: {memberOf: [sre]}\n"),
    "leave": CATALOG_YAML.replace("spec: {memberOf: [sre]}\n", ""),
    "unnest": CATALOG_YAML.replace("spec: {parent: platform}\n", ""),
    "owner": CATALOG_YAML.replace("spec: {owner: user:bob}", "spec: {owner: group:sre}"),
    "component": CATALOG_YAML + "---\napiVersion: backstage.io/v1alpha1\nkind: Component\n"
                                "metadata: {name: search}\nspec: {owner: user:dave}\n",
    "deleted": CATALOG_YAML.replace("kind: User\nmetadata: {name: alice}\nspec: {memberOf: [sre]}\n---\n"
                                    "apiVersion: backstage.io/v1alpha1\n", ""),
}
CATALOG_USERS = ("user:default/alice", "user:default/bob", "user:default/dave", "user:default/mallory")
CATALOG_GROUPS = ("group:default/sre", "group:default/platform", "group:default/org",
                  "group:default/payments-team", "group:default/nobody", "user:default/bob")


@cache
def signing_keys() -> dict[str, dict]:
    """Each profile's private key and a stranger's of the same type under the same `kid`, made once
    per session: RSA key generation takes a noticeable fraction of a second."""
    keys = {}
    for profile in ISSUERS:
        keys[profile.name] = devtokens.generate_key(profile.alg, kid=f"{profile.name}-1")
        keys[f"{profile.name}/stranger"] = devtokens.generate_key(profile.alg, kid=f"{profile.name}-1")
    return keys


@cache
def _signer(key_name: str):
    # Built once: turning an RSA JWK back into a key object validates it, ~50 ms a time.
    return jwt.PyJWK(signing_keys()[key_name]).key


def mint(claims: dict, key_name: str, alg: str | None = None) -> str:
    """`devtokens.mint` with the signing key object cached; the unsigned and HMAC forgeries go
    through devtokens itself."""
    private = signing_keys()[key_name]
    if alg is not None:
        return devtokens.mint(claims, private, alg)
    return jwt.encode(claims, _signer(key_name), algorithm=private["alg"], headers={"kid": private["kid"]})


@dataclass(frozen=True)
class World:
    """The files on disk every checked policy uses: a JWKS file per issuer profile and a catalog."""

    root: Path

    @property
    def policy_path(self) -> str:
        return str(self.root / "generated.policy")


def write_world(root: Path) -> World:
    (root / "keys").mkdir()
    keys = signing_keys()
    for profile in ISSUERS:
        jwks = devtokens.public_jwks(keys[profile.name])
        (root / "keys" / f"{profile.name}.jwks.json").write_text(json.dumps(jwks), encoding="utf-8")
    (root / "catalog").mkdir()
    (root / "catalog" / "org.yaml").write_text(CATALOG_YAML, encoding="utf-8")
    for name, text in CATALOG_CHANGES.items():
        (root / "catalogs" / name).mkdir(parents=True)
        (root / "catalogs" / name / "org.yaml").write_text(text, encoding="utf-8")
    _write_tls(root)
    return World(root)


TRUSTED_CAS = ("mesh", "other")


def _write_tls(root: Path) -> None:
    """A listener certificate and two client-certificate CAs (`certs/NAME-ca.pem`), for `trust`."""
    (root / "certs").mkdir()
    for name in TRUSTED_CAS:
        (root / "certs" / f"{name}-ca.pem").write_text(devcerts.make_ca(f"{name} CA").cert_pem)
    server = devcerts.issue(devcerts.make_ca("listener CA"), "payments.internal", dns=["payments.internal"],
                            server=True)
    (root / "certs" / "server.pem").write_text(server.cert_pem)
    (root / "certs" / "server.key").write_text(server.key_pem)


def trusted(here: Span, ca: str) -> tuple[n.Tls, n.Trust]:
    """The `tls` block and a `trust mesh` of the CA `ca` (one of `TRUSTED_CAS`), in the world."""
    tls = n.Tls((n.CertFile("certs/server.pem", here), n.KeyFile("certs/server.key", here)))
    return tls, n.Trust("mesh", (n.CaFile(f"certs/{ca}-ca.pem", here),))


# ---------------------------------------------------------------- checked_policy: well-formed policy sets

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND")
PATHS = ("/", "/healthz", "/admin", "/admin;x", "/api/v1/items", "/api/v1/tenants/acme/invoices",
         "/debug/vars", "/reports/q1.csv", "/a%20b", "/shop.v1.Orders/Get", "/shop.v1.Orders/Delete",
         "/grpc.health.v1.Health/Check", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
PREFIXES = ("/", "/api/", "/api/v1/", "/debug/", "/admin", "/reports/")
GLOBS = ("/api/*/items/**", "/api/v1/**", "/reports/*.csv", "/v*/x", "/**", "/*", "/admin/**",
         "/api/v1/tenants/*/invoices", "/a*b*c")
HEADER_NAMES = ("x-tenant", "x-role", "accept", "authorization", "cookie", "content-type")
# The gRPC content-types: the proxy answers a gRPC call's refusals with a grpc-status.
HEADER_VALUES = ("acme", "globex", "admin", "editor", "", "application/json", "debug=1", "application/grpc",
                 "application/grpc+proto", "application/grpc-web")
CIDRS = ("10.0.0.0/8", "10.20.0.0/16", "192.168.1.0/24", "127.0.0.1/32", "0.0.0.0/0", "::1/128",
         "fd00:20::/32", "2001:db8::/32", "::/0")
CLAIMS = (("sub",), ("email",), ("tenant",), ("email_verified",), ("roles",), ("https://example.com/roles",),
          ("org", "team"), ("ent",))
CLAIM_VALUES = ("user:default/alice", "acme", "admin", "ledger-reader", "@example.com", "alice@example.com",
                "group:default/sre", "")
GROUPS = ("group:default/sre", "sre", "platform", "group:org", "payments-team", "Group:Default/SRE")
OWNED = ("component:payments", "component:default/ledger", "Component:Payments", "component:ledger")
GRPC_SERVICES = ("shop.v1.Orders", "shop.v1.Items", "Ping", "grpc.health.v1.Health")
GRPC_METHODS = ("shop.v1.Orders/Get", "shop.v1.Orders/List", "shop.v1.Items/Get", "Ping/Ping",
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
CONDITION_NAMES = ("read_only", "sre", "from_office", "c-3")
RULE_NAMES = ("health", "no-debug", "read", "write", "tenant", "r.1", "team:x")
SERVICES = (
    ("payments", ("payments.internal", "payments.internal:8443")),
    ("ledger", ("ledger.internal", "10.1.2.3")),
    ("docs", ("docs.internal:8080", "[fd00::1]:8443")),
)


# Paths of gRPC services: what the gRPC differential's policies test besides the gRPC atoms.
GRPC_PATHS = ("/shop.v1.Orders/Get", "/shop.v1.Orders/ListOrders", "/shop.v1.Items/Get", "/Ping/Ping",
              "/grpc.health.v1.Health/Check", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
GRPC_PREFIXES = ("/", "/shop.v1.", "/shop.v1.Orders/", "/grpc.", "/shop.v1.Orders/Get")
GRPC_GLOBS = ("/shop.v1.*/Get", "/shop.v1.Orders/**", "/*/Get", "/**", "/*.v1.*/List*")


def vocabulary(issuers: Iterable[str], conditions: Iterable[str], catalog_users: bool,
               grpc: bool = False) -> Vocabulary:
    """Literals the checker accepts, naming only what the policy declares (paths of gRPC
    services with `grpc`)."""
    v = _vocabulary(tuple(sorted(issuers)), tuple(sorted(conditions)), catalog_users)
    return _grpc_vocabulary(v) if grpc else v


@cache
def _grpc_vocabulary(v: Vocabulary) -> Vocabulary:
    return replace(v, paths=st.sampled_from(GRPC_PATHS), prefixes=st.sampled_from(GRPC_PREFIXES),
                   globs=st.sampled_from(GRPC_GLOBS))


# Strategies are cached because building (and validating) fresh ones for every example costs
# more than drawing from them.
@cache
def _vocabulary(issuers: tuple[str, ...], conditions: tuple[str, ...], catalog_users: bool) -> Vocabulary:
    return Vocabulary(
        methods=st.sampled_from(METHODS), paths=st.sampled_from(PATHS), prefixes=st.sampled_from(PREFIXES),
        globs=st.sampled_from(GLOBS), header_names=st.sampled_from(HEADER_NAMES),
        header_values=st.sampled_from(HEADER_VALUES),
        cidrs=st.one_of(st.sampled_from(CIDRS), _networks(4), _networks(6).filter(_not_mapped)),
        claims=st.sampled_from(CLAIMS).map(n.Claim), claim_values=st.sampled_from(CLAIM_VALUES),
        grpc_services=st.sampled_from(GRPC_SERVICES), grpc_methods=st.sampled_from(GRPC_METHODS), min_list=1,
        issuers=st.sampled_from(issuers) if issuers else None,
        conditions=st.sampled_from(conditions) if conditions else None,
        groups=st.sampled_from(GROUPS) if catalog_users else None,
        owned=st.sampled_from(OWNED) if catalog_users else None,
    )


def _not_mapped(cidr: str) -> bool:
    # The checker refuses ranges inside ::ffff:0:0/96: the proxy never sees a peer that way.
    return not ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network("::ffff:0:0/96"))


@dataclass(frozen=True)
class Generated:
    """A policy set that checked without errors."""

    policy_set: n.PolicySet
    checked: Checked = field(repr=False)
    grpc: bool = False  # made for gRPC calls
    catalog: str = ""  # the YAML of the annotated component that asks for a service, if one does

    @property
    def expanded(self) -> n.PolicySet:
        """The set with every template use written out: services to change rule by rule."""
        return expand(self.policy_set)[0]

    def vocabulary(self) -> Vocabulary:
        issuers = self.checked.issuers.values()
        return vocabulary((i.name for i in issuers), self.checked.conditions,
                          any(i.catalog_users for i in issuers), self.grpc)


# Hypothesis often replays a policy set with only the request changed, and reading the catalog is
# most of what `check` costs; the files it reads never change during a session.
@lru_cache(maxsize=256)
def check_clean(policy_set: n.PolicySet) -> Checked:
    """`check`, failing on any error: a generated policy set must be well formed."""
    # The world's files lie beside the policy file, under the one root its folder gives.
    checked, diagnostics = check(policy_set, Roots.of(file.path for file in policy_set.files))
    errors = [f"{d.code}: {d.message}" for d in diagnostics if d.is_error]
    assert not errors, errors
    return checked


def _pick(draw, values: Sequence):
    """One of `values`, shrinking towards the first. Cheaper than a fresh `sampled_from` per draw:
    `integers` strategies are cached by their bounds."""
    return values[draw(st.integers(0, len(values) - 1))]


def _subset(draw, values: Sequence, min_size: int = 0) -> list:
    """Some of `values`, in their order, at least `min_size` of them (one draw: a bit mask)."""
    mask = draw(st.integers(0, 2 ** len(values) - 1))
    chosen = [v for i, v in enumerate(values) if mask >> i & 1]
    return chosen if len(chosen) >= min_size else list(values[:min_size])


def _issuer(draw, profile: IssuerProfile, here: Span) -> n.Issuer:
    settings = [n.IssuerUrl(profile.url),
                # Spans matter here: the checker resolves the file against the declaring file's folder.
                n.JwksFile(f"keys/{profile.name}.jwks.json", here)]
    if audiences := _subset(draw, AUDIENCES):
        settings.append(n.Audience(tuple(audiences)))
    if draw(st.booleans()):
        settings.append(n.CatalogUsers())
    return n.Issuer(profile.name, tuple(settings))


@cache
def condition_expressions(v: Vocabulary) -> st.SearchStrategy[n.Expr]:
    return expressions(atoms_of(v), 2)


@cache
def rules(v: Vocabulary, effect: n.Effect | None = None, name: str | None = None) -> st.SearchStrategy[n.Rule]:
    return st.builds(
        n.Rule,
        st.sampled_from(n.Effect) if effect is None else st.just(effect),
        st.booleans(),
        st.sampled_from(RULE_NAMES) if name is None else st.just(name),
        condition_expressions(v),
    )


def _service(draw, name: str, pool: tuple[str, ...], v: Vocabulary, grpc: bool) -> n.Service:
    protocol = n.UpstreamProtocol.HTTP2 if grpc else n.UpstreamProtocol.HTTP1
    settings = [n.Hosts(tuple(_subset(draw, pool, min_size=1))), n.Upstream("127.0.0.1:8080", protocol)]
    mode = _pick(draw, [None, n.Mode.DRY_RUN, n.Mode.ENFORCE])
    if mode is not None:
        settings.append(n.ModeSetting(mode))
    if _rarely(draw):
        settings.append(n.PathParameters())
    # Names first, so that no rule is drawn only to be thrown away as a duplicate.
    rule_names = _subset(draw, RULE_NAMES, min_size=1)[:4]
    return n.Service(name, tuple(settings), tuple(draw(rules(v, name=rule)) for rule in rule_names))


# ---------------------------------------------------------------- templates

TEMPLATE_NAMES = ("guard", "base-api")
T = n.ParamType


def _slot(node: n.Expr) -> tuple[tuple, T] | None:
    """Where an atom's value could be a parameter: a key naming the values that fit there (those
    of atoms of its kind and operator), and the parameter's type; None for atoms without one."""
    match node:
        case n.PathTest(op) if op is IN:
            return ("path", IN), T.LIST
        case n.PathTest(op):
            return ("path", op), T.PATH
        case n.HeaderTest(op=op) | n.ClaimTest(op=op) | n.PeerTest(op=op):
            return (type(node).__name__, op), T.LIST if op is IN else T.STRING
        case n.SourceIn():
            return ("source",), T.LIST
        case n.Member() | n.MemberOwners():
            return (type(node).__name__,), T.REF
    return None


def _value_of(node: n.Expr):
    match node:
        case n.Member(group):
            return group
        case n.MemberOwners(entity):
            return entity
        case n.SourceIn(cidrs):
            return cidrs
        case n.PathTest(op, values) | n.HeaderTest(op=op, values=values) | n.ClaimTest(op=op, values=values) \
                | n.PeerTest(op=op, values=values):
            return values if op is IN else values[0]


def _pools(exprs: Iterable[n.Expr]) -> dict[tuple, list]:
    """Every value that fits each slot, from the atoms of `exprs`: what a use may pass there."""
    pools: dict[tuple, list] = {}
    for node in (node for expr in exprs for node in n.walk(expr)):
        if (slot := _slot(node)) is not None and _value_of(node) not in pools.setdefault(slot[0], []):
            pools[slot[0]].append(_value_of(node))
    return pools


def _parameterized(draw, expr: n.Expr, params: list) -> n.Expr:
    """`expr` with some of its values made parameters of the template; `params` gets, for each,
    (its declaration, the key of the values that fit it)."""
    match expr:
        case n.And(operands) | n.Or(operands):
            return replace(expr, operands=tuple(_parameterized(draw, o, params) for o in operands))
        case n.Not(operand):
            return replace(expr, operand=_parameterized(draw, operand, params))
    slot = _slot(expr)
    if slot is None or not draw(st.booleans()):
        return expr
    key, kind = slot
    value = _value_of(expr)
    if isinstance(expr, n.Member) and draw(st.booleans()):  # `member in $p`, for a list of groups
        key, kind, value = ("groups",), T.LIST, (value,)
    name = _param_name(key, [p.name for p, _ in params])
    default = n.Argument(name, value) if draw(st.booleans()) else None
    params.append((n.TemplateParam(name, kind, default), key))
    param = n.Param(name, kind is T.LIST)
    match expr:
        case n.Member() | n.MemberOwners():
            return replace(expr, **{"group" if isinstance(expr, n.Member) else "entity": param})
        case n.SourceIn():
            return replace(expr, cidrs=(param,))
    return replace(expr, values=(param,))


def _param_name(key: tuple, taken: list[str]) -> str:
    """`owner` for the first `member $p` and `entity` for the first `member owners($p)`, the
    parameters the catalog fills in for the services it asks for (`spec.owner`, the component);
    `p0`, `p1`, … for the others."""
    special = {("Member",): OWNER, ("MemberOwners",): ENTITY}.get(key)
    return special if special is not None and special not in taken else f"p{len(taken)}"


def _argument(draw, param: n.TemplateParam, key: tuple, pools: dict[tuple, list]) -> n.Argument | None:
    """What a use passes for `param`: nothing (its default), or a value that fits its slot."""
    if param.default is not None and draw(st.booleans()):
        return None
    if key == ("groups",):
        return n.Argument(param.name, tuple(_subset(draw, pools[("Member",)], min_size=1)))
    return n.Argument(param.name, _pick(draw, pools[key]))


def _templated(draw, services: list[n.Service], v: Vocabulary,
               grpc: bool) -> tuple[list[n.Template], list[n.Service], dict | None]:
    """A template of parameterized rules (some locked), used by some of the services with
    arguments drawn from the values that fit each parameter, and perhaps by an annotated catalog
    component (as YAML data); or none."""
    if not draw(st.booleans()):
        return [], services, None
    name = _pick(draw, TEMPLATE_NAMES)
    drawn = [replace(draw(rules(v, name=rule)), locked=draw(st.booleans()))
             for rule in _subset(draw, RULE_NAMES, min_size=1)[:2]]
    pools = _pools([r.expr for r in drawn] + [r.expr for s in services for r in s.rules])
    params: list = []
    template_rules = tuple(replace(r, expr=_parameterized(draw, r.expr, params)) for r in drawn)
    if v.groups is not None and draw(st.booleans()):
        template_rules += (_owners_rule(draw, params, pools),)
    mode = _pick(draw, [None, n.Mode.DRY_RUN, n.Mode.ENFORCE])
    settings = (n.ModeSetting(mode),) if mode is not None else ()
    template = n.Template(name, tuple(p for p, _ in params), settings, template_rules)
    users = set(_subset(draw, [s.name for s in services], min_size=1))
    used = []
    for service in services:
        if service.name in users:
            arguments = (_argument(draw, p, key, pools) for p, key in params)
            kept = tuple(s for s in service.settings if not (settings and isinstance(s, n.ModeSetting)))
            use = n.Use(name, tuple(a for a in arguments if a is not None))
            service = replace(service, settings=(*kept, use))
        used.append(service)
    component = _component(draw, template, params, pools, grpc) if draw(st.booleans()) else None
    return [template], used, component


def _owners_rule(draw, params: list, pools: dict[tuple, list]) -> n.Rule:
    """`allow "owners" when member $owner`, `member owners($entity)`, or both: the parameters a
    catalog component fills in from `spec.owner` and its own ref, which drawn rules seldom hold.
    Written services pass the catalog's groups and components for them."""
    chosen = _pick(draw, [(OWNER,), (ENTITY,), (OWNER, ENTITY)])
    slots = {OWNER: (("Member",), n.Member, GROUPS), ENTITY: (("MemberOwners",), n.MemberOwners, OWNED)}
    atoms = []
    for name in chosen:
        key, atom, values = slots[name]
        if name not in (p.name for p, _ in params):  # `_param_name` may have declared it already
            params.append((n.TemplateParam(name, T.REF), key))
        pools.setdefault(key, list(values))
        atoms.append(atom(n.Param(name)))
    return n.Rule(n.Effect.ALLOW, False, "owners", atoms[0] if len(atoms) == 1 else n.Or(tuple(atoms)))


# The service the catalog asks for: its name, hosts (apart from SERVICES'), and the owners it may have.
CATALOG_SERVICE = ("orders", ("orders.internal", "orders.internal:8443"))
CATALOG_OWNERS = ("sre", "platform", "payments-team", "group:org")


def _component(draw, template: n.Template, params: list, pools: dict[tuple, list], grpc: bool) -> dict:
    """A Component or API annotated to use `template`: hosts, upstream and each argument as the
    annotations write them (a list as a JSON array), the owner and lifecycle drawn too."""
    name, pool = CATALOG_SERVICE
    annotations = {"policyc.dev/template": template.name,
                   "policyc.dev/hosts": ", ".join(_subset(draw, pool, min_size=1)),
                   "policyc.dev/upstream": "127.0.0.1:8080" + (" http2" if grpc else "")}
    for param, key in params:
        argument = None if param.name in (OWNER, ENTITY) else _argument(draw, param, key, pools)
        if argument is not None:
            value = argument.value
            annotations[f"policyc.dev/args.{param.name}"] = json.dumps(list(value)) if isinstance(value, tuple) \
                else value
    return {"apiVersion": "backstage.io/v1alpha1", "kind": _pick(draw, ["Component", "API"]),
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"type": "service", "lifecycle": _pick(draw, ["production", "experimental"]),
                     "owner": _pick(draw, CATALOG_OWNERS)}}


def _catalog_of(world: World, component: dict) -> tuple[str, str]:
    """The component written into a catalog folder of its own, named by its content (so a policy
    set, which names the folder, still stands for one catalog: `check_clean` is cached by it); the
    folder, relative to the policy file, and the YAML."""
    text = yaml.safe_dump(component, sort_keys=False)
    folder = Path("catalog-services") / hashlib.sha256(text.encode()).hexdigest()[:16]
    path = world.root / folder / "component.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return str(folder), text


# ---------------------------------------------------------------- grants

GRANT_NAMES = ("oncall", "audit")
# Windows around NOW, as (from, until) offsets in seconds: one holding, one over, one to come. Each
# edge is an hour or more from NOW, so a real Envoy's clock, which moves on while the suite runs
# (its tokens last an hour too), puts every request on the same side of it as the interpreter's
# NOW; the instants at the edges are tested with a clock that stands still (tests/unit/test_grants.py).
GRANT_WINDOWS = ((-3600, 3 * 3600), (-4 * 3600, -3600), (3 * 3600, 4 * 3600))


def _grants(draw, services: list[n.Service], v: Vocabulary) -> list[n.Grant]:
    """Grants for some of the services, each with a drawn `who` and `what` and a window around
    NOW; `v` names no condition (a grant writes its conditions out)."""
    found = []
    for name in _subset(draw, GRANT_NAMES):
        start, end = _pick(draw, GRANT_WINDOWS)
        settings = ((K.SERVICE, _pick(draw, [s.name for s in services])),
                    (K.WHO, draw(condition_expressions(v))), (K.WHAT, draw(condition_expressions(v))),
                    (K.FROM, utc(NOW + start)), (K.UNTIL, utc(NOW + end)),
                    (K.APPROVED_BY, "security-officer"), (K.REASON, "generated"))
        found.append(n.Grant(name, tuple(n.GrantSetting(key, value) for key, value in settings)))
    return found


@st.composite
def checked_policy(draw, world: World, grpc: bool = False) -> Generated:
    """A policy set that checks cleanly; with `grpc`, for gRPC services (`http2` upstreams,
    paths of gRPC calls)."""
    here = Span(world.policy_path, 1, 1, 1, 1)
    issuers = [_issuer(draw, profile, here) for profile in _subset(draw, ISSUERS)]
    catalog_users = any(i.catalog_users for i in issuers)
    conditions: list[n.Condition] = []
    # Each condition may use only those before it, so conditions never form a cycle.
    for name in _subset(draw, CONDITION_NAMES):
        v = vocabulary((i.name for i in issuers), (c.name for c in conditions), catalog_users, grpc)
        conditions.append(n.Condition(name, draw(condition_expressions(v))))
    v = vocabulary((i.name for i in issuers), (c.name for c in conditions), catalog_users, grpc)
    services = [_service(draw, name, pool, v, grpc) for name, pool in _subset(draw, SERVICES, min_size=1)]
    templates, services, component = _templated(draw, services, v, grpc)
    grants = _grants(draw, services, vocabulary((i.name for i in issuers), (), catalog_users, grpc))
    # The catalog only matters to `member`, which needs a `catalog users` issuer, and to a
    # component that asks for a service (its owner is in the catalog); reading it is most of what
    # `check` costs.
    catalog = [n.Catalog("catalog", here)] if catalog_users or component else []
    yaml_text = ""
    if component is not None:
        folder, yaml_text = _catalog_of(world, component)
        catalog.append(n.Catalog(folder, here))
    items = (*issuers, *catalog, *conditions, *templates, *services, *grants)
    policy_set = n.PolicySet((n.PolicyFile(world.policy_path, items),))
    return Generated(policy_set, check_clean(policy_set), grpc, yaml_text)


# ---------------------------------------------------------------- requests biased to a policy's literals


_ODD_TARGETS = ("*", "/%2e%2e/admin", "/%00", "/a b", "http://payments.internal:8443/api/v1/items",
                "HTTP://LEDGER.INTERNAL/admin", "ftp://x/", "http://u@docs.internal:8080/", "\t/admin",
                "/é", "")
_ODD_METHODS = ("get", "Get", "X", "")
# Header lines the proxy refuses, or acts on before the policy filters (semantics/headers.py);
# HTTP/1 consumes the connection-specific ones, HTTP/2 resets the stream (te but "trailers").
_PROXY_TRICKS = (("x_tenant", "acme"), ("X_Role", "admin"), ("connection", "x-tenant"), ("connection", "authorization"),
                 ("connection", "x-forwarded-for"), ("connection", "upgrade"), ("upgrade", "websocket"),
                 ("x-original-url", "/admin"), ("x-original-url", ""), ("X-HTTP-Method-Override", "DELETE"),
                 ("te", "trailers"), ("te", "gzip"), ("keep-alive", "timeout=5"), ("proxy-connection", "close"))


def _value_variant(draw, value: str) -> str:
    """Mostly the value itself; sometimes in another case, or with spaces and tabs around it."""
    if not _rarely(draw):
        return value
    return _pick(draw, (value.upper(), value.capitalize(), f" {value}", f"{value} ", f"\t{value}", f" {value}\t"))
_USUAL_PEERS = ("127.0.0.1", "::1", "10.0.0.1", "::ffff:10.0.0.1", "192.168.1.7", "fd00:20::5", "8.8.8.8")

# The request strategies below draw procedurally with `_pick` and friends rather than composing
# strategies: they depend on each policy's literals, and fresh strategies cost more than draws.


def _rarely(draw) -> bool:
    """True one time in eight; shrinking makes it False."""
    return draw(st.integers(0, 7)) == 7


def _prefer(draw, preferred: Iterable, fallback: Iterable):
    """Mostly one of the `preferred` values, sometimes (or when there are none) a `fallback` one."""
    preferred = sorted(preferred)
    return _pick(draw, preferred) if preferred and not _rarely(draw) else _pick(draw, sorted(fallback))


def _edges(cidrs: Iterable[str]) -> set[str]:
    """The first, second and last address of each range, and the ones just outside it."""
    found = set()
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr)
        first, last = int(network.network_address), int(network.broadcast_address)
        for value in (first, first + 1, last, first - 1, last + 1):
            if 0 <= value < 2 ** network.max_prefixlen:
                found.add(str(ipaddress.IPv4Address(value) if network.version == 4 else ipaddress.IPv6Address(value)))
    return found


def _address(draw, focus: Literals, everything: Literals) -> str:
    if _rarely(draw):
        return str(draw(st.ip_addresses()))
    return _prefer(draw, _edges(focus.cidrs), _edges(everything.cidrs | set(CIDRS)) | set(_USUAL_PEERS))


def _host_variants(host: str) -> list[str | None]:
    # Envoy forgives ASCII case only: not a trailing dot, another port, a look-alike, or no Host.
    return [host.upper(), host + ".", host.rpartition(":")[0] or host + ":80", "x" + host, " " + host,
            "unknown.internal", None]


def _path(draw, focus: Literals, everything: Literals) -> str:
    base = everything.paths | set(PATHS + PREFIXES) | {p for glob in GLOBS for p in glob_instances(glob)}
    path = _prefer(draw, focus.paths, base)
    return _pick(draw, near_misses(path)) if _rarely(draw) else path


def _claim_value(draw, values: Sequence[str]):
    """String and list shapes of the same values (`contains` accepts both), or another JSON type."""
    match _pick(draw, ("string", "list", "bool", "number", "object")):
        case "string":
            return _pick(draw, values)
        case "list":
            return _subset(draw, values[:8])
        case "bool":
            return draw(st.booleans())
        case "number":
            return draw(st.integers(-1, 1))
    return {key: _pick(draw, values) for key in _subset(draw, ("team", "roles"))}


def _claims(draw, focus: Literals, everything: Literals, profile: IssuerProfile, issuer: n.Issuer | None) -> dict:
    claims: dict = {"iss": profile.url, "iat": NOW, "exp": NOW + 3600}
    if issuer and issuer.audiences:
        aud = _pick(draw, issuer.audiences)
        # The proxy drops a scheme and a trailing slash on both sides before comparing.
        aud = _pick(draw, [aud, aud.removeprefix("https://").rstrip("/")])
        claims["aud"] = _pick(draw, [aud, [aud], ["other", aud]])
    elif draw(st.booleans()):
        claims["aud"] = "anything"
    preferred = sorted(focus.claim_values)
    values = [*preferred, *sorted((everything.claim_values | set(CLAIM_VALUES)) - focus.claim_values)]
    claims["sub"] = _pick(draw, [*preferred, *CATALOG_USERS, *values])
    claims["ent"] = _subset(draw, CATALOG_GROUPS) if draw(st.booleans()) else _claim_value(draw, values)
    for path in sorted(focus.claims) + _subset(draw, sorted(everything.claims | set(CLAIMS))):
        if path[0] not in claims:
            put_claim(claims, path, _claim_value(draw, values))
    return claims


_FAILURES = ("expired", "not-yet-valid", "no-exp", "stranger", "alg-none", "hs256", "wrong-audience",
             "unknown-issuer", "garbage", "lower-case-bearer", "basic", "two-lines")
_GARBAGE = ("Bearer x", "Bearer a.b.c", "Bearer ", "Bearer ...", "xBearer a")


def _authorization(draw, gen: Generated, focus: Literals, everything: Literals) -> list[str]:
    """The Authorization lines of a request: none, a valid token of a declared issuer, or a failure."""
    kind = _pick(draw, ("valid", "none", "valid", "failing"))
    if kind == "none":
        return []
    declared = [p for p in ISSUERS if p.name in gen.checked.issuers]
    profile = _pick(draw, declared or ISSUERS)
    claims = _claims(draw, focus, everything, profile, gen.checked.issuers.get(profile.name))
    key, alg = profile.name, None
    failure = "" if kind == "valid" else _pick(draw, _FAILURES)
    match failure:
        case "expired":
            claims["exp"] = NOW - 3600
        case "not-yet-valid":
            claims["nbf"] = NOW + 3600
        case "no-exp":
            del claims["exp"]
        case "stranger":
            key = f"{profile.name}/stranger"
        case "alg-none":
            alg = "none"
        case "hs256":
            alg = "HS256"
        case "wrong-audience":
            claims["aud"] = "not-an-audience"
        case "unknown-issuer":
            claims["iss"] = _pick(draw, [p.url for p in ISSUERS if p not in declared] or ["https://evil"])
        case "garbage":
            return [_pick(draw, _GARBAGE)]
        case "basic":
            return ["Basic dXNlcjpwYXNz"]
    token = mint(claims, key, alg)
    match failure:
        case "lower-case-bearer":
            return ["bearer " + token]
        case "two-lines":
            return ["Bearer " + token, "Bearer " + token]
    return ["Bearer " + token]


def _focus(draw, gen: Generated, service_name: str | None = None) -> tuple[n.Service, Literals, Literals]:
    """A service (the named one, if any), the literals of one of its rules (a request built from
    them is likely to match it), and the literals of the whole policy."""
    services = list(gen.checked.services.values())  # with their templates' rules
    service = gen.checked.services[service_name] if service_name else _pick(draw, services)
    exprs = [c.expr for c in gen.policy_set.conditions] + [r.expr for s in services for r in s.rules]
    rule = _pick(draw, service.rules)
    return service, literals([rule.expr], gen.checked.conditions), literals(exprs, gen.checked.conditions)


@st.composite
def requests(draw, gen: Generated, service_name: str | None = None) -> RawRequest:
    """A raw request whose every part is likely to hit, or just miss, one of the policy's literals;
    mostly for the named service, when one is given."""
    service, focus, everything = _focus(draw, gen, service_name)
    if _rarely(draw):
        method = _pick(draw, _ODD_METHODS)
    else:
        method = _prefer(draw, focus.methods, everything.methods | set(METHODS))
    path = _path(draw, focus, everything)
    host = _pick(draw, service.hosts)
    if _rarely(draw):
        host = _pick(draw, _host_variants(host))
    target = path
    if _rarely(draw):
        target = _pick(draw, [*([f"http://{host}{path}"] if host else []), *_ODD_TARGETS])
    values = [*sorted(focus.header_values | focus.claim_values),
              *sorted(everything.header_values | set(HEADER_VALUES) | everything.claim_values | set(CLAIM_VALUES))]
    header_names = [*sorted(focus.headers), *sorted(set(everything.headers) | set(HEADER_NAMES))]
    headers = []
    for _ in range(draw(st.integers(0, 3))):
        # Names compare without regard to case over HTTP/1.1 and must be lower case over HTTP/2;
        # HTTP/1 drops the spaces and tabs around a value, HTTP/2 keeps them.
        name, value = _pick(draw, header_names), _pick(draw, values)
        headers.append((name.upper() if _rarely(draw) else name, _value_variant(draw, value)))
    for line in _authorization(draw, gen, focus, everything):
        if _rarely(draw):
            line = _pick(draw, (f" {line}", f"{line} ", f"{line}\t"))
        headers.insert(draw(st.integers(0, len(headers))), ("authorization", line))
    if _rarely(draw):
        headers.insert(draw(st.integers(0, len(headers))), _pick(draw, _PROXY_TRICKS))
    if host and _rarely(draw) and _rarely(draw):
        headers.append(("Host", host))  # a second Host line: never routed
    return RawRequest(method, target, host, tuple(headers), _address(draw, focus, everything))


@st.composite
def anonymous_contexts(draw, gen: Generated) -> Context:
    """What the policy filters see of a request that carried no token."""
    _, focus, everything = _focus(draw, gen)
    values = [*sorted(focus.header_values | focus.claim_values), *sorted(everything.claim_values | set(CLAIM_VALUES))]
    header_names = [*sorted(focus.headers), *sorted(set(everything.headers) | set(HEADER_NAMES))]
    headers = {_pick(draw, header_names): tuple(_subset(draw, values[:6], min_size=1))
               for _ in range(draw(st.integers(0, 3)))}
    method = _prefer(draw, focus.methods, everything.methods | set(METHODS))
    return Context(method, _path(draw, focus, everything), headers, _address(draw, focus, everything), None, now=NOW)


def arbitrary_requests() -> st.SearchStrategy[RawRequest]:
    """Requests of any text, except that the peer is an IP address (the proxy's peer always is)
    and the target holds no LF (what follows one would be another request)."""
    text = st.text(max_size=12)
    header_names = st.one_of(st.sampled_from(["authorization", "Authorization", "host", "x-tenant"]), text)
    header_values = st.one_of(text, text.map("Bearer ".__add__))
    return st.builds(RawRequest, st.one_of(st.sampled_from(METHODS), text), text.filter(lambda t: "\n" not in t),
                     st.none() | text, st.lists(st.tuples(header_names, header_values), max_size=3).map(tuple),
                     st.ip_addresses().map(str))


# Metadata a gRPC client cannot choose: grpcio sets it, or the proxy does.
GRPC_TRANSPORT = frozenset({"content-type", "te", "host", "user-agent", "grpc-timeout", "grpc-encoding",
                            "grpc-accept-encoding"})


def _grpc_host_variants(host: str) -> list[str]:
    # What an `:authority` can be that grpcio sends as given.
    return [host.upper(), host + ".", "x" + host, "unknown.internal"]


@st.composite
def grpc_calls(draw, gen: Generated, service_name: str | None = None) -> RawRequest:
    """A gRPC call (`POST /Service/Method` of the gRPC content-type, over HTTP/2) whose method,
    authority, metadata and token are likely to hit, or just miss, the policy's literals."""
    service, focus, everything = _focus(draw, gen, service_name)
    path = _prefer(draw, focus.paths, everything.paths | set(GRPC_PATHS))
    if _rarely(draw) or _rarely(draw):
        path = _pick(draw, grpc_near_misses(path))
    host = _pick(draw, service.hosts)
    if _rarely(draw):
        host = _pick(draw, _grpc_host_variants(host))
    values = [*sorted(focus.header_values | focus.claim_values),
              *sorted(everything.header_values | set(HEADER_VALUES) | everything.claim_values | set(CLAIM_VALUES))]
    names = [name for name in [*sorted(focus.headers), *sorted(set(everything.headers) | set(HEADER_NAMES))]
             if name not in GRPC_TRANSPORT and name != "authorization"]
    # Names may repeat and values carry spaces around them (grpcio refuses tabs): HTTP/2 keeps them.
    metadata = [(_pick(draw, names), _value_variant(draw, _pick(draw, values)).replace("\t", " "))
                for _ in range(draw(st.integers(0, 3)))]
    lines = [f" {line}" if _rarely(draw) else line for line in _authorization(draw, gen, focus, everything)[:1]]
    return grpc_call_request(path, host, [*metadata, *(("authorization", line) for line in lines)])


def grpc_call_request(path: str, host: str | None, metadata=()) -> RawRequest:
    """The request grpcio sends for a call, as the interpreter reads it."""
    return RawRequest("POST", path, host, (("content-type", GRPC_CONTENT_TYPE), *metadata), protocol="h2c")
