"""A policy whose keys or catalog are missing or broken never compiles into an open policy: the
compile fails with a located diagnostic and leaves the output folder exactly as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cli import main

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"


def _delete(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


BREAKAGES = {
    "no catalog": ("catalog", _delete, "check/missing-catalog"),
    "no key file": ("keys/okta.jwks.json", _delete, "check/missing-key-file"),
    "an empty key set": ("keys/okta.jwks.json", lambda p: p.write_text('{"keys": []}'), "check/missing-key-file"),
    "a private key as the key set": ("keys/okta.jwks.json",
                                     lambda p: p.write_text(json.dumps({"keys": [json.loads(
                                         (p.parent / "okta.private.jwk.json").read_text())]})),
                                     "check/missing-key-file"),
    "a catalog file that is not YAML": ("catalog/org.yaml", lambda p: p.write_text("a: [\n"), "catalog/bad-yaml"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_key_or_catalog_is_a_compile_error(breakage, tmp_path):
    relative, breaks, code = BREAKAGES[breakage]
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLE, policies, ignore=shutil.ignore_patterns("compiled"))
    breaks(policies / relative)
    out = tmp_path / "out"
    out.mkdir()
    (out / "envoy.yaml").write_text("the previous, working config")
    result = CliRunner().invoke(main, ["compile", str(policies), "-o", str(out)])
    assert result.exit_code == 1
    assert f"error[{code}]" in result.stderr
    assert [(p.name, p.read_text()) for p in out.iterdir()] == [("envoy.yaml", "the previous, working config")]
