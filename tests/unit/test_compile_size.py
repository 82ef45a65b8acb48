"""What `policyc compile` writes, and the work it takes: the listener written once, each route
holding exactly the rules its paths can match, each rule's RBAC principal built once (planning
included) and a named condition's once wherever rules use it, what a stage built counted as old
once the collector runs again, and work
that grows with the policy rather than with its square."""

import gc
import time
from pathlib import Path

import pytest

from policyc import collector
from policyc import nodes as n
from policyc.backends import compile_outputs, envoy, lua, plan_service, rbac, resolve
from policyc.pipeline import load_and_check

EXAMPLE = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
HCM = envoy._TYPES["hcm"]


@pytest.fixture(scope="module")
def example():
    return load_and_check([str(EXAMPLE)]).checked


def checked_text(tmp_path: Path, rules: str):
    (tmp_path / "p.policy").write_text(f'service s {{\n    hosts ["s.test"]\n    upstream "127.0.0.1:1"\n{rules}}}\n'
                                       'condition reader = method in [GET, HEAD]\n')
    pipeline = load_and_check([str(tmp_path)])
    assert pipeline.ok, pipeline.diagnostics
    return pipeline.checked


def test_the_listener_is_written_once(example):
    # envoy.yaml runs as is and holds it; no LDS file beside it repeats it.
    files = compile_outputs(example).files
    assert sum(text.count(HCM) for text in files.values()) == 1
    assert files["envoy.yaml"].count(HCM) == 1


def test_nothing_is_written_twice_unless_asked(example):
    # Each service's filters live in envoy.yaml; the copies under services/ are for an Envoy of
    # one's own, written only with --parts.
    assert sorted(compile_outputs(example).files) == ["envoy.yaml", "targets.json"]
    parts = compile_outputs(example, parts=True).files
    assert {"services/payments/policy.lua", "services/docs/rbac-allow.yaml"} <= parts.keys()


def naive_shares(checked, service: n.Service) -> dict:
    """Every rule tested against every route: the definition `route_shares` computes faster."""
    needed = {rule.name: lua.required_prefixes(checked, rule.expr) for rule in service.rules}
    routes = sorted({p for found in needed.values() if found for p in found} | {"/"}, key=lambda p: (-len(p), p))
    return {route: tuple(rule for rule in service.rules
                         if needed[rule.name] is None or any(route.startswith(p) for p in needed[rule.name]))
            for route in routes}


SHAPES = """\
    allow "a" when path prefix "/a"
    allow "ab" when path prefix "/ab/"
    allow "a-b" when path prefix "/a/b/" and reader
    deny "a-b-c" when path == "/a/b/c"
    allow "either" when path prefix "/a/b/" or path glob "/x/*/y"
    allow "items" when path in ["/items/1", "/items/2", "/a/b/c"]
    allow "glob" when path glob "/a/**"
    allow "read" when reader and path prefix "/ab/c"
"""


@pytest.mark.parametrize("anywhere", [0, 1, 4], ids=["no rule without a path", "one", "four"])
def test_each_route_holds_the_rules_its_paths_can_match(tmp_path, anywhere):
    rules = SHAPES + "".join(f'    allow "any{i}" when header "x-{i}" == "1"\n' for i in range(anywhere))
    checked = checked_text(tmp_path, rules)
    service = checked.services["s"]
    expected = naive_shares(checked, service)
    if sum(map(len, expected.values())) > resolve._MAX_COPIES_PER_RULE * len(service.rules):
        expected = {"/": service.rules}  # four rules in every route: one route is smaller
    assert anywhere < 4 or expected == {"/": service.rules}
    assert resolve.route_shares(checked, service) == expected
    assert list(resolve.route_shares(checked, service)) == list(expected)  # longest prefix first


def _unversioned(route: dict) -> dict:
    return {key: value for key, value in route.items() if key != "metadata"}


def _host(checked, options: envoy.Options) -> dict:
    hcm = compile_outputs(checked, "rbac", options).bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
    return next(h for h in hcm["filters"][0]["typed_config"]["route_config"]["virtual_hosts"] if h["name"] == "s")


def test_a_host_of_many_prefixes_finds_its_route_in_a_prefix_map(tmp_path):
    # Envoy tries listed routes one by one; from PREFIX_MAP_FROM prefixes on, a map finds the
    # longest at once. Its refusal routes stay first, as the matcher's list.
    checked = checked_text(tmp_path, SHAPES)
    prefixes = list(resolve.route_shares(checked, checked.services["s"]))
    listed = _host(checked, envoy.Options(prefix_map_from=len(prefixes) + 1))
    mapped = _host(checked, envoy.Options(prefix_map_from=len(prefixes)))
    assert "matcher" not in listed and [r["match"].get("prefix") for r in listed["routes"] if "route" in r] == prefixes
    assert "routes" not in mapped
    refusals = [r for r in listed["routes"] if "route" not in r]
    matchers = mapped["matcher"]["matcher_list"]["matchers"]
    assert [m["on_match"]["action"]["typed_config"] for m in matchers] == [
        {"@type": envoy._TYPES["route"], **r} for r in refusals]
    prefix_map = mapped["matcher"]["on_no_match"]["matcher"]["matcher_tree"]["prefix_match_map"]["map"]
    assert sorted(prefix_map) == sorted(prefixes)
    # The same routes but for the policy version their metadata carries: a hash of the output.
    assert [_unversioned(prefix_map[p]["action"]["typed_config"]) for p in prefixes] == [
        _unversioned({"@type": envoy._TYPES["route"], **r}) for r in listed["routes"] if "route" in r]


def test_a_refusal_no_predicate_tests_exactly_goes_with_each_prefix_route(tmp_path):
    # A route's header matcher tests each value of a repeated header, a matcher's predicate them
    # all joined: the refusal of padded values stays a route, tried before each prefix's own.
    checked = checked_text(tmp_path, SHAPES + '    allow "tenant" when header "x-tenant" == "acme"\n')
    listed = _host(checked, envoy.Options(prefix_map_from=10**6))["routes"]
    mapped = _host(checked, envoy.Options(prefix_map_from=1))["matcher"]
    padded = [r for r in listed if r.get("direct_response", {}).get("body", {}).get("inline_string", "").startswith(
        "header value with surrounding whitespace")]
    assert len(padded) == 1 and listed.index(padded[0]) == len([r for r in listed if "route" not in r]) - 1
    assert len(mapped["matcher_list"]["matchers"]) == len(listed) - len(resolve.route_shares(checked,
                                                                                           checked.services["s"])) - 1
    for action in mapped["on_no_match"]["matcher"]["matcher_tree"]["prefix_match_map"]["map"].values():
        padded_route, own = action["action"]["typed_config"]["routes"]
        assert padded_route == padded[0] and "route" in own


@pytest.mark.parametrize("match", [{"path": "/x"}, {"safe_regex": {"regex": "/x.*"}},
                                   {"prefix": "/", "headers": [{"name": "x", "exact_match": "1"}]}], ids=repr)
def test_a_route_match_no_predicate_was_written_for_is_refused(match):
    # A refusal route of a new form must get its own translation, not a guess at one.
    with pytest.raises(ValueError, match="no matcher predicate"):
        envoy.route_matcher([{"match": match, "direct_response": {"status": 400}}], [])


def test_route_shares_of_a_large_service_take_linear_time(tmp_path):
    # Testing every rule against every route took minutes for one service of 20,000 rules.
    checked = checked_text(tmp_path, 'allow "x" when path prefix "/x/"\n')
    rules = tuple(n.Rule(n.Effect.ALLOW, False, f"r{i}", n.PathTest(n.Op.PREFIX, (f"/api/r{i}/",)))
                  for i in range(20_000))
    anywhere = n.Rule(n.Effect.ALLOW, False, "any", n.HeaderPresent("x-a"))
    service = n.Service("s", (), (anywhere, *rules))
    start = time.process_time()
    shares = resolve.route_shares(checked, service)
    assert time.process_time() - start < 10
    assert len(shares) == 20_001 and shares["/api/r7/"] == (anywhere, rules[7]) and shares["/"] == (anywhere,)


def test_each_rule_principal_is_built_once_however_many_routes_hold_it(tmp_path, monkeypatch):
    checked = checked_text(tmp_path, "".join(f'    allow "r{i}" when reader and path prefix "/r/{i}/"\n'
                                             for i in range(10)) + '    allow "any" when reader\n')
    service, built = checked.services["s"], []
    original = rbac.PrincipalBuilder.build
    monkeypatch.setattr(rbac.PrincipalBuilder, "build", lambda self, expr: built.append(expr) or original(self, expr))
    # Planning (`auto` asks whether RBAC can express each rule) builds them; the routes reuse them.
    filters = envoy.service_filters(checked, service, plan_service(checked, service, "auto"))
    assert len(filters.rbac_by_prefix) == 11  # "any" is in all eleven routes
    assert len([e for e in built if any(e is rule.expr for rule in service.rules)]) == len(service.rules)


def test_a_named_condition_is_one_object_wherever_rules_use_it(tmp_path):
    # Laid out once by the YAML writer, then copied into every policy that holds it.
    checked = checked_text(tmp_path, '    allow "a" when reader and path prefix "/a/"\n'
                                     '    allow "b" when reader and path prefix "/b/"\n')
    builder = rbac.PrincipalBuilder(checked)
    a, b = (builder.policy(rule)["principals"][0]["and_ids"]["ids"][0] for rule in checked.services["s"].rules)
    assert a is b and a == {"or_ids": {"ids": [{"header": {"name": ":method", "string_match": {"exact": m}}}
                                               for m in ("GET", "HEAD")]}}


def test_the_collector_is_paused_while_compiling_and_restored_after(example, monkeypatch):
    seen = []
    original = envoy.service_filters
    monkeypatch.setattr(envoy, "service_filters", lambda *a: seen.append(gc.isenabled()) or original(*a))
    assert gc.isenabled()
    assert not compile_outputs(example).diagnostics
    assert seen and not any(seen) and gc.isenabled()


def test_what_a_paused_stage_built_is_counted_as_old():
    # Left in the youngest generation, all of it would be scanned by the first collection after.
    with collector.paused():
        built = [[i] for i in range(1000)]
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert gc.isenabled() and all(id(item) in oldest for item in built)
