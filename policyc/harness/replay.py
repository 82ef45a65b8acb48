"""Runs compiled policies in a real Envoy and replays requests through it.

`EnvoyUnderTest(checked, target, workdir)` compiles the set (every service pointed at one
recording upstream), starts Envoy with `runner` (default `running_envoy`, a process) on loopback
ports it picks itself, and `send_all(requests)` returns what Envoy did with each: status, the
deciding rule read from the access log, and whether the request reached the upstream. Everything
is stopped when the `with` block ends.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from ..backends import compile_outputs
from ..backends.envoy import LISTENER_NAME, Options
from ..check import Checked
from ..interpret.request import RawRequest
from .client import send
from .decisions import logged_decision
from .envoy_process import Envoy, running_envoy
from .upstream import RecordingUpstream

LOOPBACK = "127.0.0.1"
# `running_envoy` or a runner with its contract, such as `container.running_envoy_container`.
Runner = Callable[..., AbstractContextManager[Envoy]]


@dataclass(frozen=True)
class Observed:
    request: RawRequest  # as Envoy saw it: the peer is always loopback here
    status: int
    reason: str
    rule: str | None
    reached_upstream: bool
    log: dict


class EnvoyUnderTest:
    def __init__(self, checked: Checked, target: str, workdir: Path, runner: Runner = running_envoy):
        self.checked, self.target, self.workdir, self.runner = checked, target, workdir, runner
        self.stack = ExitStack()
        self.log_path = workdir / "access.log"

    def __enter__(self) -> EnvoyUnderTest:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path.unlink(missing_ok=True)
        self.upstream = self.stack.enter_context(RecordingUpstream())
        options = Options(f"{LOOPBACK}:0", f"{LOOPBACK}:0", str(self.log_path), self.upstream.address)
        compiled = compile_outputs(self.checked, self.target, options)
        if compiled.diagnostics:
            raise ValueError(f"cannot compile for {self.target}: {compiled.diagnostics[0].message}")
        bootstrap = yaml.safe_load(compiled.files["envoy.yaml"])
        self.envoy = self.stack.enter_context(self.runner(
            bootstrap, self.workdir, args=["--concurrency", "1", "--file-flush-interval-msec", "10"]))
        self.port = self.envoy.listener_ports[LISTENER_NAME]
        self.logged = 0
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def send_all(self, requests: list[RawRequest]) -> list[Observed]:
        results = []
        for request in requests:
            before = len(self.upstream.received)
            status, _ = send(self.port, request)
            results.append((replace(request, source=LOOPBACK), status, len(self.upstream.received) > before))
        entries = self._log_entries(len(results))
        return [Observed(request, status, *logged_decision(entry), reached, entry)
                for (request, status, reached), entry in zip(results, entries, strict=True)]

    def _log_entries(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
            if len(lines) >= self.logged + count:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy logged {len(lines) - self.logged} of {count} requests")
            time.sleep(0.005)
        entries = [json.loads(line) for line in lines[self.logged:self.logged + count]]
        self.logged += count
        return entries
