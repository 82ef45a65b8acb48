"""CI-native output: GitHub annotations, SARIF read back by a SARIF consumer (sarif-tools),
JUnit reports of policy unit tests, and `compile --check` on stale outputs."""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

from sarif import loader

from policyc.diagnostics import CODES, SNIPPET_WIDTH, Diagnostic, render_github, render_text
from policyc.source import Source, Span
from tests.unit.test_cli import EXAMPLE, FIVE_MISTAKES, run


def test_github_annotations_name_file_line_and_code():
    result = run("check", "--format", "github", FIVE_MISTAKES, expect=1)
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and sum(line.startswith("::error ") for line in lines) == 5
    first = lines[0]
    assert first.startswith(f"::error file={FIVE_MISTAKES},line=12,col=39,")
    assert "title=check/bad-method::`head` is not an upper-case HTTP method%0Ahint: write `HEAD`" in first
    assert "5 errors, 1 warning" in result.stderr


def test_github_escapes_what_would_end_a_property_or_command():
    span = Span("dir,with:odd%/p.policy", 1, 2, 1, 3)
    [line] = render_github([Diagnostic("check/bad-path", "50% of\nit", span)]).splitlines()
    assert line == ("::error file=dir%2Cwith%3Aodd%25/p.policy,line=1,col=2,endLine=1,endColumn=3,"
                    "title=check/bad-path::50%25 of%0Ait")


def test_sarif_is_read_back_by_a_sarif_consumer(tmp_path):
    result = run("check", "--format", "sarif", FIVE_MISTAKES, expect=1)
    log = tmp_path / "policyc.sarif"
    log.write_text(result.stdout)
    sarif_file = loader.load_sarif_file(str(log))
    records = sarif_file.get_records()
    assert [(r["Code"], r["Severity"], r["Line"]) for r in records][:2] == [
        ("check/bad-method", "error", 12), ("check/unknown-issuer", "error", 13)]
    assert sarif_file.get_distinct_tool_names() == ["policyc"]
    assert len(records) == 6 and {r["Location"] for r in records} == {FIVE_MISTAKES.as_uri()}
    rules = sarif_file.get_rules_by_id("check/bad-glob")
    assert rules and "Wrong:" in rules[0]["help"]["text"]
    # The consumer's own command line reads it too.
    summary = subprocess.run([sys.executable, "-m", "sarif", "summary", str(log)], capture_output=True, text=True)
    assert summary.returncode == 0 and "error: 5" in summary.stdout, summary.stdout + summary.stderr


def test_sarif_regions_match_the_json_spans():
    spans = json.loads(run("check", "--format", "json", FIVE_MISTAKES, expect=1).stdout)
    log = json.loads(run("check", "--format", "sarif", FIVE_MISTAKES, expect=1).stdout)
    [sarif_run] = log["runs"]
    assert log["version"] == "2.1.0" and sarif_run["columnKind"] == "unicodeCodePoints"
    assert [r["id"] for r in sarif_run["tool"]["driver"]["rules"]] == list(CODES)
    regions = [r["locations"][0]["physicalLocation"]["region"] for r in sarif_run["results"]]
    assert regions == [{"startLine": d["line"], "startColumn": d["column"], "endLine": d["end_line"],
                        "endColumn": d["end_column"]} for d in spans]


def test_sarif_names_relative_paths_as_relative_references(tmp_path, monkeypatch):
    (tmp_path / "my policies").mkdir()
    (tmp_path / "my policies" / "p.policy").write_text("condition c = method == get\n")
    monkeypatch.chdir(tmp_path)
    log = json.loads(run("check", "--format", "sarif", "my policies", expect=1).stdout)
    [result] = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "my%20policies/p.policy"


def test_clean_policies_give_an_empty_sarif_run_and_no_annotations():
    assert json.loads(run("check", "--format", "sarif", EXAMPLE, expect=0).stdout)["runs"][0]["results"] == []
    assert run("check", "--format", "github", EXAMPLE, expect=0).stdout == ""


def test_junit_report_of_policy_tests(tmp_path):
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder)
    cases = folder / "example.cases.yaml"
    cases.write_text(cases.read_text().replace("expect: {status: 200, rule: health}", "expect: {status: 403}", 1))
    report = tmp_path / "reports" / "junit.xml"
    report.parent.mkdir()
    result = run("test", folder, "--junit", report, expect=1)
    passed = int(result.stdout.strip().splitlines()[-1].split()[0])
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites" and root.get("tests") == str(passed + 1) and root.get("failures") == "1"
    [suite] = root.findall("testsuite")
    assert suite.get("name") == str(cases)
    [failed] = [case for case in suite.findall("testcase") if case.find("failure") is not None]
    assert "status: expected 403, got 200" in failed.find("failure").get("message")
    assert failed.get("line").isdigit()


def test_compile_check_passes_on_current_outputs_and_lists_stale_ones(tmp_path):
    out = tmp_path / "compiled"
    shutil.copytree(EXAMPLE / "compiled", out)
    result = run("compile", EXAMPLE, "-o", out, "--check", expect=0)
    assert "is up to date" in result.stderr
    (out / "envoy.yaml").write_text((out / "envoy.yaml").read_text() + "# edited\n")
    (out / "targets.json").unlink()
    (out / "old.yaml").write_text("x")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run("compile", EXAMPLE, "-o", out, "--check", expect=1)
    assert "envoy.yaml: content differs" in result.stderr
    assert "targets.json: missing" in result.stderr
    assert "old.yaml: not written by compile" in result.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, "--check writes nothing"


def test_compile_check_on_a_missing_folder_fails(tmp_path):
    result = run("compile", EXAMPLE, "-o", tmp_path / "nothing-yet", "--check", expect=1)
    assert "envoy.yaml: missing" in result.stderr and not (tmp_path / "nothing-yet").exists()


def test_a_long_line_is_shown_as_a_window_around_the_caret():
    line = "é" * 300_000 + "@" + "x" * 300_000
    source = Source("p.policy", line + "\n")
    text = render_text(Diagnostic("parse/unexpected-character", "unexpected `@`",
                                  Span("p.policy", 1, 300_001, 1, 300_002)), {"p.policy": source})
    _, _, shown, caret = text.splitlines()
    assert len(shown) < SNIPPET_WIDTH + 10 and shown.startswith("1 | …") and shown.endswith("…")
    assert shown[caret.index("^")] == "@" and caret.count("^") == 1


def test_a_short_line_is_shown_whole_with_the_caret_to_its_end():
    source = Source("p.policy", "allow x\n")
    text = render_text(Diagnostic("parse/unexpected-token", "m", Span("p.policy", 1, 7, 1, 8)), {"p.policy": source})
    assert text.splitlines()[2:] == ["1 | allow x", "  |       ^"]


def test_no_output_format_echoes_a_huge_one_line_file(tmp_path):
    (tmp_path / "p.policy").write_text("x" * 2_000_000 + " @\n")
    (tmp_path / "short.policy").write_text("x @\n")
    for output_format in ("text", "json", "github", "sarif"):
        result = run("check", "--format", output_format, str(tmp_path / "p.policy"), expect=1)
        # Measured against the same error in a short line: SARIF carries every code's explanation.
        short = run("check", "--format", output_format, str(tmp_path / "short.policy"), expect=1)
        extra = len(result.stdout) + len(result.stderr) - len(short.stdout) - len(short.stderr)
        assert extra < 10_000, output_format
