"""A token's header and payload read as Envoy 1.40's `jwt_authn` reads them.

Envoy parses both with protobuf's JSON parser into a `Struct`, with protobuf's legacy syntax on.
That parser is stricter than Python's `json` in some ways and looser in others, and a token
that one accepts and the other refuses is decided differently (a 401 against a 200 or 403), so
the interpreter reads token JSON with this reader instead. Each rule below was observed on a real
Envoy (`tests/cases/tokens/json.cases.yaml`; docs/tokens.md lists them):

- the text must be valid UTF-8 (no overlong forms, encoded surrogates or bytes 0xF8–0xFF), and is
  one object with only whitespace (space, tab, CR, LF) around it; a lone `null` is an empty object;
- strings are quoted with `"` or `'` and may hold raw control characters; escapes are JSON's plus
  `\\'`, and `\\U` is `\\u` (four hex digits); a high surrogate escape must be followed by a low
  one (whitespace between the two is skipped), and any other surrogate is refused;
- a key may also be a bare word of ASCII letters, digits and `_`, not starting with a digit and
  not `true`, `false` or `null`; a repeated key is refused, at any depth;
- one trailing comma is allowed in an object or a list;
- numbers are JSON numbers, read as doubles, and refused when they round to infinity; no `NaN`,
  `Infinity` or comments;
- objects and lists nest at most 100 deep, the outer object included.
"""

from __future__ import annotations

import math
import re

MAX_NESTING = 100
_SPACE = re.compile(r"[ \t\r\n]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_PLAIN = {'"': re.compile(r'[^"\\]*'), "'": re.compile(r"[^'\\]*")}
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "'": "'"}
_LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}


class _Invalid(Exception):
    pass


def loads(data: bytes) -> dict | None:
    """The object `data` holds, or None where Envoy finds it invalid JSON."""
    try:
        reader = _Reader(data.decode("utf-8"))
        value = {} if reader.take("null") else reader.object(1)
        reader.skip()
    except (UnicodeDecodeError, _Invalid):
        return None
    return value if reader.at == len(reader.text) else None


class _Reader:
    def __init__(self, text: str):
        self.text, self.at = text, 0

    def skip(self) -> None:
        self.at = _SPACE.match(self.text, self.at).end()

    def peek(self) -> str:
        self.skip()
        return self.text[self.at:self.at + 1]

    def take(self, literal: str) -> bool:
        self.skip()
        if not self.text.startswith(literal, self.at):
            return False
        self.at += len(literal)
        return True

    def expect(self, literal: str) -> None:
        if not self.take(literal):
            raise _Invalid

    def match(self, pattern: re.Pattern) -> str:
        found = pattern.match(self.text, self.at)
        if not found:
            raise _Invalid
        self.at = found.end()
        return found.group()

    def value(self, depth: int):
        first = self.peek()
        if first == "{":
            return self.object(depth + 1)
        if first == "[":
            return self.array(depth + 1)
        if first in ('"', "'"):
            return self.string()
        if first in _LITERALS:
            literal, value = _LITERALS[first]
            self.expect(literal)
            return value
        number = float(self.match(_NUMBER))
        if not math.isfinite(number):
            raise _Invalid
        return int(number) if number.is_integer() else number  # an integral double reads as an int

    def object(self, depth: int) -> dict:
        if depth > MAX_NESTING:
            raise _Invalid
        self.expect("{")
        members: dict = {}
        if self.take("}"):
            return members
        while True:
            key = self.string() if self.peek() in ('"', "'") else self.bare_word()
            self.expect(":")
            if key in members:
                raise _Invalid
            members[key] = self.value(depth)
            comma = self.take(",")
            if self.take("}"):
                return members
            if not comma:
                raise _Invalid

    def array(self, depth: int) -> list:
        if depth > MAX_NESTING:
            raise _Invalid
        self.expect("[")
        items: list = []
        if self.take("]"):
            return items
        while True:
            items.append(self.value(depth))
            comma = self.take(",")
            if self.take("]"):
                return items
            if not comma:
                raise _Invalid

    def bare_word(self) -> str:
        word = self.match(_BARE_WORD)
        if word in ("true", "false", "null"):
            raise _Invalid
        return word

    def string(self) -> str:
        quote = self.text[self.at]
        self.at += 1
        parts = []
        while True:
            end = _PLAIN[quote].match(self.text, self.at).end()
            parts.append(self.text[self.at:end])
            if end == len(self.text):
                raise _Invalid
            self.at = end + 1
            if self.text[end] == quote:
                return "".join(parts)
            parts.append(self.escape())

    def escape(self) -> str:
        letter = self.text[self.at:self.at + 1]
        self.at += 1
        if letter in ("u", "U"):
            return self.unicode_escape()
        if letter not in _ESCAPES:
            raise _Invalid
        return _ESCAPES[letter]

    def unicode_escape(self) -> str:
        rune = int(self.match(_HEX4), 16)
        if 0xDC00 <= rune <= 0xDFFF:
            raise _Invalid
        if 0xD800 <= rune <= 0xDBFF:
            self.expect("\\u")  # skips whitespace first, as protobuf's parser does
            low = int(self.match(_HEX4), 16)
            if not 0xDC00 <= low <= 0xDFFF:
                raise _Invalid
            rune = 0x10000 + ((rune - 0xD800) << 10) + (low - 0xDC00)
        return chr(rune)
