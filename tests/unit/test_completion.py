"""Shell completion, as documented: `_POLICYC_COMPLETE=bash_source policyc` prints a script, and
that script, sourced in bash, completes commands, options and diagnostic codes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture
def policyc_on_path(tmp_path) -> dict:
    """An environment whose `policyc` is this checkout's, as the installed entry point runs it."""
    program = tmp_path / "bin" / "policyc"
    program.parent.mkdir()
    program.write_text(f"#!{sys.executable}\nfrom policyc.cli import main\nmain()\n")
    program.chmod(0o755)
    return {**os.environ, "PATH": f"{program.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o nosort -F _policyc_completion policyc"),
                                               ("zsh", "#compdef policyc"),
                                               ("fish", "complete --no-files --command policyc")])
def test_each_shell_gets_its_script(policyc_on_path, shell, marker):
    result = subprocess.run(["policyc"], env={**policyc_on_path, "_POLICYC_COMPLETE": f"{shell}_source"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and marker in result.stdout, result.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize(("words", "expected"), [
    ("policyc dev-", ["dev-certs", "dev-idp"]),
    ("policyc in", ["init"]),
    ("policyc test --cov", ["--coverage", "--coverage-min"]),
    ("policyc explain check/unknown-i", ["check/unknown-issuer"]),
])
def test_the_bash_script_completes(policyc_on_path, words, expected):
    script = f"""
        eval "$(_POLICYC_COMPLETE=bash_source policyc)"
        COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
        _policyc_completion policyc
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = subprocess.run(["bash", "--norc", "-c", script], env=policyc_on_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected
