"""Interpreter and front-end speed: decisions per second on the example's requests, and
parse + check time of a generated 10,000-rule policy set. Prints a table; no assertions.

    .venv/bin/python bench/interpreter.py [--rules 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from policyc.casefile import build_request, load_case_file
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check

EXAMPLE = Path(__file__).parents[1] / "envoy_configs" / "examples" / "backstage"


def decisions_per_second(seconds: float = 2.0) -> tuple[float, int]:
    pipeline = load_and_check([str(EXAMPLE)])
    case_file = load_case_file(str(EXAMPLE / "example.cases.yaml"))
    now = time.time()
    requests = [build_request(c.request, pipeline.checked, case_file.keys, now) for c in case_file.cases]
    keys = case_file.keys.published(pipeline.checked)
    count, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for request in requests:
            evaluate(pipeline.checked, request, now, keys)
        count += len(requests)
    return count / (time.process_time() - start), len(requests)


def generated_policy(rules: int, per_service: int = 100) -> str:
    """`rules` rules over services of `per_service` rules each, mixing every cheap atom kind."""
    lines = ['issuer idp {\n    url "https://idp.example.com"\n    jwks "https://idp.example.com/jwks"\n}\n',
             "condition reader = method in [GET, HEAD]\n"]
    for s in range(max(1, rules // per_service)):
        lines.append(f'service svc{s} {{\n    hosts ["svc{s}.internal"]\n    upstream "127.0.0.1:{8000 + s % 1000}"\n')
        for r in range(per_service):
            atom = [f'path prefix "/api/v{r}/"', f'path glob "/items/*/r{r}/**"',
                    f'header "x-team" == "team{r}"', f'source in "10.{r % 256}.0.0/16"'][r % 4]
            effect = "deny" if r % 10 == 0 else "allow"
            lines.append(f'    {effect} "r{r}" when reader and {atom} and token.groups contains "g{r}"\n')
        lines.append("}\n")
    return "".join(lines)


def parse_and_check_seconds(rules: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.policy"
        path.write_text(generated_policy(rules))
        start = time.perf_counter()
        pipeline = load_and_check([str(path)])
        elapsed = time.perf_counter() - start
        assert pipeline.ok, pipeline.diagnostics[:3]
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=10_000)
    args = parser.parse_args()
    rate, distinct = decisions_per_second()
    check_time = parse_and_check_seconds(args.rules)
    print(f"{'measure':<48} {'value':>14}")
    print(f"{'interpreter decisions/s (example, ' + str(distinct) + ' requests)':<48} {rate:>14,.0f}")
    print(f"{'parse + check, ' + format(args.rules, ',') + ' rules (s)':<48} {check_time:>14.2f}")


if __name__ == "__main__":
    main()
