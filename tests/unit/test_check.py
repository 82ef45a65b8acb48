"""Checker: every diagnostic, rendered, against golden files (every code has one); and the
checker's helpers."""

import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

from policyc.analysis.locked import with_locks_checked
from policyc.backends import compile_outputs
from policyc.diagnostics import CODES, render_text, sort_diagnostics
from policyc.explain import explanations
from policyc.pipeline import load_and_check
from policyc.syntax import MAX_FILE_BYTES
from tests.golden import assert_golden

CASES = Path(__file__).parent.parent / "golden" / "diagnostics"
# What no file in git can be, made so here: a policy file over the size limit, handed to the
# loader as an editor's unsaved text (4 MiB has no place in the repository), and files and
# folders that cannot be read (chmod would not stop a test that runs as root).
TOO_LARGE = "too_large.policy"
UNREADABLE = "unreadable"  # how the names of those start
# Folders also compiled for a target: their golden text holds that compilation's diagnostics.
COMPILED_FOR = {"rbac_unsupported": "rbac"}


def _refused(path) -> PermissionError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))


@contextmanager
def _unreadable(prefix: str):
    """Reading a file, or listing a folder, whose name starts with `prefix` fails as it does
    without read permission."""
    read_bytes, scandir = Path.read_bytes, os.scandir

    def read_refused(path: Path) -> bytes:
        if path.name.startswith(prefix):
            raise _refused(path)
        return read_bytes(path)

    def scandir_refused(path="."):
        if os.path.basename(os.fspath(path)).startswith(prefix):
            raise _refused(path)
        return scandir(path)

    with mock.patch.object(Path, "read_bytes", read_refused), mock.patch.object(os, "scandir", scandir_refused):
        yield


def rendered(folder: Path) -> str:
    cwd = os.getcwd()
    os.chdir(folder)  # paths in the golden text stay short and machine-independent
    try:
        overlay = {os.path.realpath(TOO_LARGE): "#" * MAX_FILE_BYTES + "\n"}
        with _unreadable(UNREADABLE):
            # The golden folders share certificate files (`ca file "../peers/ca.pem"`).
            pipeline = with_locks_checked(load_and_check(["main.policy"], overlay, allowed_roots=[CASES]))
        diagnostics = pipeline.diagnostics
        if folder.name in COMPILED_FOR:
            assert pipeline.ok, "a folder compiled for a target must pass the checker"
            compiled = compile_outputs(pipeline.checked, COMPILED_FOR[folder.name])
            diagnostics = sort_diagnostics(diagnostics + compiled.diagnostics)
        return "\n\n".join(render_text(d, pipeline.sources) for d in diagnostics) + "\n"
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("folder", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_diagnostics_are_golden(folder, update_goldens):
    assert_golden(folder / "expected.err", rendered(folder), update_goldens)


# Codes no golden can show, and why. Each must be emitted nowhere (below).
NO_GOLDEN = {
    "check/type-mismatch": "reserved: the grammar rules such mistakes out as parse errors, and no check emits it",
}
_SHOWN_CODE = re.compile(r"^\S+:\d+:\d+: (?:error|warning)\[(?P<code>[^\]]+)\]: ", re.MULTILINE)


def test_every_code_has_a_golden():
    """Each code registered or documented appears in a golden output: a new code needs a golden."""
    shown = {m["code"] for path in CASES.glob("*/expected.err") for m in _SHOWN_CODE.finditer(path.read_text("utf-8"))}
    missing = (set(CODES) | set(explanations())) - shown - set(NO_GOLDEN)
    assert sorted(missing) == [], f"no golden under {CASES} shows these codes"


@pytest.mark.parametrize("code", sorted(NO_GOLDEN))
def test_a_code_without_a_golden_is_emitted_nowhere(code):
    assert code in CODES, "a code that no longer exists needs no exception"
    package = Path(__file__).parents[2] / "policyc"
    emitting = [str(path) for path in package.rglob("*.py")
                if path.name != "diagnostics.py" and f'"{code}"' in path.read_text(encoding="utf-8")]
    assert emitting == [], f"{code} is emitted, so it needs a golden"


def test_five_mistakes_give_five_located_errors():
    text = rendered(CASES / "five_mistakes")
    errors = [line for line in text.splitlines() if ": error[" in line]
    assert len(errors) == 5, text
    assert all(line.startswith("main.policy:") for line in errors)


def test_example_checks_clean():
    example = Path(__file__).parents[2] / "envoy_configs" / "examples" / "backstage"
    pipeline = load_and_check([str(example)])
    assert pipeline.ok, [render_text(d, pipeline.sources) for d in pipeline.diagnostics]
    assert [d for d in pipeline.diagnostics] == [], "the example should not even warn"



# ---------------------------------------------------------------- hints lead to accepted policies

ISSUER = """
issuer idp {
    url "https://idp.example.com"
    jwks "https://idp.example.com/jwks.json"
}
"""


def diagnostics_of(folder: Path, text: str, *, hosts: str = '"uploads.internal"', issuer: str = ISSUER,
                   upstream: str = '"127.0.0.1:8080"') -> list:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.policy").write_text(f"""{issuer}
service uploads {{
    hosts [{hosts}]
    upstream {upstream}
{text}
}}
""", encoding="utf-8")
    return load_and_check([str(folder / "main.policy")]).diagnostics


def only_hint(diagnostics: list, code: str) -> str:
    (found,) = diagnostics
    assert found.code == code, found
    return found.hint


_WRITE_HEADER = re.compile(r'write "(?P<name>[^"]+)"\Z')


@pytest.mark.parametrize("name", ["Host", "host", "X-Tenant", "X_Tenant", "x_tenant", "X_Forwarded_Proto",
                                  "x_forwarded_proto", "x_envoy_internal", "X-Envoy-Internal", "X_Original_URL",
                                  "Connection", "TE", "expect", "x-policyc-jwt-payload"])
def test_a_header_name_hint_leads_to_a_clean_policy_in_one_step(tmp_path, name):
    code = "check/proxy-header" if name == name.lower() else "check/bad-header-name"
    hint = only_hint(diagnostics_of(tmp_path / "wrong", f'    allow "a" when authenticated and header "{name}" == "v"'),
                     code)
    fixed = tmp_path / "fixed"
    if written := _WRITE_HEADER.match(hint):
        followed = diagnostics_of(fixed, f'    allow "a" when authenticated and header "{written["name"]}" == "v"')
    elif "`hosts`" in hint:  # the host routes requests: a service lists it, and its rules apply there
        followed = diagnostics_of(fixed, '    allow "a" when authenticated', hosts='"uploads.internal", "v.internal"')
    else:
        assert hint.startswith("test what the proxy leaves as sent instead: `source`, `method`, `path`"), hint
        followed = diagnostics_of(fixed, '    allow "a" when authenticated and source in "10.0.0.0/8"')
    assert followed == [], followed


@pytest.mark.parametrize("method", ["get", "Patch", "fetch", "connect"])
def test_a_method_hint_names_a_method_the_proxy_accepts(tmp_path, method):
    hint = only_hint(diagnostics_of(tmp_path / "wrong", f'    allow "a" when authenticated and method == {method}'),
                     "check/bad-method")
    if hint.startswith("write `"):
        followed = f'    allow "a" when authenticated and method == {hint.removeprefix("write `").rstrip("`")}'
        assert diagnostics_of(tmp_path / "fixed", followed) == []
    else:  # `fetch` and `connect` are refused in upper case too
        assert method.upper() not in hint and hint.startswith("methods the proxy accepts:")


@pytest.mark.parametrize("issuer", [ISSUER, ""], ids=["issuer", "no-issuer"])
def test_the_anonymous_hints_lead_to_clean_policies(tmp_path, issuer):
    hint = only_hint(diagnostics_of(tmp_path / "wrong", '    allow "docs" when path prefix "/docs/"', issuer=issuer),
                     "check/anonymous-allow")
    assert hint.startswith("write `allow public` if that is intended, or ")
    assert diagnostics_of(tmp_path / "public", '    allow public "docs" when path prefix "/docs/"', issuer=issuer) == []
    # Without an issuer, `authenticated` would never hold: the hint says to declare one first.
    assert hint.endswith("add `authenticated`") and ("declare an `issuer`" in hint) == (not issuer)
    assert diagnostics_of(tmp_path / "fixed", '    allow "docs" when authenticated and path prefix "/docs/"') == []
    reflection = '    allow public "everything" when path prefix "/"'
    hint = only_hint(diagnostics_of(tmp_path / "grpc", reflection, issuer=issuer, upstream='"127.0.0.1:50051" http2'),
                     "check/anonymous-reflection")
    deny = re.search(r"`(deny .*)`", hint)[1]
    assert deny.endswith("and not authenticated") == bool(issuer)
    followed = diagnostics_of(tmp_path / "grpc-fixed", f"    {deny}\n{reflection}", issuer=issuer,
                              upstream='"127.0.0.1:50051" http2')
    assert followed == [], followed


def test_a_rule_name_hint_says_how_a_name_starts(tmp_path):
    hint = only_hint(diagnostics_of(tmp_path / "wrong", '    allow "-docs" when authenticated'), "check/bad-name")
    assert hint.startswith("start with a letter or digit")
    assert diagnostics_of(tmp_path / "fixed", '    allow "docs-1" when authenticated') == []


def test_token_tests_without_an_issuer_are_flagged_where_they_are_written(tmp_path):
    found = diagnostics_of(tmp_path, '    allow "a" when authenticated and (token.role == "x" or token.ok == true\n'
                                     '        or header "x-t" == token.t)', issuer="")
    assert [(d.code, d.severity.value, d.span.line) for d in found] == [
        ("check/token-without-issuer", "warning", 5)] * 3 + [("check/token-without-issuer", "warning", 6)]
    assert [d.message.split("`")[1] for d in found] == ["authenticated", 'token.role == "x"', "token.ok == true",
                                                         'header "x-t" == token.t']
    assert diagnostics_of(tmp_path / "with", '    allow "a" when authenticated and token.role == "x"') == []


@pytest.mark.parametrize("issuer", [ISSUER, ""], ids=["issuer", "no-issuer"])
def test_the_catalog_issuer_hint_names_an_issuer_to_mark(tmp_path, issuer):
    found = [d for d in diagnostics_of(tmp_path, '    allow "a" when member "sre"', issuer=issuer)
             if "catalog users" in d.message]
    (hint,) = [d.hint for d in found]
    assert hint.startswith("add `catalog users` to the issuer" if issuer else "declare the issuer")
