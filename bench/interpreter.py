"""Interpreter speed: decisions per second on the example's case requests and on a generated
1,000-rule service, and, in the same run, Cedar's engine (cedarpy) deciding the same 1,000 rules
written in Cedar: the anchor. CPU time of this process, so other load on the machine matters less.

    .venv/bin/python bench/interpreter.py [--seconds 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import cedarpy
from policies import Probe, cedar_rule_set, check_text, rule_requests, rule_set
from stats import summary

from policyc.cases.casefile import build_request, load_case_file
from policyc.interpret import RawRequest, evaluate
from policyc.pipeline import load_and_check

EXAMPLE = Path(__file__).parents[1] / "envoy_configs" / "examples" / "backstage"
RULES = 1000


def per_second(decide: Callable[[object], object], requests: list, seconds: float) -> float:
    """Decisions per CPU second, deciding `requests` in turn for about `seconds`."""
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for request in requests:
            decide(request)
        count += len(requests)
    return count / (time.process_time() - start)


def example_decider() -> tuple[Callable, list]:
    pipeline = load_and_check([str(EXAMPLE)])
    case_file = load_case_file(str(EXAMPLE / "example.cases.yaml"))
    now = time.time()
    requests = [build_request(c.request, pipeline.checked, case_file.keys, now) for c in case_file.cases]
    keys = case_file.keys.published(pipeline.checked)
    return (lambda request: evaluate(pipeline.checked, request, now, keys)), requests


def rule_set_decider(probes: list[Probe]) -> tuple[Callable, list]:
    checked = check_text(rule_set(RULES))
    requests = [RawRequest(p.method, p.path, None, p.headers) for p in probes]
    for probe, request in zip(probes, requests, strict=True):
        assert evaluate(checked, request).status == probe.status, probe
    return (lambda request: evaluate(checked, request)), requests


def cedar_decider(probes: list[Probe]) -> tuple[Callable, list]:
    policies = cedarpy.PolicySet.from_str(cedar_rule_set(RULES))
    entities = cedarpy.Entities.from_json_str("[]")
    requests = [{"principal": 'User::"caller"', "action": 'Action::"request"', "resource": 'Service::"bench"',
                 "context": {"method": p.method, "path": p.path, "headers": dict(p.headers)}} for p in probes]
    expected = [cedarpy.Decision.Allow if p.status == 200 else cedarpy.Decision.Deny for p in probes]
    assert [cedarpy.is_authorized(r, policies, entities).decision for r in requests] == expected
    return (lambda request: cedarpy.is_authorized(request, policies, entities)), requests


def measure(seconds: float, runs: int) -> dict:
    probes = rule_requests(RULES)
    deciders = {
        "example": example_decider(),
        f"{RULES} rules": rule_set_decider(probes),
        f"{RULES} rules, Cedar": cedar_decider(probes),
    }
    rates = {name: [] for name in deciders}
    for _ in range(runs):  # interleaved, so a busy moment touches every measure alike
        for name, (decide, requests) in deciders.items():
            rates[name].append(per_second(decide, requests, seconds))
    result = {name: summary(values) for name, values in rates.items()}
    ours, cedar = rates[f"{RULES} rules"], rates[f"{RULES} rules, Cedar"]
    result["per-decision time vs Cedar"] = summary([c / o for o, c in zip(ours, cedar, strict=True)])
    result["example requests"] = len(deciders["example"][1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.seconds, args.runs), indent=2))


if __name__ == "__main__":
    main()
