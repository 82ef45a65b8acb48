"""lark parse tree → `nodes` (the only module that knows the grammar's rule names).

Takes the tree of one file and returns its `PolicyFile`, plus diagnostics for bad string escapes.
"""

from __future__ import annotations

import json
import re

from lark import Token, Tree

from .. import nodes as n
from ..diagnostics import Diagnostic
from ..source import Span


def _token_span(path: str, token: Token) -> Span:
    return Span(path, token.line, token.column, token.end_line, token.end_column)


# An escape, or a raw surrogate (only unsaved text from an editor can hold one).
_ESCAPE = re.compile("\\\\(?:u([0-9a-fA-F]{4})|.)|[\ud800-\udfff]")


def _unpaired(raw: str) -> re.Match:
    """The first surrogate in the string token `raw` without its other half right next to it; the
    caller knows there is one."""
    high = None  # a high half, waiting for a low half right after it
    for found in _ESCAPE.finditer(raw):
        if len(found.group()) == 1:
            return found
        code = int(found.group(1), 16) if found.group(1) else -1
        if high is not None:
            if found.start() != high.end() or not 0xDC00 <= code <= 0xDFFF:
                return high
            high = None
        elif 0xD800 <= code <= 0xDBFF:
            high = found
        elif 0xDC00 <= code <= 0xDFFF:
            return found
    return high


class ToAst:
    """Builds nodes bottom-up: each method is named after a grammar rule and takes the rule's
    positions and its children, already built."""

    def __init__(self, path: str):
        self.path = path
        self.diagnostics: list[Diagnostic] = []

    def transform(self, tree: Tree):
        """The node for `tree`, children first, without recursion. A plain loop instead of a lark
        `Transformer`, whose per-call wrappers cost more than building the nodes."""
        built: dict[int, object] = {}
        for subtree in tree.iter_subtrees():
            children = [built.pop(id(c)) if isinstance(c, Tree) else c for c in subtree.children]
            built[id(subtree)] = getattr(self, subtree.data)(subtree.meta, children)
        return built[id(tree)]

    # -- helpers
    def span(self, meta) -> Span:
        return Span(self.path, meta.line, meta.column, meta.end_line, meta.end_column)

    def text(self, token: Token, listed: bool = False) -> str | n.Param:
        if token.type == "PARAM":
            return n.Param(str(token)[1:], listed, _token_span(self.path, token))
        if token.type != "STRING":
            return str(token)
        raw = str(token)[1:-1]
        if "\\" not in raw and raw.isascii() and raw.isprintable():
            return raw  # what JSON reads it as, without the decoder's work: most strings are plain
        try:
            value = json.loads(token)
        except json.JSONDecodeError:
            self.diagnostics.append(Diagnostic(
                "parse/bad-string", "invalid escape in string", _token_span(self.path, token),
                hint='strings use JSON escapes: \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX',
            ))
            return str(token)[1:-1]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # JSON decodes a `\uD800` without its other half to a lone surrogate, which is no
            # character: no UTF-8 file, header or token can hold it.
            self.diagnostics.append(self._lone_surrogate(token))
            return str(token)[1:-1]
        return value

    def _lone_surrogate(self, token: Token) -> Diagnostic:
        found = _unpaired(str(token))
        column = token.column + found.start()
        shown = found.group() if len(found.group()) > 1 else f"\\u{ord(found.group()):04x}"
        return Diagnostic(
            "parse/lone-surrogate", f"`{shown}` is half of a UTF-16 surrogate pair, not a character",
            Span(self.path, token.line, column, token.line, column + len(found.group())),
            hint='write the character itself, or both halves of its pair: "\\ud83d\\ude00" is U+1F600',
        )

    def texts(self, tokens) -> tuple[tuple[str, ...], tuple[Span, ...]]:
        values = tuple(self.text(t) for t in tokens)
        return values, tuple(_token_span(self.path, t) for t in tokens)

    def file_setting(self, kind: type, meta, children):
        """A statement naming a file (`import`, `catalog`, `… file`): its path, span and the string's span."""
        return kind(self.text(children[0]), self.span(meta), _token_span(self.path, children[0]))

    def listed(self, child) -> tuple[tuple[str, ...], tuple[Span, ...]]:
        """A `_string_or_list` or `_values` child: a lone STRING token, a string_list's tokens, or
        a PARAM token standing for a whole list."""
        if isinstance(child, Token) and child.type == "PARAM":
            return (self.text(child, listed=True),), (_token_span(self.path, child),)
        return self.texts([child] if isinstance(child, Token) else child)

    def argument_value(self, child) -> tuple[str | tuple[str, ...], tuple[Span, ...]]:
        """An `_argument_value`: one string or ref, or a list of strings."""
        if isinstance(child, Token):
            return self.text(child), (_token_span(self.path, child),)
        return self.texts(child)

    # -- file
    def start(self, meta, items):
        return n.PolicyFile(self.path, tuple(items))

    def import_stmt(self, meta, children):
        return self.file_setting(n.Import, meta, children)

    def catalog(self, meta, children):
        return self.file_setting(n.Catalog, meta, children)

    def issuer(self, meta, children):
        name, *settings = children
        return n.Issuer(str(name), tuple(settings), self.span(meta), _token_span(self.path, name))

    def issuer_url(self, meta, children):
        return n.IssuerUrl(self.text(children[0]), self.span(meta))

    def jwks_remote(self, meta, children):
        return n.JwksUri(self.text(children[0]), self.span(meta))

    def jwks_file(self, meta, children):
        return self.file_setting(n.JwksFile, meta, children)

    def audience(self, meta, children):
        return n.Audience(self.listed(children[0])[0], self.span(meta))

    def catalog_users(self, meta, children):
        return n.CatalogUsers(self.span(meta))

    def trust(self, meta, children):
        name, *settings = children
        return n.Trust(str(name), tuple(settings), self.span(meta), _token_span(self.path, name))

    def ca_file(self, meta, children):
        return self.file_setting(n.CaFile, meta, children)

    def tls(self, meta, children):
        return n.Tls(tuple(children), self.span(meta))

    def cert_file(self, meta, children):
        return self.file_setting(n.CertFile, meta, children)

    def key_file(self, meta, children):
        return self.file_setting(n.KeyFile, meta, children)

    def outside_template(self, expr: n.Expr) -> None:
        """A `$parameter` stands for a value only in a template: elsewhere it names nothing."""
        for param in (p for node in n.walk(expr) for p in n.params_of(node)):
            self.diagnostics.append(Diagnostic(
                "template/parameter-outside", f"`${param.name}` is a template parameter, outside any template",
                param.span, hint="write the value itself, or move the rule into a template"))

    def condition_def(self, meta, children):
        name, expr = children
        self.outside_template(expr)
        return n.Condition(str(name), expr, self.span(meta), _token_span(self.path, name))

    def service(self, meta, children):
        name, *items = children
        settings = tuple(i for i in items if not isinstance(i, n.Rule))
        rules = tuple(i for i in items if isinstance(i, n.Rule))
        return n.Service(str(name), settings, rules, self.span(meta), _token_span(self.path, name))

    def template(self, meta, children):
        name, *items = children
        params = tuple(i for i in items if isinstance(i, n.TemplateParam))
        settings = tuple(i for i in items if not isinstance(i, n.TemplateParam | n.Rule))
        rules = tuple(i for i in items if isinstance(i, n.Rule))
        return n.Template(str(name), params, settings, rules, self.span(meta), _token_span(self.path, name))

    def template_param(self, meta, children):
        name, kind, *default = children
        argument = None
        if default:
            value, spans = self.argument_value(default[0])
            argument = n.Argument(str(name), value, self.span(meta), _token_span(self.path, name), spans)
        return n.TemplateParam(str(name), n.ParamType(kind), argument, self.span(meta), _token_span(self.path, name))

    def param_type(self, meta, children):
        return str(children[0])

    def template_rule(self, meta, children):
        locked = isinstance(children[0], Token) and children[0].type == "LOCKED"
        rule = self.any_rule(meta, children[1:] if locked else children)
        return n.Rule(rule.effect, rule.public, rule.name, rule.expr, rule.span, rule.name_span, locked)

    def use(self, meta, children):
        name, *arguments = children
        return n.Use(str(name), tuple(arguments), self.span(meta), _token_span(self.path, name))

    def argument(self, meta, children):
        name, child = children
        value, spans = self.argument_value(child)
        return n.Argument(str(name), value, self.span(meta), _token_span(self.path, name), spans)

    def grant(self, meta, children):
        name, *settings = children
        return n.Grant(str(name), tuple(settings), self.span(meta), _token_span(self.path, name))

    def _grant_setting(self, key: n.GrantKey, meta, child) -> n.GrantSetting:
        if isinstance(child, Token):
            value = str(child) if child.type == "NAME" else self.text(child)
            return n.GrantSetting(key, value, self.span(meta), _token_span(self.path, child))
        self.outside_template(child)
        return n.GrantSetting(key, child, self.span(meta), child.span)

    def grant_service(self, meta, children):
        return self._grant_setting(n.GrantKey.SERVICE, meta, children[0])

    def grant_who(self, meta, children):
        return self._grant_setting(n.GrantKey.WHO, meta, children[0])

    def grant_what(self, meta, children):
        return self._grant_setting(n.GrantKey.WHAT, meta, children[0])

    def grant_from(self, meta, children):
        return self._grant_setting(n.GrantKey.FROM, meta, children[0])

    def grant_until(self, meta, children):
        return self._grant_setting(n.GrantKey.UNTIL, meta, children[0])

    def grant_requested(self, meta, children):
        return self._grant_setting(n.GrantKey.REQUESTED_BY, meta, children[0])

    def grant_approved(self, meta, children):
        return self._grant_setting(n.GrantKey.APPROVED_BY, meta, children[0])

    def grant_reason(self, meta, children):
        return self._grant_setting(n.GrantKey.REASON, meta, children[0])

    def grant_signature(self, meta, children):
        return self._grant_setting(n.GrantKey.SIGNATURE, meta, children[0])

    def grants_config(self, meta, children):
        return n.GrantsConfig(tuple(children), self.span(meta))

    def grants_max_window(self, meta, children):
        return n.GrantsMaxWindow(self.text(children[0]), self.span(meta))

    def grants_key_file(self, meta, children):
        return self.file_setting(n.GrantsKeyFile, meta, children)

    def hosts(self, meta, children):
        values, spans = self.listed(children[0])
        return n.Hosts(values, self.span(meta), spans)

    def upstream(self, meta, children):
        protocol = n.UpstreamProtocol(str(children[1])) if len(children) > 1 else n.UpstreamProtocol.HTTP1
        return n.Upstream(self.text(children[0]), protocol, self.span(meta))

    def mode(self, meta, children):
        return n.ModeSetting(n.Mode(str(children[0])), self.span(meta))

    def path_parameters(self, meta, children):
        return n.PathParameters(self.span(meta))

    def rule(self, meta, children):
        built = self.any_rule(meta, children)
        self.outside_template(built.expr)
        return built

    def any_rule(self, meta, children):
        """A rule of a service or of a template (`template_rule`), without `locked`."""
        effect, *rest = children
        public = len(rest) == 3
        name, expr = rest[-2], rest[-1]
        return n.Rule(n.Effect(str(effect)), public, self.text(name), expr, self.span(meta),
                      _token_span(self.path, name))

    def string_list(self, meta, children):
        return [c for c in children if c is not None]

    # -- conditions
    def or_expr(self, meta, children):
        return n.Or(tuple(children), self.span(meta))

    def and_expr(self, meta, children):
        return n.And(tuple(children), self.span(meta))

    def negation(self, meta, children):
        return n.Not(children[0], self.span(meta))

    def condition_ref(self, meta, children):
        return n.ConditionRef(str(children[0]), self.span(meta))

    def authenticated(self, meta, children):
        return n.Authenticated(self.span(meta))

    def issuer_is(self, meta, children):
        return n.IssuerIs(str(children[0]), self.span(meta))

    def method_eq(self, meta, children):
        return self._method(meta, n.Op.EQ, children)

    def method_in(self, meta, children):
        return self._method(meta, n.Op.IN, children)

    def _method(self, meta, op, tokens):
        spans = tuple(_token_span(self.path, t) for t in tokens)
        return n.MethodTest(op, tuple(str(t) for t in tokens), self.span(meta), spans)

    def _path(self, meta, op, tokens):
        values, spans = self.texts(tokens)
        return n.PathTest(op, values, self.span(meta), spans)

    def path_eq(self, meta, children):
        return self._path(meta, n.Op.EQ, children)

    def path_prefix(self, meta, children):
        return self._path(meta, n.Op.PREFIX, children)

    def path_glob(self, meta, children):
        return self._path(meta, n.Op.GLOB, children)

    def path_in(self, meta, children):
        values, spans = self.listed(children[0])
        return n.PathTest(n.Op.IN, values, self.span(meta), spans)

    def _header(self, meta, op, children):
        name, *tokens = children
        values, spans = self.listed(tokens[0]) if op is n.Op.IN else self.texts(tokens)
        return n.HeaderTest(self.text(name), op, values, self.span(meta), spans)

    def header_eq(self, meta, children):
        return self._header(meta, n.Op.EQ, children)

    def header_prefix(self, meta, children):
        return self._header(meta, n.Op.PREFIX, children)

    def header_suffix(self, meta, children):
        return self._header(meta, n.Op.SUFFIX, children)

    def header_in(self, meta, children):
        return self._header(meta, n.Op.IN, children)

    def header_present(self, meta, children):
        return n.HeaderPresent(self.text(children[0]), self.span(meta))

    def header_eq_claim(self, meta, children):
        return n.HeaderEqualsClaim(self.text(children[0]), children[1], self.span(meta))

    def source_in(self, meta, children):
        values, spans = self.listed(children[0])
        return n.SourceIn(values, self.span(meta), spans)

    def claim(self, meta, children):
        return n.Claim(tuple(self.text(t) for t in children), self.span(meta))

    def _claim(self, meta, op, children):
        claim, *tokens = children
        values, spans = self.listed(tokens[0]) if op is n.Op.IN else self.texts(tokens)
        return n.ClaimTest(claim, op, values, self.span(meta), spans)

    def claim_eq(self, meta, children):
        return self._claim(meta, n.Op.EQ, children)

    def claim_prefix(self, meta, children):
        return self._claim(meta, n.Op.PREFIX, children)

    def claim_suffix(self, meta, children):
        return self._claim(meta, n.Op.SUFFIX, children)

    def claim_in(self, meta, children):
        return self._claim(meta, n.Op.IN, children)

    def claim_contains(self, meta, children):
        return self._claim(meta, n.Op.CONTAINS, children)

    def claim_true(self, meta, children):
        return n.ClaimIsBool(children[0], True, self.span(meta))

    def claim_false(self, meta, children):
        return n.ClaimIsBool(children[0], False, self.span(meta))

    def member(self, meta, children):
        return n.Member(self.text(children[0]), self.span(meta))

    def member_in(self, meta, children):
        return n.Member(self.text(children[0], listed=True), self.span(meta))

    def member_owners(self, meta, children):
        return n.MemberOwners(self.text(children[0]), self.span(meta))

    def _peer(self, meta, op, children):
        field, *tokens = children
        values, spans = self.listed(tokens[0]) if op is n.Op.IN else self.texts(tokens)
        return n.PeerTest(n.PeerField(str(field)), op, values, self.span(meta), spans)

    def peer_eq(self, meta, children):
        return self._peer(meta, n.Op.EQ, children)

    def peer_prefix(self, meta, children):
        return self._peer(meta, n.Op.PREFIX, children)

    def peer_suffix(self, meta, children):
        return self._peer(meta, n.Op.SUFFIX, children)

    def peer_in(self, meta, children):
        return self._peer(meta, n.Op.IN, children)

    def peer_trusted(self, meta, children):
        return n.PeerTrusted(str(children[0]) if children else None, self.span(meta))

    def _grpc(self, meta, kind, op, tokens):
        names, spans = self.texts(tokens)
        return n.GrpcTest(kind, op, names, self.span(meta), spans)

    def grpc_service_eq(self, meta, children):
        return self._grpc(meta, n.GrpcKind.SERVICE, n.Op.EQ, children)

    def grpc_service_in(self, meta, children):
        return self._grpc(meta, n.GrpcKind.SERVICE, n.Op.IN, children[0])

    def grpc_method_eq(self, meta, children):
        return self._grpc(meta, n.GrpcKind.METHOD, n.Op.EQ, children)

    def grpc_method_in(self, meta, children):
        return self._grpc(meta, n.GrpcKind.METHOD, n.Op.IN, children[0])

    def grpc_health(self, meta, children):
        return n.GrpcTest(n.GrpcKind.HEALTH, span=self.span(meta))

    def grpc_reflection(self, meta, children):
        return n.GrpcTest(n.GrpcKind.REFLECTION, span=self.span(meta))
