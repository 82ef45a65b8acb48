"""Policy text never becomes code or structure. Strings that close Lua strings and comments, YAML
specials, control characters and look-alikes are written into every place policy text reaches
(header names, claim names, compared values, audiences, rule names), compiled for every target,
and decided by a real Envoy exactly as the interpreter decides: a matching request is let through,
a near miss is not. Names Envoy could not carry are compile errors instead."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from policyc.backends import compile_outputs, expressible_part
from policyc.credentials import tokens as devtokens
from policyc.interpret import RawRequest
from policyc.pipeline import load_and_check
from policyc.proof.compare import compare
from policyc.proof.replay import EnvoyUnderTest
from policyc.semantics.request import HTTP1, PROTOCOLS
from policyc.syntax.printer import string

pytestmark = pytest.mark.envoy

KEYS = Path(__file__).parents[1] / "cases" / "keys"
# What quoting must survive: Lua long brackets and comments, string escapes, YAML's specials,
# format and template syntax, a NUL, line breaks, and letters that only look alike.
HOSTILE = ['"', "\\", '\\"', "'", "]]", "]=]", "[[", "--", "--[[ x", "\0", "a\nb", "\r\n", "\u2028",
           "n", "yes", "no", "null", "~", "*a", "&a", "!!python/object:os.system", "---", "%YAML 1.1",
           "${jndi:x}", "%(x)s", "{{x}}", "end)", "\\065", "\u0430dmin", "\U0001f600",
           # YAML's named escapes (`\\N`, `\\_`, `\\L`, `\\P`) and a byte-order mark.
           "\x85", "a\xa0b", "\u2029", "\ufeff"]
# Header names are HTTP tokens; within that, the ones YAML reads as something else.
HEADER_NAMES = ["n", "yes", "null", "~", "*a", "!!", "&a", "%", "|", "#", "'", "`", "x--", "x.^"]
# Header values travel in HTTP: no NUL or line breaks, and Envoy trims spaces around them.
SENDABLE = [v for v in HOSTILE if not set(v) & set("\0\r\n\u2028") and v == v.strip()]
RULE_NAMES = ["yes", "null", "n", "on", "true", "0x1", "1e3", "a--", "a...", "a::b", "N_A"]


def _policy() -> str:
    rules = []
    for i, (name, value) in enumerate(zip(HEADER_NAMES, SENDABLE, strict=False)):
        rules.append(f"allow public \"h{i}\" when path == \"/h{i}\" and header {string(name)} == {string(value)}")
    for i, value in enumerate(HOSTILE):
        claim = f"token[{string(value)}]"
        rules.append(f"allow \"c{i}\" when path == \"/c{i}\" and {claim} == {string(value)}")
        rules.append(f"allow \"p{i}\" when path == \"/p{i}\" and token.v prefix {string(value)}")
        rules.append(f"allow \"l{i}\" when path == \"/l{i}\" and token.v contains {string(value)}")
    rules += [f"allow public {string(name)} when path == {string('/r/' + name)}" for name in RULE_NAMES]
    audiences = ", ".join(string(v) for v in ["cases", *HOSTILE])
    body = "\n    ".join(rules)
    return f"""
issuer idp {{
    url      "https://idp.cases.test"
    jwks file {string(str(KEYS / "idp.jwks.json"))}
    audience [{audiences}]
}}

service hostile {{
    hosts    "hostile.test"
    upstream "127.0.0.1:9000"
    {body}
}}
"""


def _requests(now: float) -> list[RawRequest]:
    private = json.loads((KEYS / "idp.private.jwk.json").read_text())

    def bearer(claims: dict) -> tuple[tuple[str, str], ...]:
        token = devtokens.mint({"iss": "https://idp.cases.test", "aud": "cases", "exp": int(now) + 600,
                                "sub": "u", **claims}, private)
        return (("authorization", f"Bearer {token}"),)

    requests = []
    for i, (name, value) in enumerate(zip(HEADER_NAMES, SENDABLE, strict=False)):
        requests += [RawRequest("GET", f"/h{i}", "hostile.test", ((name, value),)),
                     RawRequest("GET", f"/h{i}", "hostile.test", ((name, value + "x"),))]
    for i, value in enumerate(HOSTILE):
        requests += [RawRequest("GET", f"/c{i}", "hostile.test", bearer({value: value})),
                     RawRequest("GET", f"/c{i}", "hostile.test", bearer({value: value + "x"})),
                     RawRequest("GET", f"/p{i}", "hostile.test", bearer({"v": value + "tail"})),
                     RawRequest("GET", f"/p{i}", "hostile.test", bearer({"v": "x" + value})),
                     RawRequest("GET", f"/l{i}", "hostile.test", bearer({"v": ["x", value]})),
                     RawRequest("GET", f"/l{i}", "hostile.test", bearer({"v": [value + "x"]}))]
    requests += [RawRequest("GET", f"/r/{name}", "hostile.test") for name in RULE_NAMES]
    return requests


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "hostile.policy").write_text(_policy())
    pipeline = load_and_check([str(folder / "hostile.policy")], allowed_roots=[KEYS])
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    return pipeline.checked


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("target", ["lua", "auto", "rbac"])
def test_hostile_strings_keep_their_meaning_in_envoy(checked, target, protocol, tmp_path):
    policies = expressible_part(checked, target)
    now = time.time()
    requests = [replace(request, protocol=protocol) for request in _requests(now)]
    with EnvoyUnderTest(tmp_path) as envoy:
        envoy.load(policies, target)
        comparisons = compare(policies, envoy.send_all(requests), now, {})
    differences = [c.report() for c in comparisons if c.differences]
    assert not differences, "\n".join(differences)
    if protocol != HTTP1:
        return  # HTTP/2 resets the streams whose values hold control characters
    # Half the requests match their rule exactly, half miss it by a character.
    statuses = [c.expected.status for c in comparisons]
    matched = [s for s, r in zip(statuses, requests, strict=True) if not r.target.startswith("/r/")]
    assert matched[0::2] == [200] * (len(matched) // 2) and set(matched[1::2]) == {403}
    assert statuses[-len(RULE_NAMES):] == [200] * len(RULE_NAMES)


@pytest.mark.parametrize("target", ["lua", "auto"])
def test_the_emitted_yaml_reads_back_as_the_config_built(checked, target):
    # No string turned into a boolean, a null, an alias, a tag or a second document. PyYAML is
    # not Envoy's parser: tests/envoy/test_yaml_envoy.py reads the strings back through Envoy.
    compiled = compile_outputs(checked, target)
    assert not compiled.diagnostics
    assert yaml.safe_load(compiled.files["envoy.yaml"]) == compiled.bootstrap


@pytest.mark.parametrize(("text", "code"), [
    ('allow "a\\nb" when path == "/"', "check/bad-name"),
    ('allow "a]]b" when path == "/"', "check/bad-name"),
    ('allow "a b" when path == "/"', "check/bad-name"),
    ('allow "x" when header "x\\na" == "v"', "check/bad-header-name"),
    ('allow "x" when header "x a" == "v"', "check/bad-header-name"),
    ('allow "x" when header "X-A" == "v"', "check/bad-header-name"),
    ('allow "x" when header ":path" == "/"', "check/bad-header-name"),
])
def test_names_envoy_cannot_carry_are_compile_errors(text, code, tmp_path):
    service = f'service s {{\n    hosts "s.test"\n    upstream "127.0.0.1:1"\n    {text}\n}}\n'
    (tmp_path / "p.policy").write_text(service)
    pipeline = load_and_check([str(tmp_path / "p.policy")])
    assert code in {d.code for d in pipeline.diagnostics}
