"""The YAML writer lays out exactly what PyYAML would, so emitted files never depend on which one
wrote them, except in how strings are escaped: the writer keeps to printable ASCII and to the
escapes Envoy reads right (tests/envoy/test_yaml_envoy.py reads them back through Envoy itself),
where PyYAML writes `\\N` and `\\_`, which Envoy loads as a space."""

from pathlib import Path

import pytest
import yaml

from policyc.backends import TARGETS, compile_outputs, expressible_part
from policyc.backends.yaml_out import _pyyaml, dump
from policyc.pipeline import load_and_check

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
ODD = {"empty list": [], "empty map": {}, "nested": [[1, ["x"]], {"k": [{}]}, []],
       "escapes": "é\n\t\r\x00\x01\x1b\x7f\x80\x85\x9f\xa0\u2028\u2029\ufeff\uffff\U0001F600",
       "none": None, "float": 1.5, "quotes": 'a"b\\c', "keys": {"\x85": 1, "\u2028": 2, "é": 3},
       "spaces": ["", " lead", "trail ", "  "], "": "empty key", "bools": [True, False, 1, 0], "big": 2**70}
ASCII = {k: v for k, v in ODD.items() if k not in ("escapes", "keys")}


@pytest.mark.parametrize("data", [ODD, {"list": [ODD, [ODD]]}, {"x": [[]]}, {}],
                         ids=["odd", "nested", "lists", "empty"])
def test_odd_values_read_back_as_written_in_printable_ascii(data):
    text = dump(data)
    assert yaml.safe_load(text) == data
    assert all(line.isascii() and line.isprintable() for line in text.splitlines())


def test_strings_are_escaped_by_code_point():
    assert dump({"a": "\x85\xa0\u2028\ufeff\U0001F600é\x00\n\t\r\"\\"}) == \
        '"a": "\\x85\\xA0\\u2028\\uFEFF\\U0001F600\\xE9\\x00\\n\\t\\r\\"\\\\"\n'


@pytest.mark.parametrize("data", [ASCII, {"list": [ASCII, [ASCII]]}, {"x": [[]]}, {}],
                         ids=["odd", "nested", "lists", "empty"])
def test_printable_ascii_is_written_as_pyyaml_writes_it(data):
    assert dump(data) == _pyyaml(data)


@pytest.mark.parametrize("target", TARGETS)
def test_compiled_example_is_written_as_pyyaml_writes_it(target):
    checked = load_and_check([str(EXAMPLE)]).checked
    compiled = compile_outputs(expressible_part(checked, target), target)
    assert not compiled.diagnostics
    assert dump(compiled.bootstrap) == _pyyaml(compiled.bootstrap)


_SHARED = {"k": [{"a": 1}, [2, [3]]], "m": {"x": "y"}}
_SHARED_LIST = [_SHARED, [_SHARED]]


def test_an_object_in_many_places_is_written_out_in_each_as_pyyaml_writes_it():
    # Laid out once per indent and then copied: first beside a dash, then under a key at the same
    # indent (where the dash must not follow it), in lists of lists, and at other indents.
    data = {"a": [_SHARED, _SHARED_LIST], "b": _SHARED, "c": {"d": _SHARED, "e": [_SHARED_LIST, _SHARED_LIST]},
            "f": _SHARED_LIST, "g": [[_SHARED_LIST]]}
    assert dump(data) == _pyyaml(data)
