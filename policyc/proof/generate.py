"""Requests aimed at a policy: its literals, and the near misses that tell a careful matcher from a
careless one. Takes a checked policy set and a seeded `random.Random`; returns `RawRequest`s.

`policyc verify` uses these to go beyond users' case files. Tokens are minted with the signing
keys it is given, per issuer; requests for issuers without a key go without a token.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .. import nodes as n
from ..checked import Checked
from ..credentials import tokens as devtokens
from ..semantics.glob import ANY, parse_glob
from ..semantics.request import RawRequest
from ..semantics.tokens import put_claim


@dataclass
class Literals:
    """The values some conditions compare requests with."""

    methods: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)  # equalities, prefixes and glob instances
    headers: dict[str, set[str]] = field(default_factory=dict)
    cidrs: set[str] = field(default_factory=set)
    claims: set[tuple[str, ...]] = field(default_factory=set)
    claim_values: set[str] = field(default_factory=set)

    @property
    def header_values(self) -> set[str]:
        return {v for values in self.headers.values() for v in values}


def literals(exprs: Iterable[n.Expr], conditions: dict[str, n.Condition]) -> Literals:
    """The literals of `exprs`, with those of the conditions they name."""
    found = Literals()
    todo, seen = list(exprs), set()
    while todo:
        for node in n.walk(todo.pop()):
            match node:
                case n.ConditionRef(name) if name not in seen:
                    seen.add(name)
                    todo.append(conditions[name].expr)
                case n.MethodTest(_, methods):
                    found.methods.update(methods)
                case n.PathTest(n.Op.GLOB, (glob,)):
                    found.paths.update(glob_instances(glob))
                case n.PathTest(_, paths):
                    found.paths.update(paths)
                case n.GrpcTest():  # as parsed; a checked set holds its path tests instead
                    todo.append(n.grpc_paths(node))
                case n.HeaderTest(name, _, values):
                    found.headers.setdefault(name, set()).update(values)
                case n.HeaderPresent(name) | n.HeaderEqualsClaim(name):
                    found.headers.setdefault(name, set())
                case n.SourceIn(cidrs):
                    found.cidrs.update(cidrs)
                case n.ClaimTest(claim, _, values):
                    found.claims.add(claim.path)
                    found.claim_values.update(values)
                case n.ClaimIsBool(claim):
                    found.claims.add(claim.path)
            if isinstance(node, n.HeaderEqualsClaim):
                found.claims.add(node.claim.path)
    return found


def glob_instances(glob: str) -> list[str]:
    """Paths a glob matches: its stars filled with nothing, one segment and two."""
    form = parse_glob(glob)
    found = ["/".join(stars if s is ANY else star.join(s) for s in form)
             for star, stars in (("", ""), ("x", "a"), ("v1.csv", "a/b"))]
    found.append("/".join("*".join(s) for s in form if s is not ANY) or "/")  # `**` as zero segments
    return found


def near_misses(path: str) -> list[str]:
    """Targets that normalize to `path`, or to something a careless matcher might confuse with it."""
    first = path.find("/") + 1
    encoded = path[:first] + f"%{ord(path[first]):02x}" + path[first + 1:] if len(path) > first else path
    return [path + "/", path.rstrip("/") or "/", path.upper(), path + ";x", path + "x", "/x/.." + path,
            path.replace("/", "//"), path.replace("/", "\\"), encoded, path + "?a=b", path + "?a=/..;b", path + "%2F",
            path + "#f", "/./" + path.lstrip("/")]


def grpc_near_misses(path: str) -> list[str]:
    """gRPC calls (`/package.Service/Method`) a careless matcher might confuse with `path`:
    another method or service by a letter or by case, the service alone, and spellings that
    normalize to `path`."""
    service, _, method = path[1:].rpartition("/")
    return [path + "X", path.lower(), path.upper(), f"/{service}X/{method}", f"/{service}/{method.lower()}",
            f"/{service}", f"/{service}/", path + "/", "/x/.." + path, path.replace("/", "//"), path + "?x=1",
            path + ";x", f"/{service}/%{ord(method[0]):02X}{method[1:]}" if method else path + "%2F"]


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RequestGenerator:
    """Seeded requests for one checked policy set, mostly aimed at one service's rules."""

    def __init__(self, checked: Checked, signing_keys: dict[str, dict], seed: int = 0):
        self.checked, self.keys = checked, signing_keys
        self.random = random.Random(seed)
        exprs = [c.expr for c in checked.conditions.values()]
        exprs += [r.expr for s in checked.services.values() for r in s.rules]
        self.everything = literals(exprs, checked.conditions)

    def pick(self, values: Iterable, fallback: Iterable = ()):
        values = sorted(values) or sorted(fallback)
        return self.random.choice(values) if values else None

    def request(self, service: n.Service) -> RawRequest:
        rng = self.random
        focus = literals([rng.choice(service.rules).expr], self.checked.conditions) if service.rules else Literals()
        method = self.pick(focus.methods, _METHODS) if rng.random() < 0.8 else rng.choice(_METHODS)
        path = self.pick(focus.paths, self.everything.paths | {"/"})
        if rng.random() < 0.2:
            path = rng.choice(near_misses(path))
        host = rng.choice(service.hosts)
        if rng.random() < 0.1:
            host = rng.choice([host.upper(), host + ".", "unknown.invalid"])
        headers = []
        names = sorted(focus.headers) or sorted(self.everything.headers)
        for _ in range(rng.randint(0, 2) if names else 0):
            name = rng.choice(names)
            headers.append((name, self.pick(focus.headers.get(name, ()), self.everything.header_values | {"x"})))
        token = self.token(focus)
        if token is not None:
            headers.append(("authorization", token))
        return RawRequest(method, path, host, tuple(headers))

    def token(self, focus: Literals) -> str | None:
        rng = self.random
        issuers = sorted(name for name in self.checked.issuers if name in self.keys)
        if not issuers or rng.random() < 0.25:
            return None
        issuer = self.checked.issuers[rng.choice(issuers)]
        now = int(time.time())
        claims = {"iss": issuer.url, "iat": now, "exp": now + 3600}
        if issuer.audiences:
            claims["aud"] = rng.choice(issuer.audiences)
        values = sorted(focus.claim_values | self.everything.claim_values) or ["x"]
        for path in sorted(focus.claims | self.everything.claims):
            value = rng.choice(values)
            put_claim(claims, path, [value] if rng.random() < 0.3 else value)
        claims.setdefault("sub", rng.choice(values))
        failure = rng.random()
        if failure < 0.05:
            claims["exp"] = now - 3600
        elif failure < 0.1:
            claims["aud"] = "not-an-audience"
        scheme = "bearer" if failure > 0.97 else "Bearer"
        return f"{scheme} {devtokens.mint(claims, self.keys[issuer.name])}"


