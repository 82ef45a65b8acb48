"""Error recovery: after a syntax error the parser goes on at the next line that starts an item, so
that one parse reports every independent syntax error, each once.

`Recovery` is lark's `on_error` callback for the LALR parser. It records the error as a diagnostic,
then picks where to resume:

- Items have no terminator (a rule's condition ends only where the next item begins), so the first
  place the parser can be sure a broken item is over is the start of another one. It resumes at a
  line whose first token starts an item of the block the error is in (`allow`, `hosts`, `url`, …),
  is the `}` that closes that block, or starts a top-level item (`service`, `issuer`, …: after a
  missing `}`, the next block is parsed as a block again, not as noise inside the previous one).
- Lines, because that is how policies are written: one item per line, or a condition continued
  on the next lines. A line whose first token starts something in one place only (`allow`,
  `hosts`, `service`, …) is taken at once, even if that item is broken too: its own error is then
  reported. But some start something in several: `path` a service setting or an atom of a
  condition, `issuer` a top-level block or an atom, `catalog` a top-level item or an issuer
  setting, `}` the end of any block. A continued condition can have a line `path prefix "/a"`,
  and a block whose `{` never came has lines `catalog users` or `}`. A line that starts with one
  of those is taken only if its first `RESYNC_TOKENS` tokens parse there (yacc's rule of three),
  so neither is mistaken for an item.
- Which tokens start an item, and where, is read off the parse table: those the parser accepts at
  the top of the file, right after each block's `{`, and at the start of a condition. The
  grammar keeps no second list to stay in step with.

It resumes with the parser's stack cut back to the block's `{` (or the start of the file): what was
parsed of the broken item, and the items before it in the block, are dropped. A file with a
syntax error yields no tree, so nothing is lost. Each line is looked at once at most, on a stack
cut to a few tokens: recovery is linear in the file, as parsing is, and stops at `MAX_ERRORS`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import LexerState, LexerThread, LineCounter
from lark.parsers.lalr_analysis import Shift
from lark.parsers.lalr_interactive_parser import InteractiveParser
from lark.parsers.lalr_parser_state import ParserState

from ..diagnostics import Diagnostic
from ..source import Source
from .errors import diagnostic_from_lark
from .grammar import parser

RESYNC_TOKENS = 3  # tokens that must parse at a line whose first token could start several things
MAX_ERRORS = 100  # syntax errors reported per file; past them, a file is no policy being edited


@dataclass(frozen=True)
class _Place:
    """A character of the text with its 1-based line and column, as the lexer counts them."""

    offset: int
    line: int
    column: int

    def counter(self) -> LineCounter:
        """A lexer position at this place."""
        counter = LineCounter("\n")
        counter.char_pos, counter.line, counter.column = self.offset, self.line, self.column
        counter.line_start_pos = self.offset - self.column + 1
        return counter


class Recovery:
    """lark's `on_error` callback: records each error as a diagnostic, and resumes after it
    where it can (True), or ends the parse (False)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self._recorded: set[tuple[int, int]] = set()

    def record(self, error: UnexpectedInput) -> None:
        """Adds the error's diagnostic, unless it is in already: lark raises the last error again
        when the callback gives up on it."""
        if (error.line, error.column) not in self._recorded:
            self._recorded.add((error.line, error.column))
            self.diagnostics.append(diagnostic_from_lark(error, self.source))

    def __call__(self, error: UnexpectedInput) -> bool:
        # Recorded first: the diagnostic's hint reads what the parser expected, before the cut.
        self.record(error)
        if len(self.diagnostics) >= MAX_ERRORS or _at_end(error):
            return False
        return self._resume(error.interactive_parser, _place_of(error))

    def _resume(self, interactive: InteractiveParser, error_at: _Place) -> bool:
        """Moves the parser to the first line from `error_at` on that starts an item, with its
        stack cut back to the enclosing block; False when no line does."""
        state = interactive.parser_state
        heights = _block_heights(state.value_stack)
        _cut(state, heights[0])
        rows = [state.parse_conf.states[state.state_stack[height]] for height in heights]
        starts = [_first_token(_accepted(row)) for row in rows]
        for place in _line_starts(self.source.text, _line_start(_accepted(*rows)), error_at):
            for height, first in zip(heights, starts, strict=True):
                if first.match(self.source.text, place.offset) and _parses_from(interactive, height, place):
                    _cut(state, height)
                    interactive.lexer_thread.state.line_ctr = place.counter()
                    return True
        return False


def _at_end(error: UnexpectedInput) -> bool:
    return isinstance(error, UnexpectedToken) and error.token.type == "$END"


def _place_of(error: UnexpectedInput) -> _Place:
    if isinstance(error, UnexpectedCharacters):
        return _Place(error.pos_in_stream, error.line, error.column)
    return _Place(error.token.start_pos, error.token.line, error.token.column)


def _block_heights(values: list) -> list[int]:
    """Stack heights to resume at, innermost first: just after each open block's `{`, then the start
    of the file. A `{` on the stack is open unless the `}` after it is there too (the parser has
    shifted the `}` but not yet reduced the block)."""
    opened: list[int] = []
    for height, value in enumerate(values, 1):
        if isinstance(value, Token) and value.type == "LBRACE":
            opened.append(height)
        elif isinstance(value, Token) and value.type == "RBRACE":
            opened.pop()
    return [*reversed(opened), 0]


def _cut(state: ParserState, height: int) -> None:
    """Pops the parser's stack down to `height` values."""
    del state.state_stack[height + 1:]
    del state.value_stack[height:]


def _accepted(*rows: dict) -> frozenset[str]:
    """The tokens that parse states accept, given their rows of the parse table."""
    return frozenset(name for row in rows for name in row if name.isupper() and name != "$END")


@cache
def _first_token(terminals: frozenset[str]) -> re.Pattern:
    """A pattern for any of `terminals`."""
    return re.compile("|".join(f"(?:{parser().get_terminal(name).pattern.to_regexp()})" for name in sorted(terminals)))


@cache
def _line_start(terminals: frozenset[str]) -> re.Pattern:
    """A pattern for a line that starts with any of `terminals`: the first token is its `token`
    group. Blanks as the grammar's WS has them; a line that starts with a comment starts nothing."""
    return re.compile(rf"^[ \t\f\r]*(?P<token>{_first_token(terminals).pattern})", re.MULTILINE)


def _line_starts(text: str, pattern: re.Pattern, after: _Place) -> Iterator[_Place]:
    """The first token of each line from `after` on that `pattern` matches (that of `after`'s own
    line only if it is `after` itself), in order."""
    line, counted = after.line, after.offset
    search_from = after.offset - after.column + 1  # the start of the error's line
    while (match := pattern.search(text, search_from)) is not None:
        offset = match.start("token")
        search_from = offset + 1  # `^` matches no later on this line
        if offset < after.offset:
            continue
        line += text.count("\n", counted, offset)
        counted = offset
        yield _Place(offset, line, offset - text.rfind("\n", 0, offset))


def _parses_from(interactive: InteractiveParser, height: int, place: _Place) -> bool:
    """Whether the tokens from `place` parse with the parser's stack cut to `height`: the first one,
    or the first `RESYNC_TOKENS` if it could start several things, or all of them when the file
    ends well before. A trial on a copy: the parser is not moved."""
    trial = _copy_at(interactive, height, place)
    needed = 1
    try:
        for count, token in enumerate(trial.lexer_thread.lex(trial.parser_state), 1):
            trial.feed_token(token)
            if count == 1 and token.type in _ambiguous_starts():
                needed = RESYNC_TOKENS
            if count == needed:
                return True
        trial.feed_eof()
    except UnexpectedInput:
        return False
    return True


def _copy_at(interactive: InteractiveParser, height: int, place: _Place) -> InteractiveParser:
    """A copy of the parser with its stack cut to `height` and its lexer at `place`. Made from
    parts rather than with `copy()`, which copies the lexer's position only to have it replaced:
    the trials at every line of a long stretch without a place to resume cost that much less."""
    state, lexer = interactive.parser_state, interactive.lexer_thread
    thread = LexerThread(lexer.lexer, LexerState(lexer.state.text, place.counter()))
    stack = ParserState(state.parse_conf, thread, state.state_stack[:height + 1], state.value_stack[:height])
    return InteractiveParser(interactive.parser, stack, thread)


@cache
def _ambiguous_starts() -> frozenset[str]:
    """The tokens that start something in more than one place: the top of the file, a block of
    each kind (right after its `{`), and a condition (right after `condition c =`)."""
    top = parser().parse_interactive("")
    table = top.parser_state.parse_conf.states
    blocks = {arg for actions in table.values() for name, (action, arg) in actions.items()
              if name == "LBRACE" and action is Shift}
    condition = parser().parse_interactive("condition c =")
    condition.exhaust_lexer()
    places = [top.parser_state.position, condition.parser_state.position, *_distinct_blocks(table, blocks)]
    counts = Counter(name for place in places for name in _accepted(table[place]))
    return frozenset(name for name, count in counts.items() if count > 1)


def _distinct_blocks(table: dict, blocks: set) -> list:
    """The blocks, less a template's body: its items (`mode`, `path parameters`, rules) start as
    in a service, so `allow` there is no less sure a start than in a service. Told by `locked`,
    which starts items there alone."""
    return [place for place in blocks if "LOCKED" not in _accepted(table[place])]
