"""The differential harness can fail: a bug planted in the backends (`path prefix` emitted as an
exact match, in RBAC, Lua and the native filter's config) or in the interpreter's HTTP/2 model
(values trimmed as HTTP/1 does, `cookie` fields left apart) must be caught, by a fixed case and by
the generated suite."""

from collections import Counter
from dataclasses import replace

import pytest

from policyc.backends import lua, native, rbac
from policyc.interpret import evaluator
from policyc.nodes import Op
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.envoy_process import running_envoy
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics import headers
from policyc.semantics.request import H2, H2C, RawRequest
from tests.differential.test_envoy_differential import TARGETS, differential
from tests.native_target import native_search_path
from tests.property.strategies import NOW

pytestmark = pytest.mark.envoy


@pytest.fixture
def prefix_as_exact(monkeypatch):
    exact_path = rbac.PrincipalBuilder._path_match
    monkeypatch.setattr(rbac.PrincipalBuilder, "_path_match",
                        staticmethod(lambda op, value: exact_path(Op.EQ if op is Op.PREFIX else op, value)))
    emit_path = lua._Emitter.path
    monkeypatch.setattr(lua._Emitter, "path",
                        lambda self, op, values: emit_path(self, Op.EQ if op is Op.PREFIX else op, values))
    render_path = native._Renderer.visit_PathTest
    monkeypatch.setattr(native._Renderer, "visit_PathTest",
                        lambda self, expr: render_path(self, replace(expr, op=Op.EQ) if expr.op is Op.PREFIX else expr))


@pytest.fixture(scope="module")
def envoy(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("envoy")
    with native_search_path(request) as native_runs, EnvoyUnderTest(workdir, running_envoy) as envoy:
        envoy.runner_name = "process"
        envoy.targets = TARGETS + (("native",) if native_runs else ())
        yield envoy


def test_a_planted_bug_is_a_mismatch(prefix_as_exact, envoy, tmp_path):
    (tmp_path / "p.policy").write_text('service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n'
                                       '    allow public "api" when path prefix "/api/"\n}\n')
    checked = load_and_check([str(tmp_path / "p.policy")]).checked
    for target in envoy.targets:
        envoy.load(checked, target)
        [comparison] = compare(checked, envoy.send_all([RawRequest("GET", "/api/x", "s.test")]), NOW, {})
        assert "status: interpreter 200, envoy 403" in comparison.differences


def test_the_generated_suite_catches_a_planted_bug(prefix_as_exact, envoy, world):
    with pytest.raises(AssertionError, match="Envoy and the interpreter disagree"):
        # No shrinking: the point is only that it fails; and no database, so that the planted
        # failure is never replayed by the real suite.
        differential(envoy, world, 100, Counter(), shrink=False)


def test_the_generated_suite_catches_a_planted_bug_in_the_native_target(prefix_as_exact, envoy, world):
    # The run above stops at the first target that disagrees, which is not this one.
    if "native" not in envoy.targets:
        pytest.skip("the native library could not be built")
    with pytest.raises(AssertionError, match="target native, .*Envoy and the interpreter disagree"):
        differential(envoy, world, 100, Counter(), shrink=False, targets=("native",))


@pytest.fixture
def http2_read_as_http1(monkeypatch):
    """The interpreter's HTTP/2 header model replaced by HTTP/1's: values trimmed, cookies apart."""
    monkeypatch.setattr(evaluator, "header_table", lambda lines, http2=False: headers.header_table(lines))


def test_a_planted_http2_bug_is_a_mismatch(http2_read_as_http1, envoy, tmp_path):
    (tmp_path / "p.policy").write_text(
        'service s {\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n'
        '    deny "xa" when header "x-a" == "evil"\n    deny "debug" when header "cookie" == "debug=1"\n'
        '    allow public "all" when path prefix "/"\n}\n')
    checked = load_and_check([str(tmp_path / "p.policy")]).checked
    padded = RawRequest("GET", "/", "s.test", (("x-a", " evil"),))
    cookies = RawRequest("GET", "/", "s.test", (("cookie", "debug=1"), ("cookie", "x=y")))
    sent = [replace(request, protocol=protocol) for request in (padded, cookies) for protocol in (H2C, H2)]
    for target in envoy.targets:
        envoy.load(checked, target)
        comparisons = compare(checked, envoy.send_all(sent), NOW, {})
        assert all("status: interpreter 403, envoy" in c.differences[0] for c in comparisons), comparisons


def test_the_generated_suite_catches_a_planted_http2_bug(http2_read_as_http1, envoy, world):
    with pytest.raises(AssertionError, match=r"h2c?: Envoy and the interpreter disagree"):
        differential(envoy, world, 100, Counter(), shrink=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.property.strategies import write_world

    return write_world(tmp_path_factory.mktemp("world"))
