"""Check stage: a loaded `PolicySet` → `Checked` (the resolved catalog, keys and name tables) and
every diagnostic: unknown names, duplicates, malformed literals, missing files, files outside the
roots (never opened), catalog errors, and the warnings about rules anonymous callers can match.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import catalog_services, grants
from . import nodes as n
from .catalog import LiveEntities, load_catalog, normalize_ref
from .checked import Checked, ListenerTls
from .diagnostics import Diagnostic, Severity, did_you_mean
from .files import why
from .roots import Roots
from .semantics.compare import path_matches
from .semantics.glob import glob_error
from .semantics.headers import proxy_header
from .semantics.hosts import host_problem, upstream_problem
from .semantics.net import cidr_error
from .semantics.paths import KNOWN_METHODS, Rejected, normalize_path
from .semantics.peer import is_ca
from .source import Span
from .syntax import MAX_DEPTH
from .syntax.printer import expression
from .templates import expand

# Tests in one rule once the conditions it names are written out: far beyond any policy a person
# writes, and small enough that checking, deciding and compiling it take milliseconds.
MAX_TESTS = 1000

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}\Z")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+\Z")
_KEYWORDS = {"import", "catalog", "issuer", "url", "jwks", "file", "audience", "users", "condition",
             "service", "hosts", "upstream", "mode", "when", "or", "and", "not", "authenticated",
             "method", "in", "path", "prefix", "glob", "header", "suffix", "present", "source",
             "contains", "true", "false", "member", "owners", "token", "public", "allow", "deny",
             "enforce", "dry-run", "trust", "ca", "tls", "cert", "key", "peer", "trusted", "parameters",
             "allowed", "grpc", "health", "reflection", "http1", "http2", "template", "use", "locked",
             "string", "ref", "list", "grant", "grants", "who", "what", "from", "until", "requested",
             "approved", "reason", "signature"}
# Protocol buffers' names: a service is its package and name, dotted; a method is an identifier.
_GRPC_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_GRPC_SERVICE = re.compile(rf"{_GRPC_IDENTIFIER}(\.{_GRPC_IDENTIFIER})*\Z")
_GRPC_METHOD = re.compile(rf"{_GRPC_IDENTIFIER}(\.{_GRPC_IDENTIFIER})*/{_GRPC_IDENTIFIER}\Z")



def error(code: str, message: str, span: Span, hint: str | None = None, notes=()) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.ERROR, hint, tuple(notes))


def warning(code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
    return Diagnostic(code, message, span, Severity.WARNING, hint)


def _unique(items, code: str, what: str) -> Iterator[Diagnostic]:
    """A diagnostic at every repeat of a key, with a note pointing at the first."""
    first: dict = {}
    for k, span in items:
        if k in first:
            yield error(code, f"{what} `{k}` is declared twice", span,
                        notes=[("first declared here", first[k])])
        else:
            first[k] = span


# ---------------------------------------------------------------- declarations


FileSetting = n.JwksFile | n.Catalog | n.CaFile | n.CertFile | n.KeyFile


def _confined(setting: FileSetting, roots: Roots) -> tuple[str, list[Diagnostic]]:
    """The file a setting names, resolved against its declaring file, and the refusal to read it
    when it lies outside the roots."""
    path = n.relative_to_declaring_file(setting.span, setting.path)
    refused = roots.refusal(path, setting.path_span or setting.span)
    return path, [refused] if refused else []


def _check_issuer(issuer: n.Issuer, checked: Checked, roots: Roots) -> Iterator[Diagnostic]:
    seen: dict[type, Span] = {}
    for setting in issuer.settings:
        kind = n.JwksUri if isinstance(setting, n.JwksFile) else type(setting)
        if kind in seen:
            yield error("check/duplicate-setting", f"issuer `{issuer.name}` sets this twice", setting.span,
                        notes=[("first set here", seen[kind])])
        seen.setdefault(kind, setting.span)
    if issuer.url is None:
        yield error("check/missing-setting", f"issuer `{issuer.name}` has no `url`", issuer.name_span,
                    hint='add `url "https://…"`: the `iss` its tokens carry')
    elif (problem := _url_problem(issuer.url)) is not None:
        yield error("check/bad-url", f"issuer url {problem}", issuer.first(n.IssuerUrl).span)
    match issuer.jwks:
        case None:
            yield error("check/missing-setting", f"issuer `{issuer.name}` has no `jwks`", issuer.name_span,
                        hint='add `jwks "https://…/jwks.json"` or `jwks file "keys.json"`')
        case n.JwksUri(uri, span):
            if (problem := _url_problem(uri)) is not None:
                yield error("check/bad-url", f"jwks url {problem}", span)
        case n.JwksFile() as setting:
            path, refused = _confined(setting, roots)
            if refused:
                yield from refused
            else:
                yield from _load_key_file(issuer, path, setting.span, checked)
    audience = issuer.first(n.Audience)
    if audience is not None and not audience.values:
        yield error("check/empty-list", "an empty audience list admits no token", audience.span,
                    hint="list the audiences, or remove the setting to accept any")


def _url_problem(url: str) -> str | None:
    """Why `url` cannot be an issuer or JWKS address (https, or http on loopback), if it cannot."""
    match = re.match(r"(https?)://([^/?#\s]+)[^\s]*\Z", url)
    if not match:
        return f"`{url}` is not an absolute http(s) URL"
    scheme, authority = match.groups()
    host = authority.rsplit("@", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        return f"`{url}` uses plain http off loopback; tokens and keys must travel over https"
    return None


def _load_key_file(issuer: n.Issuer, path: str, span: Span, checked: Checked) -> Iterator[Diagnostic]:
    try:
        with open(path, encoding="utf-8") as f:
            jwks = json.load(f)
        jwt.PyJWKSet.from_dict(jwks)
    except (OSError, UnicodeDecodeError) as e:
        yield error("check/missing-key-file", f"cannot read key file `{path}`: {why(e)}", span)
        return
    except (ValueError, RecursionError, jwt.exceptions.PyJWTError, AttributeError, TypeError) as e:
        yield error("check/missing-key-file", f"`{path}` is not a usable JWKS: {e}", span,
                    hint='a JWKS is a JSON object `{"keys": [ … ]}` of public keys')
        return
    keys = [key for key in jwks.get("keys", []) if isinstance(key, dict)]
    if any("d" in key for key in keys):
        yield error("check/missing-key-file", f"`{path}` holds a private key", span,
                    hint="publish only the public half: the proxy needs nothing else")
        return
    # The proxy picks the signature scheme from the key's type and trusts the token's `alg`
    # for the rest, so a key without its own `alg` could verify under an unintended one.
    if not keys or any(key.get("kty") not in ("EC", "RSA") or not key.get("alg") for key in keys):
        yield error("check/missing-key-file", f"`{path}` needs EC or RSA keys, each with its `alg`", span,
                    hint='give every key an "alg" such as "ES256" or "RS256"')
        return
    checked.keys[issuer.name] = jwks


def _read_pem(path: str, span: Span) -> tuple[bytes | None, list[Diagnostic]]:
    try:
        with open(path, "rb") as f:
            return f.read(), []
    except OSError as e:
        return None, [error("check/bad-certificate", f"cannot read `{path}`: {why(e)}", span)]


def _load_certificates(path: str, span: Span) -> tuple[tuple[x509.Certificate, ...], list[Diagnostic]]:
    data, problems = _read_pem(path, span)
    if data is None:
        return (), problems
    if b"PRIVATE KEY" in data:
        return (), [error("check/bad-certificate", f"`{path}` holds a private key", span,
                          hint="a certificate file holds only certificates")]
    try:
        return tuple(x509.load_pem_x509_certificates(data)), []
    except ValueError as e:
        return (), [error("check/bad-certificate", f"`{path}` is not PEM certificates: {e}", span)]


def _check_trust(trust: n.Trust, checked: Checked, roots: Roots) -> Iterator[Diagnostic]:
    if trust.ca is None:
        yield error("check/missing-setting", f"trust `{trust.name}` has no `ca file`", trust.name_span,
                    hint='add `ca file "ca.pem"`: the authority that issues client certificates')
        return
    for extra in trust.settings[1:]:
        yield error("check/duplicate-setting", f"trust `{trust.name}` sets this twice", extra.span,
                    notes=[("first set here", trust.ca.span)])
    path, problems = _confined(trust.ca, roots)
    certificates, problems = ((), problems) if problems else _load_certificates(path, trust.ca.span)
    yield from problems
    if problems:
        return
    if not certificates or not all(is_ca(c) for c in certificates):
        yield error("check/bad-certificate", f"`{path}` must hold CA certificates only", trust.ca.span,
                    hint="a CA certificate has the basicConstraints extension with CA:TRUE")
        return
    checked.trusts[trust.name] = certificates


def _check_tls(tls: n.Tls, checked: Checked, roots: Roots) -> Iterator[Diagnostic]:
    found = {}
    for setting in tls.settings:
        if type(setting) in found:
            yield error("check/duplicate-setting", "`tls` sets this twice", setting.span,
                        notes=[("first set here", found[type(setting)].span)])
        found.setdefault(type(setting), setting)
    if n.CertFile not in found or n.KeyFile not in found:
        yield error("check/missing-setting", "`tls` needs a `cert file` and a `key file`", tls.span,
                    hint='tls { cert file "server.pem" key file "server.key" }')
        return
    cert, key = found[n.CertFile], found[n.KeyFile]
    cert_path, problems = _confined(cert, roots)
    key_path, key_problems = _confined(key, roots)
    if problems or key_problems:
        yield from problems + key_problems
        return
    chain, problems = _load_certificates(cert_path, cert.span)
    key_data, key_problems = _read_pem(key_path, key.span)
    yield from problems + key_problems
    if problems or key_problems:
        return
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as e:
        yield error("check/bad-certificate", f"`{key_path}` is not an unencrypted PEM private key: {e}", key.span)
        return
    if not chain or chain[0].public_key() != private.public_key():
        yield error("check/bad-certificate", "the `key file` does not belong to the `cert file`", key.span)
        return
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
    key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    checked.listener_tls = ListenerTls(pem, key_pem)


def _check_mtls(policy_set: n.PolicySet, checked: Checked, roots: Roots) -> Iterator[Diagnostic]:
    tls_blocks = policy_set.of(n.Tls)
    for extra in tls_blocks[1:]:
        yield error("check/duplicate-setting", "the listener has one `tls` block", extra.span,
                    notes=[("first set here", tls_blocks[0].span)])
    if tls_blocks:
        yield from _check_tls(tls_blocks[0], checked, roots)
    for trust in policy_set.trusts:
        checked.trust_decls.setdefault(trust.name, trust)
        yield from _check_trust(trust, checked, roots)
    if policy_set.trusts and not tls_blocks:
        yield error("check/trust-needs-tls", "client certificates need a TLS listener", policy_set.trusts[0].span,
                    hint='declare tls { cert file "…" key file "…" }')


def _check_service(service: n.Service) -> Iterator[Diagnostic]:
    seen: dict[type, Span] = {}
    for setting in service.settings:
        if type(setting) in seen:
            yield error("check/duplicate-setting", f"service `{service.name}` sets this twice", setting.span,
                        notes=[("first set here", seen[type(setting)])])
        seen.setdefault(type(setting), setting.span)
    hosts = service.first(n.Hosts)
    if hosts is None or not hosts.hosts:
        yield error("check/missing-setting", f"service `{service.name}` has no `hosts`",
                    hosts.span if hosts else service.name_span, hint='add `hosts ["name.internal"]`')
    else:
        for host, span in _with_spans(hosts.hosts, hosts):
            if (problem := host_problem(host)) is not None:
                yield error("check/bad-host", f"host `{host}` {problem}", span)
    if service.upstream is None:
        yield error("check/missing-setting", f"service `{service.name}` has no `upstream`", service.name_span,
                    hint='add `upstream "127.0.0.1:8080"`: where allowed requests go')
    elif (problem := upstream_problem(service.upstream)) is not None:
        yield error("check/bad-upstream", f"upstream `{service.upstream}` {problem}",
                    service.first(n.Upstream).span, hint='write it as "host:port", e.g. "10.0.0.5:8080"')
    yield from _unique(((r.name, r.name_span) for r in service.rules), "check/duplicate-rule",
                       f"service `{service.name}`: rule")
    for rule in service.rules:
        # A template's rule is `template/rule`, a grant's `grant/NAME`: the `/` is theirs alone, so
        # no rule written in a service can pass for one.
        prefix = rule.template or ("grant" if rule.grant else None)
        if not _SAFE_NAME.match(rule.name[len(prefix) + 1:] if prefix else rule.name):
            yield error("check/bad-name", f"rule name `{rule.name}` has characters logs and Envoy cannot carry",
                        rule.name_span, hint="start with a letter or digit, then letters, digits and `_ . : -` "
                                             "(at most 128 in all)")



# ---------------------------------------------------------------- conditions


class _ExprChecker(n.Visitor):
    """The unknown names and malformed literals of one condition: `visit(expr)` yields the
    diagnostics of each node, parents before children. It sees gRPC atoms as written."""

    def __init__(self, checked: Checked, has_catalog_issuer: bool, has_catalog: bool):
        self.checked = checked
        self.has_catalog_issuer = has_catalog_issuer
        self.has_catalog = has_catalog
        self.grpc_seen = False  # whether any gRPC atom was met, to be written out as path tests

    def visit_And(self, node: n.And | n.Or) -> Iterator[Diagnostic]:
        for operand in node.operands:
            yield from self.visit(operand)

    visit_Or = visit_And

    def visit_Not(self, node: n.Not) -> Iterator[Diagnostic]:
        yield from self.visit(node.operand)

    def visit_TimeWindow(self, node: n.TimeWindow):
        return ()  # `grants.expand` made it from a grant it checked

    def visit_ConditionRef(self, node: n.ConditionRef):
        if node.name not in self.checked.conditions:
            yield error("check/unknown-condition", f"no condition is named `{node.name}`", node.span,
                        hint=did_you_mean(node.name, self.checked.conditions))

    def visit_IssuerIs(self, node: n.IssuerIs):
        if node.name not in self.checked.issuers:
            yield error("check/unknown-issuer", f"no issuer is named `{node.name}`", node.span,
                        hint=did_you_mean(node.name, self.checked.issuers))

    def visit_MethodTest(self, node: n.MethodTest):
        for method, span in _with_spans(node.methods, node):
            if not _METHOD.match(method):
                # Upper case is the fix only for a method the proxy accepts: `fetch` is refused as `FETCH` too.
                hint = f"write `{method.upper()}`" if _accepted_method(method.upper()) else _METHODS_HINT
                yield error("check/bad-method", f"`{method}` is not an upper-case HTTP method", span, hint=hint)
            elif not _accepted_method(method):
                yield error("check/bad-method", f"the proxy refuses `{method}` requests before any rule",
                            span, hint=_METHODS_HINT)

    def visit_PathTest(self, node: n.PathTest):
        if node.op is n.Op.IN and not node.values:
            yield error("check/empty-list", "an empty list never matches", node.span)
        for value, span in _with_spans(node.values, node):
            if node.op is n.Op.GLOB:
                if (problem := glob_error(value)) is not None:
                    yield error("check/bad-glob", f"glob `{value}` {problem}", span)
            elif (problem := path_problem(value, prefix=node.op is n.Op.PREFIX)) is not None:
                yield error("check/bad-path", f"path `{value}` {problem}", span,
                            hint="paths are compared after the proxy normalizes them")

    def visit_GrpcTest(self, node: n.GrpcTest):
        self.grpc_seen = True
        if node.op is n.Op.IN and not node.names:
            yield error("check/empty-list", "an empty list never matches", node.span)
        for name, span in _with_spans(node.names, node):
            if (problem := grpc_name_problem(node.kind, name)) is not None:
                message, hint = problem
                yield error("check/bad-grpc-name", message, span, hint=hint)

    def visit_HeaderTest(self, node: n.HeaderTest):
        yield from _header_name(node.name, node.span)
        if node.op is n.Op.IN and not node.values:
            yield error("check/empty-list", "an empty list never matches", node.span)

    def visit_HeaderPresent(self, node: n.HeaderPresent):
        yield from _header_name(node.name, node.span)

    def visit_HeaderEqualsClaim(self, node: n.HeaderEqualsClaim):
        yield from _header_name(node.name, node.span)
        yield from self._issuer_available(node)

    def visit_Authenticated(self, node: n.Authenticated):
        yield from self._issuer_available(node)

    def visit_ClaimIsBool(self, node: n.ClaimIsBool):
        yield from self._issuer_available(node)

    def visit_SourceIn(self, node: n.SourceIn):
        if not node.cidrs:
            yield error("check/empty-list", "an empty list never matches", node.span)
        for cidr, span in _with_spans(node.cidrs, node):
            if (problem := cidr_error(cidr)) is not None:
                yield error("check/bad-cidr", f"`{cidr}`: {problem}", span)

    def visit_ClaimTest(self, node: n.ClaimTest):
        if node.op is n.Op.IN and not node.values:
            yield error("check/empty-list", "an empty list never matches", node.span)
        yield from self._issuer_available(node)

    def _issuer_available(self, node) -> Iterator[Diagnostic]:
        """A token atom holds only for a verified token, and without an issuer none is accepted."""
        if not self.checked.issuers:
            yield warning("check/token-without-issuer", f"`{expression(node)}` is never true: no `issuer` is "
                          "declared, so no token is ever accepted", node.span,
                          hint='declare the issuer of the callers\' tokens: issuer NAME { url "https://…" '
                               'jwks "https://…/jwks.json" }')

    def visit_Member(self, node: n.Member):
        yield from self._catalog_available(node)
        ref = normalize_ref(node.group, "group")
        if ref is None or not ref.startswith("group:"):
            yield error("check/bad-entity-ref", f"`{node.group}` is not a group ref", node.span,
                        hint='write it as "group:namespace/name" or "name"')
        elif self.has_catalog and not self.checked.catalog.has(ref):
            yield error("check/unknown-group", f"the catalog has no group `{ref}`", node.span,
                        hint=did_you_mean(ref, [r for r in self.checked.catalog.entities if r.startswith("group:")]))

    def visit_MemberOwners(self, node: n.MemberOwners):
        yield from self._catalog_available(node)
        ref = normalize_ref(node.entity, None)
        if ref is None:
            yield error("check/bad-entity-ref", f"`{node.entity}` is not an entity ref with a kind", node.span,
                        hint="write it as kind:name, e.g. component:payments")
        elif self.has_catalog and not self.checked.catalog.has(ref):
            yield error("check/unknown-entity", f"the catalog has no entity `{ref}`", node.span,
                        hint=did_you_mean(ref, self.checked.catalog.entities))
        elif self.has_catalog:
            owner = self.checked.catalog.owner_of(ref)
            if owner is None:
                yield error("check/unknown-entity", f"`{ref}` has no owner in the catalog", node.span)
            elif not self.checked.catalog.has(owner):
                yield error("check/unknown-entity", f"the owner of `{ref}`, `{owner}`, is not in the catalog",
                            node.span, hint="add the owner to the catalog, or fix the entity's spec.owner")

    def visit_PeerTest(self, node: n.PeerTest):
        yield from self._trust_available(node)
        if node.op is n.Op.IN and not node.values:
            yield error("check/empty-list", "an empty list never matches", node.span)

    def visit_PeerTrusted(self, node: n.PeerTrusted):
        yield from self._trust_available(node)
        trusts = self.checked.trust_decls
        if node.trust is None or not trusts:
            return
        if node.trust not in trusts:
            yield error("check/unknown-trust", f"no trust is named `{node.trust}`", node.span,
                        hint=did_you_mean(node.trust, trusts))
        elif len(trusts) > 1:
            # One validation context holds every trusted CA, and nothing after the handshake
            # (RBAC least of all) can tell which of them verified a certificate.
            yield error("check/ambiguous-trust", f"`peer trusted {node.trust}` cannot be told apart from the "
                        f"other {len(trusts) - 1} trust(s)", node.span,
                        hint="name one `trust` only, or match the peer's `uri`, `dns` or `subject`")

    def _trust_available(self, node) -> Iterator[Diagnostic]:
        if not self.checked.trust_decls:
            yield error("check/peer-without-trust", "peer atoms need a `trust` authority", node.span,
                        hint='declare trust NAME { ca file "ca.pem" }: without it no client certificate is asked for')

    def _catalog_available(self, node) -> Iterator[Diagnostic]:
        if not self.has_catalog:
            yield error("check/member-without-catalog", "`member` needs a `catalog`", node.span,
                        hint='declare `catalog "path/to/catalog"`')
        if not self.has_catalog_issuer:
            hint = ("add `catalog users` to the issuer whose tokens name catalog users" if self.checked.issuers
                    else "declare the issuer whose tokens name catalog users, with `catalog users`")
            yield error("check/member-without-catalog", "`member` needs an issuer marked `catalog users`",
                        node.span, hint=hint)


_METHODS_HINT = "methods the proxy accepts: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, …"


def _accepted_method(method: str) -> bool:
    return method in KNOWN_METHODS and method != "CONNECT"


def _with_spans(values, node) -> Iterator[tuple[str, Span]]:
    spans = node.value_spans or (node.span,) * len(values)
    return zip(values, spans, strict=True)


def _header_name(name: str, span: Span) -> Iterator[Diagnostic]:
    if not _HEADER_NAME.match(name):
        hint = _header_hint(name.lower()) if _HEADER_NAME.match(name.lower()) else None
        yield error("check/bad-header-name", f"`{name}` is not a lower-case header name", span, hint=hint)
    elif (why := proxy_header(name)) is not None:
        yield error("check/proxy-header", f"a rule cannot see `{name}` as the client sent it: {why}", span,
                    hint=_header_hint(name))


def _header_hint(name: str) -> str:
    """How to write a test of the lower-case header `name` that the checker accepts: each hint
    leads to a policy without this family's errors, never to `check/proxy-header`."""
    for candidate in (name, name.replace("_", "-")):
        if proxy_header(candidate) is None:
            return f'write "{candidate}"'
    if name.replace("_", "-") == "host":
        return "a rule cannot test the host: list it in a service's `hosts`, whose rules then decide its requests"
    return "test what the proxy leaves as sent instead: `source`, `method`, `path` or another header"


def grpc_name_problem(kind: n.GrpcKind, name: str) -> tuple[str, str] | None:
    """What is wrong with a gRPC service or method name, and how to write it, if anything."""
    if kind is n.GrpcKind.SERVICE:
        if _GRPC_SERVICE.match(name):
            return None
        if _GRPC_METHOD.match(name.lstrip("/")):
            return f"`{name}` names a method, not a service", f'write `grpc method "{name.lstrip("/")}"`'
        return (f"`{name}` is not a gRPC service name",
                'a service is its package and name, dotted: "pkg.v1.Orders" (letters, digits, `_`)')
    if _GRPC_METHOD.match(name):
        return None
    if name.startswith("/") and _GRPC_METHOD.match(name[1:]):
        return f"`{name}` is a path, not a gRPC method name", f'write "{name[1:]}": the path is made from it'
    if _GRPC_SERVICE.match(name):
        return f"`{name}` has no method", f'a method is "Service/Method", e.g. "{name}/Get"; or `grpc service "{name}"`'
    return (f"`{name}` is not a gRPC method name",
            'a method is its service and name: "pkg.v1.Orders/Get" (letters, digits, `_`)')


def path_problem(path: str, prefix: bool = False) -> str | None:
    """Why a literal path (or path prefix) could never begin a normalized request path, if it
    could not: the proxy's own normalization must leave it as written."""
    if not path.startswith("/"):
        return "does not start with `/`"
    if "?" in path or "#" in path:
        return "holds a query or fragment; paths are matched without them"
    # A prefix is tested with a character after it: "/a/." may begin "/a/.well-known".
    probe = path + "x" if prefix else path
    normalized = normalize_path(probe)
    if isinstance(normalized, Rejected):
        return "is refused by the proxy (escaped slashes or characters it rejects)"
    if normalized.path != probe:
        seen = normalized.path[:-1] if prefix and normalized.path.endswith("x") else normalized.path
        return f"is never seen: the proxy turns it into `{seen}`"
    return None


# ---------------------------------------------------------------- conditions: cycles and size


def _references(expr: n.Expr, conditions: dict[str, n.Condition]) -> Iterator[n.ConditionRef]:
    return (node for node in n.walk(expr) if isinstance(node, n.ConditionRef) and node.name in conditions)


def _condition_order(conditions: dict[str, n.Condition]) -> tuple[list[str], list[Diagnostic]]:
    """The conditions, each after those it names, and an error at each reference closing a cycle.
    A loop with an explicit stack, not recursion: a chain of conditions can be longer than
    Python's stack is deep."""
    state: dict[str, str] = {}  # name → "active" | "done"
    order: list[str] = []
    cycles: list[Diagnostic] = []
    for root in conditions:
        if root in state:
            continue
        state[root] = "active"
        frames = [(root, _references(conditions[root].expr, conditions))]
        while frames:
            name, references = frames[-1]
            node = next(references, None)
            if node is None:
                frames.pop()
                state[name] = "done"
                order.append(name)
            elif state.get(node.name) == "active":
                path = [frame_name for frame_name, _ in frames]
                cycle = path[path.index(node.name):] + [node.name]
                cycles.append(error("check/condition-cycle", "conditions refer to each other: "
                                    + " → ".join(f"`{c}`" for c in cycle), node.span))
            elif node.name not in state:
                state[node.name] = "active"
                frames.append((node.name, _references(conditions[node.name].expr, conditions)))
    return order, cycles


@dataclass(frozen=True)
class _Extent:
    """A condition with every condition it names written out: how deep it nests, how many tests."""

    depth: int
    tests: int

    @property
    def too_large(self) -> bool:
        return self.depth > MAX_DEPTH or self.tests > MAX_TESTS


def _extent(expr: n.Expr, known: dict[str, _Extent]) -> _Extent:
    # The interpreter and the RBAC backend write named conditions out, so these bound their work.
    match expr:
        case n.And(operands) | n.Or(operands):
            parts = [_extent(o, known) for o in operands]
            return _Extent(1 + max(p.depth for p in parts), sum(p.tests for p in parts))
        case n.Not(operand):
            inner = _extent(operand, known)
            return _Extent(1 + inner.depth, inner.tests)
        case n.ConditionRef(name) if name in known:
            return _Extent(1 + known[name].depth, known[name].tests)
    return _Extent(1, 1)


def _too_large(what: str, extent: _Extent, span: Span) -> Diagnostic:
    hint = "split it into rules of its own, or simplify the conditions it names"
    if extent.depth > MAX_DEPTH:
        return error("check/too-deep", f"{what}, with the conditions it names written out, nests more than "
                     f"{MAX_DEPTH} levels deep", span, hint=hint)
    return error("check/too-many-tests", f"{what}, with the conditions it names written out, has "
                 f"{extent.tests} tests; at most {MAX_TESTS} are accepted", span, hint=hint)


def _size_limits(checked: Checked, order: list[str]) -> tuple[set[str], list[Diagnostic]]:
    """The rules (by id) over the limits of depth and size, and an error at each condition or rule
    that goes over them by itself (not merely by naming a condition that already does)."""
    extents: dict[str, _Extent] = {}
    over: set[str] = set()  # conditions over the limits
    diagnostics = []

    def measure(what: str, expr: n.Expr, span: Span) -> bool:
        extent = _extent(expr, extents)
        if not extent.too_large:
            return False
        if not any(ref.name in over for ref in _references(expr, checked.conditions)):
            diagnostics.append(_too_large(what, extent, span))
        return True

    for name in order:
        condition = checked.conditions[name]
        extents[name] = _extent(condition.expr, extents)
        if measure(f"condition `{name}`", condition.expr, condition.name_span):
            over.add(name)
    rules_over = {id(rule) for service in checked.services.values() for rule in service.rules
                  if measure(f"rule `{rule.name}`", rule.expr, rule.name_span)}
    return rules_over, diagnostics


# ---------------------------------------------------------------- anonymous callers


def can_match_anonymous(expr: n.Expr, conditions: dict[str, n.Condition]) -> bool:
    """Whether some request without a token or a client certificate could satisfy `expr`
    (three-valued: claim and peer atoms are false)."""
    return _Anonymous(conditions).of(expr) is not False


class _Anonymous(n.Visitor):
    """Whether a condition holds for requests without a token or a client certificate (for
    anonymous gRPC calls of the path `call`, when given). `visit(expr, seen)` takes the names of
    the conditions being written out, so that a cycle (reported elsewhere) depends."""

    def __init__(self, conditions: dict[str, n.Condition], call: str | None = None):
        self.conditions = conditions
        self.call = call

    def of(self, expr: n.Expr) -> bool | None:
        """True/False when `expr` holds/fails for every such request; None when it depends."""
        return self.visit(expr, frozenset())

    def visit_And(self, expr: n.And, seen: frozenset) -> bool | None:
        values = [self.visit(o, seen) for o in expr.operands]
        return False if False in values else (True if all(v is True for v in values) else None)

    def visit_Or(self, expr: n.Or, seen: frozenset) -> bool | None:
        values = [self.visit(o, seen) for o in expr.operands]
        return True if True in values else (False if all(v is False for v in values) else None)

    def visit_Not(self, expr: n.Not, seen: frozenset) -> bool | None:
        value = self.visit(expr.operand, seen)
        return None if value is None else not value

    def visit_ConditionRef(self, expr: n.ConditionRef, seen: frozenset) -> bool | None:
        if expr.name not in self.conditions or expr.name in seen:
            return None
        return self.visit(self.conditions[expr.name].expr, seen | {expr.name})

    def _needs_identity(self, expr: n.Expr, seen: frozenset) -> bool:
        """A token or certificate atom: false without either."""
        return False

    visit_Authenticated = visit_IssuerIs = visit_HeaderEqualsClaim = visit_ClaimTest = _needs_identity
    visit_ClaimIsBool = visit_Member = visit_MemberOwners = visit_PeerTest = visit_PeerTrusted = _needs_identity

    def _depends(self, expr: n.Expr, seen: frozenset) -> None:
        """An atom on what any caller may send."""
        return None

    visit_HeaderTest = visit_HeaderPresent = visit_SourceIn = visit_TimeWindow = _depends

    def visit_GrpcTest(self, expr: n.GrpcTest, seen: frozenset) -> bool | None:
        return self.visit(n.grpc_paths(expr), seen)

    def visit_PathTest(self, expr: n.PathTest, seen: frozenset) -> bool | None:
        return None if self.call is None else path_matches(expr.op, expr.values, self.call)

    def visit_MethodTest(self, expr: n.MethodTest, seen: frozenset) -> bool | None:
        return None if self.call is None else "POST" in expr.methods  # every gRPC call is a POST


def _identity_atom(checked: Checked) -> str | None:
    """An atom true for exactly the callers who proved who they are, when the policies accept
    any proof: a verified token, else a verified client certificate."""
    if checked.issuers:
        return "authenticated"
    return "peer trusted" if checked.trust_decls else None


def _anonymous_warnings(service: n.Service, checked: Checked, skipped: set[int]) -> Iterator[Diagnostic]:
    conditions, identity = checked.conditions, _identity_atom(checked)
    fix = f"add `{identity}`" if identity else "declare an `issuer` and add `authenticated`"
    for rule in service.rules:
        if rule.effect is not n.Effect.ALLOW or id(rule) in skipped:
            continue
        anonymous = can_match_anonymous(rule.expr, conditions)
        if anonymous and not rule.public:
            # A grant is never public: its `who` is to name someone who proved who they are.
            hint = "make its `who` a token claim, a `member` or a client certificate's name" if rule.grant \
                else f"write `allow public` if that is intended, or {fix}"
            yield warning("check/anonymous-allow", f"rule `{rule.name}` can allow callers without a token",
                          rule.name_span, hint=hint)
        elif rule.public and not anonymous:
            yield warning("check/public-needs-no-token",
                          f"rule `{rule.name}` is marked `public` but needs a token or a client certificate to match",
                          rule.name_span, hint="drop `public`")


# ---------------------------------------------------------------- gRPC

# A server reflection call of each version: it lists every service and method the server has.
REFLECTION_CALLS = tuple(f"/{service}/ServerReflectionInfo" for service in n.GRPC_REFLECTION)


def _nodes_written_out(expr: n.Expr, conditions: dict[str, n.Condition]) -> Iterator[n.Expr]:
    """Every node of `expr` and of the conditions it names, each condition once."""
    todo, seen = [expr], set()
    while todo:
        for node in n.walk(todo.pop()):
            yield node
            if isinstance(node, n.ConditionRef) and node.name in conditions and node.name not in seen:
                seen.add(node.name)
                todo.append(conditions[node.name].expr)


def _names_reflection(expr: n.Expr, conditions) -> bool:
    """Whether `expr` names server reflection with a gRPC atom: then admitting it is deliberate."""
    prefixes = tuple(f"/{service}/" for service in n.GRPC_REFLECTION)
    paths = (value for node in _nodes_written_out(expr, conditions) if isinstance(node, n.GrpcTest)
             for test in n.walk(n.grpc_paths(node)) if isinstance(test, n.PathTest) for value in test.values)
    return any(path.startswith(prefixes) for path in paths)


def _grpc_warnings(service: n.Service, checked: Checked, skipped: set[int]) -> Iterator[Diagnostic]:
    """gRPC rules sent to an HTTP/1.1 upstream, and server reflection open to anonymous callers."""
    conditions, identity = checked.conditions, _identity_atom(checked)
    rules = [r for r in service.rules if id(r) not in skipped]
    if service.upstream_protocol is n.UpstreamProtocol.HTTP1:
        grpc_rules = any(isinstance(node, n.GrpcTest) for r in rules for node in _nodes_written_out(r.expr, conditions))
        if grpc_rules and service.upstream is not None:
            yield warning("check/grpc-needs-http2", f"service `{service.name}` has gRPC rules, but its upstream "
                          "speaks HTTP/1.1", service.first(n.Upstream).span,
                          hint=f'gRPC needs HTTP/2: write `upstream "{service.upstream}" http2`')
        return
    denies = [r for r in rules if r.effect is n.Effect.DENY]
    open_calls = [call for call in REFLECTION_CALLS
                  if not any(_Anonymous(conditions, call).of(r.expr) is True for r in denies)]
    for rule in rules:
        if rule.effect is n.Effect.ALLOW and not _names_reflection(rule.expr, conditions) and any(
                _Anonymous(conditions, call).of(rule.expr) is not False for call in open_calls):
            yield warning("check/anonymous-reflection", f"rule `{rule.name}` lets callers without a token "
                          "reach gRPC server reflection", rule.name_span,
                          hint="reflection lists every service and method: add `deny \"no-reflection\" when grpc "
                               f"reflection{f' and not {identity}' if identity else ''}`")


def _written_out_grpc(checked: Checked) -> None:
    """Every gRPC atom of the checked rules and conditions replaced by its path tests, so that
    the interpreter, the backends and the analysis share one meaning of it (`nodes.grpc_paths`)."""
    checked.conditions = {name: replace(c, expr=n.without_grpc(c.expr)) for name, c in checked.conditions.items()}
    checked.services = {name: replace(s, rules=tuple(replace(r, expr=n.without_grpc(r.expr)) for r in s.rules))
                        for name, s in checked.services.items()}


# ---------------------------------------------------------------- entry point


def _grants_key(policy_set: n.PolicySet, roots: Roots) -> tuple[Ed25519PublicKey | None, list[Diagnostic]]:
    """The Ed25519 public key the set's `grants { key file "…" }` names, read under the roots."""
    configs = policy_set.of(n.GrantsConfig)
    setting = configs[0].first(n.GrantsKeyFile) if configs else None
    if setting is None:
        return None, []
    path, problems = _confined(setting, roots)
    if problems:
        return None, problems
    span = setting.path_span or setting.span
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
    except OSError as e:
        return None, [error("grant/bad-key", f"cannot read grants key `{path}`: {why(e)}", span)]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        # Fail closed: a key that cannot check signatures must not let unsigned grants through.
        return None, [error("grant/bad-key", f"`{path}` is not an Ed25519 public key (PEM)", span,
                            hint="make one with `policyc grant keygen`")]
    return key, []


def check(written: n.PolicySet, roots: Roots, live: LiveEntities | None = None,
          now: float | None = None) -> tuple[Checked, list[Diagnostic]]:
    """Every diagnostic of the set, and the name tables, keys and catalog the later stages use.
    Key, certificate and catalog files are read only under `roots`. `live` (entities a running
    Backstage catalog returned) stands in for every catalog folder: none is read then. The
    catalog's annotated entities add services (`catalog_services.generate`), then templates and
    grants are written out (`templates.expand`, `grants.expand`): the checks below, and
    `Checked.services`, see every service, written or generated, with its templates' and grants'
    rules; `Checked.policy_set` stays the set as written. `now` (default: the clock) only decides
    which grants are reported expired."""
    catalog_dirs, refused = [], []
    for statement in written.catalogs if live is None else ():
        path, problems = _confined(statement, roots)
        refused += problems
        if not problems:
            catalog_dirs.append((path, statement.span))
    catalog, catalog_sources, diagnostics = load_catalog(catalog_dirs, live)
    # The catalog's services join the written ones before templates are written out, so that
    # every check below (duplicate names and hosts, locked rules) sees them alike.
    generated, annotation_diagnostics = catalog_services.generate(catalog, written.templates)
    policy_set, template_diagnostics = expand(n.PolicySet(written.files + generated))
    grants_key, key_problems = _grants_key(policy_set, roots)
    policy_set, grant_diagnostics = grants.expand(policy_set, time.time() if now is None else now, grants_key)
    template_diagnostics += key_problems + grant_diagnostics
    checked = Checked(written, catalog, sources=catalog_sources)
    diagnostics = template_diagnostics + refused + diagnostics + annotation_diagnostics

    declared = [(i.name, i.name_span) for i in policy_set.issuers] + \
               [(c.name, c.name_span) for c in policy_set.conditions] + \
               [(s.name, s.name_span) for s in policy_set.services] + \
               [(t.name, t.name_span) for t in policy_set.trusts] + \
               [(t.name, t.name_span) for t in policy_set.templates]
    for name, span in declared:
        if name in _KEYWORDS:
            diagnostics.append(error("check/reserved-name", f"`{name}` is a keyword", span, hint="rename it"))
    diagnostics += _unique(((i.name, i.name_span) for i in policy_set.issuers), "check/duplicate-issuer", "issuer")
    diagnostics += _unique(((i.url, i.first(n.IssuerUrl).span) for i in policy_set.issuers if i.url),
                           "check/duplicate-issuer-url", "issuer url")
    diagnostics += _unique(((c.name, c.name_span) for c in policy_set.conditions),
                           "check/duplicate-condition", "condition")
    diagnostics += _unique(((s.name, s.name_span) for s in policy_set.services),
                           "check/duplicate-service", "service")
    diagnostics += _unique(((t.name, t.name_span) for t in policy_set.trusts), "check/duplicate-trust", "trust")
    diagnostics += _check_mtls(policy_set, checked, roots)
    host_items = [(h.lower(), span) for s in policy_set.services for setting in s.settings
                  if isinstance(setting, n.Hosts) for h, span in _with_spans(setting.hosts, setting)]
    diagnostics += _unique(host_items, "check/duplicate-host", "host")

    for issuer in policy_set.issuers:
        checked.issuers.setdefault(issuer.name, issuer)
        diagnostics += _check_issuer(issuer, checked, roots)
    for condition in policy_set.conditions:
        checked.conditions.setdefault(condition.name, condition)
    for service in policy_set.services:
        checked.services.setdefault(service.name, service)
        diagnostics += _check_service(service)

    has_catalog = bool(policy_set.catalogs) or live is not None
    exprs = _ExprChecker(checked, any(i.catalog_users for i in policy_set.issuers), has_catalog)
    for condition in policy_set.conditions:
        diagnostics += exprs.visit(condition.expr)
    for service in policy_set.services:
        for rule in service.rules:
            diagnostics += exprs.visit(rule.expr)
    order, cycles = _condition_order(checked.conditions)
    diagnostics += cycles
    if not cycles:  # the analyses below write named conditions out: they need them acyclic
        rules_over, size_errors = _size_limits(checked, order)
        diagnostics += size_errors
        for service in policy_set.services:
            diagnostics += _anonymous_warnings(service, checked, rules_over)
            diagnostics += _grpc_warnings(service, checked, rules_over)
    if exprs.grpc_seen:
        _written_out_grpc(checked)
    return checked, diagnostics
