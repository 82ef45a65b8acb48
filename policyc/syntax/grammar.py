"""The one LALR parser for `grammar/policy.lark`, built once per process.

`to_ast.build` parses with callbacks of its own that build the nodes; lark's tree, with the
positions it tracks, is made only to locate a file nested too deep (`syntax.parse`).
"""

from __future__ import annotations

from functools import cache

from lark import Lark

from ..resources import grammar_text


@cache
def parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
    )
