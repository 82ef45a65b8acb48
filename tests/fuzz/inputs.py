"""What the fuzz tests feed the compiler: raw bytes, sentences of the grammar, and real policies
(with their catalogs and key files) mutated with hostile strings. Also the settings that size a
run and the count of inputs tried, which the run's summary prints.

`POLICYC_FUZZ_EXAMPLES=N` gives each fuzz test N examples times its weight (a deep run); without
it each tries FAST_EXAMPLES, the quick subset `make test` runs.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark

from policyc.syntax.grammar import parser

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"

INPUTS: Counter[str] = Counter()  # test name → inputs tried, for the run's summary


FAST_EXAMPLES = 30


def fuzz_settings(weight: int = 1) -> settings:
    """In a deep run, `weight` times its examples per test: cheap tests (parsing) try more."""
    deep = os.environ.get("POLICYC_FUZZ_EXAMPLES")
    return settings(max_examples=int(deep) * weight if deep else FAST_EXAMPLES, suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


# ---------------------------------------------------------------- seeds: real policy sets


def seed_folders() -> list[Path]:
    """Every folder of policies the project ships or tests, each with what its policies read."""
    cases = sorted(p for p in (ROOT / "tests" / "cases").iterdir() if list(p.glob("*.policy")))
    return [EXAMPLE, ROOT / "tests" / "golden" / "syntax", *cases]


def seed_texts() -> list[str]:
    return [p.read_text(encoding="utf-8") for folder in seed_folders() for p in sorted(folder.glob("*.policy"))]


# ---------------------------------------------------------------- hostile material

HOSTILE = (
    '"', "\\", '\\"', "\n", "\r\n", "\r", "\0", "\t", "\x0b", "\x0c", "\x1c", "\u0085", "\u2028", "\ufeff",
    "]]", "[[", "]=]", "--", "--[[", "#", "//", "/*", "*/", "${x}", "%s", "%n", "'", "`", "$(id)",
    "n", "y", "yes", "no", "on", "off", "null", "~", "true", "*a", "&a", "!!", "!!python/object:os.system",
    "<<", "- ", ": ", "? ", "|", ">", "{", "}", "[", "]", ",", "---", "...", "%YAML", "0x10", "1e9", ".inf",
    "аllow", "ѕervice", "ａllow", "ℌ", "ﬁ", "é", "e\u0301", "\u200b", "\u202e", "𝔸", "😀",
    "/..", "/../", "%2e%2e", "%2F", "%00", "?q", "#f", "//", "/*", "/**", "/**/**", "*" * 40,
    "\\u0000", "\\ud800", "\\udfff", "\\u2028", "\\n", "\\r", "\\t", "\\/", "\\q", "\\",
    "token", "token.", 'token["', "member owners(", "((", "))", "not not", "and and", "or",
    "a" * 300, "/a" * 200, "x" * 5000,
)

KEYWORD_SOUP = (
    "import", "catalog", "issuer", "url", "jwks", "file", "audience", "users", "condition", "service",
    "hosts", "upstream", "mode", "allow", "deny", "public", "when", "or", "and", "not", "authenticated",
    "method", "in", "path", "prefix", "glob", "header", "suffix", "present", "source", "contains",
    "true", "false", "member", "owners", "token", "enforce", "dry-run", "==", "=", "(", ")", "[", "]",
    "{", "}", ",", ".", '"x"', '"/api/**"', '"10.0.0.0/8"', "GET", "component:payments", "x",
)

# Strings that are well-formed literals but carry hostile text, so they reach the checker and,
# where it lets them through, the backends (claim values, header values, rule names, paths…).
hostile_values = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=20),
    st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=4).map("".join),
)


def string_literal(value: str, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


# ---------------------------------------------------------------- text mutations


_INDEXES = st.integers(0, 10_000)
_MUTATIONS = ("delete line", "repeat line", "copy line", "splice line", "raw hostile", "stray token",
              "hostile value", "raw hostile value", "truncate", "parenthesize")


@st.composite
def mutated(draw, texts: list[str]) -> str:
    """One of `texts` with a few lines or tokens duplicated, deleted, swapped or spliced, and
    hostile text inserted raw or as the content of a string literal. (Drawn step by step: building
    strategies per draw would cost more than the compiler's work on the result.)"""
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(1, 4))):
        text = _mutate(draw, text, texts, draw(st.sampled_from(_MUTATIONS)))
    return text


def _mutate(draw, text: str, texts: list[str], mutation: str) -> str:
    lines = text.split("\n")
    i = draw(_INDEXES) % len(lines)
    offset = draw(_INDEXES) % (len(text) + 1)
    match mutation:
        case "delete line":
            lines[i:i + 1] = []
        case "repeat line":
            lines[i:i + 1] = [lines[i]] * draw(st.integers(2, 5))
        case "copy line":
            lines[i] = lines[draw(_INDEXES) % len(lines)]
        case "splice line":
            other = draw(st.sampled_from(texts)).split("\n")
            lines.insert(i, other[draw(_INDEXES) % len(other)])
        case "parenthesize":
            depth = draw(st.integers(1, 80))
            lines[i] = "(" * depth + lines[i] + ")" * depth
        case "raw hostile":
            return text[:offset] + draw(st.sampled_from(HOSTILE)) + text[offset:]
        case "stray token":
            return text[:offset] + f" {draw(st.sampled_from(KEYWORD_SOUP))} " + text[offset:]
        case "hostile value":
            literal = string_literal(draw(hostile_values), draw(st.booleans()))
            return _replace_literal(text, offset, literal)
        case "raw hostile value":
            return _replace_literal(text, offset, '"' + draw(hostile_values) + '"')
        case "truncate":
            return text[:offset]
    return "\n".join(lines)


def _replace_literal(text: str, occurrence: int, literal: str) -> str:
    """`text` with its n-th double-quoted literal (counting round) replaced by `literal`."""
    starts = [i for i, c in enumerate(text) if c == '"' and (i == 0 or text[i - 1] != "\\")][::2]
    if not starts:
        return text
    start = starts[occurrence % len(starts)]
    end = text.find('"', start + 1)
    while end > 0 and text[end - 1] == "\\":
        end = text.find('"', end + 1)
    return text[:start] + literal + (text[end + 1:] if end > 0 else "")


# ---------------------------------------------------------------- whole inputs


def raw_bytes() -> st.SearchStrategy[bytes]:
    """Bytes of any kind: random, BOMs, CRLF, NUL, invalid UTF-8, and very long lines."""
    return st.one_of(
        st.binary(max_size=400),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.tuples(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"", b"\0"]),
                  st.sampled_from(seed_texts()).map(str.encode),
                  st.sampled_from([b"", b"\r\n", b"\xc3", b"\xed\xa0\x80", b"\0" * 3, b"x" * 5000])
                  ).map(lambda parts: parts[0] + parts[1].replace(b"\n", b"\r\n") + parts[2]),
    )


def grammar_sentences() -> st.SearchStrategy[str]:
    """Sentences of grammar/policy.lark (with ignored spaces and comments drawn in at random)."""
    return from_lark(parser())


def policy_texts() -> st.SearchStrategy[str]:
    """Text of every kind but grammar sentences (slow to draw; fuzzed on their own): mutated real
    policies, keyword soup, any text."""
    return st.one_of(
        mutated(seed_texts()),
        st.lists(st.sampled_from(KEYWORD_SOUP + HOSTILE[:60]), max_size=40).map(" ".join),
        st.text(),
        raw_bytes().map(lambda b: b.decode("utf-8", "surrogateescape")),
    )
