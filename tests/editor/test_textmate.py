"""The VS Code extension's TextMate grammar, run by vscode-textmate with Oniguruma (what VS Code
itself uses, installed from npm with `npm ci` against the committed lock file): keywords,
strings, comments, globs, names and rule names get their scopes."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

EXTENSION = Path(__file__).parents[2] / "editors" / "vscode"
SAMPLE = Path(__file__).parent / "sample.policy"


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory) -> Path:
    """The extension's locked dev dependencies, installed outside the source tree."""
    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("CI"):
            pytest.fail("node and npm are needed to test the TextMate grammar (.ci/run installs them)")
        pytest.skip("node and npm are not installed")
    folder = tmp_path_factory.mktemp("npm")
    for name in ("package.json", "package-lock.json"):
        shutil.copy(EXTENSION / name, folder / name)
    installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=folder,
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return folder / "node_modules"


@pytest.fixture(scope="module")
def tokens(node_modules) -> list[list[dict]]:
    result = subprocess.run(["node", str(EXTENSION / "tokenize.js"), str(SAMPLE)], capture_output=True, text=True,
                            env={**os.environ, "NODE_PATH": str(node_modules)}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def scopes(tokens, line_text: str, token_text: str, nth: int = 0) -> list[str]:
    """The scopes of the `nth` token `token_text` on the sample's line that contains `line_text`."""
    lines = SAMPLE.read_text().split("\n")
    [line] = [i for i, text in enumerate(lines) if line_text in text]
    found = [t["scopes"] for t in tokens[line] if t["text"] == token_text]
    assert len(found) > nth, f"no token {token_text!r} on line {line + 1}: {[t['text'] for t in tokens[line]]}"
    return found[nth]


EXPECTED = [
    # (a line's text, a token on it, the scope it must have)
    ("# A sample", "# A sample touching every construct the grammar colours.", "comment.line.number-sign.policy"),
    ("# trailing", "# trailing comment", "comment.line.number-sign.policy"),
    ('import "common', "import", "keyword.control.import.policy"),
    ('import "common', "common.policy", "string.quoted.double.policy"),
    ("issuer okta {", "issuer", "storage.type.issuer.policy"),
    ("issuer okta {", "okta", "entity.name.type.issuer.policy"),
    ("url ", "url", "keyword.other.setting.policy"),
    ("catalog users", "users", "keyword.other.setting.policy"),
    ('catalog "catalog"', "catalog", "storage.type.catalog.policy"),
    ("condition read_only", "condition", "storage.type.condition.policy"),
    ("condition read_only", "read_only", "entity.name.function.condition.policy"),
    ("condition read_only", "GET", "support.constant.method.policy"),
    ("condition read_only", "in", "keyword.operator.word.policy"),
    ("service payments", "payments", "entity.name.type.service.policy"),
    ("mode dry-run", "dry-run", "constant.language.mode.policy"),
    ("path parameters allowed", "parameters", "keyword.other.setting.policy"),
    ("path parameters allowed", "allowed", "keyword.other.setting.policy"),
    ('deny "no-debug"', "deny", "keyword.control.effect.policy"),
    ('deny "no-debug"', '"no-debug"', "entity.name.function.rule.policy"),
    ('deny "no-debug"', "when", "keyword.control.when.policy"),
    ('deny "no-debug"', "/debug/", "string.regexp.glob.policy"),
    ('deny "no-debug"', "**", "keyword.operator.glob.globstar.policy"),
    ('deny "no-debug"', "*", "keyword.operator.glob.star.policy"),
    ('allow public "health"', "public", "storage.modifier.public.policy"),
    ('allow public "health"', '"health"', "entity.name.function.rule.policy"),
    ('allow public "health"', "/healthz", "string.quoted.double.policy"),
    ('allow "sre"', '"sre"', "entity.name.function.rule.policy"),
    ('allow "sre"', "read_only", "variable.other.condition.policy"),
    ('allow "sre"', "and", "keyword.operator.logical.policy"),
    ('allow "sre"', "not", "keyword.operator.logical.policy"),
    ('allow "sre"', "token", "variable.language.token.policy"),
    ('allow "sre"', ".banned", "variable.other.property.claim.policy"),
    ('allow "sre"', "true", "constant.language.boolean.policy"),
    ('allow "sre"', "group:default/sre", "string.quoted.double.policy"),
    ('allow "owners"', "okta", "entity.name.type.issuer.policy"),
    ('allow "owners"', "component:payments", "constant.other.entity-ref.policy"),
    ('header "x-tenant"', "header", "variable.language.attribute.policy"),
    ('header "x-tenant"', '\\"', "constant.character.escape.policy"),
    ('header "x-tenant"', "\\q", "invalid.illegal.escape.policy"),
    ("service orders", "orders", "entity.name.type.service.policy"),
    ('upstream "127.0.0.1:50051"', "http2", "constant.language.protocol.policy"),
    ('allow public "probe"', "grpc", "variable.language.attribute.policy"),
    ('allow public "probe"', "health", "variable.language.attribute.policy"),
    ('allow "read"', "method", "variable.language.attribute.policy"),
    ('allow "read"', "shop.v1.Orders/Get", "string.quoted.double.policy"),
    ('allow "read"', "reflection", "variable.language.attribute.policy"),
    ("or grpc service", "service", "variable.language.attribute.policy"),
    ("template internal_api", "template", "storage.type.template.policy"),
    ("template internal_api", "internal_api", "entity.name.type.template.policy"),
    ("template internal_api", "ref", "support.type.policy"),
    ("template internal_api", "list", "support.type.policy"),
    ('locked deny "no-admin"', "locked", "storage.modifier.locked.policy"),
    ('locked deny "no-admin"', "deny", "keyword.control.effect.policy"),
    ('locked deny "no-admin"', '"no-admin"', "entity.name.function.rule.policy"),
    ('allow "readers"', "$readers", "variable.parameter.policy"),
    ('allow "readers"', "$owner", "variable.parameter.policy"),
    ("use internal_api", "use", "keyword.other.use.policy"),
    ("use internal_api", "internal_api", "entity.name.type.template.policy"),
    ("grants {", "grants", "storage.type.grants.policy"),
    ('max window "8h"', "max", "keyword.other.setting.policy"),
    ('max window "8h"', "window", "keyword.other.setting.policy"),
    ("grant inc-4711", "grant", "storage.type.grant.policy"),
    ("grant inc-4711", "inc-4711", "entity.name.type.grant.policy"),
    ('who token.sub == "alice"', "who", "keyword.other.setting.policy"),
    ('who token.sub == "alice"', "token", "variable.language.token.policy"),
    ('what path prefix "/debug/"', "what", "keyword.other.setting.policy"),
    ('from "2999', "from", "keyword.other.setting.policy"),
    ('until "2999', "until", "keyword.other.setting.policy"),
    ('approved by "bob"', "approved", "keyword.other.setting.policy"),
    ('approved by "bob"', "by", "keyword.other.setting.policy"),
    ('reason "INC-4711"', "reason", "keyword.other.setting.policy"),
]


@pytest.mark.parametrize(("line", "token", "scope"), EXPECTED, ids=[f"{t}->{s}" for _, t, s in EXPECTED])
def test_token_has_its_scope(tokens, line, token, scope):
    assert scope in scopes(tokens, line, token)


def test_rule_names_are_strings_too(tokens):
    """Themes without a rule-name colour still show the name as a string."""
    assert "string.quoted.double.policy" in scopes(tokens, 'deny "no-debug"', '"no-debug"')


def test_words_inside_strings_and_comments_are_not_keywords(tokens):
    assert scopes(tokens, "# trailing", "# trailing comment")[-1] == "comment.line.number-sign.policy"
    assert scopes(tokens, 'allow public "health"', "/healthz")[-1] == "string.quoted.double.policy"
    assert scopes(tokens, "url ", "https://example.okta.com/oauth2/default")[-1] == "string.quoted.double.policy"


def test_manifest_points_at_the_grammar():
    manifest = json.loads((EXTENSION / "package.json").read_text())
    [language] = manifest["contributes"]["languages"]
    [grammar] = manifest["contributes"]["grammars"]
    assert language["extensions"] == [".policy"] and grammar["language"] == language["id"]
    assert json.loads((EXTENSION / grammar["path"]).read_text())["scopeName"] == grammar["scopeName"]
    assert (EXTENSION / language["configuration"]).is_file()
