"""`policyc init`: the repository it starts checks, tests (every rule covered), compiles to what it
holds, and Envoy accepts; its workflow is the shipped one and passes as is; nothing is ever replaced."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from policyc.cli import main
from policyc.proof.envoy_process import envoy_binary
from tests.unit.test_ci_files import WORKFLOW, policyc_steps, run_step

ROOT = Path(__file__).parents[2]


def run(*args, expect: int):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == expect, (result.output, result.stderr, result.exception)
    return result


@pytest.fixture
def repository(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    run("init", expect=0)  # FOLDER defaults to here
    return tmp_path


def test_init_writes_the_policies_cases_compiled_output_and_workflow(repository):
    written = sorted(p.relative_to(repository).as_posix() for p in repository.rglob("*") if p.is_file())
    assert written == [".github/workflows/policies.yml", "envoy/envoy.yaml", "envoy/targets.json",
                       "policies/common.policy", "policies/hello.cases.yaml", "policies/hello.policy"]
    # The shipped workflow itself, whose default folders are the ones init lays out.
    workflow = (repository / ".github/workflows/policies.yml").read_text()
    assert workflow == (ROOT / "docs/ci/github-workflow.yml").read_text()
    assert {k: yaml.safe_load(workflow)["env"][k] for k in ("POLICIES", "COMPILED")} == {
        "POLICIES": "policies", "COMPILED": "envoy"}


def test_the_result_checks_tests_and_compiles(repository):
    assert "0 errors, 0 warnings" in run("check", "policies", expect=0).stderr
    assert run("test", "policies", "--coverage-min", "100", expect=0).stdout.startswith("7 passed, 0 failed\n")
    run("compile", "policies", "-o", "envoy", "--check", expect=0)  # init wrote what compile writes
    run("compile", "policies", "-o", "out", expect=0)


def test_the_issuer_is_the_development_idp_with_no_private_key_in_the_repository(repository):
    from policyc.dev.idp import DEFAULT_PORT

    common = (repository / "policies" / "common.policy").read_text()
    assert f'jwks "http://127.0.0.1:{DEFAULT_PORT}/.well-known/jwks.json"' in common
    assert not [p for p in repository.rglob("*") if p.is_file() and "PRIVATE KEY" in p.read_text()]


@pytest.mark.envoy
def test_envoy_accepts_the_compiled_configuration(repository):
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", "envoy/envoy.yaml", "-l", "error"],
                            capture_output=True, text=True, cwd=repository)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.envoy
def test_the_workflow_passes_as_is(repository):
    # PYTHONPATH: the policyc of this checkout, whatever the virtualenv has installed.
    env = {**os.environ, **WORKFLOW["env"], "VERIFY_EXAMPLES": "5", "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for step in policyc_steps():
        result = run_step(step, env, repository)
        assert result.returncode == 0, (step["name"], result.stdout[-2000:], result.stderr[-2000:])


def test_init_replaces_nothing(tmp_path):
    cases = tmp_path / "policies" / "hello.cases.yaml"
    cases.parent.mkdir()
    cases.write_text("mine\n")
    result = run("init", tmp_path, expect=1)
    assert f"not replacing what exists: {cases}; nothing written" in result.stderr
    assert cases.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["hello.cases.yaml", "policies"]


def test_init_refuses_an_existing_output_folder(tmp_path):
    (tmp_path / "envoy").mkdir()
    (tmp_path / "envoy" / "other.yaml").write_text("x: 1\n")
    result = run("init", tmp_path, expect=1)
    assert f"not replacing what exists: {tmp_path / 'envoy'}; nothing written" in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["envoy", "other.yaml"]


def test_init_into_a_new_folder(tmp_path):
    result = run("init", tmp_path / "new" / "repo", expect=0)
    assert "created in" in result.stderr and "policyc token mint" in result.stderr
    assert (tmp_path / "new" / "repo" / "policies" / "hello.policy").is_file()


def test_starting_policies_that_do_not_compile_are_an_internal_error_and_write_nothing(tmp_path, monkeypatch):
    from policyc.dev import scaffold

    monkeypatch.setattr(scaffold, "_SERVICE", scaffold._SERVICE.replace("issuer dev and method", "issuer x and method"))
    result = run("init", tmp_path, expect=3)
    assert "policyc: internal error: ScaffoldError: the starting policies do not compile:" in result.stderr
    assert "error[check/unknown-issuer]: no issuer is named `x`" in result.stderr
    assert not list(tmp_path.iterdir())
