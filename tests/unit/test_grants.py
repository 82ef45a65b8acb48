"""Grants: a `grant` is the allow rule `grant/NAME` that holds only inside its window, read from
the request's time by the interpreter, the Lua script (os.time) and the native filter (time(NULL));
RBAC, which has no clock, refuses it and `auto` gives the service's allow side to Lua. The golden
files under tests/golden/diagnostics/grants*/ show every diagnostic rendered."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from click.testing import CliRunner

from policyc import grants
from policyc import nodes as n
from policyc.backends import compile_outputs, plan_service
from policyc.backends.lua import service_script
from policyc.backends.native import service_section
from policyc.cli import main
from policyc.interpret import evaluate
from policyc.interpret.input import Caller, StandIns
from policyc.ops.deploy import watch
from policyc.pipeline import load_and_check
from policyc.source import Source
from policyc.syntax import parse
from policyc.syntax.printer import format_file, utc
from tests.lua.stand_in import envoy_request, run_script

START, END = 32503680000, 32503694400  # 3000-01-01T00:00:00Z and 04:00:00Z
POLICY = '''issuer idp {
    url "https://idp.example.com"
    jwks "https://idp.example.com/jwks.json"
}

service orders {
    hosts "orders.internal"
    upstream "127.0.0.1:8080"

    allow "health" when authenticated and path == "/health"
    deny "no-admin" when path prefix "/debug/admin"
}

grant debug {
    service orders
    who token.sub == "alice"
    what method == GET and path prefix "/debug/"
    from "3000-01-01T00:00:00Z"
    until "3000-01-01T04:00:00Z"
    requested by "alice"
    approved by "bob"
    reason "INC-4711"
}
'''


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "main.policy"
    path.write_text(POLICY, encoding="utf-8")
    return path


def test_a_grant_round_trips_through_the_printer():
    text = POLICY.split("grant debug")[0] + "grant debug" + POLICY.split("grant debug")[1]
    file, problems = parse(Source("main.policy", text))
    assert not problems
    assert format_file(file) == text
    grant = file.items[-1]
    assert isinstance(grant, n.Grant) and grant.value(n.GrantKey.APPROVED_BY) == "bob"


def test_the_signed_text_ignores_layout_but_not_meaning():
    one, _ = parse(Source("a.policy", POLICY))
    other, _ = parse(Source("b.policy", POLICY.replace("    who", "  # a comment\n    who").replace('  "', ' "')))
    widened, _ = parse(Source("c.policy", POLICY.replace('"/debug/"', '"/"')))
    assert grants.signed_text(one.items[-1]) == grants.signed_text(other.items[-1])
    assert grants.signed_text(one.items[-1]) != grants.signed_text(widened.items[-1])


@pytest.mark.parametrize(("text", "seconds"), [
    ("3000-01-01T00:00:00Z", START), ("3000-01-01T02:00:00+02:00", START), ("3000-01-01t00:00:00z", START),
    ("3000-01-01T00:00:00", None), ("3000-01-01T00:00:00.5Z", None), ("3000-02-30T00:00:00Z", None), ("", None),
    ("9999-12-31T23:59:59Z", 253402300799), ("9999-12-31T23:59:59-01:00", None), ("1969-12-31T23:59:59Z", None),
])
def test_times_are_rfc3339_with_a_zone_in_whole_seconds(text, seconds):
    assert grants.parse_time(text) == seconds


@pytest.mark.parametrize(("text", "seconds"), [("8h", 28800), ("90m", 5400), ("1d12h", 129600), ("30s", 30),
                                               ("8", None), ("h", None), ("", None), ("8 hours", None)])
def test_durations(text, seconds):
    assert grants.parse_duration(text) == seconds


def _decide(policy, path: str, now: float, sub: str = "alice"):
    pipeline = load_and_check([str(policy)])
    assert pipeline.ok, pipeline.diagnostics
    built = StandIns(pipeline.checked, now).build({"method": "GET", "path": path, "host": "orders.internal"},
                                                  Caller("idp", {"sub": sub}))
    return evaluate(pipeline.checked, built.request, now, built.keys)


@pytest.mark.parametrize(("now", "allowed"), [(START - 1, False), (START, True), (END - 1, True), (END - 0.001, True),
                                              (END, False), (END + 1, False)])
def test_the_interpreter_allows_by_the_grant_only_inside_its_window(policy, now, allowed):
    decision = _decide(policy, "/debug/orders", now)
    assert (decision.status, decision.rule) == ((200, "grant/debug") if allowed else (403, None))


def test_deny_rules_still_win_over_a_grant(policy):
    assert _decide(policy, "/debug/admin", START).rule == "no-admin"
    assert _decide(policy, "/debug/orders", START, sub="mallory").reason == "default-deny"


def test_rbac_refuses_a_grant_and_auto_puts_its_allow_side_on_lua(policy):
    checked = load_and_check([str(policy)]).checked
    refused = compile_outputs(checked, "rbac").diagnostics
    assert [(d.code, d.span.line) for d in refused] == [("rbac/unsupported", 18)]  # at the grant's `from`
    plan = plan_service(checked, checked.services["orders"], "auto")
    assert (plan.deny, plan.allow) == ("rbac", "lua")


def test_lua_and_native_read_the_window_per_request(policy):
    checked = load_and_check([str(policy)]).checked
    assert f"request.within(q, {START}, {END})" in service_script(checked, checked.services["orders"])
    assert f"time {START} {END}" in service_section(checked, checked.services["orders"])


@pytest.mark.parametrize(("clock", "decision"), [(START - 1, "default-deny"), (START, "allow"),
                                                 (END - 1, "allow"), (END, "default-deny")])
def test_the_lua_script_reads_os_time(policy, clock, decision):
    checked = load_and_check([str(policy)]).checked
    script = service_script(checked, checked.services["orders"])
    # The clock stood still at `clock`: the script must read it through os.time, nothing else.
    script = f"os.time = function() return {clock} end\n" + script
    request = envoy_request("GET", "/debug/orders", authority="orders.internal", claims={"sub": "alice"})
    assert run_script(script, request).metadata["policyc"]["decision"] == decision


def test_eval_at_takes_an_rfc3339_time(policy):
    request = '{"method": "GET", "path": "/debug/orders", "host": "orders.internal"}'
    args = ["eval", str(policy), "--request", "-", "--issuer", "idp", "--claim", "sub=alice", "--json"]
    inside = CliRunner().invoke(main, [*args, "--at", "3000-01-01T03:59:59Z"], input=request)
    after = CliRunner().invoke(main, [*args, "--at", "3000-01-01T04:00:00Z"], input=request)
    assert json.loads(inside.output)["rule"] == "grant/debug"
    assert json.loads(after.output)["reason"] == "default-deny"
    both = CliRunner().invoke(main, [*args, "--at", "3000-01-01T04:00:00Z", "--now", "1"], input=request)
    assert both.exit_code == 2 and "--at or --now" in both.output


# ---------------------------------------------------------------- request, approve, list, deploy

MAIN = '''grants {
    max window "8h"
    key file "keys/grants.pub"
}

service orders {
    hosts "orders.internal"
    upstream "127.0.0.1:8080"
    allow public "health" when path == "/health"
}
'''


def _run(*args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args))
    finally:
        os.chdir(old)


def test_request_approve_use_and_tamper(tmp_path):
    (tmp_path / "main.policy").write_text(MAIN, encoding="utf-8")
    assert _run("grant", "keygen", "keys/grants", cwd=tmp_path).exit_code == 0
    requested = _run("grant", "request", "grants/debug.policy", "--name", "debug", "--service", "orders",
                     "--who", 'header "x-user" == "alice"', "--what", 'path prefix "/debug/"', "--for", "2h",
                     "--reason", "INC-4711", "--requested-by", "alice", cwd=tmp_path)
    assert requested.exit_code == 0, requested.output
    codes = {d.code for d in load_and_check([str(tmp_path)]).diagnostics}
    assert codes == {"grant/no-approver", "grant/unsigned"}  # refused until approved
    self_approved = _run("grant", "approve", "grants/debug.policy", "--approver", "Alice", "--key", "keys/grants",
                         cwd=tmp_path)
    assert self_approved.exit_code == 1 and "for themselves" in self_approved.output
    approved = _run("grant", "approve", "grants/debug.policy", "--approver", "bob", "--key", "keys/grants",
                    cwd=tmp_path)
    assert approved.exit_code == 0, approved.output
    assert load_and_check([str(tmp_path)]).ok
    listed = _run("grants", ".", "--json", cwd=tmp_path)
    assert json.loads(listed.stdout) | {"from": None, "until": None} == {
        "name": "debug", "service": "orders", "state": "active", "from": None, "until": None,
        "approved_by": "bob", "reason": "INC-4711"}
    grant_file = tmp_path / "grants" / "debug.policy"
    grant_file.write_text(grant_file.read_text().replace('"/debug/"', '"/"'), encoding="utf-8")
    assert [d.code for d in load_and_check([str(tmp_path)]).diagnostics] == ["grant/bad-signature"]


def test_a_request_that_is_no_grant_is_refused(tmp_path):
    result = _run("grant", "request", "g.policy", "--name", "g", "--service", "orders", "--who", "token.sub ==",
                  "--what", "authenticated", "--for", "1h", "--reason", "x", cwd=tmp_path)
    assert result.exit_code == 2 and "does not parse" in result.output and not (tmp_path / "g.policy").exists()


def test_grants_lists_active_upcoming_and_expired(tmp_path):
    text = POLICY + POLICY[POLICY.index("grant debug"):].replace("grant debug", "grant later").replace(
        "3000-01-01T00", "3000-01-02T00").replace("3000-01-01T04", "3000-01-02T04")
    (tmp_path / "main.policy").write_text(text, encoding="utf-8")
    listed = _run("grants", ".", "--at", "3000-01-01T01:00:00Z", cwd=tmp_path).stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [["active", "debug"], ["upcoming", "later"]]
    listed = _run("grants", ".", "--at", "3000-01-01T05:00:00Z", cwd=tmp_path).stdout.splitlines()
    assert [line.split()[:2] for line in listed] == [["upcoming", "later"], ["expired", "debug"]]


def test_a_deploy_leaves_out_ended_grants_and_watch_redeploys_at_a_grants_end(tmp_path):
    end = int(time.time()) + 2
    (tmp_path / "main.policy").write_text(POLICY.replace("3000-01-01T00:00:00Z", utc(end - 3600)).replace(
        "3000-01-01T04:00:00Z", utc(end)), encoding="utf-8")
    checked = load_and_check([str(tmp_path / "main.policy")]).checked
    assert grants.next_end(checked, end - 1) == end and grants.next_end(checked, end) is None
    assert [r.name for r in grants.without_ended(checked, end).services["orders"].rules] == ["health", "no-admin"]
    deployed, stop = [], threading.Event()

    def report(deployment):
        deployed.append(deployment)
        if len(deployed) == 2:
            stop.set()

    thread = threading.Thread(target=watch, args=([str(tmp_path / "main.policy")], tmp_path / "out", report),
                              kwargs={"stop": stop, "interval": 0.05})
    thread.start()
    thread.join(10)
    stop.set()
    assert len(deployed) == 2 and deployed[0].version != deployed[1].version  # no file changed
    assert time.time() >= end and "grant/debug" not in (tmp_path / "out" / "rds.yaml").read_text()
