"""lark's exceptions → located `Diagnostic`s with the expected tokens named in words."""

from __future__ import annotations

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..diagnostics import Diagnostic
from ..source import Source, Span
from .grammar import parser

_WORDS = {
    "STRING": "a string",
    "NAME": "a name",
    "ENTITY_REF": "an entity ref such as `component:payments`",
    "EFFECT": "`allow` or `deny`",
    "MODE": "`enforce` or `dry-run`",
    "PUBLIC": "`public`",
    "LOCKED": "`locked`",
    "PARAM": "a template's `$parameter`",
    "$END": "the end of the file",
}


def _describe(terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    try:
        pattern = parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal.lower()
    return f"`{pattern.value}`" if pattern.type == "str" else terminal.lower()


def _expected(terminals) -> str:
    # Where a string may stand, a template's parameter may too: naming it there says little.
    words = sorted({_describe(t) for t in terminals if not (t == "PARAM" and "STRING" in terminals)})
    if len(words) > 9:
        words = words[:9] + ["…"]
    return ", ".join(words)


def _token_span(source: Source, token) -> Span:
    if token.type == "$END" or token.line is None:
        end = len(source.text.rstrip())
        return source.span_at_offset(max(end - 1, 0))
    return Span(source.path, token.line, token.column, token.end_line, token.end_column)


def diagnostic_from_lark(error: UnexpectedInput, source: Source) -> Diagnostic:
    if isinstance(error, UnexpectedToken):
        token = error.token
        expected = error.accepts or error.expected
        if token.type == "$END":
            return Diagnostic("parse/unexpected-end", "the file ends in the middle of a construct",
                              _token_span(source, token), hint=f"expected {_expected(expected)}")
        # A foreign file's token could be a secret (`API_TOKEN=…` reads as a name): only the
        # short excerpt under the caret shows it.
        shown = "text" if source.foreign else f"`{token}`"
        return Diagnostic("parse/unexpected-token", f"unexpected {shown}", _token_span(source, token),
                          hint=f"expected {_expected(expected)}")
    if isinstance(error, UnexpectedCharacters):
        span = source.span_at_offset(error.pos_in_stream)
        char = source.text[error.pos_in_stream]
        hint = f"expected {_expected(error.allowed)}" if error.allowed else None
        return Diagnostic("parse/unexpected-character", f"unexpected character {char!r}", span, hint=hint)
    assert isinstance(error, UnexpectedEOF)
    return Diagnostic("parse/unexpected-end", "the file ends in the middle of a construct",
                      source.span_at_offset(max(len(source.text) - 1, 0)),
                      hint=f"expected {_expected(error.expected)}")
