"""`policyc analyze` and `policyc who-can` on small policies with one finding of each kind."""

import subprocess
import sys

from click.testing import CliRunner

from policyc.analysis import analyze, who_can
from policyc.cli import main
from tests.analysis.policies import ISSUERS, checked, write

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
}
"""


def test_each_kind_of_finding(tmp_path):
    found = {(f.kind, f.rule): f for f in analyze(checked(tmp_path, FLAWED))}
    assert set(found) == {("never-matches", "impossible"), ("shadowed", "admin-pages"), ("redundant", "api-v1"),
                          ("anonymous", "health")}
    assert "rule 'no-admin'" in found["shadowed", "admin-pages"].message
    assert "rule 'api'" in found["redundant", "api-v1"].message
    anonymous = found["anonymous", "health"].request
    assert anonymous["path"] == "/healthz" and "token" not in anonymous


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
    result = CliRunner().invoke(main, ["who-can", "GET", "/api/v1/x", str(folder), "--service", "api"])
    assert result.exit_code == 0, result.output
    assert "  api: issuer idp" in result.stdout and "callers without a token or certificate: never" in result.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly_and_not_as_a_success(tmp_path):
    folder = write(tmp_path, FLAWED)
    command = [sys.executable, "-m", "policyc", "analyze", str(folder)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.close()  # before the first line is written
        stderr = process.stderr.read().decode()
    assert process.returncode == 1
    assert "internal error" not in stderr and "Traceback" not in stderr
