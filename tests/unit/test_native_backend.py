"""The native backend: the exact config text of the native filter (strings in hex, globs in their
parsed form, networks as bytes, named conditions numbered per service after those they use), and
its place in the assembly: one dynamic-module filter, off
wherever a service is not native and on every refusal route and the catch-all, `targets.json`
saying `native`, nothing behind it (every route forwarding to a native service runs it), the
verdict read back from the access log as Lua's is, and the module's network filter (every SAN of
a client certificate) before the connection manager when a native service tests `peer.uri` or
`peer.dns`."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.backends import compile_dynamic, compile_outputs, envoy, native, plan_service
from policyc.backends.accesslog import logged_decision
from policyc.backends.envoy import Plan
from policyc.cli import main
from policyc.credentials.certs import issue, make_ca
from policyc.pipeline import load_and_check
from policyc.semantics.headers import PAYLOAD_HEADER

SERVICE = 'service {name} {{\n    hosts "{name}.test"\n    upstream "127.0.0.1:8080"\n{rules}}}\n'


def checked_of(tmp_path: Path, text: str):
    (tmp_path / "p.policy").write_text(text, encoding="utf-8")
    pipeline = load_and_check([str(tmp_path / "p.policy")])
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    return pipeline.checked


def section(tmp_path: Path, rules: str, before: str = "") -> str:
    checked = checked_of(tmp_path, before + SERVICE.format(name="s", rules=rules))
    return native.service_section(checked, checked.services["s"])


def test_hex_strings():
    assert native.hex_string("") == "x"
    assert native.hex_string("/a b") == "x2f612062"
    assert native.hex_string("é\n") == "xc3a90a"  # UTF-8 bytes, a newline as any other byte


def test_whole_sections(tmp_path):
    checked = checked_of(tmp_path, SERVICE.format(name="web", rules=(
        '    deny "internal" when source in ["10.0.0.0/8"] and not header "x-ok" prefix "yes"\n'
        '    allow public "health" when path == "/health" or header "x-t" present\n'
        '    allow public "api" when method in [GET, HEAD] and path prefix "/api/"\n'
    )) + SERVICE.format(name="dry", rules='    mode dry-run\n    allow public "all" when header "x-e" suffix ""\n'))
    assert "".join(native.service_section(checked, checked.services[name]) for name in ("dry", "web")) == (
        "service x647279\nmode dry-run\nallow x616c6c header x782d65 suffix x\nend\n"
        "service x776562\nmode enforce\n"
        "deny x696e7465726e616c and 2 source 1 4/8/0a000000 not header x782d6f6b prefix x796573\n"
        # Allow rules by name, not file order.
        "allow x617069 and 2 method 2 x474554 x48454144 path prefix x2f6170692f\n"
        "allow x6865616c7468 or 2 path eq 1 x2f6865616c7468 present x782d74\n"
        # Rules 0 `internal`, 1 `api`, 2 `health`: a path under /api/ may match all three, any
        # other only the two that need no prefix.
        "share x2f 2 0 2\n"
        "share x2f6170692f 3 0 1 2\n"
        "end\n")


def test_header_tests(tmp_path):
    text = section(tmp_path, '    allow public "h" when header "x-a" in ["1", "2"] and header "x-a" == "3"\n')
    assert "allow x68 and 2 header x782d61 eq 2 x31 x32 header x782d61 eq 1 x33\n" in text


@pytest.mark.parametrize(("pattern", "rendered"), [
    ("/a/x*y/**", "glob 4 seg 1 x seg 1 x61 seg 2 x78 x79 any"),
    ("/**", "glob 2 seg 1 x any"),
    ("/*", "glob 2 seg 1 x seg 2 x x"),
    ("/a/*.json", "glob 3 seg 1 x seg 1 x61 seg 2 x x2e6a736f6e"),
    ("/a/", "glob 3 seg 1 x seg 1 x61 seg 1 x"),
])
def test_globs_in_their_parsed_form(tmp_path, pattern, rendered):
    assert f"allow x67 path {rendered}\n" in section(tmp_path, f'    allow public "g" when path glob "{pattern}"\n')


@pytest.mark.parametrize(("cidr", "rendered"), [
    ("127.0.0.1/32", "4/32/7f000001"),
    ("0.0.0.0/0", "4/0/00000000"),
    ("2001:db8::/32", "6/32/20010db8000000000000000000000000"),
    ("::1/128", "6/128/00000000000000000000000000000001"),
])
def test_networks_as_bytes(tmp_path, cidr, rendered):
    assert f"allow x6e source 1 {rendered}\n" in section(tmp_path, f'    allow public "n" when source in ["{cidr}"]\n')


def test_named_conditions_come_after_those_they_use_and_once(tmp_path):
    conditions = ('condition reads = method in [GET]\n'
                  'condition api = reads and path prefix "/api/"\n'
                  'condition unused = path == "/x"\n')
    text = section(tmp_path, '    allow public "b" when api or reads\n    allow public "a" when reads\n', conditions)
    assert text == ("service x73\nmode enforce\n"
                    "cond 0 method 1 x474554\n"
                    "cond 1 and 2 ref 0 path prefix x2f6170692f\n"
                    "allow x61 ref 0\nallow x62 or 2 ref 1 ref 0\nend\n")


def test_each_section_numbers_the_conditions_it_uses(tmp_path):
    checked = checked_of(tmp_path, 'condition a = path == "/a"\ncondition b = path == "/b"\n'
                         + SERVICE.format(name="one", rules='    allow public "r" when b\n')
                         + SERVICE.format(name="two", rules='    allow public "r" when a or b\n'))
    one, two = (native.service_section(checked, checked.services[name]) for name in ("one", "two"))
    assert "cond 0 path eq 1 x2f62\nallow x72 ref 0\n" in one
    assert "cond 0 path eq 1 x2f61\ncond 1 path eq 1 x2f62\nallow x72 or 2 ref 0 ref 1\n" in two


def test_grpc_atoms_are_path_tests(tmp_path):
    text = section(tmp_path, '    allow public "g" when grpc method "shop.v1.Orders/Get"\n')
    assert "allow x67 path eq 1 x2f73686f702e76312e4f72646572732f476574\n" in text


ISSUER = 'issuer idp {\n    url "https://idp.test"\n    jwks "https://idp.test/jwks"\n}\n'


@pytest.mark.parametrize(("condition", "rendered"), [
    ("authenticated", "token"),
    ("issuer idp", "claim 1 x697373 eq 1 x68747470733a2f2f6964702e74657374"),
    ('token.sub == "a"', "claim 1 x737562 eq 1 x61"),
    ('token.sub in ["a", "b"]', "claim 1 x737562 eq 2 x61 x62"),
    ('token.a.b prefix "p"', "claim 2 x61 x62 prefix x70"),
    ('token["x.y"] suffix ""', "claim 1 x782e79 suffix x"),
    ('token.roles contains "ops"', "claim 1 x726f6c6573 contains 1 x6f7073"),
    ("token.admin == true", "claim 1 x61646d696e true"),
    ("token.admin == false", "claim 1 x61646d696e false"),
    ('header "x-t" == token.t', "header x782d74 claim 1 x74"),
])
def test_token_atoms_are_claim_tests(tmp_path, condition, rendered):
    assert f"allow x61 {rendered}\n" in section(tmp_path, f'    allow "a" when {condition}\n', ISSUER)


def test_without_an_issuer_token_atoms_never_hold(tmp_path):
    """No issuer: no jwt_authn, so no token, and nothing reads the payload header a client sent."""
    rules = ('    allow "a" when authenticated or token.sub == "x" or token.f == true\n'
             '        or header "x-t" == token.t\n')
    assert "allow x61 or 4 or 0 or 0 or 0 or 0\n" in section(tmp_path, rules)


def test_member_is_the_catalog_callers_claims(tmp_path):
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "org.yaml").write_text(
        "apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata: {name: sre}\nspec: {type: team, children: []}\n"
        "---\napiVersion: backstage.io/v1alpha1\nkind: User\nmetadata: {name: bob}\nspec: {memberOf: [sre]}\n")
    before = ('catalog "catalog"\nissuer idp {\n    url "https://idp.test"\n    jwks "https://idp.test/jwks"\n'
              '    catalog users\n}\n')
    text = section(tmp_path, '    allow "m" when member "group:sre"\n', before)
    iss = "claim 1 x697373 eq 1 x68747470733a2f2f6964702e74657374"
    sub = "claim 1 x737562 eq 1 " + native.hex_string("user:default/bob")
    ent = "claim 1 x656e74 contains 1 " + native.hex_string("group:default/sre")
    assert f"allow x6d and 2 {iss} or 2 {sub} {ent}\n" in text


@pytest.mark.parametrize(("condition", "rendered"), [
    ("peer trusted", "peer trusted"),
    ("peer trusted mesh", "peer trusted"),
    ('peer.subject == "CN=a,O=b"', "peer subject eq 1 x434e3d612c4f3d62"),
    ('peer.subject in ["CN=a", "O=b"]', "peer subject eq 2 x434e3d61 x4f3d62"),
    ('peer.subject prefix "CN="', "peer subject prefix x434e3d"),
    ('peer.subject suffix ",O=b"', "peer subject suffix x2c4f3d62"),
    ('peer.uri == "spiffe://a"', "peer uri eq 1 x7370696666653a2f2f61"),
    ('peer.uri in ["u:a", "u:b"]', "peer uri eq 2 x753a61 x753a62"),
    ('peer.uri prefix "spiffe://"', "peer uri prefix x7370696666653a2f2f"),
    ('peer.uri suffix "/bot"', "peer uri suffix x2f626f74"),
    ('peer.dns == "a.b"', "peer dns eq 1 x612e62"),
    ('peer.dns in ["a.b", "*.b"]', "peer dns eq 2 x612e62 x2a2e62"),
    ('peer.dns prefix "a."', "peer dns prefix x612e"),
    ('peer.dns suffix ".b"', "peer dns suffix x2e62"),
])
def test_peer_atoms(tmp_path, condition, rendered):
    assert f"allow x61 {rendered}\n" in section(tmp_path, f'    allow "a" when {condition}\n', tls_and_trust(tmp_path))


def tls_and_trust(tmp_path: Path) -> str:
    """A listener certificate and a `trust` CA, written into `tmp_path`, as policy text."""
    ca = make_ca("mesh")
    leaf = issue(ca, "proxy.test", dns=["proxy.test"], server=True)
    for name, text in (("ca.pem", ca.cert_pem), ("leaf.pem", leaf.cert_pem), ("leaf.key", leaf.key_pem)):
        (tmp_path / name).write_text(text)
    return 'trust mesh { ca file "ca.pem" }\ntls { cert file "leaf.pem" key file "leaf.key" }\n'


def _network_filters(bootstrap: dict) -> list[str]:
    [listener] = bootstrap["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    return [f["name"] for f in chain["filters"]]


HCM = "envoy.filters.network.http_connection_manager"


@pytest.mark.parametrize(("rules", "target", "chain"), [
    ('    allow "a" when peer.uri == "spiffe://a"\n', "native", [envoy.PEER_FILTER, HCM]),
    ('    allow "a" when peer.dns suffix ".b"\n', "native", [envoy.PEER_FILTER, HCM]),
    ('    allow "a" when peer.uri == "spiffe://a"\n', "lua", [HCM]),
    ('    allow "a" when peer.uri == "spiffe://a"\n', "auto", [HCM]),
    ('    allow "a" when peer.subject == "CN=a"\n', "native", [HCM]),
    ('    allow "a" when peer trusted\n', "native", [HCM]),
    # Through a named condition; auto-native gives the service to native (RBAC cannot compare a
    # header with a claim), and the network filter comes with it.
    ('    allow "a" when bot and header "x-a" == token.sub\n', "auto-native", [envoy.PEER_FILTER, HCM]),
    ('    allow "a" when peer.dns prefix "x" and header "x-a" == token.sub\n', "auto", [HCM]),
])
def test_the_network_filter_comes_first_when_a_native_service_tests_sans(tmp_path, rules, target, chain):
    before = ISSUER + tls_and_trust(tmp_path) + 'condition bot = not peer.dns prefix "x"\n'
    checked = checked_of(tmp_path, before + SERVICE.format(name="s", rules=rules))
    compiled = compile_outputs(checked, target)
    assert _network_filters(compiled.bootstrap) == chain
    if chain[0] == envoy.PEER_FILTER:
        [listener] = compiled.bootstrap["static_resources"]["listeners"]
        assert listener["filter_chains"][0]["filters"][0]["typed_config"] == {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3."
                     "DynamicModuleNetworkFilter",
            "dynamic_module_config": {"name": "policyc_native"}, "filter_name": "peer_sans"}
        assert envoy.PEER_FILTER in compile_dynamic(checked, target, envoy.Options(), "/srv/p").files["lds.yaml"]


def test_jwt_authn_forwards_the_payload_to_the_native_filter_only(tmp_path):
    checked = checked_of(tmp_path, ISSUER + SERVICE.format(name="s", rules='    allow "a" when authenticated\n'))
    for target, forwarded in (("native", [PAYLOAD_HEADER]), ("lua", []), ("auto", [])):
        jwt = _listener(compile_outputs(checked, target).bootstrap)["http_filters"][0]["typed_config"]
        assert [p.get("forward_payload_header") for p in jwt["providers"].values() if p.get(
            "forward_payload_header")] == forwarded, target


def test_with_issuers_the_listeners_config_names_jwt_authn(tmp_path):
    """The filter decides a route whose rules read a token only behind jwt_authn, which its chain
    line names: through a listener without one (a hot reload's), they would read a client's header."""
    rules = '    allow "a" when authenticated\n'
    for issuer, line in ((ISSUER, "chain jwt\n"), ("", "")):
        checked = checked_of(tmp_path, issuer + SERVICE.format(name="s", rules=rules))
        filters = _listener(compile_outputs(checked, "native").bootstrap)["http_filters"]
        config = next(f for f in filters if f["name"] == envoy.NATIVE_FILTER)["typed_config"]["filter_config"]["value"]
        assert config == native.HEADER + line


@pytest.mark.parametrize("issuer", [ISSUER, ""])
def test_the_payload_header_never_goes_upstream_under_any_target(tmp_path, issuer):
    """On a hot reload the old listener's jwt_authn may still forward the payload while the new
    routes come from a policy without the native filter or without issuers: every route config
    takes the header off."""
    checked = checked_of(tmp_path, issuer + SERVICE.format(name="s", rules='    allow public "a" when path == "/"\n'))
    for target in ("native", "auto-native", "lua", "auto", "rbac"):
        routes = compile_dynamic(checked, target, envoy.Options(), "/srv/policyc").files["rds.yaml"]
        assert f'"request_headers_to_remove":\n  - "{PAYLOAD_HEADER}"' in routes, target


def _listener(bootstrap: dict) -> dict:
    [listener] = bootstrap["static_resources"]["listeners"]
    return listener["filter_chains"][0]["filters"][-1]["typed_config"]  # the connection manager


def test_the_assembly_holds_one_native_filter_and_nothing_else(tmp_path):
    """Native services rely on no other policy filter: the chain leaves them out (jwt_authn stays
    for issuers), and the filter's config names none beside it. The rules are each service's
    route's config."""
    checked = checked_of(tmp_path, SERVICE.format(name="a", rules='    allow public "r" when path == "/"\n')
                         + SERVICE.format(name="b", rules='    mode dry-run\n    allow public "r" when path == "/"\n'))
    compiled = compile_outputs(checked, "native", parts=True)
    filters = _listener(compiled.bootstrap)["http_filters"]
    assert [f["name"] for f in filters] == [envoy.NATIVE_FILTER, "envoy.filters.http.router"]
    config = filters[0]["typed_config"]
    assert config["dynamic_module_config"] == {"name": "policyc_native"}  # no path of this machine
    assert config["filter_config"] == {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                       "value": "policyc-native 5\n"}
    hosts = _listener(compiled.bootstrap)["route_config"]["virtual_hosts"]
    sections = {host["name"]: [route["typed_per_filter_config"][envoy.NATIVE_FILTER]["filter_config"]["value"]
                               for route in host["routes"] if "route" in route] for host in hosts}
    route_configs = {name: native.route_config(native.service_section(checked, checked.services[name]))
                     for name in "ab"}
    assert sections == {"a": [route_configs["a"]], "b": [route_configs["b"]], "no-service": []}
    assert compiled.files["targets.json"].count('"native"') == 4
    assert compiled.files["services/a/native.conf"] == route_configs["a"]


def _runs_native(host: dict, route: dict) -> bool:
    """Whether the native filter runs on `route`: the route's own config for it, else its host's,
    else the chain's (on)."""
    config = route.get("typed_per_filter_config", {}).get(
        envoy.NATIVE_FILTER, host.get("typed_per_filter_config", {}).get(envoy.NATIVE_FILTER, {}))
    return not config.get("disabled", False)


def test_beside_native_services_a_route_names_the_filters_it_relies_on(tmp_path):
    """The native filter runs on every service's route but the catch-all's and the refusal
    routes' (off for every host, on for its service routes): another engine's service's route
    names the filters it relies on (its config for the native filter, `relies`), for the native
    filter to check that its chain holds them."""
    checked = checked_of(tmp_path, "".join(SERVICE.format(name=name, rules='    allow public "r" when path == "/"\n')
                                           for name in "abc"))
    plans = {"a": "native", "b": "lua", "c": "rbac"}
    services = checked.services
    filters = {name: envoy.service_filters(checked, services[name], plan_service(checked, services[name], target))
               for name, target in plans.items()}
    hosts = {host["name"]: host for host in envoy.route_config(checked, filters, envoy.Options(), "v")["virtual_hosts"]}
    for host in hosts.values():
        assert host["typed_per_filter_config"][envoy.NATIVE_FILTER]["disabled"] is True
        assert {_runs_native(host, route) for route in host["routes"]} == ({False} if host["name"] == "no-service"
                                                                          else {False, True})
        for route in host["routes"]:
            assert _runs_native(host, route) == ("route" in route)
    route_configs = {name: {r["typed_per_filter_config"][envoy.NATIVE_FILTER]["filter_config"]["value"]
                            for r in hosts[name]["routes"] if "route" in r} for name in "abc"}
    assert route_configs == {"a": {native.route_config(native.service_section(checked, services["a"]))},
                             "b": {"policyc-native 5\nrelies lua rbac-allow\n"},
                             "c": {"policyc-native 5\nrelies rbac-allow\n"}}
    assert all("filters" not in r["metadata"]["filter_metadata"]["policyc"]
               for host in hosts.values() for r in host["routes"] if "metadata" in r)


@pytest.mark.parametrize("issuer", [ISSUER, ""])
def test_a_refusal_route_turns_off_only_the_filters_that_could_answer_before_it(tmp_path, issuer):
    """Every config on a route costs Envoy memory, so a refusal route turns off only what its host
    leaves on and could answer first: jwt_authn where there are issuers, the host's Lua script.
    The RBAC filters have configs on service routes alone, and pass without one."""
    checked = checked_of(tmp_path, issuer + "".join(
        SERVICE.format(name=name, rules='    allow public "r" when path == "/"\n') for name in "abc"))
    plans = {"a": "native", "b": "lua", "c": "rbac"}
    filters = {name: envoy.service_filters(checked, service, plan_service(checked, service, plans[name]))
               for name, service in checked.services.items()}
    hosts = envoy.route_config(checked, filters, envoy.Options(), "v")["virtual_hosts"]
    issuers = [envoy.JWT_FILTER] if checked.issuers else []
    expected = {"a": issuers, "b": [*issuers, envoy.LUA_FILTER], "c": issuers, "no-service": issuers}
    for host in hosts:
        for route in host["routes"]:
            if "direct_response" in route and route["direct_response"]["status"] == 400:
                off = route.get("typed_per_filter_config", {})
                assert sorted(off) == sorted(expected[host["name"]]) and all(c["disabled"] for c in off.values())


def test_a_chain_with_the_native_filter_holds_what_other_services_rely_on(tmp_path):
    checked = checked_of(tmp_path, "".join(SERVICE.format(name=name, rules='    deny "d" when path prefix "/x/"\n')
                                           for name in "abc"))
    plans = {"a": Plan("rbac", "rbac"), "b": Plan("lua", "lua"), "c": Plan("native", "native")}
    filters = {name: envoy.service_filters(checked, checked.services[name], plan) for name, plan in plans.items()}
    chains, configs = {}, {}
    for kept in (("a", "c"), ("b", "c"), ("c",), ("a", "b")):
        listener = envoy.listener(checked, {}, envoy.Options(), {name: filters[name] for name in kept})
        http_filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        chains[kept] = [f["name"] for f in http_filters]
        configs[kept] = [f["typed_config"]["filter_config"]["value"].split("\n")[1] for f in http_filters
                         if f["name"] == envoy.NATIVE_FILTER]
    assert chains == {
        ("a", "c"): [envoy.DENY_FILTER, envoy.NATIVE_FILTER, envoy.ALLOW_FILTER, "envoy.filters.http.router"],
        ("b", "c"): [envoy.LUA_FILTER, envoy.NATIVE_FILTER, envoy.ALLOW_FILTER, "envoy.filters.http.router"],
        ("c",): [envoy.NATIVE_FILTER, "envoy.filters.http.router"],
        # Without the native filter the chain is fixed: a change of rules replaces only the routes.
        ("a", "b"): [envoy.DENY_FILTER, envoy.LUA_FILTER, envoy.ALLOW_FILTER, "envoy.filters.http.router"],
    }
    # The config's second line names the filters beside the native one, as the routes do; it is
    # all the config holds, the rules being in the routes.
    assert configs == {("a", "c"): ["chain rbac-deny rbac-allow"], ("b", "c"): ["chain lua rbac-allow"],
                       ("c",): [""], ("a", "b"): []}


def test_without_native_services_nothing_names_the_native_filter(tmp_path):
    checked = checked_of(tmp_path, SERVICE.format(name="a", rules='    allow public "r" when path == "/"\n'))
    for target in ("auto", "lua", "rbac"):
        assert envoy.NATIVE_FILTER not in compile_outputs(checked, target).files["envoy.yaml"]


EXAMPLES = Path(__file__).parents[2] / "envoy_configs" / "examples"


@pytest.mark.parametrize("example", ["backstage", "templates"])  # `grants` needs its walk-through's key
@pytest.mark.parametrize("target", ["native", "auto-native"])
def test_every_route_to_a_native_services_upstream_runs_the_native_filter(example, target):
    """Nothing stands behind the native filter (no verdict check, as behind Lua): that holds only
    if no route that forwards a native service's requests turns the filter off."""
    pipeline = load_and_check([str(EXAMPLES / example)])
    assert pipeline.ok
    compiled = compile_outputs(pipeline.checked, target)
    assert not compiled.diagnostics
    natives = {name for name, plan in compiled.plans.items() if plan.deny == "native"}
    forwarding = 0
    for host in _listener(compiled.bootstrap)["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            if "route" in route and route["name"] in natives:
                forwarding += 1
                assert _runs_native(host, route), (host["name"], route["match"])
    assert forwarding >= len(natives)


def test_an_enforced_native_service_allows_only_with_the_filters_verdict(tmp_path):
    """For a chain without the native filter (an old listener's, on a hot reload), the allow RBAC
    filter demands its verdict; a dry-run service has no such check."""
    checked = checked_of(tmp_path, SERVICE.format(name="a", rules='    allow public "r" when path == "/"\n')
                         + SERVICE.format(name="b", rules='    mode dry-run\n    allow public "r" when path == "/"\n'))
    plans = {name: plan_service(checked, service, "native") for name, service in checked.services.items()}
    enforced = envoy.service_filters(checked, checked.services["a"], plans["a"])
    [(prefix, (deny, allow))] = enforced.rbac_by_prefix.items()
    assert (prefix, deny) == ("/", None)
    [(name, policy)] = allow["rules"]["policies"].items()
    assert name == "a/policyc:native-verdict"
    assert policy["principals"] == [{"or_ids": {"ids": [
        {"filter_state": {"key": "policyc.verdict", "string_match": {"exact": "allow"}}},
        {"filter_state": {"key": "policyc.verdict", "string_match": {"prefix": "allow "}}}]}}]
    dry = envoy.service_filters(checked, checked.services["b"], plans["b"])
    assert (dry.rbac_deny, dry.rbac_allow, dry.rbac_by_prefix) == (None, None, {"/": (None, None)})


@pytest.mark.parametrize(("record", "decided"), [
    ("allow health", ("allow", "health")),
    ("deny internal", ("deny", "internal")),
    ("allow template/rule name", ("allow", "template/rule name")),
    ("default-deny", ("default-deny", None)),
    ("error", ("error", None)),
    ("nonsense", ("unknown", None)),
])
def test_the_native_verdict_is_read_from_the_log(record, decided):
    """The native filter's record (`native` in the log): the decision, then the rule if one decided."""
    entry = {"status": 403, "details": "policyc_denied", "service": "demo", "native": record}
    assert logged_decision(entry) == decided


@pytest.mark.parametrize("target", ["native", "auto-native"])
@pytest.mark.parametrize("runner", ["process", "docker"])
def test_verify_needs_the_native_library(monkeypatch, tmp_path, target, runner):
    """As a process or in the image verify builds, Envoy loads the library from the search path."""
    example = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
    monkeypatch.setenv(envoy.NATIVE_SEARCH_PATH, str(tmp_path))
    result = CliRunner().invoke(main, ["verify", str(example), "--target", target, "--envoy", runner])
    assert result.exit_code == 2
    assert "Envoy loads libpolicyc_native.so from $ENVOY_DYNAMIC_MODULES_SEARCH_PATH" in result.stderr


def test_hot_reloads_carry_the_native_filter_and_a_change_of_rules_only_the_routes(tmp_path):
    """The listener holds the filter; the routes, its rules: a change of rules leaves the listener
    as it was, so Envoy reloads only the routes (docs/operations.md, *Draining*)."""
    def compiled_with(rule: str):
        checked = checked_of(tmp_path, SERVICE.format(name="a", rules=f'    allow public "r" when path == "{rule}"\n'))
        return compile_dynamic(checked, "native", envoy.Options(), "/srv/policyc")

    compiled, changed = compiled_with("/"), compiled_with("/other")
    assert '"policyc-native 5\\n"' in compiled.files["lds.yaml"]
    assert "policyc-native 5\\nservice x61\\n" in compiled.files["rds.yaml"]
    assert changed.files["lds.yaml"] == compiled.files["lds.yaml"]
    assert changed.files["rds.yaml"] != compiled.files["rds.yaml"]


def test_native_refusals_of_grpc_calls_read_permission_denied(tmp_path):
    """Envoy gives the module's local reply grpc-status 0; the listener's local-reply mapper sets 7."""
    checked = checked_of(tmp_path, SERVICE.format(name="a", rules='    allow public "r" when path == "/"\n'))
    assert "local_reply_config" not in _listener(compile_outputs(checked, "lua").bootstrap)
    mappers = _listener(compile_outputs(checked, "native").bootstrap)["local_reply_config"]["mappers"]
    assert mappers == [envoy.NATIVE_GRPC_REFUSAL]
    assert mappers[0]["headers_to_add"] == [{"header": {"key": "grpc-status", "value": "7"},
                                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
