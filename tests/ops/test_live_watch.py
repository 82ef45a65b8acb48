"""`watch` and `deploy` on a live catalog, served by a stand-in (`fake_catalog.py`): a change of the
catalog deploys; a catalog that fails (unreachable, an HTTP error, invalid entities) changes
nothing deployed, and is logged and counted in the metrics; the token comes from a file or the
environment only and never reaches any output."""

import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main
from policyc.ops.catalog_api import CatalogClient, Limits
from policyc.ops.deploy import watch
from policyc.ops.metrics import WatchMetrics, serving
from tests.ops.fake_catalog import FakeCatalog
from tests.ops.test_catalog_api import TOKEN, _policy, entity

SRE = entity("Group", "sre")


def users(*names: str) -> list[dict]:
    return [SRE, *(entity("User", name, memberOf=["sre"]) for name in names)]


class _Watching:
    """`watch` on a live catalog in a thread, read every 0.1 s: its reports, log lines and metrics."""

    def __init__(self, tmp_path: Path, fake: FakeCatalog):
        self.folder, self.reports, self.log, self.metrics = tmp_path / "live", [], [], WatchMetrics()
        self.arrived, self.stop = threading.Semaphore(0), threading.Event()
        client = CatalogClient(fake.url, TOKEN, Limits(timeout=1, deadline=2))
        self.thread = threading.Thread(target=watch, args=([_policy(tmp_path)], self.folder, self._report), kwargs={
            "stop": self.stop, "interval": 0.02, "catalog": client, "catalog_period": 0.1, "metrics": self.metrics,
            "log": self.log.append})

    def _report(self, deployment) -> None:
        self.reports.append(deployment)
        self.arrived.release()

    def next_report(self):
        assert self.arrived.acquire(timeout=10), "no deploy reported"
        return self.reports[-1]

    def routes(self) -> str:
        return (self.folder / "rds.yaml").read_text()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_watch_follows_the_catalog_and_keeps_the_last_good_policy(tmp_path):
    with FakeCatalog() as fake, _Watching(tmp_path, fake) as watching:
        fake.serve(users("alice"))
        first = watching.next_report()
        assert first.version and "user:default/alice" in watching.routes()
        fake.serve(users("alice", "bob"))  # bob joins sre
        second = watching.next_report()
        assert second.version not in (None, first.version) and "user:default/bob" in watching.routes()
        good = watching.routes()

        fake.pages, fake.default = {}, (503, {}, b"down")  # unreachable, in effect
        _wait_for(lambda: watching.metrics.catalog_fetch_failures_total >= 3)
        assert watching.log[0] == f"catalog {fake.url}: HTTP 503 Service Unavailable; the last good policy stays"
        assert watching.metrics.catalog_failing == 1 and len(watching.reports) == 2 and watching.routes() == good

        fake.serve([*users("alice"), entity("User", "bob", memberOf=["group:default/nobody"])])  # invalid
        refused = watching.next_report()
        assert refused.version is None and watching.routes() == good
        assert [d.code for d in refused.diagnostics] == ["catalog/dangling-ref"]
        assert refused.diagnostics[0].span.path == f"{fake.url}#user:default/bob"
        assert watching.log[-1] == f"catalog {fake.url}: read again"
        assert watching.metrics.deploy_failing == 1 and watching.metrics.catalog_failing == 0

        fake.serve(users("alice"))  # bob leaves
        third = watching.next_report()
        assert third.version == first.version and "user:default/bob" not in watching.routes()
    metrics = watching.metrics
    assert (metrics.deploys_total, metrics.deploy_failures_total, metrics.deploy_failing) == (4, 1, 0)
    assert metrics.catalog_fetches_total > metrics.catalog_fetch_failures_total >= 3
    assert all(TOKEN not in line for line in watching.log)


def test_nothing_is_deployed_before_the_catalog_is_first_read(tmp_path):
    with FakeCatalog() as fake, _Watching(tmp_path, fake) as watching:
        fake.default = (500, {}, b"")
        _wait_for(lambda: watching.metrics.catalog_fetch_failures_total >= 3)
        assert watching.reports == [] and not watching.folder.exists()
        fake.serve(users("alice"))
        assert watching.next_report().version


def test_watch_reads_no_catalog_folder_and_no_live_entity_as_a_file(tmp_path):
    """With a live catalog, files added to the folder the policy names set off no deploy."""
    with FakeCatalog() as fake, _Watching(tmp_path, fake) as watching:
        fake.serve(users("alice"))
        watching.next_report()
        (tmp_path / "catalog").mkdir()
        (tmp_path / "catalog" / "more.yaml").write_text("kind: User\n")
        time.sleep(0.5)
    assert len(watching.reports) == 1 and watching.metrics.deploys_total == 1


def test_metrics_are_served_in_prometheus_text():
    metrics = WatchMetrics()
    metrics.fetched(ok=False)
    metrics.deployed(ok=True)
    with serving(("127.0.0.1", 0), metrics) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            text = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "/other", timeout=5)
    assert "# TYPE policyc_watch_catalog_fetch_failures_total counter\npolicyc_watch_catalog_fetch_failures_total 1\n" \
        in text
    assert "policyc_watch_catalog_failing 1\n" in text and "policyc_watch_deploys_total 1\n" in text
    assert "policyc_watch_catalog_last_success_timestamp_seconds 0\n" in text


def _deploy(tmp_path: Path, *args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["deploy", _policy(tmp_path), "--to", str(tmp_path / "live"), *args], env=env)


def test_deploy_reads_the_live_catalog_with_the_token_from_the_environment_or_a_file(tmp_path):
    with FakeCatalog() as fake:
        fake.serve(users("alice"))
        result = _deploy(tmp_path, "--catalog", fake.url, env={"POLICYC_CATALOG_TOKEN": TOKEN})
        assert result.exit_code == 0, result.output
        assert "user:default/alice" in (tmp_path / "live" / "rds.yaml").read_text()
        (tmp_path / "token").write_text("from-a-file\n")
        fake.serve(users("alice", "bob"))
        result = _deploy(tmp_path, "--catalog", fake.url, "--catalog-token-file", str(tmp_path / "token"),
                         env={"POLICYC_CATALOG_TOKEN": TOKEN})
        assert result.exit_code == 0, result.output
        assert "user:default/bob" in (tmp_path / "live" / "rds.yaml").read_text()
    assert [headers["Authorization"] for _, headers in fake.requests] == [f"Bearer {TOKEN}", "Bearer from-a-file"]


def test_deploy_with_an_unreadable_catalog_deploys_nothing(tmp_path):
    with FakeCatalog() as fake:
        fake.default = (401, {}, b"")
        result = _deploy(tmp_path, "--catalog", fake.url, env={"POLICYC_CATALOG_TOKEN": TOKEN})
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"policyc: catalog {fake.url}: HTTP 401 Unauthorized (is the token right?); " \
                            "nothing deployed\n"
    assert not (tmp_path / "live").exists()
    result = _deploy(tmp_path, "--catalog", fake.url)
    assert result.exit_code == 2 and "cannot read it" in result.stderr and not (tmp_path / "live").exists()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--catalog", "ftp://x"], {}, "Invalid value for --catalog: 'ftp://x' is not an http:// or https:// URL"),
    (["--catalog", "http://backstage.example.com/api/catalog"], {"POLICYC_CATALOG_TOKEN": TOKEN},
     "is plain http: a token is sent only over https, or to a loopback address"),
    (["--catalog-token-file", "token"], {}, "--catalog-token-file needs --catalog"),
    (["--catalog", "http://127.0.0.1:1/api/catalog", "--catalog-token-file", "missing"], {},
     "policyc: cannot read the catalog token from missing: no such file or directory"),
    (["--catalog", "http://127.0.0.1:1/api/catalog", "--catalog-token-file", "empty"], {}, "'empty' is empty"),
    (["--catalog", "http://127.0.0.1:1/api/catalog"], {"POLICYC_CATALOG_TOKEN": "two words"},
     "Invalid value for $POLICYC_CATALOG_TOKEN: the token holds spaces or control characters"),
])
def test_catalog_options_refused(tmp_path, monkeypatch, args, env, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").write_text("\n")
    result = _deploy(tmp_path, *args, env=env)
    assert result.exit_code == 2 and message in result.stderr and TOKEN not in result.output
    assert not (tmp_path / "live").exists()


def test_watch_refuses_a_bad_metrics_address(tmp_path):
    result = CliRunner().invoke(main, ["watch", _policy(tmp_path), "--to", str(tmp_path / "live"),
                                       "--metrics", "nowhere"])
    assert result.exit_code == 2 and "'nowhere' is not host:port" in result.stderr
