"""Printer: `nodes.PolicyFile` (+ the source's comments) → canonical `.policy` text.

`parse(format_file(f)) == f` for every tree; comments are kept next to the item or rule they
precede, or at the end of the line they trail.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

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


def _string_or_list(values) -> str:
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
    return string_list(values) if op is n.Op.IN else string(values[0])


def expression(expr: n.Expr) -> str:
    """One condition on one line, with the parentheses its tree needs."""
    match expr:
        case n.Or(operands):
            return " or ".join(_operand(o, _OR) for o in operands)
        case n.And(operands):
            return " and ".join(_operand(o, _AND) for o in operands)
        case n.Not(operand):
            inner = expression(operand)
            return f"not ({inner})" if _level(operand) < _NOT else f"not {inner}"
        case n.ConditionRef(name):
            return name
        case n.Authenticated():
            return "authenticated"
        case n.IssuerIs(name):
            return f"issuer {name}"
        case n.MethodTest(op, methods):
            return f"method == {methods[0]}" if op is n.Op.EQ else f"method in [{', '.join(methods)}]"
        case n.PathTest(op, values):
            return f"path {op.value} {_values(op, values)}"
        case n.HeaderTest(name, op, values):
            return f"header {string(name)} {op.value} {_values(op, values)}"
        case n.HeaderPresent(name):
            return f"header {string(name)} present"
        case n.HeaderEqualsClaim(name, c):
            return f"header {string(name)} == {claim(c)}"
        case n.SourceIn(cidrs):
            return f"source in {_string_or_list(cidrs)}"
        case n.ClaimTest(c, op, values):
            return f"{claim(c)} {op.value} {_values(op, values)}"
        case n.ClaimIsBool(c, value):
            return f"{claim(c)} == {'true' if value else 'false'}"
        case n.Member(group):
            return f"member {string(group)}"
        case n.MemberOwners(entity):
            ref = entity if _ENTITY_REF.match(entity) else string(entity)
            return f"member owners({ref})"
        case n.PeerTest(field, op, values):
            return f"peer.{field.value} {op.value} {_values(op, values)}"
        case n.PeerTrusted(trust):
            return "peer trusted" + (f" {trust}" if trust else "")
        case n.GrpcTest(n.GrpcKind.SERVICE | n.GrpcKind.METHOD as kind, op, names):
            return f"grpc {kind.value} " + (f"in {string_list(names)}" if op is n.Op.IN else string(names[0]))
        case n.GrpcTest(kind):
            return f"grpc {kind.value}"
    raise TypeError(f"no printer for {type(expr).__name__}")


def _rule_lines(rule: n.Rule) -> list[str]:
    head = f"{rule.effect.value}{' public' if rule.public else ''} {string(rule.name)} when "
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
    raise TypeError(f"no printer for {type(setting).__name__}")


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
            groups = [[(s, [_service_setting(s)]) for s in settings], [(r, _rule_lines(r)) for r in rules]]
            _write_block(writer, item, f"service {name}", groups)
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
