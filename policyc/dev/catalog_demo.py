"""The demo's catalog step: a service onboarded and retired by a catalog change alone, reaching a
running Envoy through `policyc watch`.

A copy of the template example is watched (`ops.deploy.watch`, as `policyc watch` runs it) and
deployed to a folder a real Envoy reads. Its `ledger` component file, annotated with a template, is
written into the catalog folder, then deleted: Envoy serves `ledger.internal`, then answers 404
there again, each within a poll of the edit.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from ..backends.envoy import LISTENER_NAME, Options
from ..ops.deploy import Deployment, watch
from ..proof.client import send
from ..proof.envoy_process import listener_ports
from ..proof.live import envoys_on
from ..proof.upstream import RecordingUpstream
from ..semantics.request import RawRequest

COMPONENT = Path("catalog") / "ledger.yaml"  # in the template example: the catalog's service
HOST = "ledger.internal"
POLL_S = 0.05  # how often watch looks at the files here (`policyc watch` looks four times a second)
TIMEOUT_S = 30.0


def _status(port: int) -> int:
    return send(port, RawRequest("GET", "/healthz", HOST))[0]


def _until(port: int, status: int) -> float:
    """Seconds until Envoy answers GET /healthz on the ledger host with `status`."""
    start = time.monotonic()
    while _status(port) != status:
        if time.monotonic() - start > TIMEOUT_S:
            raise TimeoutError(f"Envoy never answered {status} on {HOST}")
        time.sleep(0.01)
    return time.monotonic() - start


def run(example: Path, work: Path) -> bool:
    """Prints each step; whether Envoy followed both edits."""
    policies = work / "policies"
    shutil.copytree(example, policies)
    component = (policies / COMPONENT).read_text(encoding="utf-8")
    (policies / COMPONENT).unlink()
    reports: list[Deployment] = []
    stop = threading.Event()
    with RecordingUpstream() as upstream:
        # Every service sent to the recording upstream, so that an allowed request is answered 200.
        options = Options("127.0.0.1:0", "127.0.0.1:0", "/dev/null", upstream_override=upstream.address)
        watcher = threading.Thread(target=watch, args=([str(policies)], work / "live", reports.append),
                                   kwargs={"options": options, "stop": stop, "interval": POLL_S})
        watcher.start()
        try:
            return _edits(policies, component, reports, work)
        finally:
            stop.set()
            watcher.join()


def _edits(policies: Path, component: str, reports: list[Deployment], work: Path) -> bool:
    deadline = time.monotonic() + TIMEOUT_S
    while not reports:
        if time.monotonic() > deadline:
            raise TimeoutError("watch deployed nothing")
        time.sleep(POLL_S)
    if reports[0].version is None:
        print(f"watch refused the example: {reports[0].diagnostics[0].message}")
        return False
    with envoys_on(work / "live", work) as (envoy,):
        port = listener_ports(envoy.admin_port)[LISTENER_NAME]
        print(f"\npolicyc watch deploys the template example to a running Envoy; GET {HOST}/healthz: "
              f"{_status(port)} (no such service)")
        (policies / COMPONENT).write_text(component, encoding="utf-8")
        added = _until(port, 200)
        print(f"{COMPONENT} added (a Component annotated policyc.dev/template: internal_api): Envoy answers 200 "
              f"there after {added:.2f} s (the template's public health rule)")
        (policies / COMPONENT).unlink()
        removed = _until(port, 404)
        print(f"{COMPONENT} deleted: the service is retired, Envoy answers 404 there after {removed:.2f} s")
    return True
