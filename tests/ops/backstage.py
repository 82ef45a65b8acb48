"""A real Backstage catalog backend for the live-catalog tests.

`tests/ops/backstage/` is a Node project (`npm ci` installs the versions its lock file pins):
Backstage's default backend with only the catalog plugin. `running_backstage(workdir)` starts it on
a free 127.0.0.1 port with an in-memory SQLite database, a static service token and one catalog
location, `workdir/catalog.yaml`, which the test edits: the catalog processes it again every
second and deletes the entities it no longer holds. It is stopped when the block ends.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).parent / "backstage"
INSTALLED = PROJECT / "node_modules" / "@backstage" / "plugin-catalog-backend"


def require_backstage() -> None:
    """Skip without the installed backend, or fail in CI, where `.ci/run` installs it."""
    if INSTALLED.is_dir() and shutil.which("node"):
        return
    reason = f"the Backstage catalog backend is not installed (run `npm ci` in {PROJECT})"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Backstage:
    url: str  # the catalog's base URL, as `--catalog` takes it
    token: str
    catalog_file: Path
    port: int

    def write(self, entities: list[dict]) -> None:
        """Replace the catalog file's entities (renamed into place: never read half written)."""
        staging = self.catalog_file.with_suffix(".tmp")
        staging.write_text(yaml.safe_dump_all(entities, sort_keys=False))
        staging.replace(self.catalog_file)

    def entities(self) -> set[str]:
        """Every entity the catalog's API returns now but Locations: kind, name, namespace and spec
        as sorted JSON (so that an edit shows, not only additions and deletions)."""
        items = self.get("/entities/by-query?limit=1000&fields=kind,metadata.name,metadata.namespace,spec")["items"]
        return {json.dumps(item, sort_keys=True) for item in items if item["kind"] != "Location"}

    def get(self, path: str) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", "/api/catalog" + path, headers={"Authorization": f"Bearer {self.token}"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        return json.loads(body)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(port: int, token: str, catalog_file: Path) -> dict:
    return {
        "backend": {
            "baseUrl": f"http://127.0.0.1:{port}",
            "listen": {"host": "127.0.0.1", "port": port},
            "database": {"client": "better-sqlite3", "connection": ":memory:"},
            "auth": {"externalAccess": [{"type": "static", "options": {"token": token, "subject": "policyc-tests"}}]},
        },
        "catalog": {
            "processingInterval": {"seconds": 1},
            "orphanStrategy": "delete",
            "rules": [{"allow": ["User", "Group", "Component", "API", "System", "Resource", "Domain", "Location"]}],
            "locations": [{"type": "file", "target": str(catalog_file)}],
        },
    }


@contextmanager
def running_backstage(workdir: Path, entities: list[dict], timeout: float = 90.0) -> Iterator[Backstage]:
    """The backend serving `entities` (once it returns all of them), stopped on exit."""
    require_backstage()
    port, token = _free_port(), secrets.token_hex(24)
    backstage = Backstage(f"http://127.0.0.1:{port}/api/catalog", token, workdir / "catalog.yaml", port)
    backstage.write(entities)
    config = workdir / "app-config.yaml"
    config.write_text(yaml.safe_dump(_config(port, token, backstage.catalog_file)))
    log = (workdir / "backstage.log").open("wb")
    process = subprocess.Popen(["node", "index.js", "--config", str(config)], cwd=PROJECT, stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "NODE_ENV": "development"})
    try:
        _wait_until_serving(backstage, process, len(entities), timeout, workdir / "backstage.log")
        yield backstage
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_serving(backstage: Backstage, process: subprocess.Popen, count: int, timeout: float,
                        log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Backstage exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if len(backstage.entities()) == count:
                return
        except (OSError, RuntimeError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"Backstage did not serve the catalog within {timeout} s:\n{log.read_text()[-3000:]}")
