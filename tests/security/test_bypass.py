"""The bypass corpus (bypass.yaml) and generated path tricks, sent to a real Envoy running
bypass.policy compiled for every target: `requests:` over HTTP/1.1, h2c and h2 over TLS (or the
one protocol an entry names), `http2:` over h2c and h2, `raw:` as bytes on an HTTP/1.1 socket.

Two claims for every request:
- Envoy decides it as the interpreter does: status, reason, deciding rule, and whether it
  reached the upstream; an HTTP/2 request that breaks the codec's rules is reset, as
  semantics/h2.py predicts (for `raw:` entries, the status observed);
- nothing reaches the upstream that the policy would not allow under every reading an application
  could make of what it received: as received, and as a servlet container reads it (`;`
  parameters dropped, percent-decoded, `\\` as `/`, dot segments resolved).
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.credentials import tokens as devtokens
from policyc.interpret import RawRequest, evaluate
from policyc.pipeline import load_and_check
from policyc.proof.client import request_bytes, send_bytes
from policyc.proof.compare import compare
from policyc.proof.replay import EnvoyUnderTest
from policyc.proof.upstream import Received
from policyc.semantics.request import H2, H2C, PROTOCOLS
from tests import CASE_KEYS

pytestmark = pytest.mark.envoy

HERE = Path(__file__).parent
CORPUS = yaml.safe_load((HERE / "bypass.yaml").read_text())
TARGETS = ("lua", "auto", "rbac")
LETTERS = re.compile(r"\{a\*(\d+)\}")
SIGNING_KEY = json.loads((HERE.parent / "cases" / "keys" / "idp.private.jwk.json").read_text())


@pytest.fixture(scope="module")
def checked():
    pipeline = load_and_check([str(HERE / "bypass.policy")], allowed_roots=[CASE_KEYS])
    assert pipeline.ok, pipeline.diagnostics
    return pipeline.checked


@pytest.fixture(scope="module")
def envoy(tmp_path_factory):
    with EnvoyUnderTest(tmp_path_factory.mktemp("bypass")) as envoy:
        yield envoy


@pytest.fixture(scope="module")
def raw_envoy(tmp_path_factory):
    """An Envoy for bytes sent on raw sockets: their access log lines (none, one or several per
    exchange) would throw `envoy`'s matching of log lines to requests out of step."""
    with EnvoyUnderTest(tmp_path_factory.mktemp("raw")) as envoy:
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


def corpus(checked, now: float) -> list[tuple[str, RawRequest]]:
    """(name, request) for every entry: `requests:` over every protocol (or the one an entry
    names), `http2:` over h2c and h2, with `{token}` a valid token and `{a*N}` N letters."""
    idp = checked.issuers["idp"]
    token = devtokens.mint({"iss": idp.url, "aud": idp.audiences[0], "sub": "caller", "iat": int(now),
                            "exp": int(now) + 3600}, SIGNING_KEY)
    named = []
    for section, every in (("requests", PROTOCOLS), ("http2", (H2C, H2))):
        for entry in CORPUS[section]:
            request = RawRequest.from_dict(_filled(entry["request"], token))
            protocols = (request.protocol,) if "protocol" in entry["request"] else every
            named += [(f"{section}: {entry['name']}", replace(request, protocol=p)) for p in protocols]
    return named


def _filled(value, token: str):
    """`value` with the corpus's placeholders replaced, in every string it holds."""
    if isinstance(value, dict):
        return {_filled(k, token): _filled(v, token) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, token) for v in value]
    if not isinstance(value, str):
        return value
    return LETTERS.sub(lambda match: "a" * int(match[1]), value.replace("{token}", token))


@pytest.mark.parametrize("target", TARGETS)
def test_the_corpus_never_gets_through(envoy, checked, target):
    """Each request decided by Envoy as by the interpreter (status, reason, rule, upstream
    reached or not), over each of its protocols, and nothing leaks."""
    envoy.load(checked, target)
    now = time.time()
    named = corpus(checked, now)
    before = len(envoy.upstream.received)
    observed = envoy.send_all([request for _, request in named])
    leaked = leaks(checked, envoy.upstream.received[before:])
    problems = [f"{name}: {comparison.report()}" for (name, _), comparison
                in zip(named, compare(checked, observed, now, {}), strict=True) if comparison.differences]
    assert not leaked, "\n".join(leaked)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", TARGETS)
def test_raw_bytes_never_get_through(raw_envoy, checked, target):
    """Each `raw:` entry answered as observed before, and nothing leaks."""
    raw_envoy.load(checked, target)
    problems, leaked = [], []
    for entry in CORPUS["raw"]:
        status, received = exchange(raw_envoy, _filled(entry["raw"], "").encode("latin-1"))
        if status != entry["expect"]:
            problems.append(f"{entry['name']}: envoy {status}, observed before {entry['expect']}")
        leaked += leaks(checked, received)
    assert not leaked, "\n".join(leaked)
    assert not problems, "\n".join(problems)


def test_the_corpus_is_large_enough():
    assert len(CORPUS["http2"]) >= 60
    assert len(CORPUS["requests"]) + len(CORPUS["raw"]) + len(CORPUS["http2"]) >= 150


# Pieces of known path tricks, assembled at random into request-targets.
PIECES = ["/", "//", "\\", ".", "..", "%2e", "%2E%2e", ";", ";x=1", "%3b", "%2f", "%5C", "%252e",
          "%25", "%", "?", "#", "admin", "public", "api", "v1", "internal", "healthz", "beta", "ADMIN",
          "%61dmin", "%00", "%c0%ae", "x", "*", "%20", "~"]
TRICKS = st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map(lambda pieces: "/" + "".join(pieces))
HOSTS = st.sampled_from(["api.internal", "API.internal", "api.internal:8443", "other.internal"])


@pytest.mark.parametrize("target", TARGETS)
def test_generated_path_tricks_never_get_through(raw_envoy, checked, target):
    raw_envoy.load(checked, target)

    @settings(deadline=None)  # examples: the profile's (150 in CI, 5,000 deep)
    @given(path=TRICKS, host=HOSTS, method=st.sampled_from(["GET", "HEAD", "POST", "DELETE"]))
    def one(path, host, method):
        request = RawRequest(method, path, host)
        status, received = exchange(raw_envoy, request_bytes(request), method == "HEAD")
        assert status == evaluate(checked, request, time.time(), {}).status, path
        assert not leaks(checked, received)

    one()
