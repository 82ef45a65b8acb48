"""Hot reload against real Envoys: policies deployed into a watched folder change decisions in
running Envoys without a restart or a failed request, a fleet on one folder converges on one
version, revocation reaches kept-alive connections, and a bad policy is never deployed."""

import http.client
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.backends.envoy import LISTENER_NAME, Options
from policyc.cli import main
from policyc.deploy import deploy, watch
from policyc.harness.client import send
from policyc.harness.envoy_process import admin_get, listener_ports
from policyc.harness.live import envoys_on, reload_under_load, served_version, wait_for_version
from policyc.harness.upstream import RecordingUpstream
from policyc.interpret.request import RawRequest

ROOT = Path(__file__).parents[2]
FIVE_MISTAKES = ROOT / "tests" / "golden" / "diagnostics" / "five_mistakes" / "main.policy"
OPTIONS = Options("127.0.0.1:0", "127.0.0.1:0", "/dev/null")


def policy(upstream: str, rule: str) -> str:
    return f'service s {{\n    hosts "s.test"\n    upstream "{upstream}"\n    {rule}\n}}\n'


def get(port: int, path: str) -> int:
    return send(port, RawRequest("GET", path, "s.test"))[0]


@pytest.mark.envoy
def test_fifty_reloads_under_load_fail_no_request(tmp_path):
    report = reload_under_load(tmp_path, reloads=50)
    print(report.summary())  # latency is measured by bench/reload.py, never asserted here
    assert report.failures == []
    assert len(report.latencies) == 50 and report.listener_changes == 5
    assert report.sent > 100


@pytest.mark.envoy
def test_a_fleet_converges_on_one_deploy(tmp_path):
    folder = tmp_path / "live"
    with RecordingUpstream() as upstream:
        (tmp_path / "s.policy").write_text(policy(upstream.address, 'allow public "old" when path == "/old"'))
        first = deploy([str(tmp_path / "s.policy")], folder, options=OPTIONS)
        with envoys_on(folder, tmp_path, count=3) as fleet:
            ports = [listener_ports(envoy.admin_port)[LISTENER_NAME] for envoy in fleet]
            assert [served_version(envoy.admin_port) for envoy in fleet] == [first.version] * 3
            assert [get(port, "/new") for port in ports] == [403] * 3
            (tmp_path / "s.policy").write_text(policy(upstream.address, 'allow public "new" when path == "/new"'))
            result = CliRunner().invoke(main, ["deploy", str(tmp_path / "s.policy"), "--to", str(folder),
                                               "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            assert result.exit_code == 0, result.output
            version = result.stdout.split()[1]
            assert version not in (None, first.version)
            for envoy in fleet:
                wait_for_version(envoy.admin_port, version)
                assert f'"version_info": "{version}"' in admin_get(envoy.admin_port, "/config_dump")[1]
            assert [(get(port, "/new"), get(port, "/old")) for port in ports] == [(200, 403)] * 3


@pytest.mark.envoy
def test_revocation_reaches_a_kept_alive_connection(tmp_path):
    """A rule change replaces only the routes: the next request on an open connection is decided
    by the new policy, with no drain."""
    folder = tmp_path / "live"
    with RecordingUpstream() as upstream:
        (tmp_path / "s.policy").write_text(policy(upstream.address, 'allow public "open" when path == "/x"'))
        deploy([str(tmp_path / "s.policy")], folder, options=OPTIONS)
        with envoys_on(folder, tmp_path) as (envoy,):
            connection = http.client.HTTPConnection("127.0.0.1", listener_ports(envoy.admin_port)[LISTENER_NAME])
            statuses = []
            for rule in ('allow public "open" when path == "/x"', 'deny "revoked" when path == "/x"'):
                (tmp_path / "s.policy").write_text(policy(upstream.address, rule))
                wait_for_version(envoy.admin_port, deploy([str(tmp_path / "s.policy")], folder,
                                                          options=OPTIONS).version)
                connection.request("GET", "/x", headers={"Host": "s.test"})
                response = connection.getresponse()
                response.read()
                statuses.append((response.status, response.getheader("connection")))
            connection.close()
    assert statuses == [(200, None), (403, None)]


def test_a_policy_with_errors_is_never_deployed(tmp_path):
    folder = tmp_path / "live"
    result = CliRunner().invoke(main, ["deploy", str(FIVE_MISTAKES), "--to", str(folder)])
    assert result.exit_code == 1
    assert "nothing deployed" in result.stderr and result.stdout == ""
    assert not folder.exists()


def test_watch_deploys_each_save_and_skips_broken_ones(tmp_path):
    folder, source = tmp_path / "live", tmp_path / "policies" / "s.policy"
    source.parent.mkdir()
    source.write_text(policy("127.0.0.1:1", 'allow public "a" when path == "/a"'))
    reports, stop = [], threading.Event()
    arrived = threading.Semaphore(0)

    def report(deployment):
        reports.append(deployment)
        arrived.release()

    watcher = threading.Thread(target=watch, args=([str(source.parent)], folder, report),
                               kwargs={"stop": stop, "interval": 0.02})
    watcher.start()
    try:
        assert arrived.acquire(timeout=10)
        good = (folder / "rds.yaml").read_text()
        source.write_text(policy("127.0.0.1:1", 'allow public "a" when path == "/a" and'))  # syntax error
        assert arrived.acquire(timeout=10)
        assert (folder / "rds.yaml").read_text() == good
        source.write_text(policy("127.0.0.1:1", 'allow public "b" when path == "/b"'))
        assert arrived.acquire(timeout=10)
    finally:
        stop.set()
        watcher.join()
    assert [r.version is not None for r in reports] == [True, False, True]
    assert reports[1].diagnostics and '"/b"' in (folder / "rds.yaml").read_text()
