"""Real Envoys on a deployed folder, and the reload-under-load measurement.

`envoys_on(folder, workdir, count)` starts `count` Envoys on the bootstrap `policyc deploy` wrote
into `folder` (each on its own free ports, with immediate drain) and stops them on exit.
`served_version(admin_port)` is the policy version an Envoy's admin interface reports.
`reload_under_load(workdir, reloads)` deploys `reloads` policies one after another into one Envoy
while clients send requests without pause (or, with `load=False`, none), and returns how long each
new policy took to decide a request after its first rename, and every request that failed.
`Load(port, report)` is that load: clients sending requests to `/steady` without pause while the block runs.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..backends.envoy import LISTENER_NAME, Options
from ..credentials.tokens import generate_key, public_jwks
from ..ops.confirm import served_versions
from ..ops.deploy import deploy
from ..semantics.request import RawRequest
from .client import send
from .envoy_process import Envoy, listener_ports, running_envoy
from .upstream import RecordingUpstream

# Revocation must reach kept-alive connections: with gradual drain (600 s by default) they would
# keep an old listener's policy for minutes (envoy-lab §7).
DRAIN_ARGS = ("--drain-strategy", "immediate", "--drain-time-s", "5")
HOST = "s.test"


@contextmanager
def envoys_on(folder: Path, workdir: Path, count: int = 1) -> Iterator[list[Envoy]]:
    bootstrap = yaml.safe_load((folder / "envoy.yaml").read_text())
    with ExitStack() as stack:
        envoys = []
        for index in range(count):
            home = workdir / f"envoy-{index}"
            home.mkdir(parents=True, exist_ok=True)
            envoys.append(stack.enter_context(
                running_envoy(bootstrap, home, args=["--concurrency", "1", *DRAIN_ARGS])))
        yield envoys


def served_version(admin_port: int) -> str | None:
    """The version of the routes (the policy) this Envoy decides with, from its admin stats."""
    return served_versions(f"127.0.0.1:{admin_port}")["rds.yaml"]


def wait_for_version(admin_port: int, version: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while served_version(admin_port) != version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Envoy on admin port {admin_port} still serves {served_version(admin_port)}")
        time.sleep(0.005)


@dataclass
class ReloadReport:
    latencies: list[float] = field(default_factory=list)  # seconds, rename → first request decided by it
    listener_latencies: list[float] = field(default_factory=list)  # those of reloads that replaced the listener
    sent: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def listener_changes(self) -> int:
        return len(self.listener_latencies)

    def summary(self) -> dict:
        return {"reloads": len(self.latencies), "listener_changes": self.listener_changes,
                "requests_sent": self.sent, "failed_requests": len(self.failures),
                "latency_ms": _milliseconds(self.latencies),
                "listener_change_latency_ms": _milliseconds(self.listener_latencies)}


def _milliseconds(latencies: list[float]) -> dict | None:
    ordered = sorted(latencies)
    if not ordered:
        return None
    return {"median": round(statistics.median(ordered) * 1000, 1),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1), "max": round(ordered[-1] * 1000, 1)}


def _policy(index: int, upstream: str, with_issuer: bool) -> str:
    """Version `index`: a steady public path, and one path only this version allows. Adding or
    removing the issuer changes the listener itself (its jwt_authn filter), not only the routes."""
    issuer = 'issuer dev {\n    url "https://dev.test"\n    jwks file "dev.jwks.json"\n}\n' if with_issuer else ""
    return (f'{issuer}service s {{\n    hosts "{HOST}"\n    upstream "{upstream}"\n'
            f'    allow public "steady" when path prefix "/steady"\n'
            f'    allow public "v{index}" when path == "/v/{index}"\n}}\n')


class Load:
    """Clients sending GET /steady without pause until stopped: one on a kept-alive connection
    (it reconnects when Envoy answers `connection: close`), one on a fresh connection each time."""

    def __init__(self, port: int, report: ReloadReport):
        self.port, self.report = port, report
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._kept_alive), threading.Thread(target=self._fresh)]

    def _record(self, failure: str | None) -> None:
        with self.lock:
            self.report.sent += 1
            if failure:
                self.report.failures.append(failure)

    def _kept_alive(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                connection.request("GET", "/steady", headers={"Host": HOST})
                response = connection.getresponse()
                response.read()
                self._record(None if response.status == 200 else f"kept-alive: {response.status}")
            except (OSError, http.client.HTTPException) as error:
                self._record(f"kept-alive: {error!r}")
                connection.close()
        connection.close()

    def _fresh(self) -> None:
        while not self.stop.is_set():
            try:
                status = send(self.port, RawRequest("GET", "/steady", HOST))[0]
                self._record(None if status == 200 else f"fresh: {status}")
            except OSError as error:
                self._record(f"fresh: {error!r}")

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def _first_decided(port: int, index: int, report: ReloadReport, timeout: float = 10.0) -> bool:
    """Probe with fresh connections until version `index` decides (its own path is allowed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if send(port, RawRequest("GET", f"/v/{index}", HOST))[0] == 200:
                return True
        except OSError as error:
            report.failures.append(f"probe: {error!r}")
    return False


def reload_under_load(workdir: Path, reloads: int, listener_change_every: int = 10, load: bool = True) -> ReloadReport:
    policies, folder = workdir / "policies", workdir / "live"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "dev.jwks.json").write_text(json.dumps(public_jwks(generate_key())))
    report = ReloadReport()
    with RecordingUpstream() as upstream:
        options = Options("127.0.0.1:0", "127.0.0.1:0", str(workdir / "access.log"))

        def deploy_version(index: int) -> float:
            with_issuer = index // listener_change_every % 2 == 1
            (policies / "s.policy").write_text(_policy(index, upstream.address, with_issuer))
            deployment = deploy([str(policies)], folder, options=options)
            if deployment.version is None:
                raise RuntimeError(f"policy {index} did not deploy: {deployment.diagnostics}")
            return deployment.published_at

        deploy_version(0)
        with envoys_on(folder, workdir) as (envoy,):
            port = listener_ports(envoy.admin_port)[LISTENER_NAME]
            with Load(port, report) if load else nullcontext():
                for index in range(1, reloads + 1):
                    published_at = deploy_version(index)
                    if not _first_decided(port, index, report):
                        report.failures.append(f"policy {index} never decided a request")
                        continue
                    latency = time.monotonic() - published_at
                    report.latencies.append(latency)
                    if index % listener_change_every == 0:
                        report.listener_latencies.append(latency)
            if listener_ports(envoy.admin_port)[LISTENER_NAME] != port:
                report.failures.append("the listener moved to another port")
    return report
