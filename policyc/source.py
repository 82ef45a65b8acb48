"""Source text and locations: `Source` holds a file's text, `Span` a located range in it.

Every node and diagnostic carries a `Span`; rendering a caret needs the `Source` it points into.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate


@dataclass(frozen=True)
class Span:
    """A range in a source file: 1-based line/column of its first and last character."""

    path: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    @property
    def sort_key(self) -> tuple[str, int, int]:
        return (self.path, self.line, self.column)


@dataclass(frozen=True)
class Source:
    """The text of one file, under the path diagnostics name it by. `foreign` marks text from a
    file whose real name is not of the kind read (an import of a file not named `*.policy`): it
    may be anything, a secret included, so diagnostics show only a short excerpt of it."""

    path: str
    text: str
    foreign: bool = False
    live: bool = False  # an entity a live catalog returned (`catalog.LiveEntities`), not a file

    @cached_property
    def _line_starts(self) -> list[int]:
        # Lines end at "\n" only, as the parser counts them: splitlines() would also break at
        # "\x0c", "\u2028" and others, and show a line other than the one a diagnostic names.
        # Found once per file: a file of megabytes may get a hundred diagnostics.
        return list(accumulate(map((1).__add__, map(len, self.text.split("\n"))), initial=0))

    def line_text(self, line: int) -> str:
        starts = self._line_starts
        if not 0 < line < len(starts):
            return ""
        return self.text[starts[line - 1]:starts[line] - 1].removesuffix("\r")

    def span_at_offset(self, offset: int, length: int = 1) -> Span:
        """The span of `length` characters starting at character `offset`."""
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return Span(self.path, line, column, line, column + max(length, 1))

    def whole_file(self) -> Span:
        return Span(self.path, 1, 1, 1, 2)
