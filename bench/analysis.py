"""Speed of `policyc diff` on generated 1,000-rule policy sets (with the shortcut for services alike
in text, and with every service put to the solver) and of `policyc analyze` on one of
them and on the bundled example, against parse + check of the same sets in the same process. Prints a table and writes
bench/results/analysis.json; no assertions.

    .venv/bin/python bench/analysis.py [--rules 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from policies import large_set  # bench/ is the script's folder

from policyc.analysis import analyze, diff
from policyc.pipeline import load_and_check

RESULTS = Path(__file__).parent / "results" / "analysis.json"
EXAMPLE = Path(__file__).parents[1] / "envoy_configs" / "examples" / "backstage"


def changed(text: str) -> str:
    """The pull request: a path prefix widened in one service, a deny added to another."""
    text = text.replace('"r4" when reader and path prefix "/api/v4/"', '"r4" when reader and path prefix "/api/"', 1)
    return text.replace('service svc7 {\n', 'service svc7 {\n    deny "freeze" when method == HEAD\n', 1)


def checked(folder: Path, text: str):
    folder.mkdir()
    (folder / "big.policy").write_text(text)
    start = time.perf_counter()
    pipeline = load_and_check([str(folder)])
    assert pipeline.ok, pipeline.diagnostics[:3]
    return pipeline.checked, time.perf_counter() - start


def checked_example():
    start = time.perf_counter()
    pipeline = load_and_check([str(EXAMPLE)])
    return pipeline.checked, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=1000)
    args = parser.parse_args()
    text = large_set(args.rules)
    with tempfile.TemporaryDirectory() as work:
        old, check_seconds = checked(Path(work) / "old", text)
        new, _ = checked(Path(work) / "new", changed(text))
        start = time.perf_counter()
        found = diff(old, new)
        diff_seconds = time.perf_counter() - start
        start = time.perf_counter()
        solved = diff(old, new, shortcut=False)
        solved_seconds = time.perf_counter() - start
        assert solved.verdict == found.verdict
        print(f"diff: {diff_seconds:.2f} s, every service solved: {solved_seconds:.2f} s", flush=True)
        start = time.perf_counter()
        large_findings = analyze(old)
        large_analyze_seconds = time.perf_counter() - start
    example, example_check_seconds = checked_example()
    start = time.perf_counter()
    findings = analyze(example)
    analyze_seconds = time.perf_counter() - start
    verdicts = {s.name: s.verdict for s in found.services if s.verdict != "equivalent"}
    figures = {"rules": args.rules, "check_seconds": round(check_seconds, 3), "diff_seconds": round(diff_seconds, 3),
               "diff_to_check": round(diff_seconds / check_seconds, 2), "diff_verdicts": verdicts,
               "diff_every_service_seconds": round(solved_seconds, 3),
               "analyze_large_seconds": round(large_analyze_seconds, 3), "analyze_large_findings": len(large_findings),
               "analyze_example_seconds": round(analyze_seconds, 3),
               "analyze_to_check": round(analyze_seconds / example_check_seconds, 2), "findings": len(findings)}
    print(f"{'measure':<52} {'value':>14}")
    print(f"{'parse + check, ' + format(args.rules, ',') + ' rules (s)':<52} {check_seconds:>14.2f}")
    print(f"{'diff, two ' + format(args.rules, ',') + '-rule sets (s)':<52} {diff_seconds:>14.2f}")
    print(f"{'diff / check':<52} {diff_seconds / check_seconds:>14.1f}")
    print(f"{'diff, every service solved (no text shortcut) (s)':<52} {solved_seconds:>14.2f}")
    print(f"{'analyze, one ' + format(args.rules, ',') + '-rule set (s)':<52} {large_analyze_seconds:>14.2f}")
    print(f"{'analyze, the bundled example (s)':<52} {analyze_seconds:>14.2f}")
    print(f"{'analyze / check (example)':<52} {analyze_seconds / example_check_seconds:>14.1f}")
    print(f"verdicts: {verdicts}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
