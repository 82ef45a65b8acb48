"""Envoy's Lua filter lets a request through when a script raises. The emitted scripts must not:
an error anywhere in a decision answers 403 in a real Envoy and never reaches the upstream."""

import json
import time

import pytest
import yaml

from policyc.backends import compile_outputs
from policyc.backends.envoy import LISTENER_NAME, Options
from policyc.harness.client import send
from policyc.harness.envoy_process import running_envoy
from policyc.harness.upstream import RecordingUpstream
from policyc.interpret.request import RawRequest
from policyc.pipeline import load_and_check

pytestmark = pytest.mark.envoy

POLICY = """
service api {
    hosts "api.internal"
    upstream "127.0.0.1:1"
    allow public "open" when path prefix "/"
}
"""

FAULTS = {
    "a rule raises": ('return (q.path:sub(1, 1) == "/")', 'return error("injected")'),
    "the request cannot be read": ("local headers = handle:headers()", 'local headers = error("injected")'),
    "metadata cannot be written": ("local metadata = handle:streamInfo():dynamicMetadata()",
                                   'local metadata = error("injected")'),
}


@pytest.mark.parametrize("fault", FAULTS, ids=list(FAULTS))
def test_a_lua_error_answers_403_and_never_reaches_the_upstream(fault, tmp_path):
    (tmp_path / "p.policy").write_text(POLICY)
    checked = load_and_check([str(tmp_path / "p.policy")]).checked
    with RecordingUpstream() as upstream:
        log = tmp_path / "access.log"
        options = Options("127.0.0.1:0", "127.0.0.1:0", str(log), upstream.address)
        text = compile_outputs(checked, "lua", options).files["envoy.yaml"]
        healthy = yaml.safe_load(text)
        original, injected = FAULTS[fault]
        assert json.dumps(original)[1:-1] in text, "the fault must replace real code"
        broken = yaml.safe_load(text.replace(json.dumps(original)[1:-1], json.dumps(injected)[1:-1]))
        assert broken != healthy
        request = RawRequest("GET", "/x", "api.internal")
        with running_envoy(healthy, tmp_path, args=["--concurrency", "1"]) as envoy:
            assert send(envoy.listener_ports[LISTENER_NAME], request)[0] == 200
        reached = len(upstream.received)
        with running_envoy(broken, tmp_path, args=["--concurrency", "1", "--file-flush-interval-msec", "10"]) as envoy:
            assert send(envoy.listener_ports[LISTENER_NAME], request)[0] == 403
            assert "policyc: error deciding for service api" in _wait_for(envoy.log_path, "policyc: error")
        assert len(upstream.received) == reached


def _wait_for(path, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text()
        if text in content:
            return content
        time.sleep(0.02)
    return path.read_text()
