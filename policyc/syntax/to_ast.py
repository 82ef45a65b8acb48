"""The nodes of one file, built while lark's LALR parser reads it (the only module that knows the
grammar's rule names).

`build(text, path, on_error)` parses with a callback per grammar rule that builds the rule's node
at once, so no lark parse tree is made and walked again: that took about half the time of
parsing. Each node's span is what lark's `propagate_positions` gives a tree node: from its first
token to its last, keywords and punctuation included (a parenthesised condition's own span leaves
out its parentheses; the node around it covers them). It also counts how deep the parse tree
would nest, and builds no nodes past `MAX_DEPTH`, for the caller to refuse the file. Bad string
escapes are diagnostics of their own.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from functools import cache

from lark import Token
from lark.grammar import Rule

from .. import nodes as n
from ..diagnostics import Diagnostic
from ..source import Span
from .grammar import parser

MAX_DEPTH = 64  # parse-tree levels: nodes deeper than this are not built (syntax/__init__.py refuses them)


class Built:
    """What a reduction leaves on the parser's stack: the node (or, for a `_rule` the grammar
    inlines, its children, for the parent to take in), the first and last tokens of the text it
    covers, and how many parse-tree levels it nests (0 for an inlined rule's own level)."""

    __slots__ = ("value", "first", "last", "height")

    def __init__(self, value, first: Token | None, last: Token | None, height: int):
        self.value, self.first, self.last, self.height = value, first, last, height


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
    span and its children, already built."""

    def __init__(self, path: str):
        self.path = path
        self.diagnostics: list[Diagnostic] = []
        self._params_made = self._params_looked_at = 0  # `$parameter`s built, and by the last look

    # -- helpers
    def text(self, token: Token, listed: bool = False) -> str | n.Param:
        if token.type == "PARAM":
            self._params_made += 1
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

    def file_setting(self, kind: type, span, children):
        """A statement naming a file (`import`, `catalog`, `… file`): its path, span and the string's span."""
        return kind(self.text(children[0]), span, _token_span(self.path, children[0]))

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
    def start(self, span, items):
        return n.PolicyFile(self.path, tuple(items))

    def import_stmt(self, span, children):
        return self.file_setting(n.Import, span, children)

    def catalog(self, span, children):
        return self.file_setting(n.Catalog, span, children)

    def issuer(self, span, children):
        name, *settings = children
        return n.Issuer(str(name), tuple(settings), span, _token_span(self.path, name))

    def issuer_url(self, span, children):
        return n.IssuerUrl(self.text(children[0]), span)

    def jwks_remote(self, span, children):
        return n.JwksUri(self.text(children[0]), span)

    def jwks_file(self, span, children):
        return self.file_setting(n.JwksFile, span, children)

    def audience(self, span, children):
        return n.Audience(self.listed(children[0])[0], span)

    def catalog_users(self, span, children):
        return n.CatalogUsers(span)

    def trust(self, span, children):
        name, *settings = children
        return n.Trust(str(name), tuple(settings), span, _token_span(self.path, name))

    def ca_file(self, span, children):
        return self.file_setting(n.CaFile, span, children)

    def tls(self, span, children):
        return n.Tls(tuple(children), span)

    def cert_file(self, span, children):
        return self.file_setting(n.CertFile, span, children)

    def key_file(self, span, children):
        return self.file_setting(n.KeyFile, span, children)

    def outside_template(self, expr: n.Expr) -> None:
        """A `$parameter` stands for a value only in a template: elsewhere it names nothing."""
        if self._params_made == self._params_looked_at:
            # Nodes are built in the order of the text, so `expr`'s were all built since the last
            # look: none was a parameter, and the walk, a tenth of parsing, is not needed.
            return
        self._params_looked_at = self._params_made
        for param in (p for node in n.walk(expr) for p in n.params_of(node)):
            self.diagnostics.append(Diagnostic(
                "template/parameter-outside", f"`${param.name}` is a template parameter, outside any template",
                param.span, hint="write the value itself, or move the rule into a template"))

    def condition_def(self, span, children):
        name, expr = children
        self.outside_template(expr)
        return n.Condition(str(name), expr, span, _token_span(self.path, name))

    def service(self, span, children):
        name, *items = children
        settings = tuple(i for i in items if not isinstance(i, n.Rule))
        rules = tuple(i for i in items if isinstance(i, n.Rule))
        return n.Service(str(name), settings, rules, span, _token_span(self.path, name))

    def template(self, span, children):
        name, *items = children
        params = tuple(i for i in items if isinstance(i, n.TemplateParam))
        settings = tuple(i for i in items if not isinstance(i, n.TemplateParam | n.Rule))
        rules = tuple(i for i in items if isinstance(i, n.Rule))
        return n.Template(str(name), params, settings, rules, span, _token_span(self.path, name))

    def template_param(self, span, children):
        name, kind, *default = children
        argument = None
        if default:
            value, spans = self.argument_value(default[0])
            argument = n.Argument(str(name), value, span, _token_span(self.path, name), spans)
        return n.TemplateParam(str(name), n.ParamType(kind), argument, span, _token_span(self.path, name))

    def param_type(self, span, children):
        return str(children[0])

    def template_rule(self, span, children):
        locked = isinstance(children[0], Token) and children[0].type == "LOCKED"
        rule = self.any_rule(span, children[1:] if locked else children)
        return n.Rule(rule.effect, rule.public, rule.name, rule.expr, rule.span, rule.name_span, locked)

    def use(self, span, children):
        name, *arguments = children
        return n.Use(str(name), tuple(arguments), span, _token_span(self.path, name))

    def argument(self, span, children):
        name, child = children
        value, spans = self.argument_value(child)
        return n.Argument(str(name), value, span, _token_span(self.path, name), spans)

    def grant(self, span, children):
        name, *settings = children
        return n.Grant(str(name), tuple(settings), span, _token_span(self.path, name))

    def _grant_setting(self, key: n.GrantKey, span, child) -> n.GrantSetting:
        if isinstance(child, Token):
            value = str(child) if child.type == "NAME" else self.text(child)
            return n.GrantSetting(key, value, span, _token_span(self.path, child))
        self.outside_template(child)
        return n.GrantSetting(key, child, span, child.span)

    def grant_service(self, span, children):
        return self._grant_setting(n.GrantKey.SERVICE, span, children[0])

    def grant_who(self, span, children):
        return self._grant_setting(n.GrantKey.WHO, span, children[0])

    def grant_what(self, span, children):
        return self._grant_setting(n.GrantKey.WHAT, span, children[0])

    def grant_from(self, span, children):
        return self._grant_setting(n.GrantKey.FROM, span, children[0])

    def grant_until(self, span, children):
        return self._grant_setting(n.GrantKey.UNTIL, span, children[0])

    def grant_requested(self, span, children):
        return self._grant_setting(n.GrantKey.REQUESTED_BY, span, children[0])

    def grant_approved(self, span, children):
        return self._grant_setting(n.GrantKey.APPROVED_BY, span, children[0])

    def grant_reason(self, span, children):
        return self._grant_setting(n.GrantKey.REASON, span, children[0])

    def grant_signature(self, span, children):
        return self._grant_setting(n.GrantKey.SIGNATURE, span, children[0])

    def grants_config(self, span, children):
        return n.GrantsConfig(tuple(children), span)

    def grants_max_window(self, span, children):
        return n.GrantsMaxWindow(self.text(children[0]), span)

    def grants_key_file(self, span, children):
        return self.file_setting(n.GrantsKeyFile, span, children)

    def hosts(self, span, children):
        values, spans = self.listed(children[0])
        return n.Hosts(values, span, spans)

    def upstream(self, span, children):
        protocol = n.UpstreamProtocol(str(children[1])) if len(children) > 1 else n.UpstreamProtocol.HTTP1
        return n.Upstream(self.text(children[0]), protocol, span)

    def mode(self, span, children):
        return n.ModeSetting(n.Mode(str(children[0])), span)

    def path_parameters(self, span, children):
        return n.PathParameters(span)

    def rule(self, span, children):
        built = self.any_rule(span, children)
        self.outside_template(built.expr)
        return built

    def any_rule(self, span, children):
        """A rule of a service or of a template (`template_rule`), without `locked`."""
        effect, *rest = children
        public = len(rest) == 3
        name, expr = rest[-2], rest[-1]
        return n.Rule(n.Effect(str(effect)), public, self.text(name), expr, span,
                      _token_span(self.path, name))

    def string_list(self, span, children):
        return [c for c in children if c is not None]

    # -- conditions
    def or_expr(self, span, children):
        return n.Or(tuple(children), span)

    def and_expr(self, span, children):
        return n.And(tuple(children), span)

    def negation(self, span, children):
        return n.Not(children[0], span)

    def condition_ref(self, span, children):
        return n.ConditionRef(str(children[0]), span)

    def authenticated(self, span, children):
        return n.Authenticated(span)

    def issuer_is(self, span, children):
        return n.IssuerIs(str(children[0]), span)

    def method_eq(self, span, children):
        return self._method(span, n.Op.EQ, children)

    def method_in(self, span, children):
        return self._method(span, n.Op.IN, children)

    def _method(self, span, op, tokens):
        spans = tuple(_token_span(self.path, t) for t in tokens)
        return n.MethodTest(op, tuple(str(t) for t in tokens), span, spans)

    def _path(self, span, op, tokens):
        values, spans = self.texts(tokens)
        return n.PathTest(op, values, span, spans)

    def path_eq(self, span, children):
        return self._path(span, n.Op.EQ, children)

    def path_prefix(self, span, children):
        return self._path(span, n.Op.PREFIX, children)

    def path_glob(self, span, children):
        return self._path(span, n.Op.GLOB, children)

    def path_in(self, span, children):
        values, spans = self.listed(children[0])
        return n.PathTest(n.Op.IN, values, span, spans)

    def _header(self, span, op, children):
        name, *tokens = children
        values, spans = self.listed(tokens[0]) if op is n.Op.IN else self.texts(tokens)
        return n.HeaderTest(self.text(name), op, values, span, spans)

    def header_eq(self, span, children):
        return self._header(span, n.Op.EQ, children)

    def header_prefix(self, span, children):
        return self._header(span, n.Op.PREFIX, children)

    def header_suffix(self, span, children):
        return self._header(span, n.Op.SUFFIX, children)

    def header_in(self, span, children):
        return self._header(span, n.Op.IN, children)

    def header_present(self, span, children):
        return n.HeaderPresent(self.text(children[0]), span)

    def header_eq_claim(self, span, children):
        return n.HeaderEqualsClaim(self.text(children[0]), children[1], span)

    def source_in(self, span, children):
        values, spans = self.listed(children[0])
        return n.SourceIn(values, span, spans)

    def claim(self, span, children):
        return n.Claim(tuple(self.text(t) for t in children), span)

    def _claim(self, span, op, children):
        claim, *tokens = children
        values, spans = self.listed(tokens[0]) if op is n.Op.IN else self.texts(tokens)
        return n.ClaimTest(claim, op, values, span, spans)

    def claim_eq(self, span, children):
        return self._claim(span, n.Op.EQ, children)

    def claim_prefix(self, span, children):
        return self._claim(span, n.Op.PREFIX, children)

    def claim_suffix(self, span, children):
        return self._claim(span, n.Op.SUFFIX, children)

    def claim_in(self, span, children):
        return self._claim(span, n.Op.IN, children)

    def claim_contains(self, span, children):
        return self._claim(span, n.Op.CONTAINS, children)

    def claim_true(self, span, children):
        return n.ClaimIsBool(children[0], True, span)

    def claim_false(self, span, children):
        return n.ClaimIsBool(children[0], False, span)

    def member(self, span, children):
        return n.Member(self.text(children[0]), span)

    def member_in(self, span, children):
        return n.Member(self.text(children[0], listed=True), span)

    def member_owners(self, span, children):
        return n.MemberOwners(self.text(children[0]), span)

    def _peer(self, span, op, children):
        field, *tokens = children
        values, spans = self.listed(tokens[0]) if op is n.Op.IN else self.texts(tokens)
        return n.PeerTest(n.PeerField(str(field)), op, values, span, spans)

    def peer_eq(self, span, children):
        return self._peer(span, n.Op.EQ, children)

    def peer_prefix(self, span, children):
        return self._peer(span, n.Op.PREFIX, children)

    def peer_suffix(self, span, children):
        return self._peer(span, n.Op.SUFFIX, children)

    def peer_in(self, span, children):
        return self._peer(span, n.Op.IN, children)

    def peer_trusted(self, span, children):
        return n.PeerTrusted(str(children[0]) if children else None, span)

    def _grpc(self, span, kind, op, tokens):
        names, spans = self.texts(tokens)
        return n.GrpcTest(kind, op, names, span, spans)

    def grpc_service_eq(self, span, children):
        return self._grpc(span, n.GrpcKind.SERVICE, n.Op.EQ, children)

    def grpc_service_in(self, span, children):
        return self._grpc(span, n.GrpcKind.SERVICE, n.Op.IN, children[0])

    def grpc_method_eq(self, span, children):
        return self._grpc(span, n.GrpcKind.METHOD, n.Op.EQ, children)

    def grpc_method_in(self, span, children):
        return self._grpc(span, n.GrpcKind.METHOD, n.Op.IN, children[0])

    def grpc_health(self, span, children):
        return n.GrpcTest(n.GrpcKind.HEALTH, span=span)

    def grpc_reflection(self, span, children):
        return n.GrpcTest(n.GrpcKind.REFLECTION, span=span)


def build(text: str, path: str, on_error: Callable) -> tuple[Built, list[Diagnostic]]:
    """The parse of `text`: the `PolicyFile` (`.value`, unless deeper than `MAX_DEPTH`) and the
    tree's depth (`.height`), and the diagnostics of its strings. Raises lark's `UnexpectedInput`
    when `on_error` gives up; after errors it resumes from, the result means nothing."""
    builder = ToAst(path)
    frontend = copy.copy(parser().parser)  # lark's own, but for the callbacks: the lexer is shared
    frontend.parser = copy.copy(frontend.parser)
    frontend.parser.parser = copy.copy(frontend.parser.parser)
    frontend.parser.parser.callbacks = {rule: _reduction(builder, *plan) for rule, plan in _plans().items()}
    return frontend.parse(text, on_error=on_error), builder.diagnostics


@cache
def _plans() -> dict[Rule, tuple[str, int, tuple[tuple[int, bool], ...], bool]]:
    """Per grammar rule, how lark's tree builder would shape its node: the name it is built by
    (a `_rule` is inlined into its parent's), how many children it has, those kept (anonymous
    tokens such as keywords are dropped) and whether each is an inlined rule whose children are
    taken in, and whether a `?rule` with one child kept gives that child instead of a node."""
    plans = {}
    for rule in parser().rules:
        kept = tuple((i, not symbol.is_term and symbol.name.startswith("_"))
                     for i, symbol in enumerate(rule.expansion)
                     if rule.options.keep_all_tokens or not (symbol.is_term and symbol.filter_out))
        expand1 = bool(rule.options.expand1 and not rule.alias)
        plans[rule] = (rule.alias or rule.origin.name, len(rule.expansion), kept, expand1)
    return plans


def _reduction(builder: ToAst, name: str, arity: int, kept: tuple[tuple[int, bool], ...], expand1: bool) -> Callable:
    """lark's callback for one grammar rule: its children on the stack → a `Built` (see `_plans`)."""
    if expand1 and arity == 1 and kept == ((0, False),):
        return _only_child  # `?expr: or_expr`: the child as it is, over the same text
    inlined_rule = name.startswith("_")
    # None for an inlined rule, and for `?expr`, which always gives its one child.
    method = None if inlined_rule else getattr(builder, name, None)
    path = builder.path

    def reduce(children: list) -> Built | Token:
        first = last = None
        for child in children:  # tokens and nodes of empty text have no position
            if (first := child if isinstance(child, Token) else child.first) is not None:
                break
        for child in reversed(children):
            if (last := child if isinstance(child, Token) else child.last) is not None:
                break
        values, height = [], 0
        for i, inlined in kept:
            child = children[i]
            if isinstance(child, Token):
                values.append(child)
                continue
            if child.height > height:
                height = child.height
            if inlined and not values:
                # A repetition (`x*`) is a left-recursive inlined rule: taking over its list,
                # which nothing else holds, rather than copying it keeps a long one linear.
                values = child.value
            elif inlined:
                values += child.value
            else:
                values.append(child.value)
        if inlined_rule:
            return Built(values, first, last, height)
        if expand1 and len(values) == 1:
            # The child as it is, but covering this rule's text (parentheses), as lark does.
            return values[0] if isinstance(values[0], Token) else Built(values[0], first, last, height)
        if height >= MAX_DEPTH:
            return Built(None, first, last, height + 1)
        span = Span(path, first.line, first.column, last.end_line, last.end_column) if first else None
        return Built(method(span, values), first, last, height + 1)

    return reduce


def _only_child(children: list) -> Built | Token:
    return children[0]
