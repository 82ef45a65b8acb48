"""Token extraction and parsing corner cases, each observed on Envoy (docs/tokens.md); the
regressions here were found by the differential suite."""

import pytest

from policyc.semantics import tokenjson
from policyc.semantics.tokens import extract


def test_empty_authorization_lines_are_skipped_when_joining():
    # Regression: "Bearer T" then an empty line was read as "T," (401); Envoy reads "T" (200).
    assert extract([("authorization", "Bearer a.b.c"), ("Authorization", "")]) == "a.b.c"
    assert extract([("authorization", ""), ("authorization", "Bearer a.b.c")]) == "a.b.c"
    assert extract([("authorization", "")]) is None


def test_lines_are_joined_and_the_prefix_found_anywhere():
    assert extract([("authorization", "Basic x"), ("authorization", "Bearer a.b.c")]) == "a.b.c"
    assert extract([("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")]) == "a.b.c,Bearer d.e.f"
    assert extract([("authorization", "bearer a.b.c")]) is None


def test_http2_lines_keep_their_spaces():
    # HTTP/1's codec trims each line; HTTP/2's hands them on as sent, and Envoy joins them as they are.
    lines = [("authorization", "Bearer "), ("authorization", "x")]
    assert extract(lines) is None
    assert extract(lines, http2=True) == "x"


@pytest.mark.parametrize(("text", "value"), [
    (rb'{"a": "\U0078\U0001F600"}', {"a": "x\x01F600"}),  # \U is \u: four hex digits
    (b'{"a": "\\ud83d \r\n\t\\ude00"}', {"a": "\U0001f600"}),  # whitespace between the halves
    (b"{'a': 'x\"\\'y', _b1: \"\x01\n\"}", {"a": "x\"'y", "_b1": "\x01\n"}),
    (b'{"a": [1,], "b": {"c": 1e-400,}, "d": 9007199254740993, "e": 2.5, "f": -0,}',
     {"a": [1], "b": {"c": 0}, "d": 2**53, "e": 2.5, "f": 0}),  # doubles, integral ones as ints
    (b" null ", {}),
])
def test_token_json_reads_as_envoy_reads_it(text, value):
    assert tokenjson.loads(text) == value


@pytest.mark.parametrize("text", [
    rb'{"a": "\ud800"}', rb'{"a": "\udc00\ud800"}', rb'{"a": "\ud83d\Ude00"}', b'{"a": "\xc1\xb8"}',
    b'{"a": "\xed\xa0\x80"}', b'{"a": 1e400}', b'{"a": 01}', b'{"a": NaN}', b'{"a": 1, "a": 1}',
    b'{"a": [1,,]}', b'{,}', b'{null: 1}', b'{1a: 1}', b'\xef\xbb\xbf{}', b'{} x', b'{/* c */}', b'[]',
    b'{"a": "x}', b"{\f}",
])
def test_token_json_envoy_refuses_is_refused(text):
    assert tokenjson.loads(text) is None
