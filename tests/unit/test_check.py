"""Checker: every diagnostic, rendered, against golden files; and the checker's helpers."""

import os
from pathlib import Path

import pytest

from policyc.diagnostics import render_text
from policyc.pipeline import load_and_check
from tests.golden import assert_golden

CASES = Path(__file__).parent.parent / "golden" / "diagnostics"


def rendered(folder: Path) -> str:
    cwd = os.getcwd()
    os.chdir(folder)  # paths in the golden text stay short and machine-independent
    try:
        # The golden folders share certificate files (`ca file "../peers/ca.pem"`).
        pipeline = load_and_check(["main.policy"], allowed_roots=[CASES])
        return "\n\n".join(render_text(d, pipeline.sources) for d in pipeline.diagnostics) + "\n"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("folder", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_diagnostics_are_golden(folder, update_goldens):
    assert_golden(folder / "expected.err", rendered(folder), update_goldens)


def test_five_mistakes_give_five_located_errors():
    text = rendered(CASES / "five_mistakes")
    errors = [line for line in text.splitlines() if ": error[" in line]
    assert len(errors) == 5, text
    assert all(line.startswith("main.policy:") for line in errors)


def test_example_checks_clean():
    example = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
    pipeline = load_and_check([str(example)])
    assert pipeline.ok, [render_text(d, pipeline.sources) for d in pipeline.diagnostics]
    assert [d for d in pipeline.diagnostics] == [], "the example should not even warn"

