"""docs/report.png: the bundled example's `policyc report` page in headless Chromium, opened at
the payments service. `make report-screenshot` runs it.

    .venv/bin/python -m tests.report.screenshot [OUTPUT]
"""

import sys
import tempfile
from pathlib import Path

from policyc.pipeline import load_and_check
from policyc.report import build
from tests.report.browser import chrome

ROOT = Path(__file__).parents[2]
EXAMPLE = Path("envoy_configs/examples/backstage")  # relative, as `make demo` names it


def main(output: Path) -> None:
    pipeline = load_and_check([str(EXAMPLE)])
    with tempfile.TemporaryDirectory() as work, chrome(width=1400, height=1000) as driver:
        page = Path(work) / "report.html"
        page.write_text(build(pipeline, [str(EXAMPLE)]), encoding="utf-8")
        driver.get(page.as_uri() + "#service-2")
        driver.save_screenshot(str(output))
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "report.png")
