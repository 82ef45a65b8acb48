"""The compiler meets hostile input: bytes, grammar sentences and mutated real policies (with the
imports, catalogs and key files they read). Whatever it is given, every stage a user can reach
answers with a result or diagnostics — never an exception, a hang or a partial output:

- parsing returns a tree or errors; a clean tree formats to text that parses back to it, and
  formatting is idempotent; recovery after a syntax error finds the same first error as a parse
  without it, and the errors after it each once, in the order of the text;
- loading and checking files returns diagnostics that render; a set that checks clean compiles
  for every target to complete output (YAML that reads back as what was meant, Lua that loads)
  or to diagnostics with no files, and the interpreter decides a request for it;
- the CLI's check, fmt (of files or stdin) and compile exit 0, 1 or 2 with no traceback, and write
  nothing on failure.

A deep run: `make fuzz` (see the Makefile for the count).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lupa.luajit21 as lupa
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput

from policyc.backends import TARGETS, compile_outputs
from policyc.cli import main
from policyc.diagnostics import Severity, has_errors, render_json, render_text
from policyc.interpret import evaluate
from policyc.pipeline import Pipeline, load_and_check
from policyc.source import Source
from policyc.syntax import parse
from policyc.syntax.errors import diagnostic_from_lark
from policyc.syntax.grammar import parser
from policyc.syntax.printer import format_file
from policyc.syntax.recovery import MAX_ERRORS
from tests.fuzz.inputs import (
    EXAMPLE,
    INPUTS,
    fuzz_settings,
    grammar_sentences,
    hostile_values,
    mutated,
    policy_texts,
    raw_bytes,
    seed_folders,
)
from tests.property.strategies import arbitrary_requests

FUZZED = "fuzzed.policy"
SYNTAX_ERRORS = ("parse/unexpected-token", "parse/unexpected-end", "parse/unexpected-character")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> list[Path]:
    """A copy of every seed folder, so a fuzzed policy written into one finds what it imports."""
    root = tmp_path_factory.mktemp("world")
    copies = []
    for i, folder in enumerate(seed_folders()):
        copy = root / f"{i}-{folder.name}"
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("compiled", "*.cases.yaml"))
        copies.append(copy)
    return copies


def _count(name: str) -> None:
    INPUTS[name] += 1


# ---------------------------------------------------------------- what must hold of every result


def assert_parse_sound(source: Source) -> None:
    tree, diagnostics = parse(source)
    assert tree is not None or has_errors(diagnostics)
    assert_recovery_sound(source, diagnostics)
    for diagnostic in diagnostics:
        render_text(diagnostic, {source.path: source})
    if tree is None or diagnostics:
        return
    formatted = format_file(tree, source)
    again, again_diagnostics = parse(Source(source.path, formatted))
    assert again_diagnostics == [] and again == tree, formatted
    assert format_file(again, Source(source.path, formatted)) == formatted


def assert_recovery_sound(source: Source, diagnostics: list) -> None:
    syntax_errors = [d for d in diagnostics if d.code.startswith(SYNTAX_ERRORS)]
    if not syntax_errors:
        return
    try:
        parser().parse(source.text)
    except UnexpectedInput as error:
        assert syntax_errors[0] == diagnostic_from_lark(error, source)
    else:
        raise AssertionError("a syntax error where the parser without recovery finds none")
    positions = [d.span.sort_key for d in syntax_errors]
    assert positions == sorted(set(positions)) and len(positions) <= MAX_ERRORS


def assert_pipeline_sound(pipeline: Pipeline, request=None) -> None:
    for diagnostic in pipeline.diagnostics:
        assert str(diagnostic.span.path) and diagnostic.span.line >= 1 and diagnostic.span.column >= 1
        render_text(diagnostic, pipeline.sources)
    json.loads(render_json(pipeline.diagnostics))
    if not pipeline.ok:
        assert any(d.severity is Severity.ERROR for d in pipeline.diagnostics)
        return
    if request is not None:
        evaluate(pipeline.checked, request)
    for target in TARGETS:
        assert_compiled_sound(compile_outputs(pipeline.checked, target, parts=True), target)


def assert_compiled_sound(compiled, target: str) -> None:
    if compiled.diagnostics:
        assert compiled.files == {} and target in ("rbac", "native")  # the targets that refuse what they cannot express
        assert all(d.severity is Severity.ERROR for d in compiled.diagnostics)
        return
    assert {"envoy.yaml", "targets.json"} <= compiled.files.keys()
    # Read back, the YAML says exactly what the compiler meant: no string of a policy changed its shape.
    assert yaml.safe_load(compiled.files["envoy.yaml"]) == compiled.bootstrap
    for name, text in compiled.files.items():
        if name.endswith(".yaml"):
            assert isinstance(yaml.safe_load(text), dict), name
        elif name.endswith(".lua"):
            _assert_lua_loads(text)
    for name, plan in compiled.plans.items():
        engines = {plan.deny, plan.allow}
        assert ("lua" in engines) == (f"services/{name}/policy.lua" in compiled.files)


_LUA = lupa.LuaRuntime(encoding=None)
_LUA_LOAD = _LUA.eval("function(text) local chunk, problem = loadstring(text) return problem end")


def _assert_lua_loads(text: str) -> None:
    problem = _LUA_LOAD(text.encode("utf-8", "surrogatepass"))
    assert problem is None, problem


# ---------------------------------------------------------------- parser and formatter


@fuzz_settings(weight=95)
@given(policy_texts())
def test_parsing_and_formatting_any_text(text):
    _count("parse and format")
    assert_parse_sound(Source("fuzz.policy", text))


@fuzz_settings()
@given(grammar_sentences())
def test_parsing_and_formatting_grammar_sentences(text):
    _count("grammar sentences")
    assert_parse_sound(Source("fuzz.policy", text))


# ---------------------------------------------------------------- files through the whole pipeline


@fuzz_settings()
@given(st.data(), st.one_of(raw_bytes(), policy_texts().map(lambda t: t.encode("utf-8", "surrogateescape"))))
def test_any_file_through_the_pipeline(world, data, content):
    _count("pipeline: any file")
    folder = data.draw(st.sampled_from(world))
    (folder / FUZZED).write_bytes(content)
    assert_pipeline_sound(load_and_check([str(folder / FUZZED)]), data.draw(arbitrary_requests()))


@fuzz_settings()
@given(st.data())
def test_mutated_policies_through_the_pipeline(world, data):
    """A real policy, mutated, in its own folder: imports, catalogs and key files resolve, so more
    mutations get past the parser to the checker and the backends."""
    _count("pipeline: mutated policy")
    folder = data.draw(st.sampled_from(world))
    texts = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.policy")) if p.name != FUZZED]
    (folder / FUZZED).write_text(data.draw(mutated(texts)), encoding="utf-8", errors="surrogatepass")
    assert_pipeline_sound(load_and_check([str(folder / FUZZED)]), data.draw(arbitrary_requests()))


_CATALOG_TEXTS = [p.read_text(encoding="utf-8") for p in sorted((EXAMPLE / "catalog").glob("*.yaml"))]
_JWKS_TEXTS = [p.read_text(encoding="utf-8") for p in sorted((EXAMPLE / "keys").glob("*.json"))]
_READS_FILES = """\
issuer idp {
    url "https://idp.example.com"
    jwks file "fuzzed.jwks.json"
    catalog users
}
catalog "fuzzed-catalog"
service s {
    hosts ["s.internal"]
    upstream "127.0.0.1:8080"
    allow "team" when member owners(component:payments) or member "sre"
}
"""


@fuzz_settings()
@given(st.data(), st.one_of(mutated(_CATALOG_TEXTS), raw_bytes().map(lambda b: b.decode("utf-8", "replace"))),
       st.one_of(mutated(_JWKS_TEXTS), hostile_values))
def test_hostile_catalogs_and_key_files(tmp_path_factory, data, catalog, jwks):
    _count("pipeline: catalog and keys")
    folder = tmp_path_factory.mktemp("reads")
    (folder / "fuzzed-catalog").mkdir()
    (folder / "fuzzed-catalog" / "fuzzed.yaml").write_text(catalog, encoding="utf-8", errors="surrogatepass")
    (folder / "fuzzed-catalog" / "org.yaml").write_text(_CATALOG_TEXTS[-1], encoding="utf-8")
    (folder / "fuzzed.jwks.json").write_text(jwks, encoding="utf-8", errors="surrogatepass")
    (folder / FUZZED).write_text(_READS_FILES, encoding="utf-8")
    assert_pipeline_sound(load_and_check([str(folder / FUZZED)]), data.draw(arbitrary_requests()))


# ---------------------------------------------------------------- the command line


@fuzz_settings()
@given(st.data(), st.one_of(raw_bytes(), policy_texts().map(lambda t: t.encode("utf-8", "surrogateescape"))),
       st.sampled_from(["check", "fmt", "fmt-check", "fmt-diff", "fmt-stdin", "compile"]))
def test_cli_answers_with_an_exit_code_never_a_traceback(world, data, content, command):
    _count("cli")
    folder = data.draw(st.sampled_from(world))
    path = folder / FUZZED
    path.write_bytes(content)
    out = folder / "fuzzed-out"
    shutil.rmtree(out, ignore_errors=True)
    args = {"check": ["check", str(path)], "fmt": ["fmt", str(path)], "fmt-check": ["fmt", "--check", str(path)],
            "fmt-diff": ["fmt", "--diff", str(path)], "fmt-stdin": ["fmt", "-"],
            "compile": ["compile", str(path), "-o", str(out), "--target", data.draw(st.sampled_from(TARGETS))]}
    result = CliRunner().invoke(main, args[command], input=content if command == "fmt-stdin" else None)
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if command == "compile":
        assert out.exists() == (result.exit_code == 0)
    if command in ("fmt-check", "fmt-diff"):
        assert path.read_bytes() == content
    if command == "fmt-stdin" and result.exit_code:
        assert result.stdout_bytes == b""
    elif command == "fmt-stdin":
        assert parse(Source("<stdin>", result.stdout_bytes.decode()))[1] == []
