"""Hot reload against real Envoys: policies deployed into a watched folder change decisions in
running Envoys without a restart or a failed request, a fleet on one folder converges on one
version, revocation reaches kept-alive connections, and a bad policy is never deployed."""

import base64
import http.client
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.backends.envoy import LISTENER_NAME, Options, Plan
from policyc.cli import main
from policyc.credentials.tokens import generate_key, public_jwks
from policyc.ops.confirm import AdminUnreachable, rejections
from policyc.ops.deploy import deploy, watch
from policyc.ops.metrics import WatchMetrics
from policyc.proof.client import send
from policyc.proof.envoy_process import admin_get, listener_ports
from policyc.proof.live import envoys_on, reload_under_load, served_version, wait_for_version
from policyc.proof.upstream import RecordingUpstream
from policyc.semantics.headers import PAYLOAD_HEADER
from policyc.semantics.request import RawRequest
from tests.native_target import native_search_path
from tests.waiting import until

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
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
@pytest.mark.parametrize("target", ["auto", "native"])
def test_revocation_reaches_a_kept_alive_connection(tmp_path, request, target):
    """A rule change replaces only the routes, whatever the target (the native filter's rules are
    its routes' configs): the next request on an open connection is decided by the new policy,
    with no drain."""
    folder = tmp_path / "live"
    with native_search_path(request) as native, RecordingUpstream() as upstream:
        if target == "native" and not native:
            pytest.skip("the native library cannot be built here")
        (tmp_path / "s.policy").write_text(policy(upstream.address, 'allow public "open" when path == "/x"'))
        deploy([str(tmp_path / "s.policy")], folder, target=target, options=OPTIONS)
        with envoys_on(folder, tmp_path) as (envoy,):
            connection = http.client.HTTPConnection("127.0.0.1", listener_ports(envoy.admin_port)[LISTENER_NAME])
            statuses = []
            for rule in ('allow public "open" when path == "/x"', 'deny "revoked" when path == "/x"'):
                (tmp_path / "s.policy").write_text(policy(upstream.address, rule))
                wait_for_version(envoy.admin_port, deploy([str(tmp_path / "s.policy")], folder, target=target,
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


def _watching(paths, folder, monkeypatch):
    """A running `watch` whose deploys and reports are recorded: (reports, deploys, a wait for the
    next report, its stop event, its thread)."""
    import policyc.ops.deploy

    reports, deploys, stop = [], [], threading.Event()
    arrived = threading.Semaphore(0)
    real_deploy = policyc.ops.deploy.deploy

    def counted_deploy(*args, **kwargs):
        deploys.append(real_deploy(*args, **kwargs))
        return deploys[-1]

    def report(deployment):
        reports.append(deployment)
        arrived.release()

    monkeypatch.setattr(policyc.ops.deploy, "deploy", counted_deploy)
    watcher = threading.Thread(target=watch, args=(paths, folder, report), kwargs={"stop": stop, "interval": 0.02})
    watcher.start()
    return reports, deploys, lambda: arrived.acquire(timeout=10), stop, watcher


def test_watch_ignores_logs_written_into_the_watched_folder(tmp_path, monkeypatch):
    """Its own log and Envoy's access log beside the policies, and the deployed folder under them,
    set off no deploy; an edit of the policy sets off exactly one."""
    policies = tmp_path / "policies"
    policies.mkdir()
    source, own_log, access_log = policies / "s.policy", policies / "watch.log", policies / "access.log"
    source.write_text(policy("127.0.0.1:1", 'allow public "a" when path == "/a"'))
    reports, deploys, next_report, stop, watcher = _watching([str(policies)], policies / "live", monkeypatch)
    try:
        assert next_report()
        for i in range(40):
            with own_log.open("a") as log:
                log.write(f"deployed {reports[-1].version}\n")
            with access_log.open("a") as log:
                log.write(f'{{"line": {i}}}\n')
            (policies / "notes.yaml").write_text(f"edit: {i}\n")  # not a catalog file: no policy names it
            time.sleep(0.01)
        source.write_text(policy("127.0.0.1:1", 'allow public "b" when path == "/b"'))
        assert next_report()
        time.sleep(0.3)
    finally:
        stop.set()
        watcher.join()
    assert len(deploys) == 2 and len(reports) == 2
    assert reports[0].version != reports[1].version and reports[1].published_at is not None


def test_watch_reports_no_deploy_that_leaves_the_version_as_it_was(tmp_path, monkeypatch):
    """A save that changes nothing Envoy is given is deployed quietly; the same version after a
    broken save is reported, so that the errors shown last are not left standing."""
    source = tmp_path / "s.policy"
    good = policy("127.0.0.1:1", 'allow public "a" when path == "/a"')
    source.write_text(good)
    reports, deploys, next_report, stop, watcher = _watching([str(source)], tmp_path / "live", monkeypatch)
    try:
        assert next_report()
        rds = (tmp_path / "live" / "rds.yaml").stat()
        source.write_text("# the same policy\n" + good)
        while len(deploys) < 2:
            time.sleep(0.01)
        source.write_text(good + "}")  # a syntax error
        assert next_report()
        source.write_text(good)
        assert next_report()
    finally:
        stop.set()
        watcher.join()
    assert len(deploys) == 4
    assert [r.version for r in reports] == [reports[0].version, None, reports[0].version]
    assert deploys[1].version == reports[0].version and deploys[1].published_at is None
    assert reports[2].published_at is None
    assert (tmp_path / "live" / "rds.yaml").stat().st_ino == rds.st_ino  # never renamed again


def test_deploy_says_unchanged_when_the_folder_holds_the_version_already(tmp_path):
    (tmp_path / "s.policy").write_text(policy("127.0.0.1:1", 'allow public "a" when path == "/a"'))
    args = ["deploy", str(tmp_path / "s.policy"), "--to", str(tmp_path / "live")]
    first, again = CliRunner().invoke(main, args), CliRunner().invoke(main, args)
    assert first.exit_code == again.exit_code == 0
    assert first.stdout.startswith("deployed ") and again.stdout.startswith("unchanged ")
    assert first.stdout.split()[1] == again.stdout.split()[1]


def test_watch_follows_every_file_the_policies_read(tmp_path, monkeypatch):
    """Imports (one created after the start), key, certificate and CA files, and a file added
    to the catalog set off a deploy each, wherever they are; other files beside them do not."""
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLE, policies, ignore=shutil.ignore_patterns("compiled"))
    entry = policies / "payments.policy"
    entry.write_text('import "extra.policy"\n' + entry.read_text())
    reports, deploys, next_report, stop, watcher = _watching([str(entry)], tmp_path / "live", monkeypatch)

    def changed(path: Path, deploys_then: int) -> None:
        if path.exists():
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        else:
            path.write_text("# nothing yet\n" if path.suffix == ".policy" else "")
        deadline = time.monotonic() + 10
        while len(deploys) < deploys_then and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        assert next_report()
        assert reports[0].version is None  # extra.policy is missing
        for unread in ("keys/okta.private.jwk.json", "certs/impostor-bot.pem", "docs.policy", "notes.yaml"):
            changed(policies / unread, 0)
        time.sleep(0.3)
        assert len(deploys) == 1
        read = ["extra.policy", "keys/okta.jwks.json", "certs/mesh-ca.pem", "certs/proxy.key", "catalog/more.yaml"]
        for count, path in enumerate(read, start=2):
            changed(policies / path, count)
        time.sleep(0.3)
    finally:
        stop.set()
        watcher.join()
    assert len(deploys) == 1 + len(read)
    assert reports[1].version is not None


Deploy = Callable[[str], tuple[str, str]]  # the upstream's address -> (policy text, target)


def _on_an_old_connection(tmp_path, request, before: Deploy, after: Deploy, opening: tuple[str, str],
                          sent: tuple[str, str], headers: dict | None = None):
    """Deploys `before` into a watched folder, opens a connection to an Envoy on it with a GET of
    `opening` (host, path), deploys `after` and sends a GET of `sent` on that same connection, which
    keeps the old listener: (the second deploy, the response's status, what the upstream received).
    The native library is on the search path (outside CI, the test is skipped where it cannot be
    built)."""
    folder = tmp_path / "live"
    with native_search_path(request) as native, RecordingUpstream() as upstream:
        if not native:
            pytest.skip("the native library cannot be built here")
        text, target = before(upstream.address)
        (tmp_path / "s.policy").write_text(text)
        deploy([str(tmp_path / "s.policy")], folder, target=target, options=OPTIONS)
        with envoys_on(folder, tmp_path) as (envoy,):
            connection = http.client.HTTPConnection("127.0.0.1", listener_ports(envoy.admin_port)[LISTENER_NAME])
            connection.request("GET", opening[1], headers={"Host": opening[0]})
            connection.getresponse().read()
            text, target = after(upstream.address)
            (tmp_path / "s.policy").write_text(text)
            deployed = deploy([str(tmp_path / "s.policy")], folder, target=target, options=OPTIONS)
            wait_for_version(envoy.admin_port, deployed.version)
            connection.request("GET", sent[1], headers={"Host": sent[0], **(headers or {})})
            response = connection.getresponse()
            response.read()
            connection.close()
    return deployed, response.status, upstream.received


def _open(upstream: str) -> str:
    return policy(upstream, 'allow public "open" when path == "/open"')


@pytest.mark.envoy
def test_a_service_moved_onto_the_native_filter_is_refused_on_an_old_connection(tmp_path, request):
    """A deploy that first puts a service on the native filter replaces the listener, whose old
    connections meanwhile take the new routes through the old chain, which has no native filter:
    the allow RBAC filter there still refuses what the native filter did not allow."""
    _, status, received = _on_an_old_connection(
        tmp_path, request, lambda upstream: (_open(upstream), "auto"), lambda upstream: (_open(upstream), "native"),
        ("s.test", "/open"), ("s.test", "/x"))
    assert status == 403
    assert [r for r in received if r.target == "/x"] == []


@pytest.mark.envoy
def test_native_rules_reading_a_token_are_refused_through_an_old_chain_without_jwt_authn(tmp_path, request):
    """A deploy that adds an issuer and a native rule on a claim: an old connection takes the new
    routes through the old chain, which has no jwt_authn to verify a token, nor to take a client's
    own payload header off. The native filter refuses those rules there rather than read that
    header as a verified token's claims."""
    (tmp_path / "dev.jwks.json").write_text(json.dumps(public_jwks(generate_key())))
    issuer = 'issuer dev {\n    url "https://dev.test"\n    jwks file "dev.jwks.json"\n}\n'
    forged = base64.urlsafe_b64encode(json.dumps({"iss": "https://dev.test", "role": "admin"}).encode())
    admins = 'allow "admins" when path == "/admin" and token.role == "admin"'
    _, status, received = _on_an_old_connection(
        tmp_path, request, lambda upstream: (_open(upstream), "native"),
        lambda upstream: (issuer + policy(upstream, admins), "native"),
        ("s.test", "/open"), ("s.test", "/admin"), {PAYLOAD_HEADER: forged.decode().rstrip("=")})
    assert status == 403
    assert [r for r in received if r.target == "/admin"] == []


KEYS = ROOT / "tests" / "cases" / "keys" / "idp.jwks.json"


def two_services(upstream: str, second: bool) -> str:
    """`n`, whose grant `auto-native` puts on the native filter (RBAC cannot end one), and, if
    `second`, `s` on RBAC."""
    native = (f'grants {{\n    max window "400000d"\n}}\n'
              'issuer idp {\n    url "https://idp.cases.test"\n    jwks file "idp.jwks.json"\n'
              '    audience "cases"\n}\n'
              f'service n {{\n    hosts "n.test"\n    upstream "{upstream}"\n    deny "d" when path == "/d"\n}}\n'
              'grant g {\n    service n\n    who token.sub == "alice"\n    what path == "/x"\n'
              '    from "2000-01-01T00:00:00Z"\n    until "2999-01-01T00:00:00Z"\n    approved by "bob"\n'
              '    reason "r"\n}\n')
    return native + (policy(upstream, 'allow public "open" when path == "/open"') if second else "")


@pytest.mark.envoy
def test_a_service_added_beside_native_ones_is_refused_on_an_old_connection(tmp_path, request):
    """The old chain, of native services only, takes the routes of a service added on RBAC: it
    must still hold the RBAC filters those routes configure."""
    shutil.copy(KEYS, tmp_path)
    deployed, status, received = _on_an_old_connection(
        tmp_path, request, lambda upstream: (two_services(upstream, False), "auto-native"),
        lambda upstream: (two_services(upstream, True), "auto-native"), ("n.test", "/x"), ("s.test", "/x"))
    assert deployed.plans["s"] == Plan("rbac", "rbac")
    assert status == 403
    assert [r for r in received if r.target == "/x" and ("host", "s.test") in r.headers] == []


def _deploy_confirmed(policy_file: Path, folder: Path, *args: str):
    return CliRunner().invoke(main, ["deploy", str(policy_file), "--to", str(folder), "--listen", "127.0.0.1:0",
                                     "--admin", "127.0.0.1:0", *args])


@pytest.mark.envoy
def test_confirm_waits_until_the_envoy_serves_the_deploy(tmp_path):
    folder = tmp_path / "live"
    (tmp_path / "s.policy").write_text(policy("127.0.0.1:9", 'allow public "old" when path == "/old"'))
    deploy([str(tmp_path / "s.policy")], folder, options=OPTIONS)
    with envoys_on(folder, tmp_path) as (envoy,):
        # An issuer changes the listener too, which Envoy takes after the routes.
        (tmp_path / "dev.jwks.json").write_text(json.dumps(public_jwks(generate_key())))
        issuer = 'issuer dev {\n    url "https://dev.test"\n    jwks file "dev.jwks.json"\n}\n'
        (tmp_path / "s.policy").write_text(issuer + policy("127.0.0.1:9", 'allow public "new" when path == "/new"'))
        result = _deploy_confirmed(tmp_path / "s.policy", folder, "--confirm", f"127.0.0.1:{envoy.admin_port}")
        assert result.exit_code == 0, result.output
        version = result.stdout.split()[1]
        assert f"confirmed {version} by the Envoy at 127.0.0.1:{envoy.admin_port}" in result.stdout
        assert served_version(envoy.admin_port) == version
        assert get(listener_ports(envoy.admin_port)[LISTENER_NAME], "/new") == 503  # allowed; no upstream


@pytest.mark.envoy
def test_confirm_fails_when_the_envoy_rejects_the_deploy(tmp_path, monkeypatch):
    """An Envoy without the native library rejects a native listener and its routes, and keeps the
    old policy: the folder holds the new one, and only the Envoy can tell."""
    monkeypatch.setenv("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", str(tmp_path))  # no library there
    folder = tmp_path / "live"
    (tmp_path / "s.policy").write_text(policy("127.0.0.1:9", 'allow public "a" when path == "/a"'))
    first = deploy([str(tmp_path / "s.policy")], folder, options=OPTIONS)
    with envoys_on(folder, tmp_path) as (envoy,):
        (tmp_path / "s.policy").write_text(policy("127.0.0.1:9", 'allow public "b" when path == "/b"'))
        admin = f"127.0.0.1:{envoy.admin_port}"
        result = _deploy_confirmed(tmp_path / "s.policy", folder, "--target", "native", "--confirm", admin)
        assert result.exit_code == 1, result.output
        assert result.stdout.startswith("deployed ")
        assert f"policyc: the Envoy at {admin} did not take" in result.stderr
        assert "it rejected rds.yaml" in result.stderr and f"still serves policy {first.version}" in result.stderr
        assert served_version(envoy.admin_port) == first.version
        again = _deploy_confirmed(tmp_path / "s.policy", folder, "--target", "native", "--confirm", admin,
                                  "--confirm-timeout", "0.5")
        assert again.exit_code == 1 and again.stdout.startswith("unchanged "), again.output
        assert "nothing was renamed, so it did not read the files again" in again.stderr


@pytest.mark.envoy
def test_confirm_fails_when_the_envoy_does_not_watch_the_folder(tmp_path):
    (tmp_path / "s.policy").write_text(policy("127.0.0.1:9", 'allow public "a" when path == "/a"'))
    deploy([str(tmp_path / "s.policy")], tmp_path / "watched", options=OPTIONS)
    with envoys_on(tmp_path / "watched", tmp_path) as (envoy,):
        (tmp_path / "s.policy").write_text(policy("127.0.0.1:9", 'allow public "b" when path == "/b"'))
        result = _deploy_confirmed(tmp_path / "s.policy", tmp_path / "other", "--confirm",
                                   f"127.0.0.1:{envoy.admin_port}", "--confirm-timeout", "0.5")
    assert result.exit_code == 1, result.output
    assert "after 0.5 s it still serves another version of rds.yaml" in result.stderr
    assert "does it watch this folder?" in result.stderr


@pytest.mark.envoy
def test_watch_confirms_each_deploy_and_counts_one_the_envoy_rejects(tmp_path, monkeypatch):
    """`watch --confirm`: a deploy the Envoy takes is logged as confirmed; a native one that an
    Envoy without the library rejects is logged with the reason and counted, and watching goes on."""
    monkeypatch.setenv("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", str(tmp_path))  # no library there
    folder, source = tmp_path / "live", tmp_path / "policies" / "s.policy"
    source.parent.mkdir()
    source.write_text(policy("127.0.0.1:9", 'allow public "a" when path == "/a"'))
    first = deploy([str(source)], folder, options=OPTIONS)
    with envoys_on(folder, tmp_path) as (envoy,):
        admin = f"127.0.0.1:{envoy.admin_port}"

        def watching(target: str, edit: str, timeout: float = 5) -> tuple[list[str], WatchMetrics]:
            """Run `watch` on the policy after `edit` until it logs the confirmation of its deploy."""
            source.write_text(policy("127.0.0.1:9", edit))
            lines, metrics, stop = [], WatchMetrics(), threading.Event()
            logged = threading.Semaphore(0)

            def log(line):
                lines.append(line)
                logged.release()

            watcher = threading.Thread(target=watch, args=([str(source.parent)], folder, lambda _: None, target),
                                       kwargs={"options": OPTIONS, "stop": stop, "interval": 0.02, "log": log,
                                               "metrics": metrics, "confirm": [admin], "confirm_timeout": timeout})
            watcher.start()
            try:
                assert logged.acquire(timeout=20), "no confirmation logged"
            finally:
                stop.set()
                watcher.join()
            return lines, metrics

        lines, metrics = watching("auto", 'allow public "b" when path == "/b"')
        taken = served_version(envoy.admin_port)
        assert taken != first.version and lines == [f"confirmed {taken} by the Envoy at {admin}"]
        assert (metrics.confirms_total, metrics.confirm_failures_total, metrics.confirm_failing) == (1, 0, 0)

        lines, metrics = watching("native", 'allow public "c" when path == "/c"')
        assert len(lines) == 1 and lines[0].startswith(f"the Envoy at {admin} did not take ")
        assert "it rejected rds.yaml" in lines[0] and f"still serves policy {taken}" in lines[0]
        assert (metrics.confirms_total, metrics.confirm_failures_total, metrics.confirm_failing) == (1, 1, 1)
        assert "policyc_watch_confirm_failing 1" in metrics.render()
        assert served_version(envoy.admin_port) == taken

        # A watch started again renames nothing, and still finds the Envoy behind the folder.
        lines, metrics = watching("native", 'allow public "c" when path == "/c"', timeout=0.5)
        assert len(lines) == 1 and "still serves another version" in lines[0]
        assert "nothing was renamed, so it did not read the files again" in lines[0]
        assert metrics.confirm_failing == 1


class _Relay(ThreadingHTTPServer):
    """Answers GET with what the same GET of `target` (host:port) answers: an admin interface that
    starts answering when the relay starts."""

    def __init__(self, port: int, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                body = urllib.request.urlopen(f"http://{target}{self.path}", timeout=3).read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", port), Handler)


@pytest.mark.envoy
def test_watch_asks_again_until_the_envoy_serves_the_deploy(tmp_path):
    """An admin interface that does not answer at the deploy (an Envoy still starting) counts as not
    taken; once it answers and serves the deploy, `watch` logs it confirmed and the gauge falls."""
    folder, source = tmp_path / "live", tmp_path / "policies" / "s.policy"
    source.parent.mkdir()
    source.write_text(policy("127.0.0.1:9", 'allow public "a" when path == "/a"'))
    deploy([str(source)], folder, options=OPTIONS)
    with envoys_on(folder, tmp_path) as (envoy,), socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()  # a free port, where nothing answers yet
        source.write_text(policy("127.0.0.1:9", 'allow public "b" when path == "/b"'))
        lines, metrics, stop = [], WatchMetrics(), threading.Event()
        watcher = threading.Thread(target=watch, args=([str(source.parent)], folder, lambda _: None),
                                   kwargs={"options": OPTIONS, "stop": stop, "interval": 0.02, "log": lines.append,
                                           "metrics": metrics, "confirm": [f"127.0.0.1:{port}"],
                                           "confirm_timeout": 0.5})
        watcher.start()
        try:
            until(lambda: metrics.confirm_failing == 1, 20)
            relay = _Relay(port, f"127.0.0.1:{envoy.admin_port}")
            threading.Thread(target=relay.serve_forever, daemon=True).start()
            try:
                until(lambda: metrics.confirm_failing == 0, 20)
            finally:
                relay.shutdown()
                relay.server_close()
        finally:
            stop.set()
            watcher.join()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"the Envoy at 127.0.0.1:{port} did not take ") and "does not answer" in lines[0]
    assert lines[1].startswith("confirmed ") and lines[1].endswith(f" by the Envoy at 127.0.0.1:{port}")
    assert metrics.confirm_failures_total >= 1 and metrics.confirms_total > metrics.confirm_failures_total


@pytest.mark.parametrize("answer", [
    b"not http\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut short",
    b"HTTP/1.1 200 OK\r\nContent-Length: 57\r\n\r\nlistener_manager.lds.update_rejected: No recorded values\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 41\r\n\r\nlistener_manager.lds.update_rejected: \xc2\xb2\n",
])
def test_an_admin_interface_answering_anything_but_envoys_stats_is_one_that_does_not_answer(answer):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer_once():
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

        threading.Thread(target=answer_once, daemon=True).start()
        with pytest.raises(AdminUnreachable):
            rejections(f"127.0.0.1:{server.getsockname()[1]}")


def test_an_envoy_that_does_not_answer_stops_the_deploy_before_anything_is_written(tmp_path):
    (tmp_path / "s.policy").write_text(policy("127.0.0.1:9", 'allow public "a" when path == "/a"'))
    result = _deploy_confirmed(tmp_path / "s.policy", tmp_path / "live", "--confirm", "127.0.0.1:9")
    assert result.exit_code == 2, result.output
    assert "its admin interface at 127.0.0.1:9 does not answer" in result.stderr
    assert "nothing deployed" in result.stderr
    assert not (tmp_path / "live").exists()


@pytest.mark.parametrize("command", ["deploy", "watch"])
def test_a_confirm_address_that_is_not_host_port_is_refused_before_anything_is_written(tmp_path, command):
    (tmp_path / "s.policy").write_text(policy("127.0.0.1:9", 'allow public "a" when path == "/a"'))
    result = CliRunner().invoke(main, [command, str(tmp_path / "s.policy"), "--to", str(tmp_path / "live"),
                                       "--confirm", "127.0.0.1:9", "--confirm", "envoy-admin"])
    assert result.exit_code == 2 and "Invalid value for --confirm: 'envoy-admin' is not host:port" in result.stderr
    assert not (tmp_path / "live").exists()
