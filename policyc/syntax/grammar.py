"""The one LALR parser for `grammar/policy.lark`, built once per process."""

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
