"""Hypothesis strategies that build `nodes` trees directly: `any_file()` for the printer and
`checked_policy(world)` for the checker and interpreter, plus raw requests biased to a policy."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import jwt
from hypothesis import strategies as st

from policyc import devtokens
from policyc import nodes as n
from policyc.check import Checked, check
from policyc.interpret.evaluator import Context
from policyc.interpret.request import RawRequest
from policyc.source import Span
from policyc.syntax.printer import format_file

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
            "enforce", "dry-run")
# A bare name is read as a keyword only where that keyword can start an atom, so a parsed tree
# never holds a condition reference by one of these names; every other name position takes any.
_ATOM_KEYWORDS = frozenset({"not", "authenticated", "issuer", "method", "path", "header", "source",
                            "member", "token"})

_bare_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True)
names = st.one_of(
    st.sampled_from(KEYWORDS),
    _bare_names,
    st.tuples(st.sampled_from(KEYWORDS), _bare_names).map("".join),  # keyword prefixes: "order", "notx"
)
_reference_names = names.filter(lambda name: name not in _ATOM_KEYWORDS)

# Fragments that stress quoting: escapes, comment and line characters, non-BMP, a lone surrogate.
_TRICKY = ('"', "\\", '\\"', "\\u0041", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "#", "# x", "\u2028",
           "\u0085", "\ufeff", "é", "𝄞", "\ud800", "}", "]", ")", " and ", "token.x")
strings = st.one_of(
    st.text(max_size=8),
    st.lists(st.one_of(st.sampled_from(_TRICKY), st.text(max_size=2)), max_size=4).map("".join),
)
_entity_refs = st.one_of(
    strings,
    st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,5}:([A-Za-z0-9_.-]{1,5}/)?[A-Za-z0-9_.-]{1,5}", fullmatch=True),
)
_any_claims = st.builds(n.Claim, st.lists(st.one_of(names, strings), min_size=1, max_size=3).map(tuple))


def _networks(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    return st.builds(lambda address, length: str(ipaddress.ip_network((address, length), strict=False)),
                     st.ip_addresses(v=version), st.integers(0, bits))


_ANY_VOCABULARY = Vocabulary(
    methods=names, paths=strings, prefixes=strings, globs=strings, header_names=strings,
    header_values=strings, cidrs=st.one_of(_networks(4), _networks(6), strings), claims=_any_claims,
    claim_values=strings, min_list=0, issuers=names, conditions=_reference_names, groups=strings,
    owned=_entity_refs,
)
_any_expressions = expressions(atoms_of(_ANY_VOCABULARY), 3)
_issuer_settings = st.one_of(
    st.builds(n.IssuerUrl, strings),
    st.builds(n.JwksUri, strings),
    st.builds(n.JwksFile, strings),
    st.builds(n.Audience, _some(strings, 0)),
    st.builds(n.CatalogUsers),
)
_service_settings = st.one_of(
    st.builds(n.Hosts, _some(strings, 0)),
    st.builds(n.Upstream, strings),
    st.builds(n.ModeSetting, st.sampled_from(n.Mode)),
)
_any_rules = st.builds(n.Rule, st.sampled_from(n.Effect), st.booleans(), strings, _any_expressions)
_any_items = st.one_of(
    st.builds(n.Import, strings),
    st.builds(n.Catalog, strings),
    st.builds(n.Condition, names, _any_expressions),
    st.builds(n.Issuer, names, st.lists(_issuer_settings, max_size=4).map(tuple)),
    st.builds(n.Service, names, st.lists(_service_settings, max_size=3).map(tuple),
              st.lists(_any_rules, max_size=3).map(tuple)),
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

NOW = 1_700_000_000  # the clock of every generated token and decision


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
spec: {type: organization, children: [platform]}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: platform}
spec: {type: department, children: []}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: sre}
spec: {type: team, parent: platform, children: []}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: payments-team}
spec: {type: team, parent: group:org, children: [], members: [dave]}
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
metadata: {name: carol}
spec: {}
---
apiVersion: backstage.io/v1alpha1
kind: User
metadata: {name: dave}
spec: {}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: payments}
spec: {owner: payments-team}
---
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: ledger}
spec: {owner: user:carol}
---
apiVersion: backstage.io/v1alpha1
kind: API
metadata: {name: billing}
spec: {owner: group:sre}
"""
CATALOG_USERS = ("user:default/alice", "user:default/bob", "user:default/carol", "user:default/dave",
                 "user:default/mallory")
CATALOG_GROUPS = ("group:default/sre", "group:default/platform", "group:default/org",
                  "group:default/payments-team", "group:default/nobody", "user:default/carol")


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
    return World(root)


# ---------------------------------------------------------------- checked_policy: well-formed policy sets

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND")
PATHS = ("/", "/healthz", "/admin", "/admin;x", "/api/v1/items", "/api/v1/tenants/acme/invoices",
         "/debug/vars", "/reports/q1.csv", "/a%20b")
PREFIXES = ("/", "/api/", "/api/v1/", "/debug/", "/admin", "/reports/")
GLOBS = ("/api/*/items/**", "/api/v1/**", "/reports/*.csv", "/v*/x", "/**", "/*", "/admin/**",
         "/api/v1/tenants/*/invoices", "/a*b*c")
HEADER_NAMES = ("x-tenant", "x-role", "accept", "authorization")
HEADER_VALUES = ("acme", "globex", "admin", "editor", "", "application/json")
CIDRS = ("10.0.0.0/8", "10.20.0.0/16", "192.168.1.0/24", "127.0.0.1/32", "0.0.0.0/0", "::1/128",
         "fd00:20::/32", "2001:db8::/32", "::/0")
CLAIMS = (("sub",), ("email",), ("tenant",), ("email_verified",), ("roles",), ("https://example.com/roles",),
          ("org", "team"), ("ent",))
CLAIM_VALUES = ("user:default/alice", "acme", "admin", "ledger-reader", "@example.com", "alice@example.com",
                "group:default/sre", "")
GROUPS = ("group:default/sre", "sre", "platform", "group:org", "payments-team", "Group:Default/SRE")
OWNED = ("component:payments", "component:default/ledger", "Component:Payments", "api:billing")
CONDITION_NAMES = ("read_only", "sre", "from_office", "c-3")
RULE_NAMES = ("health", "no-debug", "read", "write", "tenant", "r.1", "team:x")
SERVICES = (
    ("payments", ("payments.internal", "payments.internal:8443")),
    ("ledger", ("ledger.internal", "10.1.2.3")),
    ("docs", ("docs.internal:8080", "[fd00::1]:8443")),
)


def vocabulary(issuers: Iterable[str], conditions: Iterable[str], catalog_users: bool) -> Vocabulary:
    """Literals the checker accepts, naming only what the policy declares."""
    return _vocabulary(tuple(sorted(issuers)), tuple(sorted(conditions)), catalog_users)


# Strategies are cached because building (and validating) fresh ones for every example costs
# more than drawing from them.
@cache
def _vocabulary(issuers: tuple[str, ...], conditions: tuple[str, ...], catalog_users: bool) -> Vocabulary:
    return Vocabulary(
        methods=st.sampled_from(METHODS), paths=st.sampled_from(PATHS), prefixes=st.sampled_from(PREFIXES),
        globs=st.sampled_from(GLOBS), header_names=st.sampled_from(HEADER_NAMES),
        header_values=st.sampled_from(HEADER_VALUES),
        cidrs=st.one_of(st.sampled_from(CIDRS), _networks(4), _networks(6).filter(_not_mapped)),
        claims=st.sampled_from(CLAIMS).map(n.Claim), claim_values=st.sampled_from(CLAIM_VALUES), min_list=1,
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
    """A policy set that checked without errors, and the world its files live in."""

    world: World
    policy_set: n.PolicySet
    checked: Checked = field(repr=False)

    def vocabulary(self) -> Vocabulary:
        issuers = self.checked.issuers.values()
        return vocabulary((i.name for i in issuers), self.checked.conditions,
                          any(i.catalog_users for i in issuers))


def check_clean(policy_set: n.PolicySet) -> Checked:
    """`check`, failing on any error: a generated policy set must be well formed."""
    checked, diagnostics = check(policy_set)
    errors = [f"{d.code}: {d.message}" for d in diagnostics if d.is_error]
    assert not errors, errors
    return checked


@cache
def _issuer(profile: IssuerProfile, here: Span) -> st.SearchStrategy[n.Issuer]:
    settings = st.tuples(
        st.none() | st.lists(st.sampled_from(AUDIENCES), min_size=1, max_size=2, unique=True),
        st.booleans(),
    ).map(lambda chosen: [
        n.IssuerUrl(profile.url),
        # Spans matter here: the checker resolves the file against the declaring file's folder.
        n.JwksFile(f"keys/{profile.name}.jwks.json", here),
        *([n.Audience(tuple(chosen[0]))] if chosen[0] else []),
        *([n.CatalogUsers()] if chosen[1] else []),
    ])
    return settings.flatmap(st.permutations).map(lambda s: n.Issuer(profile.name, tuple(s)))


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


@cache
def _rule_lists(v: Vocabulary) -> st.SearchStrategy[list[n.Rule]]:
    return st.lists(rules(v), max_size=5, unique_by=lambda r: r.name)


@cache
def _service(profile: tuple[str, tuple[str, ...]], v: Vocabulary) -> st.SearchStrategy[n.Service]:
    name, pool = profile

    def settings(hosts, mode) -> list[n.ServiceSetting]:
        return [n.Hosts(tuple(hosts)), n.Upstream("127.0.0.1:8080")] + ([n.ModeSetting(mode)] if mode else [])

    all_settings = st.builds(settings, st.lists(st.sampled_from(pool), min_size=1, unique=True),
                             st.sampled_from([None, n.Mode.ENFORCE, n.Mode.DRY_RUN]))
    return st.builds(lambda s, r: n.Service(name, tuple(s), tuple(r)),
                     all_settings.flatmap(st.permutations), _rule_lists(v))


@st.composite
def checked_policy(draw, world: World) -> Generated:
    here = Span(world.policy_path, 1, 1, 1, 1)
    profiles = draw(st.lists(st.sampled_from(ISSUERS), unique=True, max_size=3))
    issuers = [draw(_issuer(profile, here)) for profile in profiles]
    catalog_users = any(i.catalog_users for i in issuers)
    conditions: list[n.Condition] = []
    # Each condition may use only those before it, so conditions never form a cycle.
    for name in draw(st.lists(st.sampled_from(CONDITION_NAMES), unique=True, max_size=3)):
        v = vocabulary((i.name for i in issuers), (c.name for c in conditions), catalog_users)
        conditions.append(n.Condition(name, draw(condition_expressions(v))))
    v = vocabulary((i.name for i in issuers), (c.name for c in conditions), catalog_users)
    profiles = draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True))
    services = [draw(_service(profile, v)) for profile in profiles]
    # The catalog only matters to `member`, which needs a `catalog users` issuer; reading it is
    # most of what `check` costs.
    catalog = [n.Catalog("catalog", here)] if catalog_users else []
    items = (*issuers, *catalog, *conditions, *services)
    policy_set = n.PolicySet((n.PolicyFile(world.policy_path, items),))
    return Generated(world, policy_set, check_clean(policy_set))


# ---------------------------------------------------------------- requests biased to a policy's literals


@dataclass
class Literals:
    """The values a policy's conditions compare requests with."""

    methods: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)  # equalities, prefixes and glob instances
    headers: dict[str, set[str]] = field(default_factory=dict)
    cidrs: set[str] = field(default_factory=set)
    claims: set[tuple[str, ...]] = field(default_factory=set)
    claim_values: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)


def literals(policy_set: n.PolicySet) -> Literals:
    found = Literals()
    exprs = [c.expr for c in policy_set.conditions] + [r.expr for s in policy_set.services for r in s.rules]
    found.hosts = {h for s in policy_set.services for h in s.hosts}
    for node in (node for expr in exprs for node in n.walk(expr)):
        match node:
            case n.MethodTest(_, methods):
                found.methods.update(methods)
            case n.PathTest(GLOB, (glob,)):
                found.paths.update(_glob_instances(glob))
            case n.PathTest(_, paths):
                found.paths.update(paths)
            case n.HeaderTest(name, _, values):
                found.headers.setdefault(name, set()).update(values)
            case n.HeaderPresent(name):
                found.headers.setdefault(name, set())
            case n.HeaderEqualsClaim(name, claim):
                found.headers.setdefault(name, set())
                found.claims.add(claim.path)
            case n.SourceIn(cidrs):
                found.cidrs.update(cidrs)
            case n.ClaimTest(claim, _, values):
                found.claims.add(claim.path)
                found.claim_values.update(values)
            case n.ClaimIsBool(claim, _):
                found.claims.add(claim.path)
    return found


def _glob_instances(glob: str) -> list[str]:
    segments = glob.split("/")
    found = []
    for star, stars in (("", ""), ("x", "a"), ("v1.csv", "a/b")):
        found.append("/".join(stars if s == "**" else s.replace("*", star) for s in segments))
    found.append("/".join(s for s in segments if s != "**") or "/")  # `**` as zero segments
    return found


def _near_misses(path: str) -> list[str]:
    """Targets that normalize to `path`, or to something a careless matcher might confuse with it."""
    first = path.find("/", 0) + 1
    encoded = path[:first] + f"%{ord(path[first]):02x}" + path[first + 1:] if len(path) > first else path
    return [path, path + "/", path.rstrip("/") or "/", path.upper(), path + ";x", path + "x",
            "/x/.." + path, path.replace("/", "//"), path.replace("/", "\\"), encoded, path + "?a=b",
            path + "%2F", path + "#f", "/./" + path.lstrip("/")]


_ODD_TARGETS = ("*", "/%2e%2e/admin", "/%00", "/a b", "http://payments.internal:8443/api/v1/items",
                "HTTP://LEDGER.INTERNAL/admin", "ftp://x/", "http://u@docs.internal:8080/", "\t/admin",
                "/é", "")


def _sample(preferred: Iterable, fallback: Iterable) -> st.SearchStrategy:
    """The policy's own values first (shrinking goes there), the shared vocabulary besides."""
    preferred = sorted(preferred)
    fallback = st.sampled_from(sorted(fallback))
    return st.one_of(st.sampled_from(preferred), fallback) if preferred else fallback


def _addresses(cidrs: Iterable[str]) -> st.SearchStrategy[str]:
    """Peers at the edges of each range, just outside it, and a few usual suspects."""
    found = {"127.0.0.1", "::1", "10.0.0.1", "::ffff:10.0.0.1", "192.168.1.7", "fd00:20::5", "8.8.8.8"}
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr)
        first, last = int(network.network_address), int(network.broadcast_address)
        top = 2 ** network.max_prefixlen - 1
        for value in (first, first + 1, last, first - 1, last + 1):
            if 0 <= value <= top:
                found.add(str(ipaddress.ip_address(value) if network.version == 4
                              else ipaddress.IPv6Address(value)))
    return st.one_of(st.sampled_from(sorted(found)), st.ip_addresses().map(str))


def _host_variants(host: str) -> list[str]:
    # Envoy forgives ASCII case only: not a trailing dot, another port, or a look-alike.
    return [host, host.upper(), host + ".", host.rpartition(":")[0] or host + ":80", "x" + host, " " + host]


def _paths(lit: Literals) -> st.SearchStrategy[str]:
    base = set(PATHS + PREFIXES) | {p for glob in GLOBS for p in _glob_instances(glob)}
    return _sample(lit.paths, base).flatmap(lambda path: st.sampled_from(_near_misses(path)))


@st.composite
def _claims(draw, lit: Literals, profile: IssuerProfile, issuer: n.Issuer | None) -> dict:
    claims: dict = {"iss": profile.url, "iat": NOW, "exp": NOW + 3600}
    audiences = issuer.audiences if issuer else ()
    if audiences:
        # The proxy drops a scheme and a trailing slash on both sides before comparing.
        aud = draw(st.sampled_from(audiences).flatmap(
            lambda a: st.sampled_from([a, a.removeprefix("https://").rstrip("/")])))
        claims["aud"] = draw(st.sampled_from([aud, [aud], ["other", aud]]))
    elif draw(st.booleans()):
        claims["aud"] = "anything"
    claims["sub"] = draw(_sample(CATALOG_USERS, lit.claim_values | set(CLAIM_VALUES)))
    values = _sample(lit.claim_values, CLAIM_VALUES)
    claim_value = st.one_of(values, st.lists(values, max_size=3), st.booleans(), st.integers(-1, 1),
                            st.dictionaries(st.sampled_from(["team", "roles"]), values, max_size=2))
    claims["ent"] = draw(st.one_of(st.lists(st.sampled_from(CATALOG_GROUPS), max_size=2), claim_value))
    for path in sorted(lit.claims | set(CLAIMS)):
        if path[0] in claims or not draw(st.booleans()):
            continue  # registered claims keep the types the proxy demands
        _put(claims, path, draw(claim_value))
    return claims


def _put(claims: dict, path: tuple[str, ...], value) -> None:
    here = claims
    for key in path[:-1]:
        here = here.setdefault(key, {})
        if not isinstance(here, dict):
            return  # another claim already holds a value at this prefix
    here.setdefault(path[-1], value)


_FAILURES = ("expired", "not-yet-valid", "no-exp", "stranger", "alg-none", "hs256", "wrong-audience",
             "unknown-issuer", "garbage", "lower-case-bearer", "basic", "two-lines")


@st.composite
def _authorization(draw, gen: Generated, lit: Literals) -> list[str]:
    """The Authorization lines of a request: none, a valid token of a declared issuer, or a failure."""
    kind = draw(st.sampled_from(["none", "valid", "valid", "failing"]))
    if kind == "none":
        return []
    declared = [p for p in ISSUERS if p.name in gen.checked.issuers]
    profile = draw(st.sampled_from(declared or ISSUERS))
    claims = draw(_claims(lit, profile, gen.checked.issuers.get(profile.name)))
    key = profile.name
    if kind == "valid":
        return ["Bearer " + mint(claims, key)]
    failure = draw(st.sampled_from(_FAILURES))
    alg = None
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
            claims["iss"] = draw(st.sampled_from([p.url for p in ISSUERS if p not in declared] or ["https://evil"]))
        case "garbage":
            return [draw(st.sampled_from(["Bearer x", "Bearer a.b.c", "Bearer ", "Bearer ...", "xBearer a"]))]
    token = mint(claims, key, alg)
    match failure:
        case "lower-case-bearer":
            return ["bearer " + token]
        case "basic":
            return ["Basic dXNlcjpwYXNz"]
        case "two-lines":
            return ["Bearer " + token, "Bearer " + token]
    return ["Bearer " + token]


@st.composite
def requests(draw, gen: Generated) -> RawRequest:
    """A raw request whose every part is likely to hit, or just miss, one of the policy's literals."""
    lit = literals(gen.policy_set)
    method = draw(st.one_of(_sample(lit.methods, METHODS), st.sampled_from(["get", "Get", "X"])))
    path = draw(_paths(lit))
    host = draw(st.one_of(_sample(lit.hosts, ["unknown.internal"]).flatmap(lambda h: st.sampled_from(_host_variants(h))),
                          st.none()))
    target = draw(st.one_of(
        st.just(path),
        st.just(f"http://{host}{path}") if host else st.nothing(),
        st.sampled_from(_ODD_TARGETS),
    ))
    header_values = st.sampled_from(sorted({v for vs in lit.headers.values() for v in vs} | set(HEADER_VALUES)
                                           | lit.claim_values | set(CLAIM_VALUES)))
    header_name = _sample(lit.headers, HEADER_NAMES).flatmap(lambda h: st.sampled_from([h, h.upper()]))
    headers = draw(st.lists(st.tuples(header_name, header_values), max_size=4))
    for line in draw(_authorization(gen, lit)):
        headers.insert(draw(st.integers(0, len(headers))), ("authorization", line))
    source = draw(_addresses(lit.cidrs | set(CIDRS)))
    return RawRequest(method, target, host, tuple(headers), source)


@st.composite
def anonymous_contexts(draw, gen: Generated) -> Context:
    """What the policy filters see of a request that carried no token."""
    lit = literals(gen.policy_set)
    values = st.sampled_from(sorted(set(HEADER_VALUES) | lit.claim_values | set(CLAIM_VALUES)))
    headers = draw(st.dictionaries(_sample(lit.headers, HEADER_NAMES), st.lists(values, min_size=1, max_size=2)
                                   .map(tuple), max_size=3))
    return Context(draw(_sample(lit.methods, METHODS)), draw(_paths(lit)), headers,
                   draw(_addresses(lit.cidrs | set(CIDRS))), None)
