"""Compile time and output size: `policyc compile` run as a command on generated policy sets in
the example's shapes (`policies.backstage_set`, over 20 services by default, so each service grows
with the set), timed from start to exit, with the bytes of every file it writes. Prints a table
and writes bench/results/compile_size.json.

    .venv/bin/python bench/compile_size.py [--runs 1] [--sizes 1000 2500 5000 10000] [--services 20]
                                           [--target auto]

Only `auto` and `lua` express every shape (`rbac` cannot compare a header with a claim, which one
service in four has, and the native filter reads no claims yet).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from policies import backstage_set

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "compile_size.json"
SIZES = (1000, 2500, 5000, 10_000)


def write_set(folder: Path, rules: int, services: int) -> int:
    """The generated policy files under `folder`; returns the bytes of policy text."""
    size = 0
    for name, text in backstage_set(rules, services).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        size += len(text.encode()) if name.endswith(".policy") else 0
    return size


def output_sizes(out: Path) -> dict[str, int]:
    """Bytes per written file, the per-service files summed under `services/`, and the total."""
    sizes: dict[str, int] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = path.relative_to(out)
        key = "services/" if relative.parts[0] == "services" else str(relative)
        sizes[key] = sizes.get(key, 0) + path.stat().st_size
    sizes["total"] = sum(sizes.values())
    return sizes


def measure(sizes=SIZES, runs: int = 1, services: int = 20, log=print, target: str = "auto") -> dict:
    """Per rule count: the policy's bytes, the median seconds of `runs` compiles, and the output's bytes."""
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for rules in sizes:
            policies, out = Path(work) / f"set-{rules}", Path(work) / f"out-{rules}"
            policy_bytes = write_set(policies, rules, services)
            seconds = []
            for run in range(runs):
                log(f"  compile size: {rules:,} rules, run {run + 1} of {runs}")
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "policyc", "compile", str(policies), "-o", str(out),
                                "--target", target],
                               check=True, cwd=HERE.parent, stderr=subprocess.DEVNULL)
                seconds.append(time.perf_counter() - start)
            results[rules] = {"policy bytes": policy_bytes, "seconds": statistics.median(seconds),
                              "runs": seconds, "bytes": output_sizes(out)}
    return results


def table(results: dict) -> list[str]:
    files = sorted({f for r in results.values() for f in r["bytes"]} - {"total"}) + ["total"]
    smallest = min(results)
    lines = [f"{'rules':>7} {'policy':>10} {'seconds':>8} {'s/rule vs ' + str(smallest):>14} "
             + " ".join(f"{f:>13}" for f in files)]
    for rules, r in results.items():
        growth = r["seconds"] / rules / (results[smallest]["seconds"] / smallest)
        lines.append(f"{rules:>7,} {r['policy bytes']:>10,} {r['seconds']:>8.2f} {growth:>14.2f} "
                     + " ".join(f"{r['bytes'].get(f, 0):>13,}" for f in files))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--target", default="auto", choices=("auto", "lua", "rbac", "native"))
    args = parser.parse_args()
    results = measure(args.sizes, args.runs, args.services, lambda m: print(m, file=sys.stderr, flush=True),
                      args.target)
    print("\n".join(table(results)))
    RESULTS.parent.mkdir(exist_ok=True)
    settings = {"services": args.services, "runs": args.runs, "target": args.target}
    RESULTS.write_text(json.dumps({"settings": settings, "by rules": results}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
