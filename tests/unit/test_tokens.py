"""Token extraction and parsing corner cases, each observed on Envoy (docs/tokens.md); the
regressions here were found by the differential suite."""

from policyc.interpret.tokens import extract


def test_empty_authorization_lines_are_skipped_when_joining():
    # Regression: "Bearer T" then an empty line was read as "T," (401); Envoy reads "T" (200).
    assert extract([("authorization", "Bearer a.b.c"), ("Authorization", "")]) == "a.b.c"
    assert extract([("authorization", ""), ("authorization", "Bearer a.b.c")]) == "a.b.c"
    assert extract([("authorization", "")]) is None


def test_lines_are_joined_and_the_prefix_found_anywhere():
    assert extract([("authorization", "Basic x"), ("authorization", "Bearer a.b.c")]) == "a.b.c"
    assert extract([("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")]) == "a.b.c,Bearer d.e.f"
    assert extract([("authorization", "bearer a.b.c")]) is None
