"""Least privilege from real use (`policyc analyze --usage`): on the example's requests through a
real Envoy, the rules reported unused are exactly those that decided none of them; memberships,
catalog owners and callers' access that allowed nothing are found from a window's decisions;
and what removing the unused allow rules would change is the `policyc diff` of the two policies."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.ops.audit import Event
from policyc.ops.usage import usage, without_rules
from policyc.pipeline import load_and_check
from tests.ops.conftest import EXAMPLE


@pytest.fixture(scope="module")
def checked():
    return load_and_check([str(EXAMPLE)]).checked


def every_rule(checked) -> dict[tuple[str, str], str]:
    return {(s.name, r.name): r.effect.value for s in checked.services.values() for r in s.rules}


@pytest.mark.envoy
def test_the_unused_rules_of_the_examples_log_are_exactly_those_no_request_used(example_log, checked):
    log, decisions = example_log
    result = CliRunner().invoke(main, ["analyze", str(EXAMPLE), "--usage", str(log), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    used = {(d.service, d.rule) for d in decisions if d.rule is not None}
    never = {key: effect for key, effect in every_rule(checked).items() if key not in used}
    assert never, "the example's requests use every rule: nothing to report"
    reported = {(r["service"], r["rule"]): "allow" for r in report["unused_allow_rules"]} | \
        {(r["service"], r["rule"]): "deny" for r in report["unused_deny_rules"]}
    assert reported == never
    assert report["requests"] == len(decisions)
    changed = {s["service"] for s in report["removal"]["services"] if s["verdict"] != "equivalent"}
    assert changed == {service for (service, _), effect in never.items() if effect == "allow"}


def event(caller: str, service: str, rule: str, reason: str = "allow") -> Event:
    return Event("2026-01-01T00:00:00Z", service, "enforce", "v", caller, None, None, None, "GET", "h", "/", "s",
                 200, None, reason, rule, "allowed" if reason == "allow" else "denied", "", None, None, None,
                 None, None)


def test_memberships_owners_and_idle_access_come_from_who_was_allowed(checked):
    events = [event("user:default/bob", "payments", "sre-read"),  # bob is in sre
              event("user:default/alice", "payments", "team-write"),  # alice: payments-team, owners of payments
              event("user:default/carol", "ledger", "outside-office", "deny")]
    found = usage(checked, events)
    assert ("ledger", "outside-office") not in found.unused_deny
    assert ("payments", "sre-read") not in found.unused_allow and ("ledger", "sre-read") in found.unused_allow
    # bob used his sre membership (through payments); alice used the payments owners' one.
    assert not [m for m in found.unused_memberships if m[1] in ("user:default/bob", "user:default/alice")]
    owners = dict(found.unused_owners)
    assert "owners(component:payments) = group:default/payments-team" not in owners
    assert owners["owners(component:ledger) = user:default/carol"] == [("ledger", "owner")]
    assert found.idle_access["user:default/alice"] == [("payments", "team-read")]
    assert ("ledger", "sre-read") in found.idle_access["user:default/bob"]
    assert ("payments", "sre-read") not in found.idle_access["user:default/bob"]
    # dave is in platform, above sre: the sre group does not admit him; team-write names him.
    assert found.idle_access["user:default/dave"] == [("payments", "team-write")]


def test_a_membership_nobody_used_is_listed_for_each_of_its_users(checked):
    found = usage(checked, [event("user:default/alice", "payments", "team-read")])
    assert ("member group:default/sre", "user:default/bob") in found.unused_memberships


def test_removing_rules_leaves_the_others_in_place(checked):
    pruned = without_rules(checked, [("ledger", "owner")])
    assert [r.name for r in pruned.services["ledger"].rules] == ["outside-office", "sre-read", "reports"]
    assert replace(pruned.services["payments"]) == checked.services["payments"]


def test_usage_reads_a_window(checked, tmp_path: Path):
    log = tmp_path / "access.log"
    log.write_text("")
    result = CliRunner().invoke(main, ["analyze", str(EXAMPLE), "--usage", str(log), "--since", "nonsense"])
    assert result.exit_code == 2 and "--since" in result.output
