"""The interpreter's decision rules (contract §3, §4) on generated checked policies and requests:
order independence, deny-overrides monotonicity, anonymous callers, dry-run, and no exceptions."""

from dataclasses import replace

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from policyc import nodes as n
from policyc.check import can_match_anonymous
from policyc.interpret import evaluate
from policyc.interpret.evaluator import Evaluator
from policyc.semantics.request import Decision, RawRequest
from tests.property import strategies
from tests.property.strategies import NOW, check_clean

# Reasons decided before any rule is consulted (contract §3, steps 0-2).
BEFORE_RULES = {"bad-request", "unauthenticated", "forbidden", "no-service"}
# The status each reason stands for; the proxy refuses a request-target with 400, with 404 when it
# is not a path (`OPTIONS *`), or with 426 for a request line without a version.
ENFORCED_STATUSES = {"bad-request": {400, 404, 426}, "unauthenticated": {401}, "forbidden": {403},
                     "no-service": {404}, "deny": {403}, "default-deny": {403}, "allow": {200}}
UPSTREAM_STATUS = 200  # what the interpreter's upstream answers to an allowed request
ADDED = "added"  # the name of a rule a test adds: no generated rule has it


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return strategies.write_world(tmp_path_factory.mktemp("policy-world"))


def decide(checked, request: RawRequest) -> Decision:
    decision = evaluate(checked, request, NOW)
    event(f"reason: {decision.reason}")
    return decision


def with_service(policy_set: n.PolicySet, name: str, change) -> n.PolicySet:
    """The policy set with service `name` replaced by `change(service)`."""
    return n.PolicySet(tuple(
        replace(f, items=tuple(change(i) if isinstance(i, n.Service) and i.name == name else i for i in f.items))
        for f in policy_set.files
    ))


def matches_alone(policy_set: n.PolicySet, decision: Decision, request: RawRequest) -> bool:
    """Whether the rule `decision` names matches `request` by itself: its service keeps only it."""
    only = with_service(policy_set, decision.service,
                        lambda s: replace(s, rules=tuple(r for r in s.rules if r.name == decision.rule)))
    alone = evaluate(check_clean(only), request, NOW)
    return (alone.reason, alone.rule) == (decision.reason, decision.rule)


@given(data=st.data())
def test_rule_order_never_changes_the_decision(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    request = data.draw(strategies.requests(gen), label="request")
    shuffled = gen.expanded
    for service in gen.expanded.services:
        order = data.draw(st.permutations(service.rules), label=f"{service.name} rules")
        shuffled = with_service(shuffled, service.name, lambda s, order=order: replace(s, rules=tuple(order)))
    before, after = decide(gen.checked, request), decide(check_clean(shuffled), request)
    # The whole decision, named rule included: among matching rules the name that sorts first is named.
    assert after == before
    if before.rule is not None:
        assert matches_alone(gen.expanded, before, request), before


def add_rule(data, gen, effect: n.Effect) -> tuple[Decision, Decision]:
    """The decision of a request before and after a new rule of `effect` joins a service (the
    one that decided, when one did), at any position."""
    request = data.draw(strategies.requests(gen), label="request")
    before = decide(gen.checked, request)
    service = before.service or data.draw(st.sampled_from([s.name for s in gen.policy_set.services]))
    rule = data.draw(strategies.rules(gen.vocabulary(), effect, ADDED), label="added rule")
    position = data.draw(st.integers(0, len(gen.checked.services[service].rules)), label="position")
    grown = with_service(gen.expanded, service,
                         lambda s: replace(s, rules=s.rules[:position] + (rule,) + s.rules[position:]))
    return before, decide(check_clean(grown), request)


@given(data=st.data())
def test_a_deny_rule_never_grants_access(world, data):
    before, after = add_rule(data, data.draw(strategies.checked_policy(world), label="policy"), n.Effect.DENY)
    if before.reason != "allow":
        assert after.reason != "allow", (before, after)
    # Sharper: the decision stays, or the new rule denies.
    assert after == before or (after.reason, after.rule) == ("deny", ADDED), (before, after)


@given(data=st.data())
def test_an_allow_rule_never_removes_access(world, data):
    before, after = add_rule(data, data.draw(strategies.checked_policy(world), label="policy"), n.Effect.ALLOW)
    if before.reason == "allow":
        assert after.reason == "allow", (before, after)
    # Sharper: the decision stays, or the new rule allows what no deny rule refused.
    assert after == before or (
        (after.reason, after.rule) == ("allow", ADDED) and before.reason in {"allow", "default-deny"}
    ), (before, after)


@given(data=st.data())
def test_anonymous_callers_satisfy_no_identity_atom(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    context = data.draw(strategies.anonymous_contexts(gen), label="context")
    atom = data.draw(strategies.identity_atoms_of(gen.vocabulary()), label="atom")
    evaluator = Evaluator(gen.checked, context)
    assert not evaluator.holds(atom)
    assert evaluator.holds(n.Not(atom))
    # The checker's judgement agrees: a rule it says needs a token never matches without one.
    for service in gen.checked.services.values():  # as checked: gRPC atoms written out as path tests
        for rule in service.rules:
            if not can_match_anonymous(rule.expr, gen.checked.conditions):
                assert not evaluator.holds(rule.expr), rule


@given(data=st.data())
def test_the_interpreter_never_raises_and_decides_consistently(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    request = data.draw(st.one_of(strategies.requests(gen), strategies.arbitrary_requests()), label="request")
    decision = decide(gen.checked, request)
    service = gen.checked.services.get(decision.service)
    if decision.reason in {"allow", "deny"}:
        assert (decision.reason, decision.rule) in {(r.effect.value, r.name) for r in service.rules}
    else:
        assert decision.rule is None
    if decision.reason not in BEFORE_RULES:
        assert service is not None
    dry_run = service is not None and service.mode is n.Mode.DRY_RUN
    assert decision.dry_run == dry_run
    enforced = decision.enforced_status if dry_run else decision.status
    assert enforced in ENFORCED_STATUSES[decision.reason]
    assert decision.status == (UPSTREAM_STATUS if dry_run else enforced)


def with_mode(policy_set: n.PolicySet, name: str, mode: n.Mode) -> n.PolicySet:
    def change(service: n.Service) -> n.Service:
        settings = tuple(s for s in service.settings if not isinstance(s, n.ModeSetting))
        return replace(service, settings=settings + (n.ModeSetting(mode),))
    return with_service(policy_set, name, change)


@given(data=st.data())
def test_dry_run_answers_the_upstream_and_reports_the_enforced_status(world, data):
    gen = data.draw(strategies.checked_policy(world), label="policy")
    name = data.draw(st.sampled_from([s.name for s in gen.policy_set.services]), label="service")
    request = data.draw(strategies.requests(gen, name), label="request")
    dry = decide(check_clean(with_mode(gen.expanded, name, n.Mode.DRY_RUN)), request)
    enforced = decide(check_clean(with_mode(gen.expanded, name, n.Mode.ENFORCE)), request)
    if dry.service == name:
        event("the dry-run service decided")
        assert dry.dry_run and dry.status == UPSTREAM_STATUS
        assert dry.enforced_status == enforced.status
        assert (dry.reason, dry.rule, dry.caller) == (enforced.reason, enforced.rule, enforced.caller)
    else:
        assert dry == enforced
