"""Printer: `nodes.PolicyFile` (+ the source's comments) → canonical `.policy` text.

`parse(format_file(f)) == f` for every tree; comments are kept next to the item or rule they
precede, or at the end of the line they trail.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import nodes as n
from ..source import Source

INDENT = "    "
LINE_WIDTH = 100
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_ENTITY_REF = re.compile(r"[A-Za-z][A-Za-z0-9_-]*:([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+\Z")
_TOKENS = re.compile(r'"([^"\\\n]|\\[^\n])*"|#[^\n]*')


@dataclass(frozen=True)
class Comment:
    line: int
    text: str
    trailing: bool  # code stands before it on its line


def comments_of(source: Source) -> list[Comment]:
    """Every `#` comment, found the way the lexer finds them (never inside a string)."""
    found = []
    for match in _TOKENS.finditer(source.text):
        if match.group().startswith("#"):
            start = match.start()
            line_start = source.text.rfind("\n", 0, start) + 1
            trailing = bool(source.text[line_start:start].strip())
            found.append(Comment(source.text.count("\n", 0, start) + 1, match.group().rstrip(), trailing))
    return found


def string(value: str) -> str:
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates can only be written escaped
        text = json.dumps(value)
    return text


def string_list(values) -> str:
    return "[" + ", ".join(string(v) for v in values) + "]"


def _param(values) -> n.Param | None:
    """The template parameter that `values` stand for, if they are one."""
    return values[0] if len(values) == 1 and isinstance(values[0], n.Param) else None


def value(v: n.Value) -> str:
    """One value of a condition: a string, or a template's `$parameter`."""
    return f"${v.name}" if isinstance(v, n.Param) else string(v)


def _string_or_list(values) -> str:
    if (param := _param(values)) is not None:
        return value(param)
    return string(values[0]) if len(values) == 1 else string_list(values)


# ---------------------------------------------------------------- conditions

_OR, _AND, _NOT, _ATOM = 1, 2, 3, 4


def _level(expr: n.Expr) -> int:
    return {n.Or: _OR, n.And: _AND, n.Not: _NOT}.get(type(expr), _ATOM)


def _operand(expr: n.Expr, parent_level: int) -> str:
    # A nested and/or of the same kind keeps its parentheses so that the tree round-trips.
    needs_parens = _level(expr) <= parent_level and _level(expr) != _NOT
    text = expression(expr)
    return f"({text})" if needs_parens else text


def claim(c: n.Claim) -> str:
    return "token" + "".join(f".{seg}" if _NAME.match(seg) else f"[{string(seg)}]" for seg in c.path)


def _values(op: n.Op, values) -> str:
    if op is n.Op.IN:
        return value(values[0]) if _param(values) else string_list(values)
    return value(values[0])


class ExpressionPrinter(n.Visitor):
    """Conditions as text, gRPC atoms included: the printer reads trees as written."""

    def visit_Or(self, e: n.Or) -> str:
        return " or ".join(_operand(o, _OR) for o in e.operands)

    def visit_And(self, e: n.And) -> str:
        return " and ".join(_operand(o, _AND) for o in e.operands)

    def visit_Not(self, e: n.Not) -> str:
        inner = self.visit(e.operand)
        return f"not ({inner})" if _level(e.operand) < _NOT else f"not {inner}"

    def visit_ConditionRef(self, e: n.ConditionRef) -> str:
        return e.name

    def visit_Authenticated(self, e: n.Authenticated) -> str:
        return "authenticated"

    def visit_IssuerIs(self, e: n.IssuerIs) -> str:
        return f"issuer {e.name}"

    def visit_MethodTest(self, e: n.MethodTest) -> str:
        return f"method == {e.methods[0]}" if e.op is n.Op.EQ else f"method in [{', '.join(e.methods)}]"

    def visit_PathTest(self, e: n.PathTest) -> str:
        return f"path {e.op.value} {_values(e.op, e.values)}"

    def visit_HeaderTest(self, e: n.HeaderTest) -> str:
        return f"header {string(e.name)} {e.op.value} {_values(e.op, e.values)}"

    def visit_HeaderPresent(self, e: n.HeaderPresent) -> str:
        return f"header {string(e.name)} present"

    def visit_HeaderEqualsClaim(self, e: n.HeaderEqualsClaim) -> str:
        return f"header {string(e.name)} == {claim(e.claim)}"

    def visit_SourceIn(self, e: n.SourceIn) -> str:
        return f"source in {_string_or_list(e.cidrs)}"

    def visit_ClaimTest(self, e: n.ClaimTest) -> str:
        return f"{claim(e.claim)} {e.op.value} {_values(e.op, e.values)}"

    def visit_ClaimIsBool(self, e: n.ClaimIsBool) -> str:
        return f"{claim(e.claim)} == {'true' if e.value else 'false'}"

    def visit_Member(self, e: n.Member) -> str:
        if isinstance(e.group, n.Param) and e.group.listed:
            return f"member in {value(e.group)}"
        return f"member {value(e.group)}"

    def visit_MemberOwners(self, e: n.MemberOwners) -> str:
        ref = e.entity if isinstance(e.entity, str) and _ENTITY_REF.match(e.entity) else value(e.entity)
        return f"member owners({ref})"

    def visit_PeerTest(self, e: n.PeerTest) -> str:
        return f"peer.{e.field.value} {e.op.value} {_values(e.op, e.values)}"

    def visit_PeerTrusted(self, e: n.PeerTrusted) -> str:
        return "peer trusted" + (f" {e.trust}" if e.trust else "")

    def visit_GrpcTest(self, e: n.GrpcTest) -> str:
        if e.kind not in (n.GrpcKind.SERVICE, n.GrpcKind.METHOD):  # the shorthands name nothing
            return f"grpc {e.kind.value}"
        return f"grpc {e.kind.value} " + (f"in {string_list(e.names)}" if e.op is n.Op.IN else string(e.names[0]))

    def visit_TimeWindow(self, e: n.TimeWindow) -> str:
        # No one writes a window: this is how a grant's rule shows it when its rules are printed.
        return f"time in [{utc(e.start)}, {utc(e.end)})"


def utc(seconds: int) -> str:
    """A time as RFC 3339 in UTC, to the second: how grants write their windows."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_EXPRESSION_PRINTER = ExpressionPrinter()


def expression(expr: n.Expr) -> str:
    """One condition on one line, with the parentheses its tree needs."""
    return _EXPRESSION_PRINTER.visit(expr)


def rule_lines(rule: n.Rule) -> list[str]:
    locked, public = "locked " if rule.locked else "", " public" if rule.public else ""
    head = f"{locked}{rule.effect.value}{public} {string(rule.name)} when "
    one_line = head + expression(rule.expr)
    if len(INDENT + one_line) <= LINE_WIDTH or not isinstance(rule.expr, n.And | n.Or):
        return [one_line]
    joiner, level = ("and", _AND) if isinstance(rule.expr, n.And) else ("or", _OR)
    first, *rest = rule.expr.operands
    return [head + _operand(first, level)] + [f"{INDENT}{joiner} {_operand(o, level)}" for o in rest]


# ---------------------------------------------------------------- declarations


def _issuer_setting(setting: n.IssuerSetting) -> str:
    match setting:
        case n.IssuerUrl(url):
            return f"url {string(url)}"
        case n.JwksUri(uri):
            return f"jwks {string(uri)}"
        case n.JwksFile(path):
            return f"jwks file {string(path)}"
        case n.Audience(values):
            return f"audience {_string_or_list(values)}"
        case n.CatalogUsers():
            return "catalog users"
    raise TypeError(f"no printer for {type(setting).__name__}")


def _service_setting(setting: n.ServiceSetting) -> str:
    match setting:
        case n.Hosts(hosts):
            return f"hosts {_string_or_list(hosts)}"
        case n.Upstream(address, protocol):
            # HTTP/1.1 is the default, written as nothing: the canonical form of `http1`.
            http2 = protocol is n.UpstreamProtocol.HTTP2
            return f"upstream {string(address)}" + (f" {protocol.value}" if http2 else "")
        case n.ModeSetting(mode):
            return f"mode {mode.value}"
        case n.PathParameters():
            return "path parameters allowed"
        case n.Use(template, arguments):
            return f"use {template}({', '.join(f'{a.name} = {_argument(a.value)}' for a in arguments)})"
    raise TypeError(f"no printer for {type(setting).__name__}")


def grant_setting(setting: n.GrantSetting) -> str:
    """One line of a grant, as `grants.signed_text` reads it too."""
    value = setting.value
    if setting.key is n.GrantKey.SERVICE:
        return f"service {value}"
    return f"{setting.key.value} {string(value) if isinstance(value, str) else expression(value)}"


def _grants_setting(setting: n.GrantsMaxWindow | n.GrantsKeyFile) -> str:
    if isinstance(setting, n.GrantsMaxWindow):
        return f"max window {string(setting.duration)}"
    return f"key file {string(setting.path)}"


def _argument(v: str | tuple[str, ...]) -> str:
    if isinstance(v, tuple):
        return string_list(v)
    return v if _ENTITY_REF.match(v) else string(v)


def _template_head(template: n.Template) -> str:
    params = []
    for param in template.params:
        default = f" = {_argument(param.default.value)}" if param.default else ""
        params.append(f"{param.name}: {param.type.value}{default}")
    return f"template {template.name}({', '.join(params)})"


class _Writer:
    """Collects output lines and places each source comment before or after its node."""

    def __init__(self, comments: list[Comment]):
        self.lines: list[str] = []
        self.pending = sorted(comments, key=lambda c: c.line)

    def leading(self, node, indent: str) -> None:
        """Comments that stand before `node` (or inside it, above its last line) go above it."""
        last_line = node.span.end_line if node.span else 0
        while self.pending and self.pending[0].line <= last_line and not (
            self.pending[0].trailing and self.pending[0].line == last_line
        ):
            self.lines.append(indent + self.pending.pop(0).text)

    def emit(self, node, indent: str, texts: list[str]) -> None:
        self.leading(node, indent)
        self.lines.extend(indent + t for t in texts)
        self.trail(node.span.end_line if node.span else 0)

    def trail(self, line: int) -> None:
        """Append the comment that trails source line `line`, if any, to the last output line."""
        if self.pending and self.pending[0].trailing and self.pending[0].line == line:
            self.lines[-1] += "  " + self.pending.pop(0).text

    def rest(self, before_line: int | None, indent: str) -> None:
        while self.pending and (before_line is None or self.pending[0].line < before_line):
            self.lines.append(indent + self.pending.pop(0).text)

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")


def _write_item(writer: _Writer, item: n.Item) -> None:
    match item:
        case n.Import(path):
            writer.emit(item, "", [f"import {string(path)}"])
        case n.Catalog(path):
            writer.emit(item, "", [f"catalog {string(path)}"])
        case n.Condition(name, expr):
            writer.emit(item, "", [f"condition {name} = {expression(expr)}"])
        case n.Issuer(name, settings):
            _write_block(writer, item, f"issuer {name}", [[(s, [_issuer_setting(s)]) for s in settings]])
        case n.Service(name, settings, rules):
            groups = [[(s, [_service_setting(s)]) for s in settings], [(r, rule_lines(r)) for r in rules]]
            _write_block(writer, item, f"service {name}", groups)
        case n.Template():
            groups = [[(s, [_service_setting(s)]) for s in item.settings], [(r, rule_lines(r)) for r in item.rules]]
            _write_block(writer, item, _template_head(item), groups)
        case n.Grant(name, settings):
            _write_block(writer, item, f"grant {name}", [[(s, [grant_setting(s)]) for s in settings]])
        case n.GrantsConfig(settings):
            _write_block(writer, item, "grants", [[(s, [_grants_setting(s)]) for s in settings]])
        case n.Trust(name, settings):
            _write_block(writer, item, f"trust {name}", [[(s, [f"ca file {string(s.path)}"]) for s in settings]])
        case n.Tls(settings):
            lines = [(s, [f"{'cert' if isinstance(s, n.CertFile) else 'key'} file {string(s.path)}"]) for s in settings]
            _write_block(writer, item, "tls", [lines])


def _write_block(writer: _Writer, node, header: str, groups) -> None:
    if node.span:
        writer.rest(node.span.line, "")
    writer.lines.append(header + " {")
    if node.span:
        writer.trail(node.span.line)
    for group in (g for g in groups if g):
        if writer.lines[-1].split("  #")[0] != header + " {":
            writer.lines.append("")
        for member, texts in group:
            writer.emit(member, INDENT, texts)
    if node.span:
        writer.rest(node.span.end_line, INDENT)
    writer.emit(node, "", ["}"])


def format_file(file: n.PolicyFile, source: Source | None = None) -> str:
    """Canonical text of `file`; pass its `source` to keep the comments."""
    writer = _Writer(comments_of(source) if source else [])
    previous: type | None = None
    for item in file.items:
        if writer.lines and not (type(item) is previous and isinstance(item, n.Import | n.Condition | n.Catalog)):
            writer.blank()
        _write_item(writer, item)
        previous = type(item)
    if writer.pending:
        writer.blank()
        writer.rest(None, "")
    return "\n".join(writer.lines) + "\n" if writer.lines else ""
