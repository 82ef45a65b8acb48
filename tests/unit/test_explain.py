"""docs/diagnostics.md is the one explanation of every code: each documented code exists and each
code is documented; every Wrong example produces its code and every Fixed one produces neither it
nor any error; `policyc explain` prints the same text."""

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.analysis.locked import with_locks_checked
from policyc.backends import TARGETS, compile_outputs
from policyc.cli import main
from policyc.diagnostics import CODES, Diagnostic, has_errors
from policyc.explain import explanations
from policyc.pipeline import load_and_check

# Codes whose examples can only be described (```text blocks), and why.
DESCRIBED_ONLY = {
    "parse/too-deep": "needs 65 nested levels",
    "parse/file-too-large": "needs a 4 MiB file",
    "load/not-utf8": "is about bytes",
    "catalog/unreadable-file": "is about permissions, which root (and so CI) ignores",
    "check/type-mismatch": "the grammar rules such mistakes out as parse errors",
    "check/too-deep": "needs 65 levels of named conditions",
    "check/too-many-tests": "needs 1,001 tests",
    **dict.fromkeys(["check/duplicate-trust", "check/unknown-trust", "check/ambiguous-trust",
                     "check/peer-without-trust", "check/trust-needs-tls", "check/bad-certificate"],
                    "needs certificate files"),
    **dict.fromkeys(["grant/unsigned", "grant/bad-signature", "grant/bad-key"], "needs key files"),
}
_FENCE = re.compile(r"^```(?P<lang>\w+)(?: file=(?P<file>\S+))?\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def examples(section: str) -> dict[str, list[tuple[str, str, str]]]:
    """`wrong` and `fixed` → their (language, file name, text) blocks, in order."""
    wrong_at = re.search(r"^Wrong\b.*:$", section, re.MULTILINE)
    fixed_at = re.search(r"^Fixed\b.*:$", section, re.MULTILINE)
    assert wrong_at and fixed_at and wrong_at.start() < fixed_at.start(), "needs Wrong: then Fixed:"
    parts = {"wrong": section[wrong_at.end():fixed_at.start()], "fixed": section[fixed_at.end():]}
    return {name: [(m["lang"], m["file"] or "main.policy", m["body"]) for m in _FENCE.finditer(text)]
            for name, text in parts.items()}


def diagnostics_of(blocks, folder: Path, code: str) -> list[Diagnostic]:
    for _, name, body in blocks:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body, encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        pipeline = with_locks_checked(load_and_check(["main.policy"]))
        target = code.split("/")[0]  # rbac/… and native/… are found by compiling for that target
        if target in TARGETS and pipeline.ok:
            return pipeline.diagnostics + compile_outputs(pipeline.checked, target).diagnostics
        return pipeline.diagnostics
    finally:
        os.chdir(cwd)


def test_documented_codes_are_exactly_the_codes():
    assert list(explanations()) == [c for c in explanations() if c in CODES]
    assert sorted(explanations()) == sorted(CODES)


@pytest.mark.parametrize("code", list(CODES))
def test_each_section_states_the_meaning_and_has_both_examples(code):
    section = explanations()[code]
    first_paragraph = " ".join(section.split("\n\n")[1].split())
    assert first_paragraph.lower().startswith(CODES[code].lower()), "a section opens with the code's meaning"
    blocks = examples(section)
    assert blocks["wrong"] and blocks["fixed"]
    described = {lang for part in blocks.values() for lang, _, _ in part} == {"text"}
    assert described == (code in DESCRIBED_ONLY), "only the listed codes may be described without running"


@pytest.mark.parametrize("code", [c for c in CODES if c not in DESCRIBED_ONLY])
def test_wrong_example_gives_its_code_and_fixed_does_not(code, tmp_path):
    blocks = examples(explanations()[code])
    wrong = diagnostics_of(blocks["wrong"], tmp_path / "wrong", code)
    assert code in {d.code for d in wrong}, [f"{d.span}: {d.code}: {d.message}" for d in wrong]
    fixed = diagnostics_of(blocks["fixed"], tmp_path / "fixed", code)
    problems = [f"{d.span}: {d.code}: {d.message}" for d in fixed if d.code == code or d.is_error]
    assert problems == [] and not has_errors(fixed)


def test_explain_prints_the_section():
    result = CliRunner().invoke(main, ["explain", "check/unknown-issuer"])
    assert result.exit_code == 0
    assert result.stdout == explanations()["check/unknown-issuer"] + "\n"
    assert "issuer otka" in result.stdout and "issuer okta" in result.stdout


def test_explain_lists_codes_and_refuses_unknown_ones():
    listing = CliRunner().invoke(main, ["explain"])
    assert listing.exit_code == 0 and len(listing.stdout.splitlines()) == len(CODES)
    unknown = CliRunner().invoke(main, ["explain", "check/unknown-isuer"])
    assert unknown.exit_code == 2 and "did you mean 'check/unknown-issuer'" in unknown.stderr
