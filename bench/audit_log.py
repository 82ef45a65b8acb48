"""Audit commands on a large access log: 1,000,000 lines of a real Envoy's log (the example's
requests, tests/docs/access.log, repeated) read by `policyc audit` (CSV of every event, JSON of
the denials), `policyc analyze --usage`, and `audit seal` / `verify-log` over four segments. Each
runs as the command line does, streaming the file; wall and CPU seconds and lines/s are printed
and written to bench/results/audit_log.json. The target: each under 30 s.

    .venv/bin/python bench/audit_log.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

ROOT = Path(__file__).parents[1]
TEMPLATE = ROOT / "tests" / "docs" / "access.log"
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
RESULTS = ROOT / "bench" / "results" / "audit_log.json"
SEGMENTS = 4
TARGET_SECONDS = 30


def write_log(folder: Path, lines: int) -> list[Path]:
    """`lines` log lines in SEGMENTS files, oldest first, as a rotated log leaves them."""
    template = TEMPLATE.read_text().splitlines(keepends=True)
    source = islice(cycle(template), lines)
    per_segment = -(-lines // SEGMENTS)
    segments = []
    for number in range(SEGMENTS, 0, -1):
        segment = folder / f"access.log.{number}"
        segment.write_text("".join(islice(source, per_segment)))
        segments.append(segment)
    return segments


def timed(arguments: list[str], cwd: Path) -> dict:
    """Wall and CPU seconds of one `policyc` command, its output thrown away."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "policyc", *arguments], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall seconds": round(wall, 2), "cpu seconds": round(cpu, 2)}


def measure(lines: int) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(workdir)
        segments = [str(s) for s in write_log(folder, lines)]
        subprocess.run([sys.executable, "-m", "policyc", "audit", "keygen", "audit.key"], cwd=folder, check=True,
                       stdout=subprocess.DEVNULL)
        runs = {
            "audit, CSV of every event": ["audit", *segments, "--format", "csv"],
            "audit --denials, JSON": ["audit", *segments, "--denials", "--format", "json"],
            "analyze --usage": ["analyze", str(EXAMPLE), *(f"--usage={s}" for s in segments)],
            "audit seal": ["audit", "seal", "--key", "audit.key", "--seal", "access.seal", *segments],
            "audit verify-log": ["audit", "verify-log", "--key", "audit.key.pub", "--seal", "access.seal", *segments],
        }
        results = {}
        for name, arguments in runs.items():
            result = timed(arguments, folder)
            result["lines/s"] = round(lines / result["wall seconds"])
            result["held"] = result["wall seconds"] < TARGET_SECONDS
            results[name] = result
            print(f"{name:<28} {result['wall seconds']:>7.1f} s wall {result['cpu seconds']:>7.1f} s CPU "
                  f"{result['lines/s']:>10,} lines/s", flush=True)
    return {"lines": lines, "target seconds": TARGET_SECONDS, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    report = measure(parser.parse_args().lines)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
