"""`make demo` beside the native filter: the targets table, and the example's requests replayed
through the native filter, every one decided as the interpreter does;
and a catalog change (a component annotated with a template added, then deleted) reaching a running
Envoy through `watch`."""

import re
from pathlib import Path

import pytest

from policyc.dev import demo
from tests.native_target import native_search_path

pytestmark = pytest.mark.envoy

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"


def test_the_demo_runs_the_native_filter_beside_the_other_targets(request, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the demo writes out/demo under the working directory
    with native_search_path(request) as native:
        if not native:
            pytest.skip("the native library cannot be built here")
        assert demo.main([str(EXAMPLE)]) == 0
    output = capsys.readouterr().out
    assert re.search(r"^service +rules +rbac +lua +native +auto +auto-native$", output, re.M)
    assert re.search(r"^payments +9 +8 +9 +9 +deny rbac, allow lua +native$", output, re.M), output
    found = re.search(r"the native filter in Envoy, on all 17 rules: (\d+) of \1 requests decided alike", output)
    assert found and int(found[1]) > 0, output


def test_without_the_library_the_demo_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", raising=False)
    assert demo.main([str(EXAMPLE)]) == 0
    output = capsys.readouterr().out
    assert "the native filter was not run: Envoy loads libpolicyc_native.so" in output
    assert "GET ledger.internal/healthz: 404 (no such service)" in output
    assert re.search(r"^catalog/ledger.yaml added .*: Envoy answers 200 there after [\d.]+ s", output, re.M), output
    assert re.search(r"^catalog/ledger.yaml deleted: .* Envoy answers 404 there after [\d.]+ s", output, re.M), output
