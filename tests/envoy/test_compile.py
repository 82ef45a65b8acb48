"""Compiled outputs: Envoy accepts them (`--mode validate`) for every target (the native one with
its library built from native_runtime/), recompiling is byte-identical, `--target rbac` and
`--target native` refuse what they cannot express with a located diagnostic and write nothing,
and a failed compile leaves an existing output folder untouched."""

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.backends import compile_outputs, expressible_part
from policyc.backends.envoy import NATIVE_SEARCH_PATH
from policyc.cli import main
from policyc.pipeline import load_and_check
from policyc.proof.envoy_process import envoy_binary
from tests import CASE_KEYS

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "envoy_configs" / "examples" / "backstage"
POLICY_SETS = [EXAMPLE] + sorted(p for p in (ROOT / "tests" / "cases").iterdir() if list(p.glob("*.policy")))


def validate(config: Path) -> None:
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config), "-l", "error"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.envoy
@pytest.mark.parametrize("target", ["auto", "lua", "rbac"])
@pytest.mark.parametrize("folder", POLICY_SETS, ids=lambda p: p.name)
def test_envoy_accepts_every_output(folder, target, tmp_path):
    checked = load_and_check([str(folder)], allowed_roots=[CASE_KEYS]).checked
    compiled = compile_outputs(checked, target)
    if target == "rbac" and compiled.diagnostics:
        assert {d.code for d in compiled.diagnostics} == {"rbac/unsupported"}
        return
    for name, text in compiled.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    validate(tmp_path / "envoy.yaml")


@pytest.mark.envoy
@pytest.mark.parametrize("folder", POLICY_SETS, ids=lambda p: p.name)
def test_envoy_accepts_every_native_output(folder, native_library_dir, monkeypatch, tmp_path):
    """The part of each policy set the native filter can express, with its library on the search path."""
    checked = expressible_part(load_and_check([str(folder)], allowed_roots=[CASE_KEYS]).checked, "native")
    compiled = compile_outputs(checked, "native")
    assert not compiled.diagnostics
    monkeypatch.setenv(NATIVE_SEARCH_PATH, str(native_library_dir))
    (tmp_path / "envoy.yaml").write_text(compiled.files["envoy.yaml"])
    validate(tmp_path / "envoy.yaml")


def test_committed_example_output_is_current(tmp_path):
    """What `policyc compile` writes for the example is committed, so reviewers see config diffs."""
    result = CliRunner().invoke(main, ["compile", str(EXAMPLE), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    committed = EXAMPLE / "compiled"
    written = {p.relative_to(tmp_path / "out"): p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    expected = {p.relative_to(committed): p.read_text() for p in committed.rglob("*") if p.is_file()}
    assert written == expected, "recompile envoy_configs/examples/backstage/compiled with policyc compile"


def test_compiling_twice_is_byte_identical():
    checked = load_and_check([str(EXAMPLE)]).checked
    assert compile_outputs(checked).files == compile_outputs(load_and_check([str(EXAMPLE)]).checked).files


def test_rbac_target_refuses_lua_only_rules_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    result = CliRunner().invoke(main, ["compile", str(EXAMPLE), "-o", str(out), "--target", "rbac"])
    assert result.exit_code == 1
    assert "payments.policy:17:13: error[rbac/unsupported]: rule `tenant`: RBAC cannot compare a header" \
        in result.stderr
    assert "nothing written" in result.stderr
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def test_policy_errors_write_nothing(tmp_path):
    out = tmp_path / "out"
    bad = ROOT / "tests" / "golden" / "diagnostics" / "five_mistakes" / "main.policy"
    result = CliRunner().invoke(main, ["compile", str(bad), "-o", str(out)])
    assert result.exit_code == 1 and not out.exists()


@pytest.mark.envoy
def test_otlp_adds_the_collector_and_envoy_accepts_it(tmp_path):
    """`--otlp`: a cluster for the collector, the tracer exporting to it, the log sent there too."""
    result = CliRunner().invoke(main, ["compile", str(EXAMPLE), "-o", str(tmp_path / "out"),
                                       "--otlp", "otel-collector.observability:4317"])
    assert result.exit_code == 0, result.output
    config = (tmp_path / "out" / "envoy.yaml").read_text()
    assert '"name": "policyc_otlp"' in config and "envoy.access_loggers.open_telemetry" in config
    assert '"address": "otel-collector.observability"' in config and "random_sampling" not in config
    validate(tmp_path / "out" / "envoy.yaml")
    refused = CliRunner().invoke(main, ["compile", str(EXAMPLE), "-o", str(tmp_path / "x"), "--otlp", "collector"])
    assert refused.exit_code == 2 and "'collector' is not host:port" in refused.output
