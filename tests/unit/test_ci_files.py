"""The shipped CI files work: the GitHub workflow example runs check, test, verify and
compile --check in that order, and its steps pass on the bundled example (and fail on stale
outputs); its check step annotates every error and writes the SARIF log even when check fails;
every pre-commit hook's entry is a working policyc command."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from policyc.cli import main

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
FIVE_MISTAKES = ROOT / "tests" / "golden" / "diagnostics" / "five_mistakes" / "main.policy"
WORKFLOW = yaml.safe_load((ROOT / "docs" / "ci" / "github-workflow.yml").read_text())
HOOKS = {hook["id"]: hook for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}


def policyc_steps() -> list[dict]:
    [job] = WORKFLOW["jobs"].values()
    return [step for step in job["steps"] if "policyc " in step.get("run", "") and "pip install" not in step["run"]]


def test_workflow_runs_check_test_verify_then_compile_check():
    commands = [shlex.split(line) for step in policyc_steps() for line in step["run"].splitlines()
                if line.strip().startswith("policyc ")]
    order = [words[1] for words in commands]
    assert list(dict.fromkeys(order)) == ["check", "test", "verify", "compile"]
    assert order == sorted(order, key=["check", "test", "verify", "compile"].index), "each command once, in order"
    assert "--check" in commands[-1]
    assert [words[words.index("--format") + 1] for words in commands if words[1] == "check"] == ["github", "sarif"]
    assert "--junit" in commands[order.index("test")]


def run_step(step: dict, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """A step's script as GitHub Actions runs it (`bash --noprofile --norc -eo pipefail {0}`)."""
    return subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def workflow_env(**overrides) -> dict:
    return {**os.environ, **WORKFLOW["env"], **overrides,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def test_check_step_annotates_errors_writes_sarif_and_fails(tmp_path):
    (tmp_path / "policies").mkdir()
    shutil.copy(FIVE_MISTAKES, tmp_path / "policies" / "main.policy")
    [step] = [step for step in policyc_steps() if step["name"] == "policyc check"]
    result = run_step(step, workflow_env(POLICIES="policies"), tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stdout.count("::error file=policies/main.policy,") == 5
    assert result.stdout.count("::warning file=policies/main.policy,") == 1
    assert (tmp_path / "policyc.sarif").read_text().count('"ruleId"') == 6


@pytest.mark.envoy
def test_workflow_steps_pass_on_the_example_and_catch_stale_outputs(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "policies")
    env = workflow_env(POLICIES="policies", COMPILED="policies/compiled", VERIFY_EXAMPLES="5")
    for step in policyc_steps():
        result = run_step(step, env, tmp_path)
        assert result.returncode == 0, (step["name"], result.stdout[-2000:], result.stderr[-2000:])
    assert (tmp_path / "policyc.sarif").read_text().count('"version": "2.1.0"') == 1
    assert "<testsuites" in (tmp_path / "policyc-junit.xml").read_text()
    bootstrap = tmp_path / "policies" / "compiled" / "envoy.yaml"
    bootstrap.write_text(bootstrap.read_text().replace("static_resources", "static_resources_old", 1))
    result = run_step(policyc_steps()[-1], env, tmp_path)
    assert result.returncode == 1 and "envoy.yaml: content differs" in result.stderr


def hook_command(hook_id: str, *args) -> list[str]:
    """What pre-commit runs: the entry, the hook's args, then the file names."""
    program, *entry_args = shlex.split(HOOKS[hook_id]["entry"])
    assert program == "policyc"
    return [*entry_args, *map(str, args)]


def test_hooks_are_valid_pre_commit_hooks():
    assert set(HOOKS) == {"policyc-check", "policyc-fmt", "policyc-compile-check"}
    for hook in HOOKS.values():
        assert {"id", "name", "entry", "language"} <= set(hook) and hook["language"] == "python"


def test_check_hook_passes_clean_files_and_fails_mistakes():
    assert CliRunner().invoke(main, hook_command("policyc-check", *sorted(EXAMPLE.glob("*.policy")))).exit_code == 0
    assert CliRunner().invoke(main, hook_command("policyc-check", FIVE_MISTAKES)).exit_code == 1


def test_fmt_hook_rewrites_files(tmp_path):
    policy = tmp_path / "p.policy"
    policy.write_text("condition   c=method==GET\n")
    assert CliRunner().invoke(main, hook_command("policyc-fmt", policy)).exit_code == 0
    assert policy.read_text() == "condition c = method == GET\n"


def test_compile_check_hook_with_its_args():
    command = hook_command("policyc-compile-check", EXAMPLE, "-o", EXAMPLE / "compiled")
    assert not HOOKS["policyc-compile-check"]["pass_filenames"]
    assert CliRunner().invoke(main, command).exit_code == 0
