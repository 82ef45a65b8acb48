"""Fail closed under faults, in a real Envoy: Envoy's Lua filter lets a request through when a script
raises, so a fault anywhere in the emitted Lua must still answer 403 and never reach the upstream.

Each fault makes one function raise as its first statement: every function of the runtime
(lua_runtime/), the script's entry point and a rule's test. Faults inside the decision are caught
by the script itself; the entry point, the wrapper and the 403 answer are caught by the RBAC
filter behind the script, which admits only requests the script recorded a passing verdict for; a
fault while the script loads makes Envoy refuse the listener and keep the one it had.
The requests (faults/faults.cases.yaml) meet every function; a fault must change at least one
decision (status, reason or rule), or it was not tested.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from policyc.backends import lua
from policyc.cases.casefile import build_request, load_case_file
from policyc.pipeline import load_and_check
from policyc.proof.replay import EnvoyUnderTest
from tests import CASE_KEYS

pytestmark = pytest.mark.envoy

FOLDER = Path(__file__).parent / "faults"
FUNCTION = re.compile(r"^(?:local )?function ([\w.]+)\(.*\)\n", re.MULTILINE)
# Only an IPv6 peer reaches these, and the tests' Envoy listens on 127.0.0.1 alone; the
# stand-in tests (tests/lua) run them.
UNREACHABLE = {"net.lua:ipv6_bytes", "net.lua:hex_groups"}


def _runtime_faults() -> dict[str, tuple[str, str]]:
    """`module.lua:function` → (module, its source with that function raising first thing)."""
    faults = {}
    for module, source in lua.runtime_modules().items():
        for match in FUNCTION.finditer(source):
            raising = f'  error("injected into {match.group(1)}")\n'
            faults[f"{module}.lua:{match.group(1)}"] = (module, source[:match.end()] + raising + source[match.end():])
    return faults


RUNTIME_FAULTS = _runtime_faults()
SCRIPT_FAULTS = {  # the emitted script's own code: the entry point, and every rule's test
    "entry point": ("function envoy_on_request(handle)\n", 'function envoy_on_request(handle)\n  error("injected")\n'),
    "a rule's test": ("test = function(q) return ", 'test = function(q) error("injected") return '),
}


@pytest.fixture(scope="module")
def corpus():
    # The keys and catalog are the decision corpus's, outside this folder.
    catalog = CASE_KEYS.parent / "membership" / "catalog"
    checked = load_and_check([str(FOLDER)], allowed_roots=[CASE_KEYS, catalog]).checked
    case_file = load_case_file(str(FOLDER / "faults.cases.yaml"))
    now = time.time()
    requests = [build_request(case.request, checked, case_file.keys, now) for case in case_file.cases]
    return checked, case_file.cases, requests


@pytest.fixture(scope="module")
def envoy(tmp_path_factory):
    with EnvoyUnderTest(tmp_path_factory.mktemp("faults")) as envoy:
        yield envoy


@pytest.fixture(scope="module", params=["lua", "auto"])
def healthy(request, envoy, corpus):
    """The target, and what Envoy answers each request without faults: what the cases expect."""
    checked, cases, requests = corpus
    envoy.load(checked, request.param)
    observed = envoy.send_all(requests)
    for case, seen in zip(cases, observed, strict=True):
        assert seen.status == case.expect["status"], case.name
    return request.param, observed


def _assert_fails_closed(envoy, corpus, healthy, monkeypatch, name, faulty):
    """Load the healthy policies, then the faulty ones (`name` replaced by `faulty` in lua.py)."""
    checked, cases, requests = corpus
    target, before = healthy
    envoy.load(checked, target)
    monkeypatch.setattr(lua, name, faulty)
    try:
        envoy.load(checked, target)
    except RuntimeError as refused:
        # A fault that raises while the script loads (building the rule index): Envoy refuses the
        # listener and keeps deciding with the one it had.
        assert "script load error" in str(refused)
        after = envoy.send_all(requests)
        assert [(a.status, a.rule) for a in after] == [(b.status, b.rule) for b in before]
        return
    after = envoy.send_all(requests)
    changed = [case.name for case, was, now in zip(cases, before, after, strict=True)
               if (was.status, was.reason, was.rule) != (now.status, now.reason, now.rule)]
    for case, was, now in zip(cases, before, after, strict=True):
        assert now.status in (was.status, 403), f"{case.name}: {was.status} became {now.status}"
        assert not now.reached_upstream or was.reached_upstream, f"{case.name} reached the upstream"
    assert changed, "the fault changed no decision: no request met it"


@pytest.mark.parametrize("fault", sorted(set(RUNTIME_FAULTS) - UNREACHABLE))
def test_a_fault_in_the_runtime_fails_closed(fault, envoy, corpus, healthy, monkeypatch):
    module, source = RUNTIME_FAULTS[fault]

    def faulty():
        return lua.bundle({**lua.runtime_modules(), module: source})

    _assert_fails_closed(envoy, corpus, healthy, monkeypatch, "runtime_source", faulty)


@pytest.mark.parametrize("fault", sorted(SCRIPT_FAULTS))
def test_a_fault_in_the_script_fails_closed(fault, envoy, corpus, healthy, monkeypatch):
    original, injected = SCRIPT_FAULTS[fault]
    script = lua.service_script

    def faulty_script(*args, **kwargs):
        source = script(*args, **kwargs)
        assert original in source, "the fault must replace real code"
        return source.replace(original, injected)

    _assert_fails_closed(envoy, corpus, healthy, monkeypatch, "service_script", faulty_script)


def test_every_runtime_function_gets_a_fault():
    assert len(RUNTIME_FAULTS) >= 20 and set(RUNTIME_FAULTS) >= UNREACHABLE
