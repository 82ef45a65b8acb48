"""The decision corpus: every `tests/cases/<feature>/*.cases.yaml` replayed through the reference
interpreter with `policyc.cases.casefile`, against the policies of its feature folder.

One test per case file (id `feature/file`). A failure lists every failing case with its
file:line, name and differences. Tokens are minted at a fixed `now`: the clock never matters.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from policyc.cases.casefile import load_case_file, run_cases
from policyc.pipeline import Pipeline, load_and_check
from tests import CASE_KEYS

CASES = Path(__file__).resolve().parent.parent / "cases"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _case_files() -> list[Path]:
    return sorted(
        path
        for pattern in ("*.cases.yaml", "*.cases.yml")
        for path in CASES.glob(f"*/**/{pattern}")
    )


def _feature(case_file: Path) -> Path:
    """The feature folder of a case file: the first folder below tests/cases."""
    return CASES / case_file.relative_to(CASES).parts[0]


@functools.cache
def _pipeline(folder: Path) -> Pipeline:
    return load_and_check([str(folder)], allowed_roots=[CASE_KEYS])


def _messages(pipeline: Pipeline) -> str:
    return "\n".join(f"{d.span.path}:{d.span.line}:{d.span.column}: {d.code}: {d.message}"
                     for d in pipeline.diagnostics)


CASE_FILES = _case_files()


def test_every_feature_has_case_files():
    features = {_feature(path).name for path in CASE_FILES}
    assert features >= {"methods", "paths", "headers", "sources", "hosts", "claims", "tokens",
                        "membership", "decisions"}


@pytest.mark.parametrize("case_file", CASE_FILES,
                         ids=[path.relative_to(CASES).as_posix() for path in CASE_FILES])
def test_case_file(case_file: Path):
    folder = _feature(case_file)
    assert list(folder.rglob("*.policy")), f"{folder} holds no .policy files"
    pipeline = _pipeline(folder)
    assert pipeline.ok, f"{folder} does not check:\n{_messages(pipeline)}"
    results = run_cases(pipeline.checked, load_case_file(str(case_file)), now=NOW)
    assert results, f"{case_file} holds no cases"
    failures = [
        f"{result.case.where} {result.case.name}\n" + "\n".join(f"    {f}" for f in result.failures)
        for result in results
        if not result.passed
    ]
    assert not failures, f"{len(failures)} of {len(results)} cases failed:\n" + "\n".join(failures)
