"""The YAML writer lays out exactly what PyYAML would, so emitted files never depend on which
one wrote them."""

from pathlib import Path

import pytest

from policyc.backends import TARGETS, compile_outputs
from policyc.backends.rbac import expressible_part
from policyc.backends.yaml_out import _pyyaml, dump
from policyc.pipeline import load_and_check

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
ODD = {"empty list": [], "empty map": {}, "nested": [[1, ["x"]], {"k": [{}]}, []],
       "escapes": "é\n\t\x01\u2028\ufeff\U0001F600", "none": None, "float": 1.5, "quotes": 'a"b\\c',
       "spaces": ["", " lead", "trail ", "  "], "": "empty key", "bools": [True, False, 1, 0], "big": 2**70}


@pytest.mark.parametrize("data", [ODD, {"list": [ODD, [ODD]]}, {"x": [[]]}, {}],
                         ids=["odd", "nested", "lists", "empty"])
def test_odd_values_are_written_as_pyyaml_writes_them(data):
    assert dump(data) == _pyyaml(data)


@pytest.mark.parametrize("target", TARGETS)
def test_compiled_example_is_written_as_pyyaml_writes_it(target):
    checked = load_and_check([str(EXAMPLE)]).checked
    compiled = compile_outputs(expressible_part(checked) if target == "rbac" else checked, target)
    assert not compiled.diagnostics
    for data in (compiled.bootstrap, compiled.lds):
        assert dump(data) == _pyyaml(data)
