"""Speed of `policyc report` on the bundled example and on a generated set of 1,000 rules naming
100 catalog groups (without the findings of analyze, `--no-findings`), against parse + check of
the same set in the same process; and the size of the pages. Prints a table and writes
bench/results/report.json; no assertions.

    .venv/bin/python bench/report.py [--rules 1000] [--groups 100] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from policies import catalog_set  # bench/ is the script's folder

from policyc.pipeline import load_and_check
from policyc.report import build

RESULTS = Path(__file__).parent / "results" / "report.json"
EXAMPLE = Path(__file__).parents[1] / "envoy_configs" / "examples" / "backstage"


def measured(folder: Path, findings: bool) -> dict:
    """Check and report `folder`, timed."""
    start = time.perf_counter()
    pipeline = load_and_check([str(folder)])
    assert pipeline.ok, pipeline.diagnostics[:3]
    check_seconds = time.perf_counter() - start
    start = time.perf_counter()
    page = build(pipeline, [str(folder)], findings=findings)
    report_seconds = time.perf_counter() - start
    rules = sum(len(s.rules) for s in pipeline.checked.services.values())
    return {"rules": rules, "check_seconds": round(check_seconds, 3), "report_seconds": round(report_seconds, 2),
            "report_to_check": round(report_seconds / check_seconds, 1), "page_bytes": len(page.encode()),
            "page": page}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--keep", type=Path, help="also write the generated set's page here")
    args = parser.parse_args()
    figures = {"example": measured(EXAMPLE, findings=True)}
    print(f"example: {figures['example']['report_seconds']:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for path, text in catalog_set(args.rules, args.groups).items():
            (Path(work) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(work) / path).write_text(text)
        # Without the findings of analyze, which grow with the square of a service's rules.
        figures["generated"] = measured(Path(work), findings=False)
    figures["generated"]["groups"] = args.groups
    if args.keep:
        args.keep.write_text(figures["generated"]["page"], encoding="utf-8")
    for figure in figures.values():
        del figure["page"]
    print(f"{'measure':<52} {'example':>12} {'generated':>12}")
    for key in ("rules", "check_seconds", "report_seconds", "report_to_check", "page_bytes"):
        print(f"{key:<52} {figures['example'][key]:>12} {figures['generated'][key]:>12}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
