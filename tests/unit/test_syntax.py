"""Parser and printer: golden parse trees and formatting, round trips, located syntax errors."""

import pprint
from pathlib import Path

import pytest

from policyc.diagnostics import render_text
from policyc.source import Source
from policyc.syntax import parse
from policyc.syntax.printer import format_file
from tests.golden import assert_golden

GOLDEN = Path(__file__).parent.parent / "golden" / "syntax"
EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
INPUTS = sorted(p for p in GOLDEN.glob("*.policy") if not p.name.endswith(".fmt.policy"))


def parsed(path: Path):
    source = Source(path.name, path.read_text(encoding="utf-8"))
    file, diagnostics = parse(source)
    assert diagnostics == [], [render_text(d, {source.path: source}) for d in diagnostics]
    return source, file


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.stem)
def test_parse_tree_is_golden(path, update_goldens):
    _, file = parsed(path)
    assert_golden(path.with_suffix(".ast.txt"), pprint.pformat(file, width=100) + "\n", update_goldens)


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.stem)
def test_format_is_golden_and_round_trips(path, update_goldens):
    source, file = parsed(path)
    formatted = format_file(file, source)
    assert_golden(path.with_suffix(".fmt.policy"), formatted, update_goldens)
    again_source = Source(path.name, formatted)
    again, diagnostics = parse(again_source)
    assert diagnostics == [] and again == file
    assert format_file(again, again_source) == formatted


@pytest.mark.parametrize("path", sorted(EXAMPLE.glob("*.policy")), ids=lambda p: p.stem)
def test_example_is_formatted(path):
    source, file = parsed(path)
    assert format_file(file, source) == source.text


def errors_of(text: str) -> list[str]:
    source = Source("t.policy", text)
    _, diagnostics = parse(source)
    return [render_text(d, {"t.policy": source}) for d in diagnostics]


def test_syntax_error_is_located_with_a_caret():
    [error] = errors_of('service s {\n    allow "r" when path ==\n}\n')
    assert error.startswith("t.policy:3:1: error[parse/unexpected-token]: unexpected `}`")
    assert "3 | }\n  | ^" in error
    assert "hint: expected a string" in error


def test_bad_escape_in_a_string():
    [error] = errors_of('catalog "a\\qb"\n')
    assert "t.policy:1:9: error[parse/bad-string]" in error


def test_unexpected_character():
    [error] = errors_of("condition c = path == '/x'\n")
    assert "error[parse/unexpected-character]: unexpected character \"'\"" in error


def test_end_of_file_inside_a_block():
    [error] = errors_of("service s {\n    hosts [\"a\"]\n")
    assert "error[parse/unexpected-end]" in error


def test_too_deep_nesting_is_a_diagnostic_not_a_crash():
    text = "condition c = " + "not " * 5000 + "authenticated\n"
    [error] = errors_of(text)
    assert "error[parse/too-deep]" in error


def test_file_too_large():
    text = "# " + "x" * (5 * 1024 * 1024) + "\n"
    [error] = errors_of(text)
    assert "error[parse/file-too-large]" in error


def test_precedence_not_binds_looser_than_comparisons():
    _, file = parsed_text('condition c = not token.x == "v" and authenticated or issuer a\n')
    text = format_file(file)
    assert text == 'condition c = not token.x == "v" and authenticated or issuer a\n'
    from policyc import nodes as n

    expr = file.items[0].expr
    assert isinstance(expr, n.Or) and isinstance(expr.operands[0], n.And)
    assert isinstance(expr.operands[0].operands[0], n.Not)


def parsed_text(text: str):
    source = Source("t.policy", text)
    file, diagnostics = parse(source)
    assert diagnostics == []
    return source, file


@pytest.mark.parametrize(("literal", "column", "shown"), [
    ('"\\ud800"', 23, "\\ud800"),  # a high half alone
    ('"x\\udc00y"', 24, "\\udc00"),  # a low half alone
    ('"\\ud83d\\ude00 \\ud83d \\ude00"', 36, "\\ud83d"),  # a pair, then halves apart
    ('"\\udc00\\ud800"', 23, "\\udc00"),  # the halves the wrong way round
    ('"a\ud800"', 24, "\\ud800"),  # raw, as an editor's unsaved text can hold it
])
def test_half_a_surrogate_pair_is_located_at_the_half(literal, column, shown):
    [error] = errors_of(f"condition c = header {literal} present\n")
    assert error.startswith(f"t.policy:1:{column}: error[parse/lone-surrogate]: `{shown}` is half")


def test_escaped_backslashes_and_whole_pairs_are_no_surrogates():
    assert errors_of('condition c = header "\\\\ud800 \\ud83d\\ude00 \\uD83D\\uDE00" present\n') == []
