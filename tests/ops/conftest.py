"""The example's requests through a real Envoy, once per session: the access log that the audit
and usage tests read, and what the reference interpreter decided for each request."""

import time
from pathlib import Path

import pytest

from policyc.cases.casefile import build_request, load_case_file
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check
from policyc.proof.replay import EnvoyUnderTest

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"


@pytest.fixture(scope="session")
def example_log(tmp_path_factory):
    """The example's requests through Envoy: the access log and what the interpreter decided."""
    workdir = tmp_path_factory.mktemp("envoy")
    checked = load_and_check([str(EXAMPLE)]).checked
    case_file = load_case_file(str(EXAMPLE / "example.cases.yaml"))
    now = time.time()
    requests = [build_request(case.request, checked, case_file.keys, now) for case in case_file.cases]
    with EnvoyUnderTest(workdir) as envoy:
        envoy.load(checked, "auto")
        observed = envoy.send_all(requests)
    keys = case_file.keys.published(checked)
    decisions = [evaluate(checked, seen.request, now, keys) for seen in observed]
    # A certificate refused in the TLS handshake never becomes an HTTP request: no log line.
    return workdir / "access.log", [d for d in decisions if d.reason != "handshake-refused"]
