"""The example compiles for every target, runs in a real Envoy, and every case-file request gets
the interpreter's status and rule; allowed requests really reach the upstream."""

import time
from pathlib import Path

import pytest

from policyc.backends import expressible_part
from policyc.cases.casefile import build_request, load_case_file
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check
from policyc.proof.replay import EnvoyUnderTest

pytestmark = pytest.mark.envoy

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"


@pytest.mark.parametrize("target", ["auto", "lua", "rbac"])
def test_example_cases_decide_alike_in_envoy(target, tmp_path):
    checked = expressible_part(load_and_check([str(EXAMPLE)]).checked, target)
    case_file = load_case_file(str(EXAMPLE / "example.cases.yaml"))
    now = time.time()
    requests = [build_request(case.request, checked, case_file.keys, now) for case in case_file.cases]
    with EnvoyUnderTest(tmp_path) as envoy:
        envoy.load(checked, target)
        observed = envoy.send_all(requests)
    keys = case_file.keys.published(checked)
    mismatches = []
    for case, seen in zip(case_file.cases, observed, strict=True):
        expected = evaluate(checked, seen.request, now, keys)
        got = (seen.status, seen.reason, seen.rule)
        if got != (expected.status, expected.reason, expected.rule):
            mismatches.append(f"{case.where} {case.name}: interpreter {expected.status} {expected.reason} "
                              f"{expected.rule}, envoy {got} ({seen.log.get('details')})")
        if seen.reached_upstream != (expected.status == 200):
            mismatches.append(f"{case.where} {case.name}: reached upstream = {seen.reached_upstream}")
    assert not mismatches, "\n".join(mismatches)


def test_one_envoy_reloads_between_policy_sets(tmp_path):
    """A reload changes the decision for new connections: the harness's way to run many sets."""
    allow = tmp_path / "allow.policy"
    allow.write_text('service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n'
                     '    allow public "open" when path prefix "/"\n}\n')
    deny = tmp_path / "deny.policy"
    deny.write_text(allow.read_text().replace('allow public "open"', 'deny "closed"'))
    from policyc.semantics.request import RawRequest

    request = RawRequest("GET", "/x", "s.test")
    with EnvoyUnderTest(tmp_path / "envoy") as envoy:
        for policy, status in ((allow, 200), (deny, 403), (allow, 200)):
            envoy.load(load_and_check([str(policy)]).checked, "auto")
            assert envoy.send_all([request])[0].status == status
