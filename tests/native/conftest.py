"""The native runtime under a real Envoy: build a module with `native_runtime/Makefile` into a
temporary folder, and the bootstrap pieces that load it through `envoy.filters.http.dynamic_modules`.

Building needs `make` and `gcc` (`.ci/run` installs them): without them a test is skipped, or in CI
fails, since a skipped test proves nothing there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from policyc.backends import native
from policyc.backends.accesslog import ACCESS_LOG_FIELDS
from policyc.proof.envoy_process import envoy_binary

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "native_runtime"
SEARCH_PATH = "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"  # where Envoy looks for lib<name>.so
MODULE = "policyc_native"
PROBE = "policyc_probe"
JWT_FILTER = "envoy.filters.http.jwt_authn"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
LOG_FIELDS = {"path": "%REQ(:PATH)%", "status": "%RESPONSE_CODE%", "details": "%RESPONSE_CODE_DETAILS%",
              "service": "%METADATA(ROUTE:policyc:service)%", "native": ACCESS_LOG_FIELDS["native"],
              "upstream": "%UPSTREAM_HOST%"}


def make(out: Path, *arguments: str) -> None:
    """Runs native_runtime/Makefile with OUT=`out`; without make or the compiler a test is skipped
    (in CI it fails)."""
    missing = [tool for tool in ("make", os.environ.get("CC", "gcc")) if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"building the native runtime needs {', '.join(missing)}")
        pytest.skip(f"no {', '.join(missing)}")
    subprocess.run(["make", "-s", "-C", str(RUNTIME), f"OUT={out}", *arguments], check=True, capture_output=True,
                   text=True)


def build(out: Path, name: str = MODULE, main: Path | None = None) -> Path:
    """lib<name>.so built by native_runtime/Makefile into `out` (from `main` instead of the filter)."""
    make(out, f"NAME={name}", *([f"MAIN={main}"] if main else []))
    return out / f"lib{name}.so"


def build_driver(out: Path) -> Path:
    """The filter run by tests/native/index_driver.c, built with the sanitizers into `out`."""
    make(out, f"DRIVER={REPO / 'tests/native/index_driver.c'}", str(out / "index_driver"))
    return out / "index_driver"


@pytest.fixture(scope="session")
def module_dir(native_library_dir) -> Path:
    """A folder holding libpolicyc_native.so, built once for the session (tests/conftest.py)."""
    return native_library_dir


@pytest.fixture
def search_path(monkeypatch):
    """Points the Envoys a test starts at a folder of modules."""
    return lambda folder: monkeypatch.setenv(SEARCH_PATH, str(folder))


def _module(name: str, path: Path | None) -> dict:
    """How a config names the module: lib`name`.so on the search path, or the file at `path`."""
    return {"module": {"local": {"filename": str(path)}}} if path else {"name": name}


def _string(text: str) -> dict:
    return {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": text}


def dynamic_module_filter(config: str = native.HEADER, name: str = MODULE, path: Path | None = None) -> dict:
    """The filter running module lib`name`.so, found on the search path, or the file at `path`;
    `config` is the listener's config (by default: no other policy filter in the chain)."""
    return {
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": _module(name, path),
            "filter_name": "policy",
            "filter_config": _string(config),
        },
    }


def route_filter_config(config: str | None, name: str = MODULE, path: Path | None = None) -> dict:
    """A route's config for the filter (`config`: its text; None, none given)."""
    return {"@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
            "dynamic_module_config": _module(name, path), "filter_name": "policy",
            **({"filter_config": _string(config)} if config is not None else {})}


def x(text: str) -> str:
    """A string token of the decision index: `x` and the hex of its UTF-8 bytes."""
    return "x" + text.encode().hex()


def section(service: str, lines: list[str], mode: str = "enforce") -> str:
    """One service's section of the decision index: `lines` are its cond, deny and allow lines."""
    return "".join(f"{line}\n" for line in [f"service {x(service)}", f"mode {mode}", *lines, "end"])


def index_config(*sections: str, chain: str | None = "jwt") -> str:
    """What the compiler writes across a listener and its routes, as one text the driver
    (index_driver.c) splits: the header, the listener's `chain` line (by default naming jwt_authn,
    as with issuers; None: no line), then `sections`, each one route's config."""
    return native.HEADER + (f"chain {chain}\n" if chain is not None else "") + "".join(sections)


def route_config(section_text: str) -> str:
    """The config of a route of the service `section_text` is the section of."""
    return native.HEADER + section_text


def service_route(config: str | None, upstream_port: int | None = None, service: str | None = None,
                  module_path: Path | None = None) -> dict:
    """A route for every path to the upstream on `upstream_port` (or a direct 200 "upstream"
    answer), giving the filter `config` (None: no config of the route's own), and named for
    `service` in the route metadata the log reads."""
    route = ({"route": {"cluster": "upstream"}} if upstream_port
             else {"direct_response": {"status": 200, "body": {"inline_string": "upstream\n"}}})
    metadata = {} if service is None else {"metadata": {"filter_metadata": {"policyc": {"service": service}}}}
    per_filter = {} if config is None else {"typed_per_filter_config": {
        "envoy.filters.http.dynamic_modules": route_filter_config(config, path=module_path)}}
    return {"match": {"prefix": "/"}, **route, **metadata, **per_filter}


def bootstrap(filters: list[dict], log_path: Path, upstream_port: int | None = None,
              transport_socket: dict | None = None, route: str | None = None,
              virtual_hosts: list[dict] | None = None, listeners: dict[str, dict] | None = None) -> dict:
    """Listeners (`listeners`: name -> socket_address fields, port 0 added; by default "main" on
    127.0.0.1) running `filters` then the router, with `virtual_hosts` (by default every request
    goes to `service_route(route, upstream_port)`: `route` is the route's config for the filter),
    logging JSON lines to `log_path`."""
    manager = {
        "@type": HCM,
        "stat_prefix": "native",
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log_path), "log_format": {"json_format": LOG_FIELDS}}}],
        "route_config": {"virtual_hosts": virtual_hosts or [
            {"name": "all", "domains": ["*"], "routes": [service_route(route, upstream_port)]}]},
        "http_filters": [*filters, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}],
             **({"transport_socket": transport_socket} if transport_socket else {})}
    addresses = listeners or {"main": {"address": "127.0.0.1"}}
    clusters = [] if upstream_port is None else [{
        "name": "upstream", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]}}]
    return {"static_resources": {"listeners": [
        {"name": name, "address": {"socket_address": {**address, "port_value": 0}}, "filter_chains": [chain]}
        for name, address in addresses.items()], "clusters": clusters}}


def validate(config: dict, workdir: Path, level: str = "error") -> subprocess.CompletedProcess:
    """`envoy --mode validate` on `config`: loads the modules it names, builds every filter config;
    Envoy logs at `level` and above."""
    path = workdir / "validate.json"
    path.write_text(json.dumps(config))
    return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
                           "-l", level], capture_output=True, text=True, timeout=60)


def log_entries(log_path: Path, count: int, timeout: float = 10.0) -> list[dict]:
    """The access log's first `count` entries, once Envoy has flushed them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines[:count]]
        time.sleep(0.05)
    raise TimeoutError(f"{count} access log entries expected in {log_path}")
