"""Printer and parser: every tree prints to text that parses back to it, formatting is idempotent,
and parsing any text returns a tree or diagnostics, never an exception."""

from hypothesis import given
from hypothesis import strategies as st

from policyc.diagnostics import has_errors, render_text
from policyc.source import Source
from policyc.syntax import parse
from policyc.syntax.printer import comments_of, format_file
from tests.property import strategies


def parsed_clean(path: str, text: str):
    source = Source(path, text)
    tree, diagnostics = parse(source)
    assert diagnostics == [], [render_text(d, {path: source}) for d in diagnostics]
    return source, tree


@given(strategies.any_file())
def test_format_then_parse_gives_the_tree_back_and_formatting_is_idempotent(tree):
    text = format_file(tree)
    source, again = parsed_clean(tree.path, text)
    assert again == tree
    assert format_file(again) == text
    # With the source the writer places comments by the parsed spans; without comments it adds none.
    assert format_file(again, source) == text


@given(st.one_of(st.text(), strategies.policy_like_text()))
def test_parse_never_raises_on_any_text(text):
    source = Source("t.policy", text)
    tree, diagnostics = parse(source)
    assert tree is not None or has_errors(diagnostics)
    for diagnostic in diagnostics:
        render_text(diagnostic, {source.path: source})
    if tree is not None and not diagnostics:
        # Text that parses cleanly formats to text that parses to the same tree.
        assert parsed_clean(source.path, format_file(tree, source))[1] == tree


@given(strategies.any_file(), st.data())
def test_formatting_keeps_every_comment_and_is_idempotent(tree, data):
    lines, comments = [], []
    for line in format_file(tree).split("\n"):
        if data.draw(st.booleans()):
            comments.append(f"# c{len(comments)}")
            lines.append(comments[-1])
        if line and data.draw(st.booleans()):
            comments.append(f"# c{len(comments)}")
            line += "  " + comments[-1]
        lines.append(line)
    source, parsed = parsed_clean(tree.path, "\n".join(lines))
    assert parsed == tree
    formatted = format_file(parsed, source)
    assert [c.text for c in comments_of(Source(tree.path, formatted))] == comments
    again_source, again = parsed_clean(tree.path, formatted)
    assert again == tree
    assert format_file(again, again_source) == formatted
