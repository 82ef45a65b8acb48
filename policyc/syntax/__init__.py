"""Syntax stage: `.policy` text → `nodes.PolicyFile`, or located diagnostics.

`parse(source)` never raises for bad input; it returns `(file or None, diagnostics)`. A file with
syntax errors gives None and every one of them (see `recovery.py`), not just the first.
"""

from __future__ import annotations

from lark import Tree
from lark.exceptions import UnexpectedInput

from .. import collector
from ..diagnostics import Diagnostic
from ..nodes import PolicyFile
from ..source import Source
from .grammar import parser
from .recovery import Recovery
from .to_ast import MAX_DEPTH, build

MAX_FILE_BYTES = 4 * 1024 * 1024
__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "parse"]


def _too_deep(tree: Tree) -> Tree | None:
    """The first subtree nested deeper than MAX_DEPTH, found without recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
    return None


def _too_deep_diagnostic(source: Source) -> Diagnostic:
    """Where a file nests too deep. Rare, so found on lark's own parse tree of the file."""
    deep = _too_deep(parser().parse(source.text))
    span = source.span_at_offset(deep.meta.start_pos) if not deep.meta.empty else source.whole_file()
    return Diagnostic("parse/too-deep", f"condition nested more than {MAX_DEPTH} levels deep",
                      span, hint="name parts of it with `condition`")


def parse(source: Source) -> tuple[PolicyFile | None, list[Diagnostic]]:
    if len(source.text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        return None, [Diagnostic("parse/file-too-large",
                                 f"policy file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB",
                                 source.whole_file(), hint="split it into files that import each other")]
    with collector.paused():  # a node per rule, all kept until the end
        recovery = Recovery(source)
        try:
            built, diagnostics = build(source.text, source.path, recovery)
        except UnexpectedInput as error:
            recovery.record(error)
        if recovery.diagnostics:
            return None, recovery.diagnostics
        if built.height > MAX_DEPTH:
            return None, [_too_deep_diagnostic(source)]
        return built.value, diagnostics
