"""A real Backstage catalog backend (`backstage.py`, installed by `npm ci`), `watch --catalog` and a
real Envoy: catalog edits (a person joins a group, a component is added, one is deleted and added
again with another owner, a person is deleted, a component annotated with a template is added and
so is served, then deleted and so retired) reach Envoy within one poll period of showing in the
catalog's API, while clients send requests without pause and none fails; an edit that makes the
policy invalid changes nothing Envoy serves."""

import json
import threading
import time

import pytest

from policyc.backends.envoy import LISTENER_NAME, Options
from policyc.credentials.tokens import generate_key, mint, public_jwks
from policyc.ops.catalog_api import CatalogClient
from policyc.ops.deploy import watch
from policyc.ops.metrics import WatchMetrics
from policyc.proof.client import send
from policyc.proof.envoy_process import listener_ports
from policyc.proof.live import HOST, Load, ReloadReport, envoys_on, served_version
from policyc.proof.upstream import RecordingUpstream
from policyc.semantics.request import RawRequest
from tests.ops.backstage import running_backstage
from tests.waiting import until

PERIOD = 1.0  # seconds between two reads of the catalog
# Once the catalog's API shows an edit, watch reads it within PERIOD; deploying it and Envoy's
# reload take well under a second more (ops/test_reload.py measures the reload alone).
DEPLOY_ALLOWANCE = 1.0
V1 = "backstage.io/v1alpha1"


def _entity(kind: str, name: str, **spec) -> dict:
    return {"apiVersion": V1, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _group(name: str) -> dict:
    return _entity("Group", name, type="team", children=[])


def _user(name: str, *groups: str) -> dict:
    return _entity("User", name, memberOf=list(groups))


def _component(name: str, owner: str) -> dict:
    return _entity("Component", name, type="service", lifecycle="production", owner=owner)


# The host of the service the catalog asks for (`_onboarded`): Envoy answers 404 there without it.
ONBOARDED_HOST = "ledger.test"


def _onboarded(upstream: str) -> dict:
    """A component that asks for a service made from the policy's template."""
    annotations = {"policyc.dev/template": "team_api", "policyc.dev/hosts": ONBOARDED_HOST,
                   "policyc.dev/upstream": upstream}
    return {**_component("ledger-api", "finance"), "metadata": {"name": "ledger-api", "annotations": annotations}}


def _policy(upstream: str) -> str:
    return f"""issuer dev {{
    url "https://dev.test"
    jwks file "dev.jwks.json"
    catalog users
}}
catalog "catalog"
template team_api(owner: ref) {{
    allow public "health" when path == "/healthz"
    allow "team" when member $owner
}}
service s {{
    hosts "{HOST}"
    upstream "{upstream}"
    allow public "steady" when path prefix "/steady"
    allow "sre" when member "group:default/sre" and path prefix "/sre"
    allow "billing" when member owners(component:billing) and path prefix "/billing"
}}
"""


class _Decisions:
    """Statuses Envoy answers a user on a path, each with a fresh token and connection."""

    def __init__(self, port: int, key: dict):
        self.port, self.key = port, key

    def status(self, user: str, path: str, host: str = HOST) -> int:
        token = mint({"iss": "https://dev.test", "sub": f"user:default/{user}", "exp": int(time.time()) + 600},
                     self.key)
        request = RawRequest("GET", path, host, headers=(("authorization", f"Bearer {token}"),))
        return send(self.port, request)[0]

    def until(self, user: str, path: str, status: int, timeout: float = 30.0, host: str = HOST) -> float:
        """time.monotonic() when Envoy first answers `status`."""
        deadline = time.monotonic() + timeout
        while self.status(user, path, host) != status:
            assert time.monotonic() < deadline, f"{user} on {path} never got {status}"
            time.sleep(0.02)
        return time.monotonic()


def _visible(backstage, entities: list[dict], timeout: float = 60.0) -> float:
    """time.monotonic() when the catalog's API first returns exactly `entities` (as the fixture's
    `entities()` writes them)."""
    wanted = {json.dumps({"kind": e["kind"], "metadata": {"name": e["metadata"]["name"], "namespace": "default"},
                          "spec": e["spec"]}, sort_keys=True) for e in entities}
    deadline = time.monotonic() + timeout
    while backstage.entities() != wanted:
        assert time.monotonic() < deadline, "the catalog never showed the edit"
        time.sleep(0.02)
    return time.monotonic()


@pytest.mark.envoy
def test_catalog_edits_reach_envoy_within_a_poll_period_with_no_failed_request(tmp_path):
    key = generate_key()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "dev.jwks.json").write_text(json.dumps(public_jwks(key)))
    catalog = [_group("sre"), _group("finance"), _user("alice", "sre"), _user("bob"), _component("billing", "sre")]
    reports, metrics, log, stop = [], WatchMetrics(), [], threading.Event()
    report, latencies = ReloadReport(), {}
    backstage_dir = tmp_path / "backstage"
    backstage_dir.mkdir()
    with RecordingUpstream() as upstream, running_backstage(backstage_dir, catalog) as backstage:
        (policies / "s.policy").write_text(_policy(upstream.address))
        client = CatalogClient(backstage.url, backstage.token)
        options = Options("127.0.0.1:0", "127.0.0.1:0", str(tmp_path / "access.log"))
        watcher = threading.Thread(target=watch, args=([str(policies)], tmp_path / "live", reports.append), kwargs={
            "options": options, "stop": stop, "interval": 0.05, "catalog": client, "catalog_period": PERIOD,
            "metrics": metrics, "log": log.append})
        watcher.start()
        try:
            deadline = time.monotonic() + 30
            while not reports:
                assert time.monotonic() < deadline and watcher.is_alive()
                time.sleep(0.05)
            assert reports[0].version, reports[0].diagnostics
            with envoys_on(tmp_path / "live", tmp_path) as (envoy,):
                port = listener_ports(envoy.admin_port)[LISTENER_NAME]
                decide = _Decisions(port, key)
                assert [decide.status("bob", "/sre"), decide.status("alice", "/sre"),
                        decide.status("alice", "/billing")] == [403, 200, 200]
                with Load(port, report):
                    def edit(name: str, entities: list[dict], user: str, path: str, status: int,
                             host: str = HOST) -> None:
                        backstage.write(entities)
                        shown = _visible(backstage, entities)
                        latencies[name] = decide.until(user, path, status, host=host) - shown

                    catalog[3] = _user("bob", "sre")  # bob joins sre
                    edit("a person joins a group", catalog, "bob", "/sre", 200)

                    version, deploys = served_version(envoy.admin_port), metrics.deploys_total
                    catalog.append(_component("ledger", "finance"))  # no policy names it
                    backstage.write(catalog)
                    _visible(backstage, catalog)
                    until(lambda: metrics.deploys_total > deploys)
                    assert served_version(envoy.admin_port) == version and decide.status("bob", "/sre") == 200

                    without_billing = [e for e in catalog if e["metadata"]["name"] != "billing"]
                    backstage.write(without_billing)  # the policy names it: refused, the last good stays
                    _visible(backstage, without_billing)
                    until(lambda: reports[-1].version is None)
                    assert metrics.deploy_failing == 1
                    assert [d.code for d in reports[-1].diagnostics if d.is_error] == ["check/unknown-entity"]
                    assert served_version(envoy.admin_port) == version and decide.status("alice", "/billing") == 200

                    catalog[4] = _component("billing", "finance")  # back, owned by a group alice is not in
                    edit("a component is added", catalog, "alice", "/billing", 403)

                    del catalog[2]  # alice is deleted
                    edit("a person is deleted", catalog, "alice", "/sre", 403)
                    assert decide.status("bob", "/sre") == 200

                    assert decide.status("bob", "/healthz", ONBOARDED_HOST) == 404
                    catalog.append(_onboarded(upstream.address))  # a service onboarded in the catalog
                    edit("an annotated component is added", catalog, "bob", "/healthz", 200, ONBOARDED_HOST)
                    assert decide.status("bob", "/x", ONBOARDED_HOST) == 403  # bob is not in finance
                    catalog.pop()  # and retired
                    edit("an annotated component is deleted", catalog, "bob", "/healthz", 404, ONBOARDED_HOST)
        finally:
            stop.set()
            watcher.join()
    print({"catalog_period_s": PERIOD, "requests_sent": report.sent, "failed_requests": len(report.failures),
           "edit_to_envoy_s": {name: round(seconds, 3) for name, seconds in latencies.items()}})
    assert report.failures == [] and report.sent > 100
    assert all(seconds <= PERIOD + DEPLOY_ALLOWANCE for seconds in latencies.values()), latencies
    assert metrics.catalog_fetch_failures_total == 0 and log == []


@pytest.mark.envoy
def test_an_unreachable_catalog_leaves_envoy_on_the_last_good_policy(tmp_path):
    """The backend stopped while watch runs: each read fails, is logged and counted, and Envoy keeps
    deciding with the policy it had, under load, without a failed request."""
    key = generate_key()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "dev.jwks.json").write_text(json.dumps(public_jwks(key)))
    reports, metrics, log, stop, report = [], WatchMetrics(), [], threading.Event(), ReloadReport()
    backstage_dir = tmp_path / "backstage"
    backstage_dir.mkdir()
    with RecordingUpstream() as upstream:
        (policies / "s.policy").write_text(_policy(upstream.address))
        with running_backstage(backstage_dir, [_group("sre"), _user("alice", "sre"),
                                               _component("billing", "sre")]) as backstage:
            client = CatalogClient(backstage.url, backstage.token)
            watcher = threading.Thread(target=watch, args=([str(policies)], tmp_path / "live", reports.append),
                                       kwargs={"options": Options("127.0.0.1:0", "127.0.0.1:0", "/dev/null"),
                                               "stop": stop, "interval": 0.05, "catalog": client,
                                               "catalog_period": 0.2, "metrics": metrics, "log": log.append})
            watcher.start()
            until(lambda: bool(reports), timeout=30)
        try:
            with envoys_on(tmp_path / "live", tmp_path) as (envoy,):
                version = served_version(envoy.admin_port)
                port = listener_ports(envoy.admin_port)[LISTENER_NAME]
                with Load(port, report):
                    until(lambda: metrics.catalog_fetch_failures_total >= 5)
                assert served_version(envoy.admin_port) == version
                assert _Decisions(port, key).status("alice", "/sre") == 200
        finally:
            stop.set()
            watcher.join()
    assert report.failures == [] and len(reports) == 1 and metrics.catalog_failing == 1
    assert log[0].startswith(f"catalog {client.url}: cannot read it: ")
    assert log[0].endswith("; the last good policy stays")
