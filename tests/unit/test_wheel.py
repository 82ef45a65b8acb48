"""The built wheel carries grammar/, lua_runtime/, docs/diagnostics.md and the CI workflow, and an
installed copy finds and uses them."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
                            str(ROOT)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    [wheel] = out.glob("policyc-*.whl")
    return wheel


def test_wheel_contains_the_data_folders(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "policyc/_data/grammar/policy.lark" in names
    assert "policyc/_data/lua_runtime/README.md" in names
    assert "policyc/_data/docs/diagnostics.md" in names
    assert "policyc/_data/docs/ci/github-workflow.yml" in names


def test_installed_wheel_parses_with_its_own_grammar(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True)
    probe = (
        "import policyc.resources as r, policyc.syntax as s, policyc.source as src;"
        "print(r.resource_dir('grammar'));"
        "f, d = s.parse(src.Source('x', 'condition c = authenticated'));"
        "print(type(f.items[0]).__name__, d);"
        "import policyc.explain as e; print(e.explanation('check/bad-glob').splitlines()[0]);"
        "import policyc.dev.scaffold as sc, pathlib; print(sorted(sc.project_files(pathlib.Path('repo')))[:2])"
    )
    # Run outside the checkout, with the installed copy first on the path.
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(target), "PATH": ""}, check=True)
    grammar_dir, parsed, explained, layout = result.stdout.splitlines()
    assert grammar_dir == str(target / "policyc" / "_data" / "grammar")
    assert parsed == "Condition []"
    assert explained == "### `check/bad-glob`"
    assert layout == "['.github/workflows/policies.yml', 'envoy/envoy.yaml']"  # `policyc init` works
