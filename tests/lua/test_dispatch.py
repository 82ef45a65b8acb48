"""The Lua index only skips rules that cannot match: every path a rule matches starts with one of
the prefixes the compiler works out for it."""

from hypothesis import given
from hypothesis import strategies as st

from policyc import nodes as n
from policyc.backends.resolve import required_prefixes
from policyc.checked import Checked
from policyc.semantics.glob import glob_literal_prefix, glob_matches

SEGMENTS = st.sampled_from(["a", "b", "ab", "*", "**", "a*", "*b", ""])
PATHS = st.lists(st.sampled_from(["a", "b", "ab", "abb", "", "x"]), max_size=5).map(lambda s: "/" + "/".join(s))


@given(st.lists(SEGMENTS, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s)), PATHS)
def test_a_glob_matches_only_paths_with_its_literal_prefix(pattern, path):
    if glob_matches(pattern, path):
        assert path.startswith(glob_literal_prefix(pattern))


def test_literal_prefixes():
    assert glob_literal_prefix("/a/**") == "/a"  # `**` also matches no segment: /a
    assert glob_literal_prefix("/items/*/r1/**") == "/items/"
    assert glob_literal_prefix("/a/b*c") == "/a/b"
    assert glob_literal_prefix("/a/b") == "/a/b"
    assert glob_literal_prefix("/**") == ""


def test_prefixes_through_combinators():
    prefix, exact, glob = (n.PathTest(n.Op.PREFIX, ("/api/",)), n.PathTest(n.Op.IN, ("/x", "/y")),
                           n.PathTest(n.Op.GLOB, ("/**",)))
    get = n.MethodTest(n.Op.EQ, ("GET",))
    checked = Checked(n.PolicySet(()), None, conditions={"c": n.Condition("c", prefix)})
    assert required_prefixes(checked, n.And((get, n.ConditionRef("c")))) == ("/api/",)
    assert required_prefixes(checked, n.And((prefix, n.PathTest(n.Op.PREFIX, ("/api/v1/",))))) == ("/api/v1/",)
    assert required_prefixes(checked, n.Or((prefix, exact))) == ("/api/", "/x", "/y")
    assert required_prefixes(checked, n.Or((prefix, get))) is None
    assert required_prefixes(checked, n.Not(prefix)) is None
    assert required_prefixes(checked, glob) is None
