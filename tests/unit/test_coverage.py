"""`policyc test --run` and rule coverage: which rules count as covered (deny, shadowed, dry-run,
failing cases), the text and JSON reports, and `--coverage-min` failing under its threshold."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from policyc.cases.coverage import Coverage, RuleCoverage
from policyc.cli import main

POLICY = """\
service shop {
    hosts ["shop.test"]
    upstream "127.0.0.1:8080"

    deny "a-block" when path prefix "/admin/"
    deny "b-block" when path prefix "/admin/x"
    allow public "open" when path prefix "/"
    allow public "z-open" when method == GET
}

service trial {
    hosts ["trial.test"]
    upstream "127.0.0.1:8080"
    mode dry-run

    deny "nope" when path == "/nope"
    allow public "fine" when path == "/fine"
}
"""

CASES = """\
cases:
  - name: ok admin refused by the deny rule whose name sorts first
    request: {method: GET, path: /admin/x, host: shop.test}
    expect: {status: 403, rule: a-block}
  - name: ok dry-run allow
    request: {method: GET, path: /fine, host: trial.test}
    expect: {status: 200, rule: fine}
  - name: ok dry-run deny
    request: {method: GET, path: /nope, host: trial.test}
    expect: {status: 200, enforced_status: 403, rule: nope}
  - name: broken expectation
    request: {method: GET, path: /other, host: shop.test}
    expect: {status: 403}
"""


@pytest.fixture
def policies(tmp_path) -> Path:
    (tmp_path / "shop.policy").write_text(POLICY)
    (tmp_path / "shop.cases.yaml").write_text(CASES)
    return tmp_path


def run(*args, expect: int):
    result = CliRunner().invoke(main, ["test", *map(str, args)])
    assert result.exit_code == expect, (result.output, result.stderr, result.exception)
    return result


def covered_rules(report: dict) -> dict[str, int]:
    return {f"{r['service']}/{r['rule']}": r["cases"] for r in report["coverage"]["rules"]}


def test_a_rule_is_covered_only_by_the_passing_cases_it_decided(policies):
    report = json.loads(run(policies, "--coverage", "--format", "json", expect=1).stdout)
    assert covered_rules(report) == {
        "shop/a-block": 1,
        "shop/b-block": 0,  # matched /admin/x too, but `a-block` sorts first and is the one named
        "shop/open": 0,  # matched every case of shop: overridden by the deny, or the failing case's
        "shop/z-open": 0,  # matched, but `open` sorts first
        "trial/nope": 1,  # dry-run: the rule enforce would apply
        "trial/fine": 1,
    }
    assert (report["coverage"]["covered"], report["coverage"]["total"], report["coverage"]["percent"]) == (3, 6, 50.0)
    assert (report["passed"], report["failed"]) == (3, 1)
    first = report["cases"][0]
    assert first["decisions"]["h2"] == {"status": 403, "reason": "deny", "rule": "a-block", "service": "shop"}
    assert [rule["where"] for rule in report["coverage"]["rules"]][:2] == [
        f"{policies}/shop.policy:5:5", f"{policies}/shop.policy:6:5"]


def test_text_report_names_each_uncovered_rule_at_its_place(policies):
    result = run(policies, "--coverage", expect=1)
    lines = result.stdout.splitlines()
    start = lines.index("coverage: 3 of 6 rules decided a passing case (50.0%)")
    assert lines[start + 1:] == [
        f"  {policies}/shop.policy:6:5: deny rule 'b-block' of service 'shop' decided no passing case",
        f"  {policies}/shop.policy:7:5: allow rule 'open' of service 'shop' decided no passing case",
        f"  {policies}/shop.policy:8:5: allow rule 'z-open' of service 'shop' decided no passing case",
    ]
    assert "coverage" not in run(policies, expect=1).stdout  # only when asked for


def test_run_selects_cases_by_name(policies):
    result = run(policies, "--run", "dry-run", "-v", expect=0)
    assert result.stdout.count("PASS ") == 2 and "2 passed, 0 failed" in result.stdout
    assert "broken" not in result.stdout
    report = json.loads(run(policies, "--run", "^ok", "--format", "json", expect=0).stdout)
    assert [case["name"] for case in report["cases"]] == [
        "ok admin refused by the deny rule whose name sorts first", "ok dry-run allow", "ok dry-run deny"]
    assert "coverage" not in report


def test_run_selection_limits_the_junit_report(policies, tmp_path):
    junit = tmp_path / "junit.xml"
    run(policies, "--run", "admin", "--junit", junit, expect=0)
    text = junit.read_text()
    assert text.count("<testcase ") == 1 and 'tests="1"' in text


def test_run_that_selects_nothing_or_is_no_regex_is_a_usage_error(policies):
    assert "no case name matches --run 'nothing like it'" in run(policies, "--run", "nothing like it", expect=2).stderr
    assert "is not a regular expression" in run(policies, "--run", "(", expect=2).stderr


def test_coverage_min_fails_under_the_threshold(policies):
    run(policies, "--run", "^ok", "--coverage-min", "50", expect=0)
    result = run(policies, "--run", "^ok", "--coverage-min", "50.1", expect=1)
    assert "policyc: rule coverage 50.0% is under --coverage-min 50.1%" in result.stderr
    assert "coverage: 3 of 6 rules" in result.stdout  # --coverage-min implies the report
    run(policies, "--coverage-min", "101", expect=2)


def test_failing_cases_fail_the_run_whatever_the_coverage(policies):
    assert run(policies, "--coverage-min", "0", expect=1).stdout.count("FAIL ") == 1


def test_percent_is_rounded_down_and_the_threshold_compared_exactly():
    rules = tuple(RuleCoverage("s", name, "allow", False, "", cases) for name, cases in (("a", 1), ("b", 1), ("c", 0)))
    coverage = Coverage(rules)
    assert coverage.percent == 66.6  # 66.67 shown as 66.7 would look like it meets a 66.7 threshold
    assert coverage.below(66.7) and not coverage.below(66.66)
    assert Coverage(()).percent == 100.0 and not Coverage(()).below(100)
