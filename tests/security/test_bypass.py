"""The bypass corpus (bypass.yaml) and generated path tricks, on raw sockets to a real Envoy running
bypass.policy compiled for every target.

Two claims for every request:
- the interpreter predicts the status Envoy answers (for `raw:` entries, the status observed);
- nothing reaches the upstream that the policy would not allow under every reading an application
  could make of what it received: as received, and as a servlet container reads it (`;`
  parameters dropped, percent-decoded, `\\` as `/`, dot segments resolved).
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.harness.client import request_bytes, send_bytes
from policyc.harness.replay import EnvoyUnderTest
from policyc.harness.upstream import Received
from policyc.interpret import RawRequest, evaluate
from policyc.pipeline import load_and_check

pytestmark = pytest.mark.envoy

HERE = Path(__file__).parent
CORPUS = yaml.safe_load((HERE / "bypass.yaml").read_text())
TARGETS = ("lua", "auto", "rbac")
LONG_HEADER = "a" * 70_000  # over Envoy's 60 KiB limit for request headers


@pytest.fixture(scope="module")
def checked():
    pipeline = load_and_check([str(HERE / "bypass.policy")])
    assert pipeline.ok, pipeline.diagnostics
    return pipeline.checked


@pytest.fixture(scope="module")
def envoy(tmp_path_factory):
    with EnvoyUnderTest(tmp_path_factory.mktemp("bypass")) as envoy:
        yield envoy


def exchange(envoy: EnvoyUnderTest, data: bytes, head: bool = False) -> tuple[int | None, list[Received]]:
    """Envoy's status (None: it closed without answering) and what reached the upstream."""
    before = len(envoy.upstream.received)
    try:
        status = send_bytes(envoy.port, data, head)[0]
    except ConnectionError:
        status = None
    return status, envoy.upstream.received[before:]


def application_paths(target: str) -> set[str]:
    """Every path an application could serve for a request-target it received."""
    path = target.split("?", 1)[0]
    without_parameters = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    servlet = _resolve_dot_segments(urllib.parse.unquote(without_parameters).replace("\\", "/"))
    return {path, servlet}


def _resolve_dot_segments(path: str) -> str:
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            kept = kept[:-1]
        elif segment not in ("", "."):
            kept.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and kept else ""
    return "/" + "/".join(kept) + trailing


def leaks(checked, received: list[Received]) -> list[str]:
    """What reached the upstream although some reading of it is not allowed by the policy."""
    found = []
    now = time.time()
    for request in received:
        headers = dict(request.headers)
        host = headers.pop("host", None)
        for path in application_paths(request.target):
            reading = RawRequest(request.method, urllib.parse.quote(path, safe="/;=:@!$&'()*+,-._~"),
                                 host, tuple(headers.items()))
            decision = evaluate(checked, reading, now, {})
            if decision.status != 200:
                found.append(f"{request.method} {request.target} (read as {path}) host={host}: "
                             f"the policy answers {decision.status} {decision.reason} {decision.rule}")
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_the_corpus_never_gets_through(envoy, checked, target):
    envoy.load(checked, target)
    problems, leaked = [], []
    for entry in CORPUS["requests"]:
        request = RawRequest.from_dict(entry["request"])
        status, received = exchange(envoy, request_bytes(request), request.method == "HEAD")
        predicted = evaluate(checked, request, time.time(), {}).status
        if status != predicted:
            problems.append(f"{entry['name']}: envoy {status}, interpreter {predicted}")
        leaked += leaks(checked, received)
    for entry in CORPUS["raw"]:
        data = entry["raw"].replace("{long}", LONG_HEADER).encode("latin-1")
        status, received = exchange(envoy, data)
        if status != entry["expect"]:
            problems.append(f"{entry['name']}: envoy {status}, observed before {entry['expect']}")
        leaked += leaks(checked, received)
    assert not leaked, "\n".join(leaked)
    assert not problems, "\n".join(problems)


def send_h2(port: int, headers: list[tuple[str, str]]) -> int | None:
    """One HTTP/2 request with prior knowledge, headers as given; the status, or None when Envoy
    resets the stream or the connection."""
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False)
    connection = h2.connection.H2Connection(config=config)
    connection.initiate_connection()
    connection.send_headers(1, headers, end_stream=True)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(connection.data_to_send())
            while data := sock.recv(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        return int(dict(event.headers)[b":status"])
                    if isinstance(event, h2.events.StreamReset | h2.events.ConnectionTerminated):
                        return None
                sock.sendall(connection.data_to_send())
    except ConnectionResetError:
        pass
    return None


def as_http1(headers: list[tuple[str, str]]) -> RawRequest:
    """The same request in the interpreter's terms: :authority (or Host) as the Host line."""
    pseudo = dict(h for h in headers if h[0].startswith(":"))
    others = tuple(h for h in headers if not h[0].startswith(":") and h[0] != "host")
    host = pseudo.get(":authority", dict(headers).get("host"))
    return RawRequest(pseudo[":method"], pseudo[":path"], host, others)


@pytest.mark.parametrize("target", TARGETS)
def test_http2_tricks_never_get_through(envoy, checked, target):
    envoy.load(checked, target)
    problems, leaked = [], []
    for entry in CORPUS["http2"]:
        headers = [(":scheme", "http"), *(tuple(pair) for pair in entry["headers"])]
        before = len(envoy.upstream.received)
        status = send_h2(envoy.port, headers)
        expected = entry.get("expect") or evaluate(checked, as_http1(headers), time.time(), {}).status
        if status != (None if expected == "refused" else expected):
            problems.append(f"{entry['name']}: envoy {status}, expected {expected}")
        leaked += leaks(checked, envoy.upstream.received[before:])
    assert not leaked, "\n".join(leaked)
    assert not problems, "\n".join(problems)


def test_the_corpus_is_large_enough():
    assert len(CORPUS["requests"]) + len(CORPUS["raw"]) + len(CORPUS["http2"]) >= 60


# Pieces of known path tricks, assembled at random into request-targets.
PIECES = ["/", "//", "\\", ".", "..", "%2e", "%2E%2e", ";", ";x=1", "%3b", "%2f", "%5C", "%252e",
          "%25", "%", "?", "#", "admin", "public", "api", "v1", "internal", "healthz", "beta", "ADMIN",
          "%61dmin", "%00", "%c0%ae", "x", "*", "%20", "~"]
TRICKS = st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map(lambda pieces: "/" + "".join(pieces))
HOSTS = st.sampled_from(["api.internal", "API.internal", "api.internal:8443", "other.internal"])


@pytest.mark.parametrize("target", TARGETS)
def test_generated_path_tricks_never_get_through(envoy, checked, target):
    envoy.load(checked, target)

    @settings(deadline=None)  # examples: the profile's (150 in CI, 5,000 deep)
    @given(path=TRICKS, host=HOSTS, method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]))
    def one(path, host, method):
        request = RawRequest(method, path, host)
        status, received = exchange(envoy, request_bytes(request), method == "HEAD")
        assert status == evaluate(checked, request, time.time(), {}).status, path
        assert not leaks(checked, received)

    one()
