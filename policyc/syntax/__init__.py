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
from .to_ast import ToAst

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64


def _too_deep(tree: Tree) -> Tree | None:
    """The first subtree nested deeper than MAX_DEPTH, found without recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
    return None


def parse(source: Source) -> tuple[PolicyFile | None, list[Diagnostic]]:
    if len(source.text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        return None, [Diagnostic("parse/file-too-large",
                                 f"policy file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB",
                                 source.whole_file(), hint="split it into files that import each other")]
    with collector.paused():  # a tree node per token and rule, all kept until the end
        recovery = Recovery(source)
        try:
            tree = parser().parse(source.text, on_error=recovery)
        except UnexpectedInput as error:
            recovery.record(error)
        if recovery.diagnostics:
            return None, recovery.diagnostics
        deep = _too_deep(tree)
        if deep is not None:
            span = source.span_at_offset(deep.meta.start_pos) if not deep.meta.empty else source.whole_file()
            return None, [Diagnostic("parse/too-deep", f"condition nested more than {MAX_DEPTH} levels deep",
                                     span, hint="name parts of it with `condition`")]
        builder = ToAst(source.path)
        return builder.transform(tree), builder.diagnostics

