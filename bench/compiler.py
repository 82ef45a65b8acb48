"""Compiler speed: parse + check + compile of generated policy sets of 100, 1,000 and 10,000 rules
for every target, in CPU seconds of this process, and how each grows against the smallest set.

    .venv/bin/python bench/compiler.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from policies import large_set
from stats import summary

from policyc.backends import TARGETS, compile_outputs
from policyc.pipeline import load_and_check

SIZES = (100, 1000, 10_000)


def timed_run(path: Path) -> dict[str, float]:
    """Seconds of parse + check, then of each target's compile; a target's total is the sum."""
    start = time.process_time()
    pipeline = load_and_check([str(path)])
    checked_at = time.process_time()
    if not pipeline.ok:
        raise RuntimeError(f"a generated policy does not check: {pipeline.diagnostics[:3]}")
    times = {"parse + check": checked_at - start}
    for target in TARGETS:
        start = time.process_time()
        compiled = compile_outputs(pipeline.checked, target)
        times[target] = times["parse + check"] + time.process_time() - start
        if compiled.diagnostics:
            raise RuntimeError(f"{target} refused a generated policy: {compiled.diagnostics[:3]}")
    return times


def measure(runs: int, log=print) -> dict:
    samples: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for size in SIZES:
            path = Path(folder) / f"set-{size}.policy"
            path.write_text(large_set(size))
            # The largest set runs at most twice: it takes longer than everything else together.
            size_runs = runs if size < SIZES[-1] else min(runs, 2)
            for run in range(size_runs):
                log(f"  compiler: {size:,} rules, run {run + 1} of {size_runs}")
                for stage, seconds in timed_run(path).items():
                    samples.setdefault(size, {}).setdefault(stage, []).append(seconds)
    # Seconds per rule against the smallest set's median: 1.0 is linear growth.
    per_rule = {stage: statistics.median(values) / SIZES[0] for stage, values in samples[SIZES[0]].items()}
    return {size: {stage: {"seconds": summary(values),
                           "growth per rule": summary([v / size / per_rule[stage] for v in values])}
                   for stage, values in by_stage.items()}
            for size, by_stage in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.runs), indent=2))


if __name__ == "__main__":
    main()
