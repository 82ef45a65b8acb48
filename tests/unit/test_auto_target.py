"""How `auto` and `auto-native` choose each service's target: RBAC wherever it expresses the
rules, then Lua, or with `auto-native` the native filter for the whole service in its place; and
the choice reads the policy alone."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.backends import compile_outputs, envoy, plan_service, rbac
from policyc.cli import main
from tests.unit.test_native_backend import SERVICE, checked_of

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
PLAIN = '    deny "internal" when source in ["10.0.0.0/8"]\n    allow public "health" when path == "/health"\n'


@pytest.fixture
def refusals(monkeypatch):
    """For the test, RBAC cannot express the rules whose name has `no-rbac`: which rules it
    expresses changes as it grows."""
    monkeypatch.setattr(rbac, "expressible", lambda checked, rule, expressible=rbac.expressible:
                        "no-rbac" not in rule.name and expressible(checked, rule))


def _plans(checked, target: str) -> dict[str, str]:
    return {name: str(plan_service(checked, service, target)) for name, service in checked.services.items()}


def test_rbac_comes_first_even_with_the_native_filter(tmp_path):
    checked = checked_of(tmp_path, SERVICE.format(name="a", rules=PLAIN))
    assert _plans(checked, "auto") == _plans(checked, "auto-native") == {"a": "rbac"}


@pytest.mark.usefixtures("refusals")
def test_auto_native_takes_a_service_from_lua_to_the_native_filter(tmp_path):
    checked = checked_of(tmp_path, SERVICE.format(name="a", rules=PLAIN)
                         + SERVICE.format(name="b", rules='    allow public "no-rbac" when path == "/x"\n'
                                                          '    deny "d" when header "x-a" present\n'))
    assert _plans(checked, "auto") == {"a": "rbac", "b": "deny rbac, allow lua"}
    # The native filter decides a service whole: its RBAC deny rules go with it.
    assert _plans(checked, "auto-native") == {"a": "rbac", "b": "native"}
    compiled = compile_outputs(checked, "auto-native")
    assert not compiled.diagnostics
    assert envoy.NATIVE_FILTER in compiled.files["envoy.yaml"]
    assert '"b": {\n    "allow": "native",\n    "deny": "native"\n  }' in compiled.files["targets.json"]


def test_auto_native_without_a_native_service_runs_on_a_stock_envoy(tmp_path):
    """The same files as `auto`: no dynamic module for an Envoy that has none to load."""
    checked = checked_of(tmp_path, SERVICE.format(name="a", rules=PLAIN))
    assert compile_outputs(checked, "auto-native").files == compile_outputs(checked, "auto").files


@pytest.mark.usefixtures("refusals")
def test_the_choice_does_not_look_for_the_library(tmp_path, monkeypatch):
    """Compiling reads the policy alone: with or without the library in reach, the same files."""
    checked = checked_of(tmp_path, SERVICE.format(name="b", rules='    allow public "no-rbac" when path == "/x"\n'))
    monkeypatch.setenv(envoy.NATIVE_SEARCH_PATH, str(tmp_path))  # holds no library
    without = compile_outputs(checked, "auto-native").files
    (tmp_path / "libpolicyc_native.so").write_bytes(b"")
    assert compile_outputs(checked, "auto-native").files == without
    monkeypatch.delenv(envoy.NATIVE_SEARCH_PATH)
    assert compile_outputs(checked, "auto-native").files == without


def test_compile_says_each_service_s_target(tmp_path):
    result = CliRunner().invoke(main, ["compile", str(EXAMPLE), "-o", str(tmp_path / "out"), "--target", "auto-native"])
    assert result.exit_code == 0, result.output
    # payments tests `peer.uri` and compares a header with a claim: RBAC cannot hold the whole
    # service, the native filter can, with the network filter that hands it every SAN.
    assert "docs: rbac\nledger: rbac\npayments: native\n" in result.stderr
    assert f'"name": "{envoy.PEER_FILTER}"' in (tmp_path / "out" / "envoy.yaml").read_text()
