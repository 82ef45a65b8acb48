"""Grants end on time in a real Envoy, with nothing redeployed: for every target that reads the
time (Lua, native, and `auto`/`auto-native`, which put a grant's service on them), a grant whose
window ends a few seconds into a run of concurrent requests allows them until its end and refuses
the same requests right after it, by Envoy's own clock. The access log names the grant for each
request it allowed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from policyc.pipeline import load_and_check
from policyc.proof.client import send
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.request import RawRequest
from policyc.syntax.printer import utc
from tests.native_target import native_search_path

pytestmark = pytest.mark.envoy

WORKERS = 4
LEAD = 4  # seconds of the window left when the load starts
AFTER = 3  # seconds of load after the window's end
# Envoy reads its clock in whole seconds while serving a request, at an instant between its send
# and its answer here: a request is judged by the window only when that whole span lies clear of
# the end by this much (clocks of one machine; the margin covers scheduling, not skew).
MARGIN = 0.25


def policy(end: int) -> str:
    return f'''
service ops {{
    hosts "ops.internal"
    upstream "127.0.0.1:8080"
    allow public "health" when path == "/health"
}}

grant oncall {{
    service ops
    who header "x-oncall" == "alice"
    what method == GET and path prefix "/debug/"
    from "{utc(end - 3600)}"
    until "{utc(end)}"
    requested by "alice"
    approved by "bob"
    reason "INC-4711"
}}
'''


@pytest.fixture(scope="module")
def envoy(request, tmp_path_factory):
    with native_search_path(request) as native, EnvoyUnderTest(tmp_path_factory.mktemp("envoy")) as envoy:
        envoy.targets = ("lua", "auto") + (("native", "auto-native") if native else ())
        yield envoy


GRANTED = RawRequest("GET", "/debug/queue", "ops.internal", (("x-oncall", "alice"),))


def _load(envoy: EnvoyUnderTest, tmp_path, target: str) -> int:
    """The grant compiled for `target` and loaded, its window ending LEAD seconds from now."""
    end = int(time.time()) + LEAD + 1
    path = tmp_path / f"{target}.policy"
    path.write_text(policy(end), encoding="utf-8")
    pipeline = load_and_check([str(path)])
    assert pipeline.ok, pipeline.diagnostics
    envoy.load(pipeline.checked, target)
    return end


def _hammer(port: int, until: float) -> list[tuple[float, float, int]]:
    """(sent, answered, status) of every request WORKERS clients send, one after another each,
    until `until` on the wall clock."""
    def client() -> list[tuple[float, float, int]]:
        found = []
        while (sent := time.time()) < until:
            status, _ = send(port, GRANTED)
            found.append((sent, time.time(), status))
        return found

    with ThreadPoolExecutor(WORKERS) as pool:
        return [result for future in [pool.submit(client) for _ in range(WORKERS)] for result in future.result()]


@pytest.mark.parametrize("target", ["lua", "auto", "native", "auto-native"])
def test_a_grant_allows_until_its_end_and_refuses_right_after_without_a_redeploy(envoy, tmp_path, target):
    if target not in envoy.targets:
        pytest.skip("the native library cannot be built here")
    end = _load(envoy, tmp_path, target)
    loads = envoy.loads
    [logged] = envoy.send_all([GRANTED])
    assert (logged.status, logged.rule) == (200, "grant/oncall")  # the access log names the grant
    results = _hammer(envoy.port, end + AFTER)
    assert envoy.loads == loads  # nothing was redeployed while the grant ran out
    inside = [status for sent, answered, status in results if answered < end - MARGIN]
    outside = [status for sent, answered, status in results if sent > end + MARGIN]
    assert len(inside) > 20 and len(outside) > 20, (len(inside), len(outside))
    assert set(inside) == {200}, sorted(set(inside))
    assert set(outside) == {403}, sorted(set(outside))
    # Around the end itself, only the two answers: never an error.
    assert {status for _, _, status in results} <= {200, 403}
