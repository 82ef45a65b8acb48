"""Writes `tests/docs/access.log`, the access log the documentation's `policyc audit` commands
read: the bundled example's case requests, decided by a real Envoy (`--target auto`).

Run `.venv/bin/python -m tests.docs.access_log` to write it again, then the doc tests
(`tests/docs/`), whose shown `audit` output follows the new log but for its times and versions.
"""

import shutil
import tempfile
import time
from pathlib import Path

from policyc.cases.casefile import build_request, load_case_file
from policyc.pipeline import load_and_check
from policyc.proof.replay import EnvoyUnderTest

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
ACCESS_LOG = Path(__file__).with_name("access.log")


def write_access_log(target: Path = ACCESS_LOG) -> None:
    checked = load_and_check([str(EXAMPLE)]).checked
    case_file = load_case_file(str(EXAMPLE / "example.cases.yaml"))
    now = time.time()
    requests = [build_request(case.request, checked, case_file.keys, now) for case in case_file.cases]
    with tempfile.TemporaryDirectory() as workdir, EnvoyUnderTest(Path(workdir)) as envoy:
        envoy.load(checked, "auto")
        envoy.send_all(requests)
        shutil.copyfile(envoy.log_path, target)


if __name__ == "__main__":
    write_access_log()
