"""The YAML writer, read back by Envoy itself. Envoy's YAML parser (yaml-cpp) is not PyYAML: it
loaded the `\\N` PyYAML writes for U+0085 as a space, so reading our output back with PyYAML
proved nothing. Here every class of character — each C0 control, DEL, each C1 control, U+00A0,
U+2028, U+2029, U+FEFF, a noncharacter, non-BMP, quotes, backslash, YAML's specials, spaces at
the ends — is written by `yaml_out` into a listener, loaded by a real Envoy from a YAML file, and
read back from `/config_dump`: in a route's header matcher, a direct response's body and a
metadata key and value. A compiled policy carrying the same strings in header and claim rules is
read back too, for the targets that put policy strings in YAML (`auto` and `rbac`; `lua` keeps them
in its `.lua` files, as decimal escapes): every string matcher, metadata path key and inline Lua
source Envoy loaded is exactly the one compiled."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter

import pytest

from policyc.backends import compile_outputs, expressible_part, yaml_out
from policyc.pipeline import load_and_check
from policyc.proof.envoy_process import running_envoy
from policyc.proof.replay import EnvoyUnderTest
from policyc.syntax.printer import string
from tests import CASE_KEYS

pytestmark = pytest.mark.envoy

CHARACTERS = [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)), "\xa0", "\xe9", "\u2028", "\u2029",
              "\ufeff", "\ufffe", "\U0001f600", "\U0010ffff"]
TEXTS = ['"', "'", "\\", '\\"', '"\\"', "\\N", "n", "yes", "null", "~", "*a", "&a", "!!str x", "# x", "a: b",
         "- x", "---", "...", "%YAML 1.2", "{x}", "[x]", "|", ">", "@", "`", "?", ",", " lead", "trail ", "  ",
         "a\r\nb", "line\nbreak", "\u0430dmin"]
VALUES = [f"a{c}b" for c in CHARACTERS] + CHARACTERS + TEXTS
MATCHER_KEYS = {"exact", "prefix", "suffix", "contains", "key", "inline_string"}


def _admin_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        # Invalid UTF-8 stays visible as U+DC80–U+DCFF instead of failing the read.
        return json.loads(response.read().decode("utf-8", "surrogateescape"))


def _listener(values: list[str]) -> dict:
    routes = [{"match": {"prefix": f"/{i}", "headers": [{"name": "x-v", "string_match": {"exact": value}}]},
               "metadata": {"filter_metadata": {"strings": {value: value}}},
               "direct_response": {"status": 200, "body": {"inline_string": value}}}
              for i, value in enumerate(values)]
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "strings",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
           "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "strings",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def _loaded_listener(admin_port: int, deadline: float) -> dict:
    while time.monotonic() < deadline:
        dump = _admin_json(admin_port, "/config_dump?resource=dynamic_listeners")
        active = [c["active_state"]["listener"] for c in dump["configs"] if "active_state" in c]
        if active:
            return active[0]
        time.sleep(0.02)
    raise TimeoutError("Envoy did not load the listener")


def test_every_class_of_character_loads_as_written(tmp_path):
    lds = tmp_path / "lds.yaml"
    lds.write_text(yaml_out.dump({"version_info": "1", "resources": [_listener(VALUES)]}), encoding="utf-8")
    bootstrap = {"node": {"id": "strings", "cluster": "strings"}, "dynamic_resources": {"lds_config": {
        "resource_api_version": "V3", "path_config_source": {"path": str(lds)}}}}
    with running_envoy(bootstrap, tmp_path) as envoy:
        listener = _loaded_listener(envoy.admin_port, time.monotonic() + 20)
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["match"]["prefix"]: r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    wrong = []
    for i, value in enumerate(VALUES):
        route = routes[f"/{i}"]
        loaded = (route["match"]["headers"][0]["string_match"]["exact"],
                  route["direct_response"]["body"]["inline_string"],
                  route["metadata"]["filter_metadata"]["strings"])
        if loaded != (value, value, {value: value}):
            wrong.append(f"{value!r} written as {yaml_out._scalar(value)} loaded as {loaded!r}")
    assert not wrong, "\n".join(wrong)


def _strings(config) -> Counter:
    """Every string under a matcher key, anywhere in `config`, counted."""
    found: Counter = Counter()
    pending = [config]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            found.update((k, v) for k, v in item.items() if k in MATCHER_KEYS and isinstance(v, str))
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


def _policy() -> str:
    # Header values travel in HTTP, so the checker refuses the ones no request could carry.
    rules = []
    for i, value in enumerate(VALUES):
        literal = string(value)
        rules.append(f'allow "c{i}" when token[{literal}] == {literal} or token.v prefix {literal} '
                     f'or token.v suffix {literal} or token.l contains {literal}')
        if value.isprintable() and value == value.strip(" \t"):
            rules.append(f'deny "h{i}" when header "x-v" == {literal} or header "x-v" suffix {literal}')
    body = "\n    ".join(rules)
    keys = CASE_KEYS / "idp.jwks.json"
    return f"""
issuer idp {{
    url "https://idp.cases.test"
    jwks file {string(str(keys))}
}}

service strings {{
    hosts "strings.test"
    upstream "127.0.0.1:9000"
    {body}
}}
"""


@pytest.mark.parametrize("target", ["auto", "rbac"])
def test_compiled_strings_load_as_compiled(target, tmp_path):
    (tmp_path / "strings.policy").write_text(_policy(), encoding="utf-8")
    pipeline = load_and_check([str(tmp_path / "strings.policy")], allowed_roots=[CASE_KEYS])
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    policies = expressible_part(pipeline.checked, target)
    with EnvoyUnderTest(tmp_path / "envoy") as envoy:
        envoy.load(policies, target)
        listener = _loaded_listener(envoy.envoy.admin_port, time.monotonic() + 20)
        [built] = compile_outputs(policies, target, envoy.options).bootstrap["static_resources"]["listeners"]
    compiled, loaded = _strings(built), _strings(listener)
    assert compiled.total() > len(VALUES)
    assert loaded == compiled, (f"compiled, not loaded: {list((compiled - loaded).items())[:10]}\n"
                                f"loaded, not compiled: {list((loaded - compiled).items())[:10]}")
