"""`policyc analyze` and `policyc who-can` on small policies with one finding of each kind:
`allow public` rules are not flagged, `--fail-on` gates, and a request the proxy refuses gets the
proxy's answer instead of a verdict."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from policyc.analysis import analyze, who_can
from policyc.analysis.admission import read_request
from policyc.analysis.findings import Finding
from policyc.cli import main
from tests.analysis.policies import API, ISSUERS, checked, write

FLAWED = ISSUERS + """
service api {
    hosts ["api.internal"]
    upstream "127.0.0.1:8080"
    deny "no-admin" when path prefix "/admin"
    allow "impossible" when path == "/a" and path == "/b"
    allow "admin-pages" when path glob "/admin/**" and issuer idp
    allow "api" when path glob "/api/**" and issuer idp
    allow "api-v1" when method == GET and path glob "/api/v1/**" and issuer idp
    allow public "health" when path == "/healthz"
    allow "docs" when path prefix "/docs/"
}
"""


def test_each_kind_of_finding(tmp_path):
    found = {(f.kind, f.rule): f for f in analyze(checked(tmp_path, FLAWED))}
    # `health` admits anonymous callers too, but `allow public` says that is intended.
    assert set(found) == {("never-matches", "impossible"), ("shadowed", "admin-pages"), ("redundant", "api-v1"),
                          ("anonymous", "docs")}
    assert "rule 'no-admin'" in found["shadowed", "admin-pages"].message
    assert "rule 'api'" in found["redundant", "api-v1"].message
    anonymous = found["anonymous", "docs"].request
    assert anonymous["path"].startswith("/docs/") and "token" not in anonymous
    assert {f.kind: f.severity for f in found.values()} == {"never-matches": "warning", "shadowed": "warning",
                                                             "redundant": "note", "anonymous": "warning"}


def test_public_rules_are_not_anonymous_findings(tmp_path):
    public = FLAWED.replace('allow "docs"', 'allow public "docs"')
    assert not [f for f in analyze(checked(tmp_path, public)) if f.kind == "anonymous"]


def test_who_can(tmp_path):
    access = who_can(checked(tmp_path, FLAWED), "api", "GET", "/api/v1/x")
    assert access.allow == {"api": "issuer idp", "api-v1": "issuer idp"}
    assert access.deny == {} and access.anonymous == "never"
    assert who_can(checked(tmp_path, FLAWED), "api", "GET", "/healthz").anonymous == "always"
    assert who_can(checked(tmp_path, FLAWED), "api", "GET", "/admin/x").allow == {"admin-pages": "issuer idp"}


def test_cli(tmp_path):
    folder = write(tmp_path, FLAWED)
    result = CliRunner().invoke(main, ["analyze", str(folder)])
    assert result.exit_code == 0, result.output
    assert "api: rule 'impossible' [never-matches]" in result.stdout
    assert "rule 'health'" not in result.stdout
    result = CliRunner().invoke(main, ["who-can", "GET", "/api/v1/x", str(folder), "--service", "api"])
    assert result.exit_code == 0, result.output
    assert "  api: issuer idp" in result.stdout and "callers without a token or certificate: never" in result.stdout


@pytest.mark.parametrize(("gates", "failing"), [
    ([], False), (["any"], True), (["note"], True), (["warning"], True), (["anonymous"], True),
    (["redundant"], True), (["shadowed", "never-matches"], True)])
def test_analyze_fail_on(tmp_path, gates, failing):
    folder = write(tmp_path, FLAWED)
    result = CliRunner().invoke(main, ["analyze", str(folder), *[a for g in gates for a in ("--fail-on", g)]])
    assert result.exit_code == (1 if failing else 0), result.output
    assert ("failing --fail-on" in result.stderr) == failing


def test_analyze_fail_on_gates_by_kind_and_severity(tmp_path):
    # Only a redundant rule: a note, below `warning`.
    extra = '    allow "read-v1" when method == GET and path glob "/api/v1/x/**" and issuer idp\n'
    health = '    allow public "health"'
    redundant = write(tmp_path / "redundant", API.replace(health, extra + health))
    for gates, code in ((["warning"], 0), (["anonymous"], 0), (["redundant"], 1), (["note"], 1), (["any"], 1)):
        result = CliRunner().invoke(main, ["analyze", str(redundant), "--format", "json",
                                           *[a for g in gates for a in ("--fail-on", g)]])
        assert result.exit_code == code, (gates, result.output)
        assert [f["kind"] for f in json.loads(result.stdout)] == ["redundant"]
    result = CliRunner().invoke(main, ["analyze", str(write(tmp_path / "clean", API)), "--fail-on", "any"])
    assert result.exit_code == 0, result.output


def test_an_unanswered_question_fails_every_gate():
    for kind in ("undecided", "not-analysed"):
        finding = Finding(kind, "api", "r", "…")
        assert all(finding.fails([gate]) for gate in ("redundant", "anonymous", "warning", "any"))
        assert not finding.fails([])
    assert not Finding("redundant", "api", "r", "…").fails(["warning", "anonymous"])


@pytest.mark.parametrize(("method", "target", "answers"), [
    ("FETCH", "/x", ["HTTP/1.1: 400 http1.codec_error", "h2c, h2: 400 unknown method"]),
    ("get", "/x", ["HTTP/1.1: 400 http1.codec_error", "h2c, h2: 400 unknown method"]),
    ("GET", "api/x", ["HTTP/1.1: 400 http1.invalid_url", "h2c, h2: stream reset (http2.invalid.header.field)"]),
    ("GET", "/api/%2f", ["HTTP/1.1, h2c, h2: 400 path_normalization_failed"]),
    ("GET", "/api;x", ["HTTP/1.1, h2c, h2: 400 path_parameters"]),
])
def test_who_can_says_when_the_proxy_refuses_the_request(tmp_path, method, target, answers):
    folder = write(tmp_path, FLAWED)
    result = CliRunner().invoke(main, ["who-can", method, target, str(folder), "--service", "api"])
    assert result.exit_code == 4, result.output
    assert result.stdout.splitlines() == [f"{method} {target} to host api.internal never reaches a rule: the proxy "
                                          "refuses it", *[f"  {answer}" for answer in answers]]
    result = CliRunner().invoke(main, ["who-can", method, target, str(folder), "--host", "api.internal",
                                       "--format", "json"])
    assert result.exit_code == 4 and json.loads(result.stdout)["answers"] == []


def test_who_can_by_host(tmp_path):
    folder = write(tmp_path, FLAWED)
    result = CliRunner().invoke(main, ["who-can", "GET", "/healthz", str(folder), "--host", "API.internal"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("GET /healthz on api\n")
    assert "callers without a token or certificate: always" in result.stdout
    result = CliRunner().invoke(main, ["who-can", "GET", "/healthz", str(folder), "--host", "other.internal"])
    assert result.exit_code == 4 and "404 no service serves host 'other.internal'" in result.stdout
    for both_or_neither in (["--host", "api.internal", "--service", "api"], []):
        result = CliRunner().invoke(main, ["who-can", "GET", "/healthz", str(folder), *both_or_neither])
        assert result.exit_code == 2 and "give --service or --host" in result.output


def test_who_can_decides_the_path_the_rules_see(tmp_path):
    folder = write(tmp_path, FLAWED)
    result = CliRunner().invoke(main, ["who-can", "GET", "/api/v1/../../admin/x?q", str(folder), "--service", "api"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["GET /admin/x on api", "the proxy normalizes /api/v1/../../admin/x?q to /admin/x"]
    assert "  no-admin: always" in lines
    # Raw non-ASCII: refused by HTTP/1.1, percent-encoded by HTTP/2.
    result = CliRunner().invoke(main, ["who-can", "GET", "/é", str(folder), "--service", "api", "--format", "json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["refused"] == [{"protocols": ["HTTP/1.1"], "status": 400,
                                                          "reason": "http1.invalid_characters"}]
    assert [(a["protocols"], a["path"]) for a in data["answers"]] == [(["h2c", "h2"], "/%C3%A9")]


def test_who_can_asks_about_requests_the_rules_see_only(tmp_path):
    policies = checked(tmp_path, FLAWED)
    (reading,), refusals = read_request(policies, "GET", "/api/v1/..//x", "api.internal")
    assert (reading.protocols, reading.service, reading.path, refusals) == (("HTTP/1.1", "h2c", "h2"), "api",
                                                                            "/api/x", [])
    for method, path in (("FETCH", "/x"), ("GET", "api/x"), ("GET", "/a/../b"), ("GET", "/x?q")):
        with pytest.raises(ValueError):
            who_can(policies, "api", method, path)


def test_who_can_a_method_the_policies_never_name(tmp_path):
    # PROPFIND is seen as the one method that stands for every method no rule names.
    access = who_can(checked(tmp_path, FLAWED), "api", "PROPFIND", "/healthz")
    assert access.allow == {"health": "always"} and access.anonymous == "always"
    assert who_can(checked(tmp_path, FLAWED), "api", "PROPFIND", "/api/v1/x").allow == {"api": "issuer idp"}


def test_a_reader_that_goes_away_ends_the_command_quietly_and_not_as_a_success(tmp_path):
    folder = write(tmp_path, FLAWED)
    command = [sys.executable, "-m", "policyc", "analyze", str(folder)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.close()  # before the first line is written
        stderr = process.stderr.read().decode()
    assert process.returncode == 1
    assert "internal error" not in stderr and "Traceback" not in stderr
