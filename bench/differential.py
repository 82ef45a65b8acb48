"""Differential harness speed: requests per second that `policyc verify` sends through a real Envoy
and compares with the interpreter, on the bundled example (its cases plus generated requests).

    .venv/bin/python bench/differential.py [--examples 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stats import summary

from policyc.cases.casefile import load_case_file
from policyc.pipeline import load_and_check
from policyc.proof.envoy_process import running_envoy
from policyc.proof.verify import verify

EXAMPLE = Path(__file__).parents[1] / "envoy_configs" / "examples" / "backstage"


def measure(examples: int, runs: int, log=print) -> dict:
    checked = load_and_check([str(EXAMPLE)]).checked
    case_files = [load_case_file(str(EXAMPLE / "example.cases.yaml"))]
    rates = []
    for run in range(runs):
        log(f"  differential: run {run + 1} of {runs}")
        start = time.perf_counter()
        report = verify(checked, case_files, running_envoy, ["auto"], examples)
        if report.mismatches:
            raise RuntimeError(f"the harness found differences: {report.mismatches[:1]}")
        rates.append(report.count / (time.perf_counter() - start))
    return {"requests per run": report.count, "requests/s": summary(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.examples, args.runs), indent=2))


if __name__ == "__main__":
    main()
