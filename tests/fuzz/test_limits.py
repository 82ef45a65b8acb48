"""The compiler's limits, each met with its own diagnostic rather than a RecursionError, a hang or
an exponential blow-up: file size, nesting depth (written or through named conditions), and tests
per rule (written or through named conditions); and syntax errors reported per file. Also the
CLI's last resort for a bug."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import policyc.cli
from policyc.check import MAX_TESTS
from policyc.cli import main
from policyc.diagnostics import Diagnostic, render_github, render_text
from policyc.pipeline import load_and_check
from policyc.source import Source
from policyc.syntax import MAX_DEPTH, MAX_FILE_BYTES, parse
from policyc.syntax.recovery import MAX_ERRORS
from tests.fuzz.test_fuzz import assert_pipeline_sound

ISSUER = 'issuer idp {\n    url "https://idp.example.com"\n    jwks "https://idp.example.com/jwks"\n}\n'


def service(expr: str) -> str:
    return f'service s {{\n    hosts ["s.internal"]\n    upstream "127.0.0.1:8080"\n    allow "r" when {expr}\n}}\n'


def codes(tmp_path, text: str) -> list[str]:
    path = tmp_path / "limits.policy"
    path.write_text(text, encoding="utf-8")
    pipeline = load_and_check([str(path)])
    assert_pipeline_sound(pipeline)
    return [d.code for d in pipeline.diagnostics]


def test_a_file_over_the_size_limit(tmp_path):
    comment = "#" + "x" * 1023 + "\n"
    assert codes(tmp_path, comment * (MAX_FILE_BYTES // 1024 + 1)) == ["parse/file-too-large"]


def test_a_very_long_line_and_string(tmp_path):
    long_string = '"' + "a" * 200_000 + '"'
    assert codes(tmp_path, ISSUER + service(f"token.sub == {long_string}")) == []
    assert codes(tmp_path, ISSUER + service(f"token.sub == {long_string} oops")) == ["parse/unexpected-token"]


@pytest.mark.parametrize("line", ['service s { allow "r" when path ==\n', "x\n", "}\n", "    path ==\n"])
def test_a_file_of_nothing_but_syntax_errors(tmp_path, line):
    # Recovery looks at each line once at most: a file as large as accepted, where every line is
    # an error or none is a place to resume, still parses in about the time a valid one takes.
    found = codes(tmp_path, "service s {\n" + line * ((MAX_FILE_BYTES - 100) // len(line)))
    assert 1 <= len(found) <= MAX_ERRORS and set(found) <= {"parse/unexpected-token", "parse/unexpected-end"}


def test_ten_thousand_nots(tmp_path):
    assert codes(tmp_path, ISSUER + service("not " * 10_000 + "authenticated")) == ["parse/too-deep"]


def test_ten_thousand_parentheses_add_no_depth(tmp_path):
    assert codes(tmp_path, ISSUER + service("(" * 10_000 + "authenticated" + ")" * 10_000)) == []


def test_alternating_and_or_past_the_depth_limit(tmp_path):
    nested = "".join(f"authenticated {('and', 'or')[i % 2]} (" for i in range(MAX_DEPTH)) + "authenticated"
    assert codes(tmp_path, ISSUER + service(nested + ")" * MAX_DEPTH)) == ["parse/too-deep"]


@pytest.mark.parametrize("operator", ["or", "and"])
def test_a_rule_with_too_many_tests(tmp_path, operator):
    chain = f" {operator} ".join(['path == "/a"'] * (MAX_TESTS + 1))
    assert "check/too-many-tests" in codes(tmp_path, ISSUER + service(chain))


def test_a_long_chain_of_conditions_is_too_deep(tmp_path):
    # Deeper than Python's stack: every stage that followed the chain raised RecursionError.
    chain = "condition c0 = authenticated\n" + "".join(f"condition c{i} = c{i - 1}\n" for i in range(1, 2_000))
    assert codes(tmp_path, ISSUER + chain + service("c1999")) == ["check/too-deep"]


def test_conditions_that_double_at_each_step_have_too_many_tests(tmp_path):
    # Written out, c40 has 2^40 tests: the checker's anonymous-caller analysis, the interpreter and
    # the RBAC backend would each take forever.
    chain = "condition c0 = authenticated\n" + "".join(f"condition c{i} = c{i - 1} and c{i - 1}\n"
                                                        for i in range(1, 41))
    assert codes(tmp_path, ISSUER + chain + service("c40")) == ["check/too-many-tests"]


def test_a_long_cycle_of_conditions(tmp_path):
    cycle = "".join(f"condition c{i} = c{(i + 1) % 2_000}\n" for i in range(2_000))
    assert codes(tmp_path, ISSUER + cycle + service("c0")) == ["check/condition-cycle"]


def test_an_unexpected_exception_is_an_internal_error_not_a_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("planted")

    monkeypatch.setattr(policyc.cli, "load_and_check", broken)
    (tmp_path / "a.policy").write_text(ISSUER)
    result = CliRunner().invoke(main, ["check", str(tmp_path / "a.policy")])
    assert result.exit_code == 3
    assert "policyc: internal error: RuntimeError: planted" in result.output
    assert "Traceback" not in result.output


def test_the_line_shown_is_the_line_named(tmp_path):
    # A form feed or U+2028 in a comment must not shift the line shown under a diagnostic.
    source = Source("odd.policy", "# a\u2028b\x0c\r\nissuer { }\r\n")
    diagnostic = parse(source)[1][0]
    assert diagnostic.span.line == 2
    assert render_text(diagnostic, {source.path: source}).split("\n")[2] == "2 | issuer { }"


def test_control_characters_reach_no_terminal(tmp_path):
    # An escape sequence in a policy (or a catalog) would be run by the terminal that shows it.
    source = Source("esc.policy", 'service a\x1b[2J {\n    hosts ["a\x9b31m"]\n}\n')
    diagnostic = parse(source)[1][0]
    shown = render_text(diagnostic, {source.path: source})
    assert "\x1b" not in shown and "\u241b[2J" in shown
    assert all(c in "\n" or c.isprintable() for c in shown)
    quoted = Diagnostic("parse/bad-string", "a\x1b[2J b", diagnostic.span)
    assert "\x1b" not in render_text(quoted, {}) + render_github([quoted])


def test_the_line_shown_in_a_long_file(tmp_path):
    source = Source("long.policy", "# x\n" * 1_000_000 + "issuer { }\n")
    assert [source.line_text(n) for n in (1, 1_000_001, 1_000_002, 1_000_003)] == ["# x", "issuer { }", "", ""]
