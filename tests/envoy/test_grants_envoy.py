"""Grants end on time in a real Envoy, with nothing redeployed: for every target that reads the
time (Lua, native, and `auto`/`auto-native`, which put a grant's service on them), a grant whose
window ends a few seconds into a run of concurrent requests allows them until its end and refuses
the same requests right after it, by Envoy's own clock. The access log names the grant for each
request it allowed. Under `watch`, the grant is dropped from the config at its end and the
requests stay refused across that reload."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from policyc.backends.envoy import LISTENER_NAME, Options
from policyc.ops.deploy import watch
from policyc.pipeline import load_and_check
from policyc.proof.client import send
from policyc.proof.envoy_process import listener_ports
from policyc.proof.live import envoys_on, wait_for_version
from policyc.proof.replay import EnvoyUnderTest
from policyc.proof.upstream import RecordingUpstream
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
OPTIONS = Options("127.0.0.1:0", "127.0.0.1:0", "/dev/null")


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


def test_watch_drops_an_ended_grant_and_envoy_refuses_before_and_after(tmp_path):
    """The same grant under `watch`: Envoy refuses by the window at its end, then `watch` deploys
    the policy without the grant, and the requests stay refused across that reload, none failing."""
    source = tmp_path / "policies" / "ops.policy"
    source.parent.mkdir()
    folder, reports, stop = tmp_path / "live", [], threading.Event()
    arrived = threading.Semaphore(0)

    def report(deployment):
        reports.append(deployment)
        arrived.release()

    with RecordingUpstream() as upstream:
        end = int(time.time()) + LEAD + 1
        source.write_text(policy(end).replace("127.0.0.1:8080", upstream.address), encoding="utf-8")
        watcher = threading.Thread(target=watch, args=([str(source.parent)], folder, report),
                                   kwargs={"options": OPTIONS, "stop": stop, "interval": 0.05})
        watcher.start()
        try:
            assert arrived.acquire(timeout=10) and reports[0].version, reports[0].diagnostics
            assert "grant/oncall" in (folder / "rds.yaml").read_text() + (folder / "envoy.yaml").read_text()
            with envoys_on(folder, tmp_path) as [envoy]:
                port = listener_ports(envoy.admin_port)[LISTENER_NAME]
                results = _hammer(port, end + AFTER)
                assert arrived.acquire(timeout=10), "watch did not deploy at the grant's end"
                wait_for_version(envoy.admin_port, reports[-1].version)
                results += _hammer(port, time.time() + 1)
        finally:
            stop.set()
            watcher.join()
    assert [bool(r.version) for r in reports] == [True, True]
    assert "grant/oncall" not in (folder / "rds.yaml").read_text() + (folder / "envoy.yaml").read_text()
    inside = [status for sent, answered, status in results if answered < end - MARGIN]
    outside = [status for sent, answered, status in results if sent > end + MARGIN]
    assert len(inside) > 20 and len(outside) > 20, (len(inside), len(outside))
    assert set(inside) == {200} and set(outside) == {403}, (sorted(set(inside)), sorted(set(outside)))
    assert {status for _, _, status in results} <= {200, 403}
