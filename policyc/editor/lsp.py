"""Language server (`policyc lsp`, over stdin/stdout): editors get what `policyc check` reports,
located exactly, while the user types, plus hover, go-to-definition, completion and formatting.

It takes the open documents (unsaved text included) and answers from the same stages as the
command line: `pipeline.load_and_check` with the buffers as an overlay and the workspace folders
as the roots files may be read from (besides each document's own folder), the checker's name tables
and catalog, and the printer. Spans are 1-based code-point columns; LSP positions are 0-based in
the encoding the client chose (UTF-16 unless it offered another), converted by pygls's codec.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from importlib.metadata import version

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from .. import nodes as n
from ..analysis.locked import with_locks_checked
from ..catalog import normalize_ref
from ..checked import Checked
from ..diagnostics import Diagnostic, Severity
from ..pipeline import Pipeline, load_and_check
from ..resources import grammar_text
from ..source import Source, Span
from ..syntax import parse
from ..syntax.printer import expression, format_file, rule_lines

KEYWORDS = sorted(set(re.findall(r'"([a-z][a-z-]*)"', grammar_text())))
# Edits closer together than this are checked once: a large policy set takes seconds to check,
# and checking after every keystroke would queue checks of texts already gone.
SETTLE_SECONDS = 0.15


class PolicyServer(LanguageServer):
    """The server and what it remembers between requests."""

    def __init__(self) -> None:
        super().__init__("policyc", version("policyc"))
        self.pipelines: dict[str, Pipeline] = {}  # document uri → its latest analysis
        self.checked: dict[str, Checked] = {}  # document uri → the latest analysis that got names
        self.published: dict[str, set[str]] = {}  # document uri → other files it published to
        self.pending: asyncio.TimerHandle | None = None  # the check waiting for edits to settle


server = PolicyServer()


def serve() -> None:
    server.start_io()


# ---------------------------------------------------------------- positions


def _lines(text: str) -> list[str]:
    # The parser counts lines by "\n" only, so positions are converted against the same lines.
    return text.split("\n")


def _position(ls: PolicyServer, lines: list[str], line: int, column: int) -> types.Position:
    """A 1-based code-point line/column → an LSP position in the client's encoding; as it is in a
    file whose text is unknown (one that is not UTF-8 has no source), which `policyc check` shows
    at the same line and column."""
    position = types.Position(line - 1, column - 1)
    if line > len(lines):
        return position
    return ls.workspace.position_codec.position_to_client_units(lines, position)


def _range(ls: PolicyServer, span: Span, sources: dict[str, Source]) -> types.Range:
    source = sources.get(span.path)
    lines = _lines(source.text) if source else []
    return types.Range(_position(ls, lines, span.line, span.column),
                       _position(ls, lines, span.end_line, span.end_column))


def _cursor(ls: PolicyServer, uri: str, position: types.Position) -> tuple[int, int]:
    """An LSP position in a document → 1-based code-point line/column."""
    lines = _lines(ls.workspace.get_text_document(uri).source)
    at = ls.workspace.position_codec.position_from_client_units(lines, position)
    return at.line + 1, at.character + 1


def _uri(path: str) -> str:
    return from_fs_path(os.path.abspath(path))


def _text_of(span: Span, sources: dict[str, Source]) -> str:
    lines = _lines(sources[span.path].text)
    if span.line == span.end_line:
        return lines[span.line - 1][span.column - 1:span.end_column - 1]
    middle = lines[span.line:span.end_line - 1]
    return "\n".join([lines[span.line - 1][span.column - 1:], *middle, lines[span.end_line - 1][:span.end_column - 1]])


# ---------------------------------------------------------------- diagnostics


def _lsp_diagnostic(ls: PolicyServer, d: Diagnostic, sources: dict[str, Source]) -> types.Diagnostic:
    related = [types.DiagnosticRelatedInformation(types.Location(_uri(span.path), _range(ls, span, sources)), text)
               for text, span in d.notes]
    return types.Diagnostic(
        range=_range(ls, d.span, sources),
        message=d.message + (f"\nhint: {d.hint}" if d.hint else ""),
        severity=types.DiagnosticSeverity.Error if d.severity is Severity.ERROR else types.DiagnosticSeverity.Warning,
        code=d.code,
        source="policyc",
        related_information=related or None,
    )


def _open_policies(ls: PolicyServer) -> dict[str, str]:
    """Open `.policy` documents on disk: uri → real path."""
    found = {}
    for uri in ls.workspace.text_documents:
        path = to_fs_path(uri)
        if path and path.endswith(".policy"):
            found[uri] = os.path.realpath(path)
    return found


def _workspace_roots(ls: PolicyServer) -> list[str]:
    """The folders the client opened: besides a document's own folder, what its policies may read."""
    folders = [to_fs_path(folder.uri) for folder in ls.workspace.folders.values()]
    return [path for path in [ls.workspace.root_path, *folders] if path]


def analyze(ls: PolicyServer, uri: str) -> None:
    """Check a document as `policyc check FILE` would, with every open buffer standing in for its
    file, and publish the diagnostics: the document's own, and those of files it reads that are
    not open (an open file publishes its own). Files are matched by real path, never by how a
    client spells a URI."""
    open_docs = _open_policies(ls)
    overlay = {real: ls.workspace.get_text_document(u).source for u, real in open_docs.items()}
    pipeline = with_locks_checked(load_and_check([to_fs_path(uri)], overlay, _workspace_roots(ls)))
    ls.pipelines[uri] = pipeline
    if pipeline.checked is not None:
        ls.checked[uri] = pipeline.checked
    by_file: dict[str, list[types.Diagnostic]] = defaultdict(list)
    for d in pipeline.diagnostics:
        by_file[os.path.realpath(d.span.path)].append(_lsp_diagnostic(ls, d, pipeline.sources))
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, by_file.get(open_docs[uri], [])))
    others = set(by_file) - set(open_docs.values())
    for path in sorted(others | (ls.published.get(uri, set()) - set(open_docs.values()))):
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(_uri(path), by_file.get(path, [])))
    ls.published[uri] = others


def _analyze_open(ls: PolicyServer) -> None:
    # A change to one file can change what any open file that imports it means.
    ls.pending = None
    for uri in _open_policies(ls):
        analyze(ls, uri)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def _changed(ls: PolicyServer, params) -> None:
    if ls.pending is not None:
        ls.pending.cancel()
    ls.pending = asyncio.get_running_loop().call_later(SETTLE_SECONDS, _analyze_open, ls)


def _current(ls: PolicyServer, uri: str) -> Pipeline | None:
    """The document's analysis, made now if an edit is still settling (its spans must match the
    text the client's positions point into)."""
    pipeline = ls.pipelines.get(uri)
    source = pipeline.sources.get(to_fs_path(uri)) if pipeline else None
    if uri in _open_policies(ls) and (source is None or source.text != ls.workspace.get_text_document(uri).source):
        analyze(ls, uri)
    return ls.pipelines.get(uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def _closed(ls: PolicyServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, []))
    for path in ls.published.pop(uri, set()):
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(_uri(path), []))
    ls.pipelines.pop(uri, None)
    ls.checked.pop(uri, None)
    _changed(ls, params)


# ---------------------------------------------------------------- what is under the cursor


def _located(file: n.PolicyFile) -> Iterator[tuple[object, n.Service | n.Template | None]]:
    """Every node of a file with its service or template (None outside them), parents before
    children; a template's parameters among them, and a service's `use`s."""
    for item in file.items:
        yield item, None
        if isinstance(item, n.Condition):
            yield from ((node, None) for node in n.walk(item.expr))
        elif isinstance(item, n.Grant):  # its `who` and `what`, read as conditions are
            yield from ((node, None) for s in item.settings if not isinstance(s.value, str) for node in n.walk(s.value))
        elif isinstance(item, n.Service | n.Template):
            yield from ((setting, item) for setting in item.settings if isinstance(setting, n.Use))
            yield from ((param, item) for param in getattr(item, "params", ()))
            for rule in item.rules:
                yield rule, item
                for node in n.walk(rule.expr):
                    yield node, item
                    yield from ((param, item) for param in n.params_of(node))


def _contains(span: Span | None, line: int, column: int) -> bool:
    # The end is included: a cursor just after a name is still on it.
    return span is not None and (span.line, span.column) <= (line, column) <= (span.end_line, span.end_column)


def _node_at(ls: PolicyServer, uri: str, position: types.Position) -> tuple[object, n.Service | None, Pipeline]:
    pipeline = _current(ls, uri)
    if pipeline is None or pipeline.checked is None:
        return None, None, pipeline
    path = to_fs_path(uri)
    file = next((f for f in pipeline.checked.policy_set.files if f.path == path), None)
    line, column = _cursor(ls, uri, position)
    innermost = (None, None)
    for node, service in _located(file) if file else ():
        if _contains(node.span, line, column):
            innermost = (node, service)
    return *innermost, pipeline


def _template(name: str, checked: Checked) -> n.Template | None:
    return next((t for t in checked.policy_set.templates if t.name == name), None)


def _parameter(param: n.Param, template: n.Template | None) -> n.TemplateParam | None:
    declared = template.params if isinstance(template, n.Template) else ()
    return next((p for p in declared if p.name == param.name), None)


def _declaration_span(node, checked: Checked, within=None) -> Span | None:
    """Where the name a node uses is declared: a condition, an issuer, a catalog entity, a
    template (of a `use`) or a template's parameter (of a `$parameter`, `within` its template)."""
    match node:
        case n.Use(name) if (template := _template(name, checked)):
            return template.name_span
        case n.Param() if (param := _parameter(node, within)):
            return param.name_span
        case n.ConditionRef(name) if name in checked.conditions:
            return checked.conditions[name].name_span
        case n.IssuerIs(name) if name in checked.issuers:
            return checked.issuers[name].name_span
        case n.Member(group):
            entity = checked.catalog.entities.get(normalize_ref(group, "group") or "")
            return entity.span if entity else None
        case n.MemberOwners(ref):
            entity = checked.catalog.entities.get(normalize_ref(ref, None) or "")
            return entity.span if entity else None
    return None


# ---------------------------------------------------------------- hover


def _fence(text: str, minimum: int) -> str:
    # Longer than any run of backticks in the text, so policy text cannot end its code span early
    # and be read as Markdown (links, images) by the editor.
    return "`" * max([minimum, *(len(run) + 1 for run in re.findall("`+", text))])


def _code(text: str) -> str:
    fence = _fence(text, 1)
    return f"{fence} {text} {fence}"


def _block(span: Span, sources: dict[str, Source]) -> str:
    text, where = _text_of(span, sources), f"{os.path.basename(span.path)}:{span.line}"
    fence = _fence(text, 3)
    return f"{fence}policy\n{text}\n{fence}\n\n{_code(where)}"


def _members(checked: Checked, group: str) -> str:
    catalog = checked.catalog
    users = sorted(catalog.users_in(group))
    within = sorted(catalog.groups_within(group) - {group})
    text = f"{_code(group)}: {len(users)} member{'s' * (len(users) != 1)}\n\n"
    text += "".join(f"- {_code(user)}\n" for user in users)
    return text + (f"\nwith its groups {', '.join(map(_code, within))}\n" if within else "")


def _hover_text(node, service: n.Service | None, pipeline: Pipeline) -> str | None:
    checked, sources = pipeline.checked, pipeline.sources
    match node:
        case n.Rule():
            where = "template" if isinstance(service, n.Template) else "service"
            title = f"{'locked ' * node.locked}{node.effect} rule {_code(node.name)} in {where} {_code(service.name)}"
            return f"{title}\n\n{_block(node.span, sources)}"
        case n.Use(name) if _template(name, checked) and service.name in checked.services:
            return _expansion(node, checked.services[service.name])
        case n.Param() if (param := _parameter(node, service)):
            return f"parameter of template {_code(service.name)}\n\n{_block(param.span, sources)}"
        case n.ConditionRef(name) if name in checked.conditions:
            return _block(checked.conditions[name].span, sources)
        case n.IssuerIs(name) if name in checked.issuers:
            return _block(checked.issuers[name].span, sources)
        case n.Condition() | n.Issuer():
            return _block(node.span, sources)
        case n.Member(group) if (ref := normalize_ref(group, "group")) and checked.catalog.has(ref):
            return _members(checked, ref)
        case n.GrpcTest():
            return f"the call's path: {_code(expression(n.grpc_paths(node)))}"
        case n.MemberOwners(entity) if (owner := checked.catalog.owner_of(normalize_ref(entity, None) or "")):
            if owner.startswith("group:") and checked.catalog.has(owner):
                return f"owner of {_code(normalize_ref(entity, None))}\n\n" + _members(checked, owner)
            return f"owner of {_code(normalize_ref(entity, None))}: {_code(owner)}"
    return None


def _expansion(use: n.Use, service: n.Service) -> str:
    """The rules a `use` gives its service, written out with its arguments."""
    rules = [r for r in service.rules if r.template == use.template]
    text = "\n".join(line for rule in rules for line in rule_lines(rule))
    fence = _fence(text, 3)
    count = f"{len(rules)} rule" + "s" * (len(rules) != 1)
    title = f"template {_code(use.template)} gives service {_code(service.name)} {count}"
    return f"{title}\n\n{fence}policy\n{text}\n{fence}"


@server.feature(types.TEXT_DOCUMENT_HOVER)
def _hover(ls: PolicyServer, params: types.HoverParams) -> types.Hover | None:
    node, service, pipeline = _node_at(ls, params.text_document.uri, params.position)
    text = _hover_text(node, service, pipeline) if node is not None else None
    if text is None:
        return None
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text),
                       _range(ls, node.span, pipeline.sources))


# ---------------------------------------------------------------- go to definition


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
def _definition(ls: PolicyServer, params: types.DefinitionParams) -> types.Location | None:
    node, within, pipeline = _node_at(ls, params.text_document.uri, params.position)
    if isinstance(node, n.Import):
        target = n.relative_to_declaring_file(node.span, node.path)
        return types.Location(_uri(target), types.Range(types.Position(0, 0), types.Position(0, 0)))
    span = _declaration_span(node, pipeline.checked, within) if node is not None else None
    if span is None:
        return None
    return types.Location(_uri(span.path), _range(ls, span, pipeline.sources))


# ---------------------------------------------------------------- completion


def _completions(before: str, checked: Checked | None) -> list[types.CompletionItem]:
    """What may come next, judged from the text before the cursor on its line."""
    kind = types.CompletionItemKind
    entities = checked.catalog.entities if checked else {}
    if re.search(r'\bmember\s+"[^"]*\Z', before):
        return [types.CompletionItem(ref, kind=kind.Reference) for ref in sorted(entities) if ref.startswith("group:")]
    if re.search(r"\bowners\(\s*[\w:/.-]*\Z", before):
        return [types.CompletionItem(ref, kind=kind.Reference) for ref, entity in sorted(entities.items())
                if entity.owner]
    if re.search(r"\bissuer\s+[\w-]*\Z", before) and not re.match(r"\s*issuer\b", before):
        return [types.CompletionItem(name, kind=kind.Class) for name in sorted(checked.issuers if checked else ())]
    conditions = sorted(checked.conditions) if checked else []
    return ([types.CompletionItem(name, kind=kind.Function) for name in conditions]
            + [types.CompletionItem(word, kind=kind.Keyword) for word in KEYWORDS])


@server.feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=['"', "("]))
def _complete(ls: PolicyServer, params: types.CompletionParams) -> types.CompletionList:
    uri = params.text_document.uri
    line, column = _cursor(ls, uri, params.position)
    before = _lines(ls.workspace.get_text_document(uri).source)[line - 1][:column - 1]
    return types.CompletionList(is_incomplete=False, items=_completions(before, ls.checked.get(uri)))


# ---------------------------------------------------------------- formatting


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
def _format(ls: PolicyServer, params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
    """The whole document as `policyc fmt` writes it; nothing while it has syntax errors."""
    document = ls.workspace.get_text_document(params.text_document.uri)
    source = Source(to_fs_path(document.uri), document.source)
    file, diagnostics = parse(source)
    if file is None or diagnostics:
        return None
    text = format_file(file, source)
    if text == source.text:
        return []
    lines = _lines(source.text)
    end = _position(ls, lines, len(lines), len(lines[-1]) + 1)
    return [types.TextEdit(types.Range(types.Position(0, 0), end), text)]
