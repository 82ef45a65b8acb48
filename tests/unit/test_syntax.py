"""Parser and printer: golden parse trees and formatting, round trips, located syntax errors."""

import json
import pprint
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lark import Token

from policyc.diagnostics import render_text
from policyc.source import Source
from policyc.syntax import MAX_DEPTH, parse, to_ast
from policyc.syntax.printer import format_file
from policyc.syntax.recovery import MAX_ERRORS
from policyc.syntax.to_ast import ToAst
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


# Each kind of character a string token can hold between its quotes: plain, escaped, control, DEL,
# non-ASCII, a surrogate escape and a raw surrogate.
_STRING_PIECES = st.sampled_from(["a", " ", "~", "/", "\\n", "\\\"", "\\q", "\\u0041", "\\ud800", "\t", "\r",
                                  "\x00", "\x7f", "é", "\ud800"])


@given(st.lists(_STRING_PIECES, max_size=6).map("".join))
def test_a_string_reads_as_json_reads_it_or_is_refused(inside):
    builder = ToAst("t.policy")
    value = builder.text(Token("STRING", f'"{inside}"', line=1, column=1))
    try:
        expected = json.loads(f'"{inside}"')
        expected.encode("utf-8")
    except (json.JSONDecodeError, UnicodeEncodeError):
        assert builder.diagnostics
    else:
        assert value == expected and not builder.diagnostics


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


def test_depth_limit_counts_the_parse_tree_and_points_at_the_first_level_past_it():
    # The file, the condition and the atom are three levels: 61 `not`s fill the 64 allowed.
    at_limit = "condition c = " + "not " * (MAX_DEPTH - 3) + "authenticated\n"
    assert parsed_text(at_limit)[1] is not None
    past = "condition c = " + "not " * (MAX_DEPTH - 2) + "authenticated\n"
    [diagnostic] = parse(Source("t.policy", past))[1]
    assert (diagnostic.code, diagnostic.span.column) == ("parse/too-deep", past.index("authenticated") + 1)


LONG_LISTS = {
    "and": lambda count: "condition c = " + " and ".join(["authenticated"] * count) + "\n",
    "rules": lambda count: "service s {\n" + '    allow public "r" when path == "/"\n' * count + "}\n",
    "items": lambda count: "".join(f'condition c{i} = path == "/"\n' for i in range(count)),
}


@pytest.mark.parametrize("kind", LONG_LISTS)
def test_a_long_list_is_built_in_one_list_not_copied_at_each_element(kind, monkeypatch):
    """A list the grammar repeats (`and`s, a block's items, a file's) grows by appending to one
    list: copying it at each element made parsing quadratic in the list's length (a 4 MiB file
    of `and`s took minutes). Every list of two or more values a reduction leaves is kept, so that
    no two can share an identity unless they are one list."""
    lists: dict[int, list] = {}

    class Recording(to_ast.Built):
        __slots__ = ()

        def __init__(self, value, *rest):
            super().__init__(value, *rest)
            if isinstance(value, list) and len(value) > 1:
                lists.setdefault(id(value), value)

    monkeypatch.setattr(to_ast, "Built", Recording)
    assert parse(Source("t.policy", LONG_LISTS[kind](1000)))[1] == []
    assert len(lists) < 10, len(lists)  # one per repetition; copying made one per element


def test_a_node_spans_its_keywords_and_a_parenthesised_one_leaves_its_parentheses_to_its_parent():
    _, file = parsed_text('service s {\n    allow "r" when (method == GET or path == "/a") and authenticated\n}\n')
    [service] = file.items
    [rule] = service.rules
    either = rule.expr.operands[0]
    assert (service.span.line, service.span.column, service.span.end_line, service.span.end_column) == (1, 1, 3, 2)
    assert (rule.span.column, rule.span.end_column) == (5, 69)
    assert (rule.expr.span.column, rule.expr.span.end_column) == (20, 69)  # from its `(`
    assert (either.span.column, either.span.end_column) == (21, 50)  # inside the parentheses
    assert (either.operands[1].span.column, either.operands[1].span.end_column) == (38, 50)  # `path == "/a"`


def test_each_parameter_outside_a_template_is_found_wherever_it_comes():
    text = ('template t(p: string) {\n    allow "a" when path == $p\n}\n'
            'service s {\n    allow "b" when method == GET\n    allow "c" when path == $q\n'
            '    allow "d" when method == GET\n}\ncondition e = header "h" == $r\n')
    found = [(d.code, d.span.line) for d in parse(Source("t.policy", text))[1]]
    assert found == [("template/parameter-outside", 6), ("template/parameter-outside", 9)]


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


# ---------------------------------------------------------------- recovery: every syntax error, each once


def located(text: str) -> list[str]:
    """`line:column code` of each diagnostic, in the order they were found."""
    _, diagnostics = parse(Source("t.policy", text))
    return [f"{d.span.line}:{d.span.column} {d.code}" for d in diagnostics]


def test_errors_in_separate_rules_and_services_are_each_reported_once():
    text = ('service a {\n'
            '    allow "x" when path ==\n'  # the string is missing: found at the next rule
            '    allow "y" when header == "z"\n'
            '    deny "z" when method == GET\n'
            '}\n'
            'service b {\n'
            '    hosts "b"\n'
            '    deny "d" if path prefix "/x"\n'
            '}\n')
    assert located(text) == ["3:5 parse/unexpected-token", "3:27 parse/unexpected-token", "8:14 parse/unexpected-token"]
    file, _ = parse(Source("t.policy", text))
    assert file is None  # no tree, so nothing is checked or compiled


def test_a_condition_continued_on_lines_that_start_like_items_is_no_new_item():
    # `path …` and `issuer …` also start a service setting and a top-level block; the lines after
    # the error continue its condition and must not be taken for those.
    text = ('issuer idp {\n    url "https://idp.test"\n}\n'
            'service a {\n'
            '    allow "x" when header "h" ==\n'
            '        path prefix "/a"\n'
            '        and issuer idp and\n'
            '        issuer idp\n'
            '    deny "y" when method in [GET]\n'
            '}\n')
    assert located(text) == ["6:9 parse/unexpected-token"]


def test_a_missing_closing_brace_costs_one_error_and_the_next_block_is_still_read():
    text = 'service a {\n    hosts "a"\nservice b {\n    hosts "b"\n    allow "r" when authenticated oops\n}\n'
    assert located(text) == ["3:1 parse/unexpected-token", "5:34 parse/unexpected-token"]


def test_a_broken_block_header_hides_no_later_block():
    text = ('service a b {\n    allow "r" when authenticated\n    catalog users\n}\n'
            'issuer i {\n    url 5\n}\n')
    assert located(text) == ["1:11 parse/unexpected-token", "6:9 parse/unexpected-character"]


def test_a_broken_item_on_the_line_where_the_last_error_surfaced_gets_its_own_error():
    text = 'service a {\n    upstream\n    deny foo "r" when authenticated\n}\n'
    assert located(text) == ["3:5 parse/unexpected-token", "3:10 parse/unexpected-token"]


def test_a_stray_closing_brace_is_one_error():
    assert located('issuer i {\n    url "https://i.test"\n} }\n\ncatalog "c"\n') == ["3:3 parse/unexpected-token"]


def test_an_error_at_the_end_of_the_file_is_the_last_one():
    text = 'condition c = path ==\nservice a {\n    hosts ["a"]\n'
    assert located(text) == ["2:1 parse/unexpected-token", "3:15 parse/unexpected-end"]


def test_one_syntax_error_is_reported_once():
    for text in ('service s {\n    allow "r" when path ==\n}\n', 'condition c = path == "/a" "/b"\n',
                 'service s {\n    hosts ["a", "b"\n    upstream "127.0.0.1:1"\n}\n', "service s {\n"):
        assert len(located(text)) == 1, text


def test_syntax_errors_past_the_limit_are_not_reported():
    text = 'service a {\n    allow "r" when path ==\n' * (MAX_ERRORS + 10)
    assert len(located(text)) == MAX_ERRORS
