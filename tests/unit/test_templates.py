"""Templates: a `use` writes the template's settings and rules into the service, renamed
`template/rule`, with the arguments' values (never their text) in place of the parameters; every
misuse is located; a service may not weaken a locked rule (decided by the solver). The golden
files under tests/golden/diagnostics/templates*/ show every diagnostic rendered."""

import pytest

from policyc import nodes as n
from policyc.analysis.locked import locked_diagnostics
from policyc.backends import compile_outputs
from policyc.interpret import evaluate
from policyc.pipeline import load_and_check
from policyc.semantics.request import RawRequest
from policyc.syntax.printer import format_file

TEMPLATE = '''
template api(paths: list, health: path = "/healthz", team: string = "a") {
    mode dry-run
    locked deny "no-debug" when path prefix "/debug/"
    allow public "health" when path == $health
    allow public "read" when path in $paths and header "x-team" == $team
}
'''


def checked(tmp_path, text: str, name: str = "main.policy"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_and_check([str(path)])


def one_rule_template(declared: str, condition: str) -> str:
    return f'template t({declared}) {{\n    allow public "r" when {condition}\n}}\n'


def service_with(use: str, rules: str = "") -> str:
    return f'service s {{\n    hosts "s.internal"\n    upstream "127.0.0.1:8080"\n    {use}\n{rules}}}\n'


def test_a_use_gives_the_service_the_templates_settings_and_rules_named_template_rule(tmp_path):
    pipeline = checked(tmp_path, TEMPLATE + service_with('use api(paths = ["/a", "/b"], health = "/ready")',
                                                          '    allow public "own" when path == "/own"\n'))
    assert pipeline.ok, pipeline.diagnostics
    service = pipeline.checked.services["s"]
    assert service.mode is n.Mode.DRY_RUN
    assert not any(isinstance(s, n.Use) for s in service.settings)
    by_name = {r.name: r for r in service.rules}
    assert sorted(by_name) == ["api/health", "api/no-debug", "api/read", "own"]
    assert by_name["api/no-debug"].locked and by_name["api/no-debug"].template == "api"
    assert by_name["own"].template is None and not by_name["own"].locked
    assert by_name["api/health"].expr == n.PathTest(n.Op.EQ, ("/ready",))
    assert by_name["api/read"].expr == n.And((n.PathTest(n.Op.IN, ("/a", "/b")),
                                              n.HeaderTest("x-team", n.Op.EQ, ("a",))))
    # Spans: the rule's at the template, the substituted values' at the arguments, the instance at the use.
    assert by_name["api/health"].name_span.line == 5
    assert by_name["api/health"].expr.value_spans[0].line == 11
    assert by_name["api/health"].instance.line == 11
    # The set as written keeps the template and the use (the printer and the editor read it).
    written = pipeline.checked.policy_set
    assert [t.name for t in written.templates] == ["api"]
    assert any(isinstance(s, n.Use) for s in written.services[0].settings)


def test_the_interpreter_and_every_target_name_the_rule_template_slash_rule(tmp_path):
    pipeline = checked(tmp_path, TEMPLATE.replace("    mode dry-run\n", "") + service_with('use api(paths = ["/a"])'))
    decision = evaluate(pipeline.checked, RawRequest("GET", "/debug/x", "s.internal", (), "10.0.0.1"), 0)
    assert (decision.status, decision.rule) == (403, "api/no-debug")
    for target in ("rbac", "lua", "native"):
        compiled = compile_outputs(pipeline.checked, target)
        assert not compiled.diagnostics
        text = "".join(str(f) for f in compiled.files.values())
        assert "api/no-debug" in text or b"api/no-debug".hex() in text, target


def test_arguments_are_values_never_text(tmp_path):
    """An argument that reads like policy text is one string wherever it lands."""
    text = TEMPLATE + service_with('use api(paths = ["/a"], team = "a\\" or path prefix \\"/")')
    pipeline = checked(tmp_path, text)
    assert pipeline.ok, pipeline.diagnostics
    read = next(r for r in pipeline.checked.services["s"].rules if r.name == "api/read")
    assert read.expr.operands[1] == n.HeaderTest("x-team", n.Op.EQ, ('a" or path prefix "/',))


@pytest.mark.parametrize(("declared", "condition", "argument", "code"), [
    ("p: string", "path == $p", '"/a"', "template/parameter-type"),
    ("p: path", "header \"x\" in $p", '"/a"', "template/parameter-type"),
    ("p: list", "member $p", '["sre"]', "template/parameter-type"),
    ("p: ref", "path prefix $p", "component:x", "template/parameter-type"),
    ("p: path", "path == $p", '"a"', "template/bad-argument"),
    ("p: ref", "member owners($p)", '"not a ref"', "template/bad-argument"),
    ("p: list", "source in $p", '"10.0.0.0/8"', "template/bad-argument"),
    ("p: string", "token.team == $p", '["a"]', "template/bad-argument"),
    ("p: list", "member in $p", "[]", "template/bad-argument"),
])
def test_each_misplaced_or_ill_typed_parameter_is_located(tmp_path, declared, condition, argument, code):
    text = one_rule_template(declared, condition) + service_with(f"use t(p = {argument})")
    pipeline = checked(tmp_path, text)
    found = [d for d in pipeline.diagnostics if d.code == code]
    assert found, pipeline.diagnostics
    assert found[0].span.line == (2 if code == "template/parameter-type" else 7)


@pytest.mark.parametrize(("declared", "condition", "argument"), [
    ("p: string", 'header "x" == $p', '"/a"'),
    ("p: path", 'header "x" suffix $p', '"/a"'),
    ("p: ref", "peer.uri == $p", "component:x"),
    ("p: path", "path glob $p", '"/a/**"'),
    ("p: list", 'token.roles in $p or peer.dns in $p or header "x" in $p or path in $p', '["/a"]'),
])
def test_a_parameter_fits_every_place_of_its_type(tmp_path, declared, condition, argument):
    text = one_rule_template(declared, condition) + service_with(f"use t(p = {argument})")
    assert not [d for d in checked(tmp_path, text).diagnostics if d.code.startswith("template/")]


def test_a_rule_written_in_a_service_cannot_take_a_templates_name(tmp_path):
    pipeline = checked(tmp_path, TEMPLATE + service_with('use api(paths = ["/a"])',
                                                          '    allow public "api/x" when path == "/x"\n'))
    assert [d.code for d in pipeline.diagnostics if d.is_error] == ["check/bad-name"]


def test_a_template_is_printed_as_written(tmp_path):
    pipeline = checked(tmp_path, TEMPLATE + service_with('use api(paths = ["/a"])'))
    text = format_file(pipeline.checked.policy_set.files[0])
    assert "locked deny \"no-debug\"" in text and "use api(paths = [\"/a\"])" in text
    assert 'template api(paths: list, health: path = "/healthz", team: string = "a") {' in text


LOCKED = '''
template api() {
    locked allow public "health" when method == GET and path prefix "/health"
    deny "no-admin" when path == "/health/admin"
}
'''


@pytest.mark.parametrize(("rules", "weakened"), [
    ('    deny "no-get" when method == GET\n', True),
    ('    deny "no-probe" when path == "/health/probe" and header "x-a" present\n', True),
    # Every request both match is refused by the template's own deny already.
    ('    deny "no-admin-get" when method == GET and path == "/health/admin"\n', False),
    ('    deny "no-post" when method == POST\n', False),
    ('    allow "more" when path prefix "/health" and authenticated\n', False),
])
def test_a_deny_that_refuses_requests_a_locked_allow_admits_weakens_it(tmp_path, rules, weakened):
    issuer = 'issuer i {\n    url "https://i.example"\n    jwks "https://i.example/jwks"\n}\n'
    pipeline = checked(tmp_path, issuer + LOCKED + service_with("use api()", rules))
    assert pipeline.ok, pipeline.diagnostics
    found = locked_diagnostics(pipeline.checked)
    assert [d.code for d in found] == ["template/weakens-locked"] * weakened
    if weakened:
        assert found[0].span.line == 14 and "GET /health" in found[0].message
        assert [note for note, _ in found[0].notes] == ["locked here", "the template is used here"]


def test_dry_run_weakens_a_locked_deny_unless_the_template_sets_the_mode(tmp_path):
    deny = 'template t() {\n    locked deny "no-debug" when path prefix "/debug/"\n}\n'
    dry = service_with("use t()").replace("    use", "    mode dry-run\n    use")
    found = locked_diagnostics(checked(tmp_path, deny + dry).checked)
    assert [(d.code, d.span.line) for d in found] == [("template/weakens-locked", 7)]
    own_mode = deny.replace("{\n", "{\n    mode dry-run\n", 1)
    assert locked_diagnostics(checked(tmp_path, own_mode + service_with("use t()")).checked) == []


def test_a_service_that_sets_a_templates_setting_again_gets_the_duplicate_at_its_own(tmp_path):
    template = 'template t() {\n    mode enforce\n    allow public "h" when path == "/h"\n}\n'
    service = service_with("use t()").replace("    use", "    mode dry-run\n    use")
    [duplicate] = [d for d in checked(tmp_path, template + service).diagnostics if d.is_error]
    assert (duplicate.code, duplicate.span.line, duplicate.notes[0][1].line) == ("check/duplicate-setting", 8, 2)


def test_member_in_an_empty_default_list_is_refused_at_the_use(tmp_path):
    template = one_rule_template("p: list = []", "member in $p")
    [error] = [d for d in checked(tmp_path, template + service_with("use t()")).diagnostics if d.is_error]
    assert (error.code, error.span.line) == ("template/bad-argument", 7)
