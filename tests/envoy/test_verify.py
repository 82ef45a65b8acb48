"""`policyc verify --protocol`: the requests go out in the protocols asked for (HTTP/1.1 for h1,
h2c and h2 over TLS for h2, all three by default) and the summary says which; `--target native`
and `auto-native` run the native filter built from native_runtime/, as a process and in a container."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.backends.envoy import NATIVE_SEARCH_PATH
from policyc.cli import main

pytestmark = pytest.mark.envoy

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"

POLICY = """service s {
    hosts "s.test"
    upstream "127.0.0.1:1"

    deny "xa" when header "x-a" == "evil"
    allow public "all" when path prefix "/"
}
"""
CASES = """cases:
  - name: a padded value is read as sent over HTTP/2
    request: {path: /, host: s.test, headers: {x-a: " evil"}}
    expect: {status: 403, rule: xa, h2c: {status: 400, reason: bad-request, rule: null},
             h2: {status: 400, reason: bad-request, rule: null}}
"""


@pytest.mark.parametrize(("protocol", "spoken"), [
    ("h1", ["HTTP/1.1"]), ("h2", ["h2c", "h2"]), (None, ["HTTP/1.1", "h2c", "h2"])])
def test_verify_speaks_the_protocols_asked_for(tmp_path, protocol, spoken):
    (tmp_path / "p.policy").write_text(POLICY)
    (tmp_path / "p.cases.yaml").write_text(CASES)
    args = ["verify", str(tmp_path), "--examples", "5", "--target", "rbac"]
    result = CliRunner().invoke(main, args + (["--protocol", protocol] if protocol else []))
    assert result.exit_code == 0, result.output
    summary = re.search(r"(\d+) passed, 0 failed \(rbac; (.*); Envoy as a process\)", result.stdout)
    assert summary is not None, result.stdout
    assert summary[2].split(", ") == spoken
    assert int(summary[1]) == 6 * len(spoken)  # the case and five generated requests, per protocol


@pytest.mark.parametrize("runner", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_verify_runs_the_native_targets_with_their_library(tmp_path, native_library_dir, monkeypatch, request, runner):
    """`--target native` and `auto-native` with the library on the search path, Envoy as a process
    or in the image verify builds (which carries the library): the example's cases and generated
    requests, every rule of which the native filter expresses (none is left out)."""
    if runner == "docker":
        request.getfixturevalue("docker_daemon")
    monkeypatch.setenv(NATIVE_SEARCH_PATH, str(native_library_dir))
    result = CliRunner().invoke(main, ["verify", str(EXAMPLE), "--examples", "5", "--target", "native", "--target",
                                       "auto-native", "--protocol", "h1", "--envoy", runner])
    assert result.exit_code == 0, result.output
    assert re.search(rf"\d+ passed, 0 failed \(native, auto-native; HTTP/1.1; Envoy as a {runner}\)",
                     result.stdout), result.stdout
    assert "cannot express" not in result.stderr, result.stderr
