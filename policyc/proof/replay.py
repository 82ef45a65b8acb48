"""Runs compiled policies in a real Envoy and replays requests through it.

Runs compiled policies in a real Envoy and replays requests through it.

`EnvoyUnderTest(workdir)` starts a recording upstream (or the one it is given) and an Envoy whose
listener comes from a watched LDS file. `load(checked, target)` compiles a policy set (every
service pointed at that upstream), publishes it by an atomic rename and waits until Envoy serves
it, so one Envoy can decide many policy sets in turn. `send_all(requests)` returns what Envoy did
with each request: status (and a gRPC call's grpc-status), the deciding rule read from the access
log, and whether it reached the upstream. Everything is stopped when the `with` block ends.

Each request goes out in its own protocol (`RawRequest.protocol`): HTTP/1.1 to the listener as
compiled, h2c to a listener in the clear and h2 to one with TLS. The compiled listener is
published twice, once with TLS (a development certificate when the policies declare none) and
once without, so that every policy set is decided over every protocol.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

from ..backends import compile_outputs, yaml_out
from ..backends.accesslog import logged_decision
from ..backends.envoy import (
    LISTENER_NAME,
    OVERRIDE_CLUSTER,
    PREFIX_MAP_FROM,
    Options,
    bootstrap,
    cluster,
    discovery_response,
    downstream_tls,
)
from ..checked import Checked, ListenerTls
from ..credentials import certs as devcerts
from ..nodes import UpstreamProtocol
from ..ops.deploy import publish
from ..semantics.request import H2, HTTP1, RawRequest
from .client import (
    H2Session,
    HandshakeRefused,
    StreamRefused,
    grpc_status_in,
    grpc_status_of,
    h2_fields,
    send,
    tls_context,
)
from .envoy_process import Envoy, admin_get, listener_ports, running_envoy
from .upstream import RecordingUpstream

LOOPBACK = "127.0.0.1"
# `running_envoy` or a runner with its contract, such as `container.running_envoy_container`.
Runner = Callable[..., AbstractContextManager[Envoy]]
# Sends one request to the proxy's port (over TLS when told) and returns the HTTP status and the
# grpc-status the client read (None for none, or OK); raises HandshakeRefused.
Client = Callable[[int, RawRequest, bool], tuple[int, int | None]]


@dataclass(frozen=True)
class Observed:
    request: RawRequest  # as Envoy saw it: the peer is always loopback here
    status: int
    reason: str
    rule: str | None
    reached_upstream: bool
    log: dict
    grpc_status: int | None = None  # the proxy's answer to a gRPC call, as its client read it


TWIN_NAME = f"{LISTENER_NAME}-twin"


def _twin(listener: dict, checked: Checked) -> dict:
    """The compiled listener on the other transport: without its TLS, or with TLS (a development
    certificate, client certificates not asked for) when the policies declare none."""
    chain = dict(listener["filter_chains"][0])
    if "transport_socket" in chain:
        del chain["transport_socket"]
    else:
        chain["transport_socket"] = downstream_tls(replace(checked, listener_tls=_development_tls()))
    return {**listener, "name": TWIN_NAME, "filter_chains": [chain]}


@cache
def _development_tls() -> ListenerTls:
    ca = devcerts.make_ca("policyc test listener CA")
    leaf = devcerts.issue(ca, "localhost", dns=["localhost"], server=True)
    return ListenerTls(leaf.cert_pem, leaf.key_pem)


class EnvoyUnderTest:
    def __init__(self, workdir: Path, runner: Runner = running_envoy, key_clusters: tuple[dict, ...] = (),
                 upstream: AbstractContextManager | None = None,
                 upstream_protocol: UpstreamProtocol = UpstreamProtocol.HTTP1):
        """`key_clusters`: the clusters of remote JWKS the loaded policies fetch from. `upstream`:
        what every service is sent to instead of a recording upstream (a context manager whose
        value has `address` and a growing `received` list), speaking `upstream_protocol`."""
        self.workdir, self.runner, self.key_clusters = workdir, runner, key_clusters
        self.upstream_server = upstream or RecordingUpstream()
        self.upstream_protocol = upstream_protocol
        self.stack = ExitStack()
        self.log_path = workdir / "access.log"
        self.lds_dir = workdir / "lds"
        self.loads = 0
        self.port: int | None = None  # the compiled listener's
        self.tls = False  # whether the compiled listener speaks TLS
        self.ports: dict[bool, int] = {}  # with TLS or not → the port of that listener

    def __enter__(self) -> EnvoyUnderTest:
        self.lds_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.unlink(missing_ok=True)
        self.logged = 0  # log lines already matched to requests
        self.log_read, self.log_lines = 0, []  # bytes of the log read so far, and their lines
        self.upstream = self.stack.enter_context(self.upstream_server)
        self.options = Options(f"{LOOPBACK}:0", f"{LOOPBACK}:0", str(self.log_path), self.upstream.address,
                               upstream_override_protocol=self.upstream_protocol)
        self._publish({"version_info": "empty", "resources": []})
        upstream = cluster(OVERRIDE_CLUSTER, self.upstream.address, protocol=self.upstream_protocol)
        config = bootstrap(None, [upstream, *self.key_clusters], self.options)
        config["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3", "path_config_source": {
            "path": str(self.lds_dir / "lds.yaml"), "watched_directory": {"path": str(self.lds_dir)}}}}
        self.envoy = self.stack.enter_context(self.runner(
            config, self.workdir, args=["--concurrency", "1", "--file-flush-interval-msec", "10"]))
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def load(self, checked: Checked, target: str, prefix_map_from: int = PREFIX_MAP_FROM) -> None:
        """Compile `checked` for `target` and wait until Envoy decides with it; `prefix_map_from`
        as `Options` has it (1: every service's routes by a prefix map)."""
        compiled = compile_outputs(checked, target, replace(self.options, prefix_map_from=prefix_map_from))
        if compiled.diagnostics:
            raise ValueError(f"cannot compile for {target}: {compiled.diagnostics[0].message}")
        clusters = {c["name"] for c in compiled.bootstrap["static_resources"]["clusters"]}
        if not clusters <= {OVERRIDE_CLUSTER} | {c["name"] for c in self.key_clusters}:
            raise ValueError("policies with remote JWKS need their key servers' clusters (`key_clusters`)")
        self.loads += 1
        [listener] = compiled.bootstrap["static_resources"]["listeners"]
        lds = discovery_response("listener", [listener, _twin(listener, checked)], f"{self.loads}-{compiled.version}")
        refused = self._refusals()
        self._publish(lds)
        self._wait_for_version(lds["version_info"], refused)
        ports = listener_ports(self.envoy.admin_port)
        self.tls = checked.listener_tls is not None
        self.port = ports[LISTENER_NAME]
        self.ports = {self.tls: self.port, not self.tls: ports[TWIN_NAME]}

    def _publish(self, lds: dict) -> None:
        publish(self.lds_dir, {"lds.yaml": yaml_out.dump(lds)})  # as `policyc deploy` writes it

    def _refusals(self) -> int:
        """How many listener updates Envoy has rejected or failed to read so far."""
        stats = admin_get(self.envoy.admin_port, "/stats?filter=" + urllib.parse.quote(
            "listener_manager.lds.update_(rejected|failure)"))[1]
        return sum(int(count) for count in re.findall(r": (\d+)", stats))

    def _wait_for_version(self, version: str, refused_before: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        # Accepted is not yet deciding: a listener warms (fetching remote keys) before it serves.
        query = "/stats?filter=" + urllib.parse.quote("listener_manager.(lds.version_text|total_listeners_warming)")
        while time.monotonic() < deadline:
            stats = admin_get(self.envoy.admin_port, query)[1]
            if f'"{version}"' in stats and "total_listeners_warming: 0" in stats:
                return
            if self._refusals() > refused_before:
                raise RuntimeError(f"Envoy refused the compiled listener:\n{self.envoy.log_path.read_text()[-3000:]}")
            time.sleep(0.005)
        raise TimeoutError(f"Envoy did not load listener version {version}")

    def send_all(self, requests: list[RawRequest], client: Client | None = None) -> list[Observed]:
        """What Envoy did with each request, sent by `client`, or by default in its own protocol."""
        results = []
        logged = self.logged  # the log line of the next request that gets one
        with ExitStack() as connections:
            sessions: dict[tuple, H2Session] = {}  # one HTTP/2 connection per listener and certificate
            for request in requests:
                before = len(self.upstream.received)
                outcome = self._exchange(request, client, sessions, connections, logged)
                reached = len(self.upstream.received) > before
                results.append((replace(request, source=LOOPBACK), *outcome, reached))
                logged += outcome[-1] != "handshake-refused"
        entries = iter(self.log_entries(logged - self.logged))
        return [self._observed(*result, entries) for result in results]

    def _exchange(self, request: RawRequest, client: Client | None, sessions: dict, connections: ExitStack,
                  line: int) -> tuple[int, int | None, str | None]:
        """Envoy's status and grpc-status, and the reason when there is no status: the handshake
        refused (and nothing logged), or the HTTP/2 stream reset (logged with status 0, as log
        line `line`)."""
        try:
            if client is not None:
                return *client(self.port, request, self.tls), None
            if request.protocol == HTTP1:
                status, response = send(self.port, request, tls=self.tls)
                return status, grpc_status_of(response), None
            tls = request.protocol == H2
            key = (tls, request.certificate if tls else None)
            if key not in sessions:
                context = tls_context(request.certificate, "h2") if tls else None
                sessions[key] = connections.enter_context(H2Session(self.ports[tls], context))
            response = sessions[key].send(h2_fields(request, tls), lambda: self._logged_reset(line))
            return response.status, grpc_status_in(response.headers), None
        except HandshakeRefused:
            return 0, None, "handshake-refused"  # no HTTP exchange, so no access log line either
        except StreamRefused:
            return 0, None, "reset"

    @staticmethod
    def _observed(request: RawRequest, status: int, grpc_status: int | None, reason: str | None, reached: bool,
                  entries) -> Observed:
        if reason == "handshake-refused":
            return Observed(request, 0, reason, None, reached, {})
        entry = next(entries)
        return Observed(request, status, *logged_decision(entry), reached, entry, grpc_status)

    def _log_lines(self) -> list[str]:
        """The whole lines of the access log so far, read on from where the last call stopped."""
        if self.log_path.exists():
            with self.log_path.open("rb") as log:
                log.seek(self.log_read)
                data = log.read()
            # Only whole lines: Envoy may be halfway through writing the last one.
            whole = data[:data.rfind(b"\n") + 1]
            self.log_read += len(whole)
            self.log_lines += whole.decode().splitlines()
        return self.log_lines

    def _logged_reset(self, line: int) -> bool:
        """Whether log line `line` is there and records a reset (status 0: no answer)."""
        lines = self._log_lines()
        return len(lines) > line and not int(json.loads(lines[line]).get("status") or 0)

    def log_entries(self, count: int, timeout: float = 10.0) -> list[dict]:
        """The next `count` access-log entries, once Envoy has written them."""
        deadline = time.monotonic() + timeout
        while len(lines := self._log_lines()) < self.logged + count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy logged {len(lines) - self.logged} of {count} requests")
            time.sleep(0.005)
        entries = [json.loads(line) for line in lines[self.logged:self.logged + count]]
        self.logged += count
        return entries
