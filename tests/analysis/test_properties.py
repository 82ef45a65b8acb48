"""Generated policy pairs: every example request `diff` shows is replayed through the interpreter
and gets the decisions it claims (`diff` itself fails otherwise); `diff(P, P)` is equivalent even
when solved; and a verdict never hides a change that a generated request shows."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.analysis import diff
from policyc.analysis.witness import enforced
from policyc.interpret import evaluate
from tests.property import strategies
from tests.property.strategies import NOW, check_clean
from tests.property.test_semantics import with_service

# Each example asks the solver a few dozen questions.
EXAMPLES = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return strategies.write_world(tmp_path_factory.mktemp("analysis-world"))


@st.composite
def policy_pairs(draw, world):
    """A generated policy and the same with one rule of one service added, dropped or replaced."""
    gen = draw(strategies.checked_policy(world))
    service = draw(st.sampled_from(gen.expanded.services))
    at = draw(st.integers(0, len(service.rules) - 1))
    replaced = service.rules[at]  # a template's rule is replaced as the template would be edited
    rule = replace(draw(strategies.rules(gen.vocabulary(), name=replaced.name)), template=replaced.template)
    rules = draw(st.sampled_from([
        service.rules[:at] + (rule,) + service.rules[at + 1:],
        service.rules[:at] + service.rules[at + 1:] or (rule,),
        service.rules + (replace(rule, name="added", template=None),),  # a rule of the service's own
    ]))
    changed = with_service(gen.expanded, service.name, lambda s: replace(s, rules=rules))
    return gen, check_clean(changed)


@EXAMPLES
@given(data=st.data())
def test_examples_replay_and_verdicts_are_exact(world, data):
    gen, new = data.draw(policy_pairs(world), label="policies")
    found = diff(gen.checked, new, limit=2)
    for _ in range(10):
        request = data.draw(strategies.requests(gen), label="request")
        before, after = evaluate(gen.checked, request, NOW), evaluate(new, request, NOW)
        gains = before.status != 200 and after.status == 200
        loses = before.status == 200 and after.status != 200
        if gains:
            assert found.verdict in ("broader", "mixed", "undecided"), (request, before, after)
        if loses:
            assert found.verdict in ("narrower", "mixed", "undecided"), (request, before, after)
        if enforced(before) != enforced(after):
            assert found.verdict != "equivalent", (request, before, after)


@EXAMPLES
@given(data=st.data())
def test_a_policy_is_equivalent_to_itself(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    assert diff(gen.checked, gen.checked, shortcut=False).verdict == "equivalent"
