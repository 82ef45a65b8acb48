"""Strings as Boolean tests (policyc/analysis/strings.py), on the path: the structure stated up front is true of
every path, a request found has a real path with the tests' chosen values, and a choice no path
has is refuted (by the structure, or by a lemma that is kept)."""

import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc import nodes as n
from policyc.analysis.space import RequestSpace, solve
from policyc.analysis.strings import StringAtoms
from policyc.proof.generate import glob_instances
from tests.property.strategies import GLOBS, PATHS, PREFIXES

ALL_TESTS = ([(n.Op.EQ, (p,)) for p in PATHS] + [(n.Op.PREFIX, (p,)) for p in PREFIXES + ("/api/v10/", "/items/")]
             + [(n.Op.GLOB, (g,)) for g in GLOBS + ("/items/*/r1/**", "/items/*/r2/**")])
TESTS = st.sampled_from(ALL_TESTS)
CONCRETE = sorted(set(PATHS + PREFIXES) | {p for g in GLOBS for p in glob_instances(g)}
                  | {"/items/a/r1/x", "/items/a/r2", "/api/v10/x", "/api/v1", "/api/v1/x", "/x/y", "/admin/"})


def space_with(tests) -> RequestSpace:
    space = RequestSpace([])
    space.parameters_possible = True  # as for a service that allows them: `;` is a path character
    for op, values in tests:
        space.paths.atom(op, values)
    return space


def variables(space: RequestSpace, tests) -> list[z3.BoolRef]:
    """The Booleans of `tests`, in their order (the space holds its own tests besides)."""
    return [space.paths.atom(op, values) for op, values in tests]


def values_on(space: RequestSpace, path: str) -> dict:
    return {key: atom.matches(path) for key, atom in space.paths.atoms.items()}


@settings(max_examples=60, deadline=None)
@given(tests=st.lists(TESTS, min_size=1, max_size=8), path=st.sampled_from(CONCRETE), keep=st.data())
def test_every_real_path_can_be_chosen_and_is_realized_with_the_same_values(tests, path, keep):
    """Fixing some tests to their values on a real path is never refuted, and the path found gives
    those tests the same values."""
    space = space_with(tests)
    if not space.paths.fits_shape(path):
        return
    atoms = list(space.paths.atoms.values())
    chosen = keep.draw(st.lists(st.sampled_from(atoms), unique_by=id), label="fixed tests")
    found = solve(space, *[a.var if a.matches(path) else z3.Not(a.var) for a in chosen])
    assert found is not None
    assert [a.matches(found.path) for a in chosen] == [a.matches(path) for a in chosen]
    assert space.paths.fits_shape(found.path)


def test_every_real_path_is_possible_with_every_test_fixed():
    space = space_with(ALL_TESTS)
    for path in CONCRETE:
        if space.paths.fits_shape(path):
            found = solve(space, space.paths.fixed(path))
            assert found is not None, path
            assert values_on(space, found.path) == values_on(space, path)


def test_disjoint_prefixes_and_segments_are_refuted_by_the_structure():
    tests = [(n.Op.PREFIX, ("/a/",)), (n.Op.PREFIX, ("/b/",)), (n.Op.GLOB, ("/items/*/r1/**",)),
             (n.Op.GLOB, ("/items/*/r2/**",))]
    space = space_with(tests)
    a, b, r1, r2 = variables(space, tests)
    assert solve(space, a, b) is None
    assert solve(space, r1, r2) is None
    assert not space.paths.lemmas


def test_a_clash_the_structure_misses_becomes_a_lemma_that_is_kept():
    tests = [(n.Op.GLOB, ("/*/a*",)), (n.Op.EQ, ("/q/b",))]
    space = space_with(tests)
    starred, exact = variables(space, tests)
    assert solve(space, starred, exact) is None
    assert len(space.paths.lemmas) == 1
    assert solve(space, starred, exact) is None  # answered by the lemma alone
    assert len(space.paths.lemmas) == 1
    assert solve(space, starred).path.split("/")[2].startswith("a")


def test_an_example_sits_just_outside_an_excluded_test():
    tests = [(n.Op.GLOB, ("/api/v1/**",)), (n.Op.GLOB, ("/api/**",))]
    space = space_with(tests)
    old, new = variables(space, tests)
    assert solve(space, new, z3.Not(old)).path == "/api/v2/x"


def test_fixing_a_path_the_proxy_never_hands_over_is_impossible():
    space = space_with([(n.Op.PREFIX, ("/a",))])
    assert solve(space, space.paths.fixed("/a/../b")) is None
    assert solve(space, space.paths.fixed("/a/b")).path.startswith("/a")


def test_a_text_tested_by_prefix_and_suffix_is_realized_or_refuted():
    space = RequestSpace([])
    text = StringAtoms("header", shape=z3.Plus(z3.Range("!", "~")))
    space.strings.append(text)
    starts, ends, exact, other = (text.atom(op, values) for op, values in (
        (n.Op.PREFIX, ("ab",)), (n.Op.SUFFIX, ("yz",)), (n.Op.EQ, ("abyz",)), (n.Op.PREFIX, ("ac",))))
    found = solve(space, starts, ends, z3.Not(exact)).strings[text]
    assert found.startswith("ab") and found.endswith("yz") and found != "abyz"
    assert solve(space, starts, other) is None
    assert solve(space, exact, z3.Not(ends)) is None
